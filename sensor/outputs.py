"""Output formats of ``netwarden features``: kdd, csv, jsonl (feature rows) and zeek, zeek-json (conn.log).

- ``kdd``: the column order of the common C++ KDD extractor (kdd99extractor with ``-e``): the 28 features
  with categorical names, then src_ip, src_port, dst_ip, dst_port, conn_end_time; no header, like the
  extractor and the KDD data files; a label column last when the input was labelled.
- ``csv``: a header, the row ids (uid, ts, orig_h, orig_p, resp_h, resp_p, proto; file and line for dataset
  input), the 28 features, and the label if any.
- ``jsonl``: one object per row with the same keys as ``csv``.
- ``zeek`` / ``zeek-json``: the connection records as a Zeek conn.log (TSV or JSON lines) with the
  ``kdd.*`` feature columns appended (features.zeeklog). Needs connection records, so not for dataset input.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from features.records import ConnectionRecord
from features.schema import CATEGORICAL_VOCABULARIES, FEATURE_DTYPE, FEATURE_NAMES
from features.table import FeatureTable
from features.zeeklog import write_conn_json, write_conn_log

FORMATS: tuple[str, ...] = ("kdd", "zeek", "zeek-json", "csv", "jsonl")
RECORD_FORMATS = frozenset({"zeek", "zeek-json"})
KDD_EXTRA_COLUMNS: tuple[str, ...] = ("src_ip", "src_port", "dst_ip", "dst_port", "conn_end_time")

# Features that are whole numbers by definition: written without a decimal point.
INTEGER_FEATURES = frozenset({"src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent", "count",
                              "srv_count", "dst_host_count", "dst_host_srv_count"})
SMALL_INTEGERS = 4096  # integer columns below this are formatted through a lookup table
COMMON_FLOATS = (0.0, 1.0)  # float cells formatted without a sort


def _fixed(x: float) -> str:
    """Shortest fixed-point text with at most 6 decimals (durations, timestamps)."""
    text = "%.6f" % x
    return text.rstrip("0").rstrip(".") if "." in text else text


def _rate(x: float) -> str:
    return "%.6g" % x


def _formatted(values: np.ndarray, fmt: Callable[[Any], str]) -> list[str]:
    """``fmt`` of every value, formatting each distinct value once (rates, counts and flags repeat a lot,
    so this is a sort instead of a Python call per cell)."""
    if len(values) == 0:
        return []
    if values.dtype.kind == "i" and 0 <= values.min() and values.max() < SMALL_INTEGERS:  # counts: no sort
        return np.array([fmt(v) for v in range(int(values.max()) + 1)], dtype=object)[values].tolist()
    texts = np.empty(len(values), dtype=object)
    rest = np.ones(len(values), bool)
    if values.dtype == np.float64:  # most rates are exactly 0 or 1: those need no sort (bits, so -0.0 is apart)
        bits = values.view(np.int64)
        for common in COMMON_FLOATS:
            hit = bits == np.float64(common).view(np.int64)
            texts[hit] = fmt(common)
            rest &= ~hit
    rest = np.flatnonzero(rest)
    if len(rest):
        distinct, index = np.unique(values[rest], return_inverse=True)
        texts[rest] = np.array([fmt(v) for v in distinct.tolist()], dtype=object)[index.reshape(-1)]
    return texts.tolist()


def _quoted(texts: list[str]) -> list[str]:
    """Free-text cells (labels, ids) as the csv module writes them: quoted only where they must be. One
    scan of the whole column decides; addresses, ports and names never need it."""
    joined = "".join(texts)
    if not any(c in joined for c in ',"\r\n'):
        return texts
    return ['"' + t.replace('"', '""') + '"' if any(c in t for c in ',"\r\n') else t for t in texts]


def _column_text(table: FeatureTable, name: str) -> list[str]:
    """One feature column as text: names for categoricals, integers, rates to 6 significant digits."""
    values = table.features[name]
    if name in CATEGORICAL_VOCABULARIES:
        names = np.array(CATEGORICAL_VOCABULARIES[name] + ("unknown",), dtype=object)  # code -1: the last
        return names[values].tolist()
    if name in INTEGER_FEATURES:
        return _formatted(values.astype(np.int64), str)
    return _formatted(values, _fixed if name == "duration" else _rate)


def _feature_columns(table: FeatureTable) -> list[list[str]]:
    return [_column_text(table, name) for name in FEATURE_NAMES]


def _id_columns(table: FeatureTable) -> list[str]:
    return list(table.ids[0]) if table.ids else []


def _id_column(table: FeatureTable, key: str) -> list[str]:
    """One id column as text: times to 6 decimals, the rest as is; empty where a row lacks it."""
    if not table.ids:
        return [""] * len(table)
    try:
        values = [i[key] for i in table.ids]
    except KeyError:
        values = [i.get(key, "") for i in table.ids]
    return _quoted(list(map(_fixed if isinstance(values[0], float) else str, values)))


def _label_column(table: FeatureTable) -> list[str]:
    return _quoted([str(v) for v in table.labels])


def _write_rows(fh: IO[str], cols: list[list[str]]) -> None:
    if cols and cols[0]:
        fh.write("\n".join(map(",".join, zip(*cols))) + "\n")


def write_kdd(table: FeatureTable, fh: IO[str]) -> None:
    cols = _feature_columns(table)
    n = len(table)
    for key in ("orig_h", "orig_p", "resp_h", "resp_p"):
        cols.append(_id_column(table, key))
    if table.ids and all("ts" in i for i in table.ids):
        ends = np.array([i["ts"] for i in table.ids], dtype=np.float64) + table.features["duration"]
        cols.append(list(map(_fixed, ends.tolist())))  # nearly all distinct: a sort would not pay
    else:
        cols.append([_fixed(float(i["ts"]) + float(d)) if "ts" in i else ""
                     for i, d in zip(table.ids, table.features["duration"].tolist())] if table.ids else [""] * n)
    if table.labels is not None:
        cols.append(_label_column(table))
    _write_rows(fh, cols)


def _csv_header(table: FeatureTable) -> tuple[list[str], bool]:
    """The id columns and whether there is a label column, as the first rows show them."""
    return _id_columns(table), table.labels is not None


def write_csv(table: FeatureTable, fh: IO[str], header: tuple[list[str], bool] | None = None) -> None:
    """Rows with a header line; with ``header`` (from an earlier chunk) the rows only, in its columns."""
    id_names, labelled = header or _csv_header(table)
    if header is None:
        fh.write(",".join(id_names + list(FEATURE_NAMES) + (["label"] if labelled else [])) + "\n")
    cols = [_id_column(table, k) for k in id_names]
    cols += _feature_columns(table)
    if labelled:
        cols.append(_label_column(table) if table.labels is not None else [""] * len(table))
    _write_rows(fh, cols)


def write_jsonl(table: FeatureTable, fh: IO[str]) -> None:
    feats = table.features
    names = list(FEATURE_NAMES)
    cat = {n: CATEGORICAL_VOCABULARIES[n] for n in names if n in CATEGORICAL_VOCABULARIES}
    for k, row in enumerate(feats.tolist()):
        obj: dict[str, object] = dict(table.ids[k]) if table.ids else {}
        for name, value in zip(names, row):
            if name in cat:
                obj[name] = cat[name][value] if value >= 0 else "unknown"
            elif name in INTEGER_FEATURES:
                obj[name] = int(value)
            else:
                obj[name] = value
        if table.labels is not None:
            obj["label"] = str(table.labels[k])
        fh.write(json.dumps(obj, separators=(",", ":")) + "\n")


class Writer:
    """Writes chunks of rows (and their records) in one format as they come; ``close`` at the end.

    kdd, csv and jsonl stream: each chunk is written at once (csv takes its header from the first chunk).
    zeek and zeek-json keep the records until ``close``: a conn.log header names every column up front,
    and the extra input columns (``label`` ...) are only known once every record was read.
    """

    def __init__(self, fmt: str, fh: IO[str]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt, self.fh = fmt, fh
        self._csv_header: tuple[list[str], bool] | None = None
        self._records: list[ConnectionRecord] = []
        self._features: list[np.ndarray] = []

    def write(self, table: FeatureTable, records: list[ConnectionRecord] | None) -> None:
        if self.fmt in RECORD_FORMATS:
            if records is None:
                raise ValueError(f"--format {self.fmt} needs connection records (pcap or conn.log input)")
            self._records.extend(records)
            self._features.append(table.features)
        elif self.fmt == "csv":
            write_csv(table, self.fh, self._csv_header)
            self._csv_header = self._csv_header or _csv_header(table)
        else:
            (write_kdd if self.fmt == "kdd" else write_jsonl)(table, self.fh)

    def close(self) -> None:
        if self.fmt in RECORD_FORMATS:
            writer = write_conn_log if self.fmt == "zeek" else write_conn_json
            features = np.concatenate(self._features) if self._features else np.zeros(0, FEATURE_DTYPE)
            writer(self._records, self.fh, features)
        elif self.fmt == "csv" and self._csv_header is None:
            write_csv(FeatureTable(np.zeros(0, FEATURE_DTYPE)), self.fh)  # no rows: the header alone


def write(fmt: str, table: FeatureTable, records: list[ConnectionRecord] | None, fh: IO[str]) -> None:
    """Write ``table`` (and, for the conn.log formats, its aligned ``records``) in format ``fmt``."""
    writer = Writer(fmt, fh)
    writer.write(table, records)
    writer.close()


@contextlib.contextmanager
def open_output(target: str) -> Iterator[IO[str]]:
    """Text stream for ``target``: stdout for ``-``; a device or pipe (``/dev/null``) written in place; a
    regular file written to a temporary file beside it and renamed over it only when complete, so a
    failed run never leaves half a file where the previous output was."""
    if target == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    path = Path(target)
    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8") as fh:
            yield fh
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
