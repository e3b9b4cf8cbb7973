"""Packet sources: things that yield ``PACKET_DTYPE`` batches. This module holds the capture-file source.

A source owns the skip accounting for what it reads: ``skips`` counts every frame that was not fully
decoded, per reason text, and ``sensor.logs.SkipCounter`` logs each reason once. Reason texts are the
record-level ones of ``sensor.capfile`` (``bad_record:...``, ``cut_off_record``) and the lower-case
``Malformed`` names of the decoder (``truncated_ip`` ...), with the link type appended for unknown link
types (``unknown_linktype:127``). ``non_ip`` frames (ARP, LLDP ...) are not skips: they are counted by
``sensor.stats.CaptureStats`` under the network protocol.

Rows are never dropped: frames of unknown link types and bad records stay in the batch with their
``malformed`` code, so every count is in one place: a batch has one row per record read, plus one row per
packet found inside a UDP tunnel (GTP-U, VXLAN; see ``sensor.packets.frame_rows``).
Consumers select ``batch[batch["malformed"] == 0]`` (or also keep NON_IP rows) as they need.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sensor.capfile import CaptureError, CaptureFile
from sensor.decode import decode_frames
from sensor.logs import SkipCounter
from sensor.packets import Malformed, frame_rows

__all__ = ["BatchSource", "CaptureError", "FileSource", "open_source", "count_malformed"]

# Malformed codes that are not skips: decoded fine, or already counted by the file reader per sub-reason.
_NOT_SKIPS = (Malformed.OK, Malformed.NON_IP, Malformed.BAD_RECORD)


def count_malformed(batch: np.ndarray, skips: SkipCounter, **context) -> None:
    """Add a decoded batch's malformed rows to ``skips`` (shared with the live source)."""
    codes = np.bincount(batch["malformed"], minlength=len(Malformed))
    for code in Malformed:
        n = int(codes[code])
        if not n or code in _NOT_SKIPS:
            continue
        if code == Malformed.UNKNOWN_LINKTYPE:
            lts = batch["linktype"][batch["malformed"] == code]
            for lt, k in zip(*np.unique(lts, return_counts=True)):
                skips.add(f"unknown_linktype:{int(lt)}", int(k), **context)
        else:
            skips.add(code.name.lower(), n, **context)


class BatchSource:
    """What every capture-file source shares: its path, batch size and skip accounting (see module doc)."""

    def __init__(self, path: str | Path, batch_size: int, logger: str) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = Path(path)
        self.batch_size = batch_size
        self._skips = SkipCounter(logger, "packets")

    @property
    def skips(self) -> Counter:
        """Frames not fully decoded so far, per reason text."""
        return self._skips.counts


class FileSource(BatchSource):
    """Iterable of ``PACKET_DTYPE`` batches for one pcap/pcapng(.gz) file.

    Opening validates the file header (``CaptureError`` for a non-capture); records are read lazily, one
    batch of up to ``batch_size`` frames at a time, straight from the mapped file.
    """

    def __init__(self, path: str | Path, batch_size: int = 65536) -> None:
        super().__init__(path, batch_size, "sensor.sources")
        self._capture = CaptureFile(self.path)

    @property
    def format(self) -> str:
        return self._capture.format

    def __iter__(self) -> Iterator[np.ndarray]:
        context = {"file": str(self.path)}
        for chunk in self._capture.chunks(self.batch_size):
            for reason, n in chunk.skips.items():
                self._skips.add(reason, n, **context)
            if not len(chunk):
                continue
            bad = chunk.bad.any()
            # A bad record is decoded as an empty frame (so it yields exactly one row, no tunnel rows), then
            # gets its real caplen back and the BAD_RECORD mark.
            caplens = np.where(chunk.bad, 0, chunk.caplens) if bad else chunk.caplens
            batch = decode_frames(chunk.buf, chunk.offsets, caplens, chunk.wirelens, chunk.ts_ns,
                                  chunk.linktypes, chunk.link_ids)
            if bad:
                rows = np.flatnonzero(frame_rows(batch))[chunk.bad]
                batch["malformed"][rows] = Malformed.BAD_RECORD
                batch["caplen"][rows] = chunk.caplens[chunk.bad]
            count_malformed(batch, self._skips, **context)
            yield batch


def open_source(path: str | Path, batch_size: int = 65536) -> FileSource:
    """Open a capture file as a batch source; raises ``CaptureError`` (one-line message) on a non-capture."""
    return FileSource(path, batch_size)
