"""The consumer's one line per message, written by one writer thread (core.logqueue)."""

import io
import logging
import logging.handlers
import threading
import time
from types import SimpleNamespace

from core.logqueue import log_queue_start, log_queue_stop
from kazoo.wire import Action, push_reqs_logged


def _delivery(n, status="sent", latency_ms=12.34):
    return SimpleNamespace(
        call_id=f"call-{n}", app_id="com.acme.phone.voip.prod", provider="apple", token_masked="5e0f4c…7081",
        status=status, reason="" if status == "sent" else "BadDeviceToken", attempts=1, latency_ms=latency_ms,
    )


class _ThreadRecordingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writers = set()

    def write(self, text):
        self.writers.add(threading.current_thread().name)
        return super().write(text)


def test_push_lines_are_written_by_the_log_writer_thread_in_order():
    stream = _ThreadRecordingStream()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    root.addHandler(handler)
    logger = logging.getLogger("pusher.messages")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    listener = log_queue_start()
    try:
        done = [("m1", _delivery(1)), ("m2", _delivery(2, "failed", None)), ("m3", _delivery(3))]
        handled = push_reqs_logged(done)
    finally:
        log_queue_stop(listener)
        logger.setLevel(old_level)
        root.removeHandler(handler)
        for h in saved:
            root.addHandler(h)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0] == (
        "INFO pusher.messages push_req msg_id=m1 call_id=call-1 app=com.acme.phone.voip.prod provider=apple "
        "token=5e0f4c…7081 status=sent reason= attempts=1 latency_ms=12.3"
    )
    assert "status=failed reason=BadDeviceToken" in lines[1] and lines[1].endswith("latency_ms=-")
    assert "msg_id=m3" in lines[2]
    assert threading.current_thread().name not in stream.writers  # the caller only queued them
    assert [h.action for h in handled] == [Action.ACK] * 3 and handled[1].outcome == "failed"


def test_stop_puts_the_handlers_back():
    root = logging.getLogger()
    before = list(root.handlers)
    listener = log_queue_start()
    assert all(isinstance(h, logging.handlers.QueueHandler) for h in root.handlers)
    log_queue_stop(listener)
    assert root.handlers == before


class _FlushCountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def _with_root_handler(handler, work):
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    root.addHandler(handler)
    logger = logging.getLogger("pusher.messages")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        work(logger)
    finally:
        logger.setLevel(old_level)
        root.removeHandler(handler)
        for h in saved:
            root.addHandler(h)


def test_a_burst_of_lines_is_written_with_few_flushes_in_order():
    stream = _FlushCountingStream()
    handler = logging.StreamHandler(stream)

    def work(logger):
        listener = log_queue_start()
        try:
            for n in range(2000):
                logger.info("line %d", n)
        finally:
            log_queue_stop(listener)

    _with_root_handler(handler, work)
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(2000)]
    assert stream.flushes < 2000 // 10  # one per batch taken off the queue, not one per line


def test_lines_to_a_file_descriptor_go_through_a_buffer_and_all_arrive(tmp_path):
    path = tmp_path / "consumer.log"
    with path.open("w", encoding="utf-8") as file:
        handler = logging.StreamHandler(file)

        def work(logger):
            listener = log_queue_start()
            try:
                assert handler.stream is not file  # a block-buffered stream on the same descriptor
                for n in range(3000):
                    logger.info("line %d é", n)
            finally:
                log_queue_stop(listener)
            assert handler.stream is file

        _with_root_handler(handler, work)
    assert path.read_text(encoding="utf-8").splitlines() == [f"line {n} é" for n in range(3000)]


def test_lines_logged_one_at_a_time_are_written_a_batch_at_a_time():
    """Lines logged a few ms apart (a push_req's line at 100/s) wait LINGER_S for each other: the
    writer thread wakes once per batch, not once per line, and each still arrives within LINGER_S."""
    stream = _FlushCountingStream()
    handler = logging.StreamHandler(stream)
    seen: list[float] = []

    def work(logger):
        listener = log_queue_start()
        try:
            logger.info("first")
            deadline = time.monotonic() + 5
            while stream.flushes < 1 and time.monotonic() < deadline:  # "first" written and flushed
                time.sleep(0.001)
            flushes_before = stream.flushes
            for n in range(5):  # within one linger of the first line's write
                logger.info("line %d", n)
                time.sleep(0.002)
            while "line 4" not in stream.getvalue() and time.monotonic() < deadline:
                time.sleep(0.001)
            seen.append(stream.flushes - flushes_before)
        finally:
            log_queue_stop(listener)

    _with_root_handler(handler, work)
    assert stream.getvalue().splitlines() == ["first", *[f"line {n}" for n in range(5)]]
    assert seen == [1]  # the five lines in one write (without the linger: one flush each)
