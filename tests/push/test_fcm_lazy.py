"""The FCM sender's libraries (requests, google-auth, pyfcm: 6.7 MB of a consumer's RSS) load on the
first use of `fcm.FcmSender`, not with the consumer: a process that pushes only through Apple never
loads them. Checked in a fresh interpreter, since this one has imported everything already."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
HEAVY = ("push.providers.fcm_sender", "pyfcm", "google.auth", "google.oauth2", "requests")

PROBE = """
import json, sys
sys.argv = ["manage.py", "runconsumer"]
import django
django.setup()
from django.core.management import load_command_class
load_command_class("kazoo", "runconsumer")  # the command and what it imports: worker, lanes, services
import kazoo.pushlane, push.services.clients, push.services.sending
from push.providers import fcm
heavy = %r
before = [name for name in heavy if name in sys.modules]
sender = fcm.FcmSender("http://127.0.0.1:9")
after = [name for name in heavy if name in sys.modules]
print(json.dumps({"before": before, "after": after, "sender": type(sender).__module__}))
"""


def test_consumer_loads_the_fcm_stack_only_when_the_sender_is_first_used() -> None:
    env = {**os.environ, "DEBUG": "1", "DJANGO_SETTINGS_MODULE": "pusher_site.settings"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE % (HEAVY,)], cwd=BASE_DIR, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["before"] == []
    assert seen["after"] == list(HEAVY)
    assert seen["sender"] == "push.providers.fcm_sender"
