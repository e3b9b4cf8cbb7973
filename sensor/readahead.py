"""Read and decode a capture file in a child process while this process tracks and writes.

``netwarden features`` on one CPU spends about a quarter of its time reading and decoding and the rest
tracking, computing windows and writing text. Like Suricata's runmodes, the work is split across processes
at the cheapest seam: the child runs the ``FileSource`` (read, decode, skip accounting) and hands each
``PACKET_DTYPE`` batch to the parent through a pipe as its raw bytes (about 100 bytes a packet, written
from the array and read straight into a new one: no pickling, no intermediate copies; a plain
``multiprocessing.Connection`` cost 5x more), while the parent tracks the previous batch. The later stages stay in the parent: they are the
larger share, their state (tracker, windows) is one stream, and connection records would cost pickling.

The parent sees the same batches in the same order as from the ``FileSource`` itself, so output is
byte-identical. What the child meets travels back in order: skip counts with every message (the child's
``SkipCounter`` logs each reason once, as the in-process source does), a ``CaptureError`` or any other
exception raised by the parent at the point where the in-process source would have raised it.

No orphans: the child ignores SIGINT (the parent handles Ctrl-C and terminates it), it is terminated and
reaped whenever the parent stops iterating (end, error, closed output, KeyboardInterrupt), and if the parent
dies without cleaning up (SIGKILL, SIGTERM's default action) the child's next send fails with EPIPE and it
exits. Processes are forked: the source is already open and validated, nothing is imported again.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import pickle
import signal
import struct
import sys
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from sensor.packets import PACKET_DTYPE
from sensor.sources import FileSource

_FORK = multiprocessing.get_context("fork")
_LENGTH = struct.Struct("<Q")
_PIPE_BYTES = 1 << 20  # pipe buffer asked for (Linux F_SETPIPE_SZ; 1 MiB is the unprivileged maximum)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ReadAhead:
    """Iterable of the batches of an open ``FileSource``, read and decoded by a child process.

    Same interface as the source: iterate for batches, ``skips`` for the frames not fully decoded so far
    (per reason; up to date with the batches received), ``format``."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.skips: Counter = Counter()

    @property
    def format(self) -> str:
        return self.source.format

    def __iter__(self) -> Iterator[np.ndarray]:
        read_fd, write_fd = pipe_pair()
        sys.stdout.flush()  # the child flushes the std streams it inherited when it exits: nothing twice
        sys.stderr.flush()
        child = _FORK.Process(target=_serve, args=(self.source, write_fd, read_fd), daemon=True,
                              name=f"netwarden-reader {self.source.path.name}")
        try:
            child.start()
        finally:
            os.close(write_fd)  # the child holds the only write end: its death is EOF here, never a hang
        pipe = os.fdopen(read_fd, "rb", buffering=0)
        try:
            while True:
                try:
                    kind, skips, value = receive(pipe)
                    if kind == "batch":
                        batch = np.empty(value // PACKET_DTYPE.itemsize, PACKET_DTYPE)
                        read_into(pipe, memoryview(batch).cast("B"))
                except EOFError:
                    child.join()
                    raise RuntimeError(f"the reader process of {self.source.path} died "
                                       f"(exit code {child.exitcode})") from None
                self.skips.update(skips)
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield batch
        finally:
            pipe.close()
            if child.is_alive():
                child.terminate()
            child.join()


def read_into(pipe, view: memoryview) -> None:
    """Fill ``view`` from the unbuffered ``pipe``; EOFError if the writer closed it first."""
    done = 0
    while done < len(view):
        n = pipe.readinto(view[done:])
        if not n:
            raise EOFError
        done += n


def read_exact(pipe, n: int) -> bytearray:
    buf = bytearray(n)
    read_into(pipe, memoryview(buf))
    return buf


def receive(pipe) -> Any:
    """The next object written by ``send``; EOFError if the pipe ended first."""
    return pickle.loads(read_exact(pipe, _LENGTH.unpack(read_exact(pipe, _LENGTH.size))[0]))


def write_all(fd: int, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, obj: Any) -> None:
    """``obj`` pickled with its length in front, for ``receive`` at the other end."""
    message = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    write_all(fd, _LENGTH.pack(len(message)) + message)


def transportable(exc: Exception, process: str) -> Exception:
    """``exc`` with a note of where it was raised (the traceback of ``process``), or a RuntimeError with
    that text where ``exc`` does not pickle: what a child sends its parent to raise."""
    where = "".join(traceback.format_exception(exc))
    exc.add_note(f"in the {process} process:\n" + where)
    try:
        pickle.dumps(exc)
    except Exception:
        return RuntimeError(f"in the {process} process:\n" + where)
    return exc


def pipe_pair(buffer_bytes: int = _PIPE_BYTES) -> tuple[int, int]:
    """A pipe (read fd, write fd) with a buffer of ``buffer_bytes`` where Linux allows it."""
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, buffer_bytes)
    except OSError:
        pass  # a smaller pipe only means more system calls
    return read_fd, write_fd


def _serve(source: FileSource, fd: int, parent_fd: int) -> None:
    """The child: every batch as a message ``("batch", skips, nbytes)`` then its bytes; ``("end", skips,
    None)`` or ``("error", skips, exception)`` last. ``skips``: counts added since the previous message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.close(parent_fd)
    sent: Counter = Counter()

    def new_skips() -> Counter:
        delta = source.skips - sent
        sent.update(delta)
        return delta

    try:
        try:
            for batch in source:
                batch = np.ascontiguousarray(batch)
                send(fd, ("batch", new_skips(), batch.nbytes))
                write_all(fd, batch)
        except Exception as exc:  # every failure goes to the parent, which raises it where it happened
            send(fd, ("error", new_skips(), transportable(exc, "reader")))
            return
        send(fd, ("end", new_skips(), None))
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent stopped reading (closed output, error, or it died): nothing left to do
