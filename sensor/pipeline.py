"""Composition of the offline path: input file -> connection records -> feature table.

Inputs are recognised by content, never by file name: a pcap/pcapng (also gzip-compressed) by its magic
number, a Zeek conn.log by its ``#separator`` header or JSON lines with ``id.orig_h``, an NSL-KDD/KDD'99
file by its comma-separated rows of 42 or 43 columns with a protocol name in the second. Each input gets
fresh traffic windows: separate files are separate observation periods.

Streaming: ``iter_input`` yields a capture's rows chunk by chunk as the tracker emits connections, so
memory stays flat with the capture's size (a conn.log is read whole: see ``_conn_log_records``);
``load_input`` is the whole input at once. Rows come in the order connections were emitted (a capture: as
the tracker finished them, then those still open at the end in start order; a conn.log: its line order),
the same order either way, and the same values: the windows see every connection in end order.

Processes: with ``reader.workers`` 2 or more a capture is read and decoded by a child process while this
one tracks (``sensor.readahead``); with 3, ``netwarden features`` also computes windows and writes in
another child (``sensor.writebehind``, fed through ``record_chunks`` and ``InputRows``). The batches and
records, and so the output, are the same as in one process.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.records import ConnectionRecord
from features.schema import PROTOCOL_VALUES
from features.table import FeatureTable
from features.vectors import FeatureBuilder
from sensor.logs import SkipCounter

CAPTURE_MAGICS = (
    b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",  # pcap, microseconds (little / big endian)
    b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d",  # pcap, nanoseconds
    b"\x0a\x0d\x0d\x0a",  # pcapng section header block
)
PCAP_RECORD_HEADER = 16
_SNIFF_BYTES = 65536
WINDOW_GROUP = 16384  # connections whose window features are computed together (see FeatureBuilder.min_group)


class InputError(Exception):
    """An input that cannot be used (the CLI reports it as one line)."""


@dataclass
class InputData:
    """What one input gave: its feature rows, and the connection records behind them (None for datasets)."""

    table: FeatureTable
    records: list[ConnectionRecord] | None


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
            if head[:2] == b"\x1f\x8b":
                fh.seek(0)
                with gzip.GzipFile(fileobj=fh) as gz:
                    head = gz.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except zlib.error as exc:
        raise InputError(f"{path}: corrupt gzip file ({exc})") from None
    return head


def _looks_like_kdd(head: bytes) -> bool:
    line = head.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    fields = line.split(",")
    return len(fields) in (42, 43) and fields[1] in PROTOCOL_VALUES


def detect_input(path: str | Path) -> str:
    """``"capture"``, ``"zeek"`` or ``"kdd"`` from the file's content; InputError for anything else."""
    from features.zeeklog import sniff

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an input file")
    head = _head(path)
    if head[:4] in CAPTURE_MAGICS:
        return "capture"
    if sniff(head):
        return "zeek"
    if _looks_like_kdd(head):
        return "kdd"
    if not head:
        raise InputError(f"{path}: empty file")
    raise InputError(f"{path}: not a pcap/pcapng capture, Zeek conn.log or NSL-KDD/KDD'99 file")


class Progress:
    """A one-line progress indicator on stderr, only when stderr is a terminal; at most 4 updates a second."""

    def __init__(self, label: str, total_bytes: int | None) -> None:
        self.enabled = sys.stderr.isatty()
        self.label = label
        self.total = total_bytes
        self.start = self._last = time.monotonic()

    def update(self, done_bytes: int, packets: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        rate = packets / max(now - self.start, 1e-9)
        share = f"{min(99, 100 * done_bytes // self.total):3d}% " if self.total else ""
        sys.stderr.write(f"\r{self.label}: {share}{packets:,} packets ({rate:,.0f}/s)\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def tracker_horizon(settings) -> float:
    """Seconds a connection can stay open after its last packet: no record emitted later ends earlier than
    the latest packet time minus this (every timer of the tracker is at most this long)."""
    return max(settings.tcp_inactivity_timeout, settings.udp_inactivity_timeout,
               settings.icmp_inactivity_timeout, settings.tcp_attempt_timeout, settings.tcp_close_linger,
               settings.tcp_reset_linger)


def _capture_records(path: Path, cfg) -> Iterator[tuple[list[ConnectionRecord], float]]:
    """Read, decode, track: the records of each batch with the watermark after it, then the flushed rest."""
    from features.tracker import ConnectionTracker, TrackerSettings
    from sensor.packets import frame_rows
    from sensor.readahead import ReadAhead, usable_cpus
    from sensor.sources import CaptureError, open_source

    try:
        source = open_source(path, cfg["reader.batch_size"])
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    if cfg["reader.workers"] > 1 and usable_cpus() > 1:
        source = ReadAhead(source)  # a child process reads and decodes (sensor.readahead)
    settings = TrackerSettings.from_config(cfg.section("tracker"))
    tracker = ConnectionTracker(settings)
    horizon = tracker_horizon(settings)
    compressed = _head_is_gzip(path)
    progress = Progress(f"reading {path.name}", None if compressed else path.stat().st_size)
    done, packets, latest = 24, 0, -math.inf
    try:
        for batch in source:
            if len(batch):
                latest = max(latest, int(batch["ts_ns"].max()) / 1e9)
            records = tracker.process(batch)
            is_frame = frame_rows(batch)  # a tunnel's inner rows are not frames of the file
            n_frames = int(np.count_nonzero(is_frame))
            packets += n_frames
            done += int(batch["caplen"][is_frame].sum()) + PCAP_RECORD_HEADER * n_frames
            progress.update(done, packets)
            yield records, latest - horizon
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    finally:
        progress.close()
    yield tracker.flush(), math.inf


def _head_is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _conn_log_records(path: Path) -> Iterator[tuple[list[ConnectionRecord], float]]:
    """All records of a conn.log as one chunk. Its lines come in no order a watermark could rely on (Zeek
    writes a connection when it is removed, logs are rotated and merged: the labelled stratosphere logs
    have lines ending up to an hour before lines above them), so the whole log is sorted by end time."""
    from features.zeeklog import ConnLogError, read_conn_log

    skips = SkipCounter("sensor.pipeline", "conn.log lines")
    try:
        records = read_conn_log(path, lambda reason, line: skips.add(reason, file=str(path), line=line))
    except ConnLogError as exc:
        raise InputError(str(exc)) from None
    yield records, math.inf


def record_chunks(path: Path, kind: str, cfg) -> Iterator[tuple[list[ConnectionRecord], float]]:
    """The connection records of a capture or conn.log (``kind`` from ``detect_input``), chunk by chunk,
    each with its watermark (no later record ends before it)."""
    return _capture_records(path, cfg) if kind == "capture" else _conn_log_records(path)


def load_dataset(path: str | Path) -> FeatureTable:
    """The feature rows of an NSL-KDD/KDD'99 file."""
    from features.datasets import DatasetError, load_kdd_file

    try:
        return load_kdd_file(path)
    except DatasetError as exc:
        raise InputError(str(exc)) from None


class InputRows:
    """Records of one input (in emission order, with watermarks) -> its completed feature rows, with fresh
    traffic windows: the stage after tracking, wherever it runs (this process or ``sensor.writebehind``)."""

    def __init__(self, cfg, source: str) -> None:
        self.builder = FeatureBuilder.from_config(cfg, WINDOW_GROUP)
        self.source = source
        self.held: list[ConnectionRecord] = []  # records whose rows the builder has not returned yet

    def feed(self, records: list[ConnectionRecord], watermark: float) -> InputData | None:
        """The rows (and their records) completed by these records and this watermark; None if none."""
        self.held.extend(records)
        table = self.builder.feed(records, watermark, source=self.source)
        if not len(table):
            return None
        out, self.held = self.held[: len(table)], self.held[len(table):]
        return InputData(table, out)


def iter_input(path: str | Path, cfg) -> Iterator[InputData]:
    """One input file of any supported kind, as chunks of feature rows (and their records, where there are
    any), in emission order; chunks are never empty."""
    kind = detect_input(path)
    if kind == "kdd":
        table = load_dataset(path)
        if len(table):
            yield InputData(table, None)
        return
    rows = InputRows(cfg, str(path))
    with contextlib.closing(record_chunks(Path(path), kind, cfg)) as chunks:
        for records, watermark in chunks:
            if chunk := rows.feed(records, watermark):
                yield chunk


def load_input(path: str | Path, cfg) -> InputData:
    """Feature table (and records, where there are any) of one whole input file of any supported kind."""
    parts = list(iter_input(path, cfg))
    if len(parts) == 1:
        return parts[0]
    table = FeatureTable.concat([p.table for p in parts])
    table.source = str(path)
    records = None if any(p.records is None for p in parts) else [r for p in parts for r in p.records]
    return InputData(table, records)
