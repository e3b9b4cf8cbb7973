"""Loaders for the NSL-KDD and KDD Cup 1999 dataset files, mapped into the 28-feature schema.

Why here and not in the model: a dataset file is just another producer of ``FEATURE_DTYPE`` rows, like the
pcap path or the Zeek conn.log reader, so the model never needs to know where its rows came from.

Both formats are headerless CSV: the 41 KDD'99 features, the label, and (NSL-KDD only) a difficulty level.
KDD'99 labels end in ``.`` (``normal.``); the loader strips it. The 13 content features are dropped (the
sensor cannot compute them from headers), categoricals become vocabulary codes, and each row gets its
attack category from ``ATTACK_CATEGORIES``. A damaged line is counted, logged once per reason and skipped:
one bad line must not cost the whole file, nor be lost silently.
"""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import structlog

from features.schema import (
    CATEGORICAL_VOCABULARIES,
    FEATURE_DTYPE,
    KDD41_COLUMNS,
    NUMERIC_FEATURES,
    encode_categories,
)
from features.table import FeatureTable

_log = structlog.get_logger("features.datasets")

# Standard attack -> category mapping of KDD'99 plus the attacks that appear only in NSL-KDD's KDDTest+
# (taken from the DARPA 1999 attack list the test set was built from).
_CATEGORY_MEMBERS: dict[str, tuple[str, ...]] = {
    "normal": ("normal",),
    "dos": ("back", "land", "neptune", "pod", "smurf", "teardrop",
            "apache2", "mailbomb", "processtable", "udpstorm", "worm"),
    "probe": ("ipsweep", "nmap", "portsweep", "satan", "mscan", "saint"),
    "r2l": ("ftp_write", "guess_passwd", "imap", "multihop", "phf", "spy", "warezclient", "warezmaster",
            "httptunnel", "named", "sendmail", "snmpgetattack", "snmpguess", "xlock", "xsnoop"),
    "u2r": ("buffer_overflow", "loadmodule", "perl", "rootkit", "ps", "sqlattack", "xterm"),
}
ATTACK_CATEGORIES: dict[str, str] = {label: cat for cat, labels in _CATEGORY_MEMBERS.items() for label in labels}
UNKNOWN_CATEGORY = "unknown"

_COL = {name: i for i, name in enumerate(KDD41_COLUMNS)}
_NUMERIC_IDX = [_COL[n] for n in NUMERIC_FEATURES]
_LABEL_IDX = len(KDD41_COLUMNS)  # 41
_VALID_WIDTHS = (len(KDD41_COLUMNS) + 1, len(KDD41_COLUMNS) + 2)  # KDD'99: + label; NSL-KDD: + difficulty


class DatasetError(ValueError):
    """A dataset file that cannot be read at all (missing, unreadable, nothing valid in it)."""


def attack_category(label: str) -> str:
    """Category of a normalised label: normal, dos, probe, r2l, u2r, or ``unknown`` for an unlisted name."""
    return ATTACK_CATEGORIES.get(label, UNKNOWN_CATEGORY)


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="ascii", errors="replace", newline="")
    return path.open("r", encoding="ascii", errors="replace", newline="")


class _Skips:
    """Counts skipped lines per reason; logs the first line of each reason (features must not import sensor)."""

    def __init__(self, source: str) -> None:
        self.counts: Counter[str] = Counter()
        self.source = source

    def add(self, reason: str, line: int) -> None:
        if reason not in self.counts:
            _log.warning("skipping dataset line", reason=reason, file=self.source, line=line)
        self.counts[reason] += 1


def _row_problem(fields: list[str]) -> str | None:
    """Why a well-sized row is unusable, or None. Only called on the slow path (a file with bad values)."""
    try:
        values = [float(fields[i]) for i in _NUMERIC_IDX]
    except ValueError:
        return "non-numeric feature value"
    if not all(np.isfinite(values)):
        return "non-finite feature value"
    if min(values) < 0:
        return "negative feature value"
    return None


def load_kdd_file(path: str | Path) -> FeatureTable:
    """Read an NSL-KDD (``.txt``/``.csv``) or KDD'99 (optionally ``.gz``) file into a labelled FeatureTable.

    ``ids`` carry the file name and 1-based line number so a score can be traced back to its line.
    Raises ``DatasetError`` if the file cannot be read or holds no valid row.
    """
    path = Path(path)
    skips = _Skips(path.name)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                fields = line.split(",")
                if len(fields) not in _VALID_WIDTHS:
                    skips.add(f"{len(fields)} columns instead of 42 or 43", lineno)
                    continue
                rows.append(fields)
                lines.append(lineno)
    except (OSError, EOFError, UnicodeError) as exc:
        raise DatasetError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None

    numeric = _parse_numeric(rows, lines, skips)
    if not rows:
        raise DatasetError(f"{path}: no valid NSL-KDD/KDD'99 rows"
                           + (f" ({sum(skips.counts.values())} bad lines)" if skips.counts else ""))

    features = np.zeros(len(rows), FEATURE_DTYPE)
    for j, name in enumerate(NUMERIC_FEATURES):
        features[name] = numeric[:, j]
    for name in CATEGORICAL_VOCABULARIES:
        features[name] = encode_categories(name, (r[_COL[name]] for r in rows))
    labels = np.array([r[_LABEL_IDX].strip().rstrip(".") for r in rows], dtype=object)
    categories = np.array([attack_category(lab) for lab in labels], dtype=object)
    unknown = sorted({lab for lab, cat in zip(labels, categories) if cat == UNKNOWN_CATEGORY})
    if unknown:
        _log.warning("labels without a known attack category", file=path.name, labels=unknown[:10])
    if skips.counts:
        _log.warning("dataset lines skipped", file=path.name, total=sum(skips.counts.values()),
                     reasons=dict(skips.counts))
    ids = [{"file": path.name, "line": n} for n in lines]
    return FeatureTable(features, ids, labels, categories, str(path))


def _parse_numeric(rows: list[list[str]], lines: list[int], skips: _Skips) -> np.ndarray:
    """Numeric columns as float64; drops (in place, from rows and lines) the rows whose values are bad.

    Fast path: one bulk conversion for the whole file. Only if that fails or finds a bad value does it fall
    back to checking row by row, so clean files pay nothing for the validation.
    """
    if not rows:
        return np.zeros((0, len(NUMERIC_FEATURES)))
    text = [[r[i] for i in _NUMERIC_IDX] for r in rows]
    try:
        values = np.array(text, dtype=np.float64)
        if np.isfinite(values).all() and (values >= 0).all():
            return values
    except ValueError:
        pass
    keep = []
    for k, fields in enumerate(rows):
        problem = _row_problem(fields)
        if problem is None:
            keep.append(k)
        else:
            skips.add(problem, lines[k])
    rows[:] = [rows[k] for k in keep]
    lines[:] = [lines[k] for k in keep]
    return np.array([text[k] for k in keep], dtype=np.float64).reshape(len(keep), len(NUMERIC_FEATURES))

