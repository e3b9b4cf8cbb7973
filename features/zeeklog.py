"""Zeek conn.log in and out: TSV (Zeek's ASCII writer) and JSON lines, as ConnectionRecords.

Reading accepts what Zeek writes and what people do to it afterwards: the ``#separator``/``#fields``/
``#types`` header (re-read when a second log is concatenated), ``-`` for unset and ``(empty)`` for empty
values, ``#close`` trailers, gzip, JSON lines (``ts`` as epoch or ISO 8601), and extra columns such as the
``label``/``detailedlabel`` of labelled datasets, kept in ``ConnectionRecord.extra``. Some labelled logs
(Stratosphere's) append their columns with runs of spaces instead of tabs (``tunnel_parents   label
detailedlabel``); those are split too.

Writing produces a log that ``zeek-cut`` and other Zeek tooling read: Zeek's header lines, field names and
types, ``#open``/``#close``, Zeek's unset rules (``duration``/``orig_bytes``/``resp_bytes`` are unset when
the duration is 0, ``history`` when empty). Extra input columns are written back after Zeek's, then the
netwarden columns ``kdd.*`` (the KDD service, wrong_fragment, urgent and the 19 traffic features). On
reading, ``kdd.wrong_fragment`` and ``kdd.urgent`` are restored and the other ``kdd.*`` columns dropped:
they are recomputed, never trusted from a file.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import structlog

from features.records import ConnectionRecord
from features.services import record_service
from features.windows import TRAFFIC_FEATURES

_log = structlog.get_logger("features.zeeklog")

# Zeek's conn.log columns (Zeek 5-7 defaults, plus community_id as the community-id policy script adds it).
ZEEK_CONN_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"), ("duration", "interval"),
    ("orig_bytes", "count"), ("resp_bytes", "count"), ("conn_state", "string"), ("local_orig", "bool"),
    ("local_resp", "bool"), ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"), ("community_id", "string"),
)
# Types of other columns Zeek scripts commonly add; unknown extra columns are written as strings.
KNOWN_EXTRA_TYPES: dict[str, str] = {
    "orig_l2_addr": "string", "resp_l2_addr": "string", "vlan": "int", "inner_vlan": "int",
    "ip_proto": "count", "speculative_service": "string",
}
# netwarden's own columns: what the record holds beyond Zeek, and the traffic features.
KDD_PREFIX = "kdd."
KDD_RECORD_FIELDS: tuple[tuple[str, str], ...] = (
    ("kdd.service", "string"), ("kdd.wrong_fragment", "count"), ("kdd.urgent", "count"),
)
_COUNT_FEATURES = {"count", "srv_count", "dst_host_count", "dst_host_srv_count"}
KDD_FEATURE_FIELDS: tuple[tuple[str, str], ...] = tuple(
    (KDD_PREFIX + name, "count" if name in _COUNT_FEATURES else "double") for name in TRAFFIC_FEATURES
)

# conn.log column -> (record attribute, parser); ports/counts are ints, time/interval floats.
_ATTRS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ts": ("ts", float), "uid": ("uid", str), "id.orig_h": ("orig_h", str), "id.orig_p": ("orig_p", int),
    "id.resp_h": ("resp_h", str), "id.resp_p": ("resp_p", int), "proto": ("proto", str),
    "service": ("service", str), "duration": ("duration", float), "orig_bytes": ("orig_bytes", int),
    "resp_bytes": ("resp_bytes", int), "conn_state": ("conn_state", str), "missed_bytes": ("missed_bytes", int),
    "history": ("history", str), "orig_pkts": ("orig_pkts", int), "orig_ip_bytes": ("orig_ip_bytes", int),
    "resp_pkts": ("resp_pkts", int), "resp_ip_bytes": ("resp_ip_bytes", int),
    "community_id": ("community_id", str), "kdd.wrong_fragment": ("wrong_fragment", int),
    "kdd.urgent": ("urgent", int),
}
REQUIRED_FIELDS = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
# Values of a record where the field was unset in the log.
_UNSET_DEFAULTS: dict[str, Any] = {
    "uid": "-", "service": "-", "duration": 0.0, "orig_bytes": 0, "resp_bytes": 0, "conn_state": "OTH",
    "missed_bytes": 0, "history": "", "orig_pkts": 0, "orig_ip_bytes": 0, "resp_pkts": 0, "resp_ip_bytes": 0,
    "community_id": "-", "wrong_fragment": 0, "urgent": 0,
}
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_WS = re.compile(r"\s+")


class ConnLogError(ValueError):
    """A file that is not a readable conn.log at all (the caller reports it as one line)."""


SkipHandler = Callable[[str, int], None]


def open_text(path: str | Path) -> IO[str]:
    """Open a (possibly gzip-compressed) text log."""
    raw = open(path, "rb")
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", errors="replace")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace")


def sniff(head: bytes) -> str | None:
    """``"tsv"`` or ``"json"`` if ``head`` (the first bytes, decompressed) starts a conn log, else None."""
    text = head.lstrip()
    if text.startswith(b"#separator"):
        return "tsv"
    if text.startswith(b"{") and b'"id.orig_h"' in text.split(b"\n", 1)[0]:
        return "json"
    return None


class _SkipLog:
    """Default skip handler: counts per reason and logs each reason once (features must not import sensor)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter[str] = Counter()

    def __call__(self, reason: str, line: int) -> None:
        if reason not in self.counts:
            _log.warning("skipping conn.log line", reason=reason, file=self.source, line=line)
        self.counts[reason] += 1


def read_conn_log(path: str | Path, on_skip: SkipHandler | None = None) -> list[ConnectionRecord]:
    """All records of a TSV or JSON conn.log. Bad lines go to ``on_skip(reason, line_number)``.

    Raises ConnLogError if the file cannot be read or is neither form of conn.log.
    """
    return list(iter_conn_log(path, on_skip))


def iter_conn_log(path: str | Path, on_skip: SkipHandler | None = None) -> Iterator[ConnectionRecord]:
    """Records of a conn.log one by one (constant memory for large logs)."""
    skip = on_skip or _SkipLog(str(path))
    try:
        with open_text(path) as fh:
            first = fh.readline()
            kind = sniff(first.encode("utf-8", "replace"))
            if kind is None:
                raise ConnLogError(f"{path}: not a Zeek conn.log (no #separator header, not JSON lines)")
            lines = _chain(first, fh)
            yield from (_iter_tsv(lines, skip, path) if kind == "tsv" else _iter_json(lines, skip))
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConnLogError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _chain(first: str, rest: Iterable[str]) -> Iterator[tuple[int, str]]:
    yield 1, first
    yield from enumerate(rest, start=2)


def _record(values: dict[str, Any], extra: dict[str, str]) -> ConnectionRecord:
    """A record from parsed conn.log values keyed by record attribute (unset ones absent)."""
    fields = dict(_UNSET_DEFAULTS)
    fields.update(values)
    rec = ConnectionRecord(**fields, extra=extra)
    rec.end_ts = rec.ts + rec.duration
    rec.kdd_service = record_service(rec)
    return rec


class _TsvHeader:
    """The meta lines of one TSV log, and the column layout they define."""

    def __init__(self) -> None:
        self.separator = "\t"
        self.set_separator = ","
        self.empty = "(empty)"
        self.unset = "-"
        self.names: list[str] = []
        self.groups: list[int] = []  # per raw column: how many space-separated names it holds

    def meta(self, line: str) -> None:
        if line.startswith("#separator"):
            sep = line[len("#separator"):].strip()
            self.separator = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), sep) or "\t"
            return
        key, _, value = line[1:].partition(self.separator)
        if key == "set_separator":
            self.set_separator = value
        elif key == "empty_field":
            self.empty = value
        elif key == "unset_field":
            self.unset = value
        elif key == "fields":
            raw = value.split(self.separator)
            split = [_WS.split(r.strip()) for r in raw]
            self.names = [n for group in split for n in group]
            self.groups = [len(group) for group in split]

    def columns(self, line: str) -> list[str]:
        values = line.split(self.separator)
        if len(values) != len(self.groups) or all(g == 1 for g in self.groups):
            return values
        out: list[str] = []
        for value, n in zip(values, self.groups):
            out.extend(_WS.split(value.strip(), maxsplit=n - 1) if n > 1 else (value,))
        return out


def _iter_tsv(lines: Iterable[tuple[int, str]], skip: SkipHandler, path) -> Iterator[ConnectionRecord]:
    header = _TsvHeader()
    for lineno, line in lines:
        line = line.rstrip("\r\n")
        if not line:
            continue
        if line.startswith("#"):
            header.meta(line)
            if line.startswith("#fields"):
                missing = [f for f in REQUIRED_FIELDS if f not in header.names]
                if missing:
                    raise ConnLogError(f"{path}: #fields lacks {', '.join(missing)}: not a conn.log")
            continue
        if not header.names:
            skip("data line before the #fields header", lineno)
            continue
        values = header.columns(line)
        if len(values) != len(header.names):
            skip(f"{len(values)} columns where #fields names {len(header.names)}", lineno)
            continue
        parsed: dict[str, Any] = {}
        extra: dict[str, str] = {}
        try:
            for name, value in zip(header.names, values):
                target = _ATTRS.get(name)
                if target is None:
                    if not name.startswith(KDD_PREFIX):
                        extra[name] = value
                elif value != header.unset and (value != header.empty or target[1] is str):
                    attr, parse = target
                    parsed[attr] = parse(_unescape(value) if parse is str else value)
        except ValueError:
            skip(f"bad value in column {name}", lineno)
            continue
        if any(_ATTRS[f][0] not in parsed for f in REQUIRED_FIELDS):
            skip("unset id or ts column", lineno)
            continue
        if parsed.get("history") == header.empty:
            parsed["history"] = ""
        yield _record(parsed, extra)


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value) if "\\x" in value else value


def _parse_ts(value: Any) -> float:
    if isinstance(value, str):  # Zeek's JSON::TS_ISO8601
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return float(value)


def _json_extra(value: Any) -> str:
    """An extra JSON value as the text the TSV form would hold."""
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "(empty)"
    return str(value)


def _iter_json(lines: Iterable[tuple[int, str]], skip: SkipHandler) -> Iterator[ConnectionRecord]:
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            skip("not a JSON object", lineno)
            continue
        if not isinstance(obj, dict) or any(f not in obj for f in REQUIRED_FIELDS):
            skip("JSON line without ts/id/proto", lineno)
            continue
        parsed: dict[str, Any] = {}
        extra: dict[str, str] = {}
        try:
            for name, value in obj.items():
                target = _ATTRS.get(name)
                if target is None:
                    if not name.startswith(KDD_PREFIX) and value is not None:
                        extra[name] = _json_extra(value)
                elif value is not None:
                    attr, parse = target
                    parsed[attr] = _parse_ts(value) if name == "ts" else parse(value)
        except (ValueError, TypeError):
            skip(f"bad value in field {name}", lineno)
            continue
        yield _record(parsed, extra)


# ---------------------------------------------------------------------------------------------- writing


def _extra_columns(records: Iterable[ConnectionRecord]) -> list[str]:
    """Extra input columns in first-seen order, minus those Zeek's layout already has."""
    zeek = {name for name, _ in ZEEK_CONN_FIELDS}
    seen: dict[str, None] = {}
    for r in records:
        for name in r.extra:
            if name not in zeek:
                seen.setdefault(name)
    return list(seen)


def _layout(records: list[ConnectionRecord], with_features: bool) -> list[tuple[str, str]]:
    extras = [(n, KNOWN_EXTRA_TYPES.get(n, "string")) for n in _extra_columns(records)]
    return list(ZEEK_CONN_FIELDS) + extras + list(KDD_RECORD_FIELDS) + (
        list(KDD_FEATURE_FIELDS) if with_features else [])


def _row_values(rec: ConnectionRecord, feats: np.void | None) -> dict[str, Any]:
    """Typed values of one row keyed by column; None = unset."""
    timed = rec.duration > 0  # Zeek sets duration and byte counts only then
    values: dict[str, Any] = {
        "ts": rec.ts, "uid": rec.uid, "id.orig_h": rec.orig_h, "id.orig_p": rec.orig_p,
        "id.resp_h": rec.resp_h, "id.resp_p": rec.resp_p, "proto": rec.proto,
        "service": None if rec.service in ("", "-") else rec.service,
        "duration": rec.duration if timed else None,
        "orig_bytes": rec.orig_bytes if timed else None, "resp_bytes": rec.resp_bytes if timed else None,
        "conn_state": rec.conn_state, "missed_bytes": rec.missed_bytes, "history": rec.history or None,
        "orig_pkts": rec.orig_pkts, "orig_ip_bytes": rec.orig_ip_bytes, "resp_pkts": rec.resp_pkts,
        "resp_ip_bytes": rec.resp_ip_bytes,
        "community_id": None if rec.community_id in ("", "-") else rec.community_id,
        "kdd.service": record_service(rec), "kdd.wrong_fragment": rec.wrong_fragment, "kdd.urgent": rec.urgent,
    }
    if feats is not None:
        for name in TRAFFIC_FEATURES:
            values[KDD_PREFIX + name] = float(feats[name])
    return values


def _tsv_text(value: Any, type_: str, raw_extra: bool) -> str:
    if value is None:
        return "-"
    if raw_extra:  # extra columns are stored as the TSV text they were read as
        return value
    if type_ in ("time", "interval", "double"):
        return f"{value:.6f}"
    if type_ in ("count", "port", "int"):
        return str(int(value))
    text = str(value)
    if not text:
        return "(empty)"
    return text.replace("\\", "\\x5c").replace("\t", "\\x09").replace("\n", "\\x0a")


def write_conn_log(records: list[ConnectionRecord], fh: IO[str], features: np.ndarray | None = None,
                   path: str = "conn") -> None:
    """Write records as a Zeek TSV conn.log; ``features`` (FEATURE_DTYPE, aligned) adds the kdd.* columns."""
    layout = _layout(records, features is not None)
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S")
    fh.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n")
    fh.write(f"#path\t{path}\n#open\t{stamp}\n")
    fh.write("#fields\t" + "\t".join(n for n, _ in layout) + "\n")
    fh.write("#types\t" + "\t".join(t for _, t in layout) + "\n")
    for i, rec in enumerate(records):
        values = _row_values(rec, None if features is None else features[i])
        cells = []
        for name, type_ in layout:
            if name in values:
                cells.append(_tsv_text(values[name], type_, False))
            else:
                cells.append(_tsv_text(rec.extra.get(name), type_, True))
        fh.write("\t".join(cells) + "\n")
    fh.write(f"#close\t{time.strftime('%Y-%m-%d-%H-%M-%S')}\n")


def _json_value(text: str, type_: str) -> Any:
    """An extra column's TSV text as the JSON value Zeek would write; None = unset (omitted)."""
    if text == "-":
        return None
    if type_ == "bool":
        return text == "T"
    if type_ in ("count", "int"):
        return int(text)
    if type_.startswith(("set[", "vector[")):
        return [] if text == "(empty)" else text.split(",")
    return text


def write_conn_json(records: list[ConnectionRecord], fh: IO[str], features: np.ndarray | None = None) -> None:
    """Write records as Zeek JSON lines (unset fields omitted, as Zeek does)."""
    layout = _layout(records, features is not None)
    for i, rec in enumerate(records):
        values = _row_values(rec, None if features is None else features[i])
        obj: dict[str, Any] = {}
        for name, type_ in layout:
            if name in values:
                value = values[name]
                if type_ == "count" and value is not None:
                    value = int(value)
            else:
                text = rec.extra.get(name)
                value = None if text is None else _json_value(text, type_)
            if value is not None:
                obj[name] = value
        fh.write(json.dumps(obj, separators=(",", ":")) + "\n")

