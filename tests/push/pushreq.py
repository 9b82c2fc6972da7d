"""Kamailio's push_req sample, changed as a test needs, and published as Kamailio publishes it."""

import copy

from tests.amqp import publish, sample

PUSH = sample("push_req_kamailio_master.json")
TOKEN = PUSH["body"]["Token-ID"]


def push_req(**changes):
    body = copy.deepcopy(PUSH["body"])
    body.update(changes)
    return body


def publish_push(channel, body):
    publish(channel, "pushes", f"notification.push.{body['Token-Type']}.{body['Token-ID']}", body)
