"""Compute the traffic windows and write the output in a child process while this process tracks.

With ``reader.workers: 3`` ``netwarden features`` runs as three processes: the reader child decodes
(``sensor.readahead``), the main process tracks connections, and a writer child forked here computes the
windows and feature vectors and writes the output, a quarter of the work after decoding. The main process
hands it each group of records the tracker emits: one pickled list of plain tuples per group (64,000
records: 0.18 s to encode and 0.3 s to rebuild, where pickling the dataclass instances took 0.5 s each
way, the cost of ``__getstate__`` per record), so the main process saves far more than it spends.

``FeatureSink`` is the stage itself, run in this process with fewer workers; ``WriteBehind`` has the same
methods and forwards each call to a ``FeatureSink`` in the child, in order: the rows, and so the output,
are exactly the same. The child writes to the output the main process opened (``outputs.open_output``),
which the main process never writes to; it answers ``close`` once everything is written and flushed, so a
file is renamed into place only after success. Whatever the child raises (a full disk, a closed stdout)
comes back and is raised by the main process at its next call (the child stops reading, so the call fails
with EPIPE and the main process fetches the exception instead). No orphans: the child ignores Ctrl-C and
is terminated when the main process stops early; if the main process dies, the child's pipe ends (EOF,
once the reader child, which shares the write end, has also gone) and it exits without writing more.
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import operator
import os
import signal
import sys
from typing import IO

from features.records import ConnectionRecord
from features.table import FeatureTable
from sensor import outputs
from sensor.pipeline import InputRows
from sensor.readahead import pipe_pair, receive, send, transportable

_FORK = multiprocessing.get_context("fork")  # the child starts with everything imported and opened
_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(ConnectionRecord)))


class FeatureSink:
    """Records (or dataset rows) of one input after another -> feature rows -> the output, in one format."""

    def __init__(self, fmt: str, fh: IO[str], cfg) -> None:
        self.writer = outputs.Writer(fmt, fh)
        self.fh, self.cfg = fh, cfg
        self.rows: InputRows | None = None

    def begin(self, path: str) -> None:
        """A new input: fresh traffic windows."""
        self.rows = InputRows(self.cfg, path)

    def records(self, records: list[ConnectionRecord], watermark: float) -> None:
        if chunk := self.rows.feed(records, watermark):
            self.writer.write(chunk.table, chunk.records)

    def table(self, table: FeatureTable) -> None:
        """Rows of a dataset file, complete already."""
        self.writer.write(table, None)

    def close(self) -> None:
        self.writer.close()
        self.fh.flush()

    def __enter__(self) -> "FeatureSink":
        return self

    def __exit__(self, *exc_info) -> None:
        pass  # nothing to end: the interface of WriteBehind


class WriteBehind:
    """A ``FeatureSink`` in a child process; use as a context manager (it ends the child however the block
    ends) and call ``close`` on success."""

    def __init__(self, fmt: str, fh: IO[str], cfg) -> None:
        fh.flush()  # the child inherits the buffers: nothing written twice
        sys.stdout.flush()
        sys.stderr.flush()
        calls_r, self._calls = pipe_pair()
        self._replies, replies_w = pipe_pair(4096)
        self._child = _FORK.Process(target=_serve, args=(FeatureSink(fmt, fh, cfg), calls_r, replies_w,
                                                         (self._calls, self._replies)),
                                    daemon=True, name="netwarden-writer")
        try:
            self._child.start()
        finally:
            os.close(calls_r)
            os.close(replies_w)
        self._replies_pipe = os.fdopen(self._replies, "rb", buffering=0)

    def begin(self, path: str) -> None:
        self._call("begin", path)

    def records(self, records: list[ConnectionRecord], watermark: float) -> None:
        self._call("records", list(map(_FIELDS, records)), watermark)

    def table(self, table: FeatureTable) -> None:
        self._call("table", table)

    def close(self) -> None:
        """Everything written and flushed by the child, or its exception raised here."""
        self._call("close")
        self._raise_reply()

    def _call(self, name: str, *args) -> None:
        try:
            send(self._calls, (name, args))
        except BrokenPipeError:  # the child stopped reading: it failed, and says why
            self._raise_reply()
            raise

    def _raise_reply(self) -> None:
        try:
            error = receive(self._replies_pipe)
        except EOFError:
            self._child.join()
            raise RuntimeError(f"the writer process died (exit code {self._child.exitcode})") from None
        if error is not None:
            raise error

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, *exc_info) -> None:
        os.close(self._calls)
        self._replies_pipe.close()
        if exc_info[0] is not None and self._child.is_alive():
            self._child.terminate()
        self._child.join()


def _serve(sink: FeatureSink, calls_fd: int, replies_fd: int, parent_fds: tuple[int, int]) -> None:
    """The child: run each call on ``sink``; after ``close`` reply None, after a failure the exception.
    Leaves with ``os._exit``: the output's buffers are flushed by ``close`` or deliberately dropped."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in parent_fds:
        os.close(fd)
    calls = os.fdopen(calls_fd, "rb", buffering=0)
    code = 0
    try:
        while True:
            name, args = receive(calls)
            if name == "records":
                args = (list(itertools.starmap(ConnectionRecord, args[0])), args[1])
            getattr(sink, name)(*args)
            if name == "close":
                send(replies_fd, None)
                break
    except EOFError:
        code = 1  # the main process is gone without closing: nothing more to write
    except Exception as exc:
        code = 1
        try:
            send(replies_fd, transportable(exc, "writer"))
        except BrokenPipeError:
            pass
    sys.stderr.flush()  # its log lines
    os._exit(code)
