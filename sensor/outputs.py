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
import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from features.records import ConnectionRecord
from features.schema import CATEGORICAL_VOCABULARIES, FEATURE_NAMES
from features.table import FeatureTable
from features.zeeklog import write_conn_json, write_conn_log

FORMATS: tuple[str, ...] = ("kdd", "zeek", "zeek-json", "csv", "jsonl")
RECORD_FORMATS = frozenset({"zeek", "zeek-json"})
KDD_EXTRA_COLUMNS: tuple[str, ...] = ("src_ip", "src_port", "dst_ip", "dst_port", "conn_end_time")

# Features that are whole numbers by definition: written without a decimal point.
INTEGER_FEATURES = frozenset({"src_bytes", "dst_bytes", "land", "wrong_fragment", "urgent", "count",
                              "srv_count", "dst_host_count", "dst_host_srv_count"})


def _fixed(x: float) -> str:
    """Shortest fixed-point text with at most 6 decimals (durations, timestamps)."""
    text = "%.6f" % x
    return text.rstrip("0").rstrip(".") if "." in text else text


def _column_text(table: FeatureTable, name: str) -> list[str]:
    """One feature column as text: names for categoricals, integers, rates to 6 significant digits."""
    values = table.features[name]
    if name in CATEGORICAL_VOCABULARIES:
        vocab = CATEGORICAL_VOCABULARIES[name]
        return [vocab[c] if c >= 0 else "unknown" for c in values.tolist()]
    if name in INTEGER_FEATURES:
        return [str(v) for v in values.astype(np.int64).tolist()]
    if name == "duration":
        return [_fixed(v) for v in values.tolist()]
    return ["%.6g" % v for v in values.tolist()]


def _feature_columns(table: FeatureTable) -> list[list[str]]:
    return [_column_text(table, name) for name in FEATURE_NAMES]


def _id_columns(table: FeatureTable) -> list[str]:
    return list(table.ids[0]) if table.ids else []


def _cell(value: object) -> str:
    return _fixed(value) if isinstance(value, float) else str(value)


def _write_rows(fh: IO[str], cols: list[list[str]]) -> None:
    csv.writer(fh, lineterminator="\n").writerows(zip(*cols))


def write_kdd(table: FeatureTable, fh: IO[str]) -> None:
    cols = _feature_columns(table)
    ends = table.features["duration"]
    extra: list[list[str]] = []
    for key in ("orig_h", "orig_p", "resp_h", "resp_p"):
        extra.append([str(i.get(key, "")) for i in table.ids] if table.ids else [""] * len(table))
    extra.append([_fixed(float(i["ts"]) + float(d)) if "ts" in i else ""
                  for i, d in zip(table.ids, ends.tolist())] if table.ids else [""] * len(table))
    cols += extra
    if table.labels is not None:
        cols.append([str(v) for v in table.labels])
    _write_rows(fh, cols)


def write_csv(table: FeatureTable, fh: IO[str]) -> None:
    id_names = _id_columns(table)
    header = id_names + list(FEATURE_NAMES) + (["label"] if table.labels is not None else [])
    fh.write(",".join(header) + "\n")
    cols = [[_cell(i[k]) for i in table.ids] for k in id_names] + _feature_columns(table)
    if table.labels is not None:
        cols.append([str(v) for v in table.labels])
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


_TABLE_WRITERS: dict[str, Callable[[FeatureTable, IO[str]], None]] = {
    "kdd": write_kdd, "csv": write_csv, "jsonl": write_jsonl,
}


def write(fmt: str, table: FeatureTable, records: list[ConnectionRecord] | None, fh: IO[str]) -> None:
    """Write ``table`` (and, for the conn.log formats, its aligned ``records``) in format ``fmt``."""
    if fmt in RECORD_FORMATS:
        if records is None:
            raise ValueError(f"--format {fmt} needs connection records (pcap or conn.log input)")
        writer = write_conn_log if fmt == "zeek" else write_conn_json
        writer(records, fh, table.features)
    else:
        _TABLE_WRITERS[fmt](table, fh)


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
