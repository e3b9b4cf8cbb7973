"""Composition of the offline path: input file -> connection records -> feature table.

Inputs are recognised by content, never by file name: a pcap/pcapng (also gzip-compressed) by its magic
number, a Zeek conn.log by its ``#separator`` header or JSON lines with ``id.orig_h``, an NSL-KDD/KDD'99
file by its comma-separated rows of 42 or 43 columns with a protocol name in the second. Each input gets
fresh traffic windows: separate files are separate observation periods.
"""

from __future__ import annotations

import gzip
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


def records_from_capture(path: str | Path, cfg) -> list[ConnectionRecord]:
    """Connection records of a capture file: read, decode, track; flushed at the end of the file."""
    from features.tracker import ConnectionTracker, TrackerSettings
    from sensor.sources import CaptureError, open_source

    path = Path(path)
    try:
        source = open_source(path, cfg["reader.batch_size"])
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    tracker = ConnectionTracker(TrackerSettings.from_config(cfg.section("tracker")))
    compressed = _head_is_gzip(path)
    progress = Progress(f"reading {path.name}", None if compressed else path.stat().st_size)
    records: list[ConnectionRecord] = []
    done, packets = 24, 0
    try:
        for batch in source:
            records.extend(tracker.process(batch))
            packets += len(batch)
            done += int(batch["caplen"].sum()) + PCAP_RECORD_HEADER * len(batch)
            progress.update(done, packets)
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    finally:
        progress.close()
    records.extend(tracker.flush())
    return records


def _head_is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def records_from_conn_log(path: str | Path) -> list[ConnectionRecord]:
    from features.zeeklog import ConnLogError, read_conn_log

    skips = SkipCounter("sensor.pipeline", "conn.log lines")
    try:
        return read_conn_log(path, lambda reason, line: skips.add(reason, file=str(path), line=line))
    except ConnLogError as exc:
        raise InputError(str(exc)) from None


def load_input(path: str | Path, cfg) -> InputData:
    """Feature table (and records, where there are any) of one input file of any supported kind."""
    kind = detect_input(path)
    if kind == "kdd":
        from features.datasets import DatasetError, load_kdd_file

        try:
            return InputData(load_kdd_file(path), None)
        except DatasetError as exc:
            raise InputError(str(exc)) from None
    records = records_from_capture(path, cfg) if kind == "capture" else records_from_conn_log(path)
    table = FeatureBuilder.from_config(cfg).add(records, source=str(path))
    return InputData(table, records)


def feature_table_from_inputs(paths: list[str | Path], cfg) -> FeatureTable:
    """The rows of every input, in order (labels kept only if every input is labelled)."""
    return FeatureTable.concat([load_input(p, cfg).table for p in paths])
