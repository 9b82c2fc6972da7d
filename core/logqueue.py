"""Log records handed to one writer thread: the consumer's hot threads only put a record on a
queue (the standard library's QueueHandler/QueueListener), and formatting, writing and flushing
happen on the listener's thread. Per-record locking, writing and flushing from several threads
was a seventh of a reg_success's CPU and a third of the push lane's recording."""

from __future__ import annotations

import logging
import logging.handlers
import queue


def log_queue_start() -> logging.handlers.QueueListener:
    """Move the root logger's handlers behind a queue; returns the running listener (stop it at exit:
    it writes what is still queued)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(records))
    listener = logging.handlers.QueueListener(records, *handlers, respect_handler_level=True)
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
