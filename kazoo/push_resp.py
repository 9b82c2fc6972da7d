"""Legacy push_resp: 2015-era Kamailio configs wait (blocking kazoo_query) for an answer to their
push_req once the pushed device registers."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from core.text import mask_token
from push.models import (
    Delivery,
)

log = logging.getLogger(__name__)


PUSH_RESP_WINDOW_S = 60


@transaction.atomic
def push_resp_send(*, tokens: list[str]) -> int:
    """Answer 2015-era Kamailio (blocking kazoo_query): when the pushed device registers, send a
    targeted push_resp to the push_req's Server-ID echoing its Msg-ID. Unlike Kazoo's node-local
    20 s cache, the pending push_req lives in the delivery log, so any pusher node can answer.
    Returns how many answers were published (after commit)."""
    from core.bus import bus_publish

    now = timezone.now()
    pending = list(
        Delivery.objects.filter(
            token__in=tokens, replied_at__isnull=True, created_at__gte=now - timedelta(seconds=PUSH_RESP_WINDOW_S)
        ).exclude(reply_to="").exclude(msg_id__isnull=True)
    )
    sent = 0
    for delivery in pending:
        # Claim the answer so two nodes (or a redelivered reg_success) answer once.
        if not Delivery.objects.filter(pk=delivery.pk, replied_at__isnull=True).update(replied_at=now):
            continue
        bus_publish(
            exchange="targeted",
            routing_key=delivery.reply_to,
            body={
                "Event-Category": "notification",
                "Event-Name": "push_resp",
                "Token-ID": delivery.token,
                "Msg-ID": delivery.msg_id,
                "App-Name": "pusher",
                "App-Version": "4.0.0",
                "Node": f"pusher@{socket.gethostname()}",
            },
        )
        sent += 1
    if sent:
        log.info("push_resp sent for %d pending push_req(s) of token(s) %s", sent, ", ".join(map(mask_token, tokens)))
    return sent
