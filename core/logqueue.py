"""Log records handed to one writer thread: the consumer's hot threads only put a record on a
queue (the standard library's QueueHandler/QueueListener), and formatting, writing and flushing
happen on the listener's thread. Per-record locking, writing and flushing from several threads
was a seventh of a reg_success's CPU and a third of the push lane's recording.

The writer takes every record waiting at once and writes them with one flush: a StreamHandler
flushes after each record, and stderr is line-buffered, so each line was a write(2) of its own
(a fifth of the consumer's CPU at 4,500 reg_success/s). After writing, it lingers LINGER_S before
it looks again, so lines logged one at a time (a push_req's line at 100 pushes/s) are written a
batch at a time too: each time a thread wakes costs CPU, 0.1-0.3 ms on the machines measured
(docs/scaling.md). A line reaches the stream at most LINGER_S after it was logged, in the order
the lines were logged."""

from __future__ import annotations

import contextlib
import io
import logging
import logging.handlers
import queue
import time
from collections.abc import Iterator

# Records written between two flushes at most: a burst is written in pieces of this many lines.
BATCH_MAX = 500
# After a batch is written, records gather this long before the next one is taken.
LINGER_S = 0.05
# What `stop` queues after the last record.
_END = logging.makeLogRecord({"msg": "end of the log queue"})


class _BatchingListener(logging.handlers.QueueListener):
    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], *handlers: logging.Handler) -> None:
        super().__init__(records, *handlers, respect_handler_level=True)
        self._buffered: list[tuple[logging.StreamHandler[io.TextIOBase], object]] = []

    def start(self) -> None:
        # Streams writing to a file descriptor (stderr, a log file) get a block buffer of their own
        # for as long as the listener runs; flushed after each batch, given back at stop.
        for handler in self.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                stream = handler.stream
                try:
                    fileno = stream.fileno()
                except (AttributeError, OSError, ValueError):
                    continue  # an in-memory stream (tests, captures): only the per-record flush is saved
                buffered = open(fileno, "w", buffering=1 << 16, closefd=False,  # closed at stop
                                encoding=getattr(stream, "encoding", None) or "utf-8", errors="backslashreplace")
                stream.flush()
                self._buffered.append((handler, handler.setStream(buffered)))
        super().start()

    def enqueue_sentinel(self) -> None:
        self.queue.put_nowait(_END)

    def stop(self) -> None:
        super().stop()  # writes what is queued (the monitor thread ends with a flush)
        for handler, original in self._buffered:
            buffered = handler.setStream(original)  # type: ignore[arg-type]
            if buffered is not None:
                buffered.close()
        self._buffered = []

    def _monitor(self) -> None:
        while True:
            record = self.dequeue(True)
            batch: list[logging.LogRecord] = []
            ended = record is _END
            while not ended:
                batch.append(record)
                if len(batch) >= BATCH_MAX:
                    break
                try:
                    record = self.dequeue(False)
                except queue.Empty:
                    break
                ended = record is _END
            with _flush_once(self.handlers):
                for item in batch:
                    self.handle(item)
            if ended:
                return
            time.sleep(LINGER_S)


@contextlib.contextmanager
def _flush_once(handlers: tuple[logging.Handler, ...]) -> Iterator[None]:
    """The handlers' per-record flush skipped inside, one flush each at the end."""
    deferred = [h for h in handlers if isinstance(h, logging.StreamHandler)]
    for handler in deferred:
        handler.flush = _no_flush  # type: ignore[method-assign]
    try:
        yield
    finally:
        for handler in deferred:
            del handler.flush  # the class's own again
            handler.flush()


def _no_flush() -> None:
    pass


def log_queue_start() -> logging.handlers.QueueListener:
    """Move the root logger's handlers behind a queue; returns the running listener (stop it at exit:
    it writes what is still queued)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    listener = _BatchingListener(records, *handlers)
    listener.start()
    return listener


def log_queue_stop(listener: logging.handlers.QueueListener) -> None:
    """Write what is queued, then put the handlers back on the root logger."""
    listener.stop()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.handlers.QueueHandler):
            root.removeHandler(handler)
    for handler in listener.handlers:
        root.addHandler(handler)
