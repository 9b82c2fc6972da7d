"""The consumer's one line per message, written in batches (kazoo.wire._log_many)."""

import io
import logging
from types import SimpleNamespace

from kazoo.wire import Action, push_reqs_logged


def _delivery(n, status="sent", latency_ms=12.34):
    return SimpleNamespace(
        call_id=f"call-{n}", app_id="com.acme.phone.voip.prod", provider="apple", token_masked="5e0f4c…7081",
        status=status, reason="" if status == "sent" else "BadDeviceToken", attempts=1, latency_ms=latency_ms,
    )


class _CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, text):
        self.writes += 1
        return super().write(text)


def test_a_batch_is_one_line_per_push_in_one_write(caplog):
    stream = _CountingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("pusher.messages")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="pusher.messages"):
            done = [("m1", _delivery(1)), ("m2", _delivery(2, "failed", None)), ("m3", _delivery(3))]
            handled = push_reqs_logged(done)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert stream.writes == 1 and len(lines) == 3
    assert lines[0] == (
        "INFO pusher.messages push_req msg_id=m1 call_id=call-1 app=com.acme.phone.voip.prod provider=apple "
        "token=5e0f4c…7081 status=sent reason= attempts=1 latency_ms=12.3"
    )
    assert "status=failed reason=BadDeviceToken" in lines[1] and lines[1].endswith("latency_ms=-")
    # Other handlers (here pytest's capture) still get every record.
    assert [r.getMessage().split()[1] for r in caplog.records if r.name == "pusher.messages"] == [
        "msg_id=m1", "msg_id=m2", "msg_id=m3"]
    assert [h.action for h in handled] == [Action.ACK] * 3 and handled[1].outcome == "failed"


def test_handler_level_is_respected():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("pusher.messages")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        push_reqs_logged([("m1", _delivery(1))])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert stream.getvalue() == ""
