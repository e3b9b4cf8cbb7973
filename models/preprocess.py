"""Feature preprocessing: schema rows -> the model's float32 input matrix. Pure numpy (the daemon uses it).

Why these steps:
- ``log1p`` on counts, byte and duration fields: they span 0 .. 10^9 and a network's normal traffic is
  heavy-tailed; without it a single bulk transfer dominates the reconstruction loss.
- Scaling fitted on the training rows only. ``standard`` (mean / standard deviation, the default) or
  ``robust`` (median / inter-quartile range, falling back to the standard deviation where the IQR is 0, as
  it is for most rate features of normal traffic). Measured on NSL-KDD (docs/model.md) standard scaling
  detects better: a feature that is almost always 0 in normal traffic gets a small standard deviation, so
  the rare non-zero value an attack produces stands out strongly, which is exactly the signal wanted.
- Clipping of the scaled values to +-``clip``: beyond some distance a value is no more anomalous, and an
  unbounded input would let one feature swamp the score and the training loss.
- One-hot of protocol/service/flag over the schema's fixed vocabulary plus an explicit ``unknown`` bucket,
  so a live service name the datasets never saw still has a column and does not shift the others.

``columns`` (the width of the matrix) and ``groups`` (the schema feature each column belongs to) let the
explanation code fold per-column reconstruction errors back into the 28 schema features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided

from features.schema import CATEGORICAL_VOCABULARIES, FEATURE_DTYPE, FEATURE_NAMES, NUMERIC_FEATURES

# Unbounded, heavy-tailed fields; the rate features live in [0, 1] and are left linear.
LOG_FEATURES: tuple[str, ...] = (
    "duration", "src_bytes", "dst_bytes", "wrong_fragment", "urgent", "count", "srv_count",
    "dst_host_count", "dst_host_srv_count",
)
SCALINGS = ("standard", "robust")


class PreprocessError(ValueError):
    """Input the preprocessor refuses (wrong dtype, NaN/inf values, no rows to fit on)."""


NUMERIC_WIDTH = len(NUMERIC_FEATURES)
CATEGORY_SIZES: tuple[int, ...] = tuple(len(v) + 1 for v in CATEGORICAL_VOCABULARIES.values())  # + unknown
_LOG_COLUMNS = np.array([i for i, n in enumerate(NUMERIC_FEATURES) if n in LOG_FEATURES])


def _numeric_runs() -> list[tuple[int, str, int]]:
    """(first column, first field, length) of each run of numeric features stored back to back as float64.

    Why: FEATURE_DTYPE is a packed record; a run of adjacent float64 fields is one strided 2-D view, so the
    numeric block is copied with two operations instead of one per feature (which dominates at batch 1).
    """
    runs: list[tuple[int, str, int]] = []
    end = None
    for col, name in enumerate(NUMERIC_FEATURES):
        dtype, offset = FEATURE_DTYPE.fields[name][:2]
        if dtype != np.float64:
            raise TypeError(f"numeric feature {name} is not float64 in FEATURE_DTYPE")
        if runs and offset == end:
            first, field_name, n = runs[-1]
            runs[-1] = (first, field_name, n + 1)
        else:
            runs.append((col, name, 1))
        end = offset + 8
    return runs


_NUMERIC_RUNS = _numeric_runs()


@dataclass
class EncodedRows:
    """Rows in the model's input space, with the one-hot block kept as codes.

    Why: 91 of the 116 input columns are one-hot; building them costs memory traffic and multiplying them
    by the first layer's kernel is a row lookup. The scorer works on this form; ``dense`` builds the
    full matrix for Keras and the IsolationForest.
    """

    numeric: np.ndarray  # (rows, NUMERIC_WIDTH) float32: log1p, scaled, clipped
    codes: np.ndarray  # (rows, len(CATEGORY_SIZES)) intp: vocabulary code per categorical, unknown = last

    def __len__(self) -> int:
        return len(self.numeric)

    def dense(self) -> np.ndarray:
        """The (rows, width) float32 model input: numeric columns, then one one-hot block per categorical."""
        offsets = NUMERIC_WIDTH + np.concatenate([[0], np.cumsum(CATEGORY_SIZES)[:-1]])
        x = np.zeros((len(self), NUMERIC_WIDTH + sum(CATEGORY_SIZES)), np.float32)
        x[:, :NUMERIC_WIDTH] = self.numeric
        x[np.arange(len(self))[:, None], offsets + self.codes] = 1.0
        return x

    @classmethod
    def empty(cls, rows: int) -> "EncodedRows":
        return cls(np.empty((rows, NUMERIC_WIDTH), np.float32), np.empty((rows, len(CATEGORY_SIZES)), np.intp))


def _check_dtype(features: np.ndarray) -> None:
    if features.dtype != FEATURE_DTYPE:
        raise PreprocessError("features must have the schema's FEATURE_DTYPE")


def _numeric_matrix(features: np.ndarray) -> np.ndarray:
    """Float64 numeric block with log1p applied: the statistics ``fit`` computes are taken on it."""
    _check_dtype(features)
    x = np.stack([features[n].astype(np.float64) for n in NUMERIC_FEATURES], axis=1) if len(features) else (
        np.zeros((0, NUMERIC_WIDTH)))
    _refuse_non_finite(x)
    x[:, _LOG_COLUMNS] = np.log1p(np.maximum(x[:, _LOG_COLUMNS], 0.0))
    return x


def _refuse_non_finite(x: np.ndarray, first_row: int = 0) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise PreprocessError(f"{len(np.unique(rows))} rows have NaN/inf values "
                              f"(first: row {first_row + rows[0]}, "
                              f"feature {NUMERIC_FEATURES[cols[0]]})")


@dataclass
class Preprocessor:
    """Fitted parameters; ``transform`` is deterministic and needs nothing but numpy."""

    center: np.ndarray  # per numeric feature, after log1p
    scale: np.ndarray
    clip: float
    scaling: str = "standard"
    columns: list[str] = field(default_factory=list)  # one name per model input column
    groups: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # column -> FEATURE_NAMES index

    @classmethod
    def fit(cls, features: np.ndarray, clip: float = 1000.0, scaling: str = "standard") -> "Preprocessor":
        if scaling not in SCALINGS:
            raise PreprocessError(f"scaling {scaling!r} is not one of {', '.join(SCALINGS)}")
        x = _numeric_matrix(features)
        if len(x) == 0:
            raise PreprocessError("no rows to fit the preprocessing on")
        std = x.std(axis=0)
        if scaling == "standard":
            center, scale = x.mean(axis=0), std
        else:
            center = np.median(x, axis=0)
            q25, q75 = np.percentile(x, [25, 75], axis=0)
            scale = np.where(q75 - q25 > 1e-9, q75 - q25, std)
        scale = np.where(scale > 1e-9, scale, 1.0)  # a constant column: centred to 0, left unscaled
        columns, groups = input_layout()
        return cls(center, scale, float(clip), scaling, columns, groups)

    @property
    def width(self) -> int:
        return len(self.columns)

    def __post_init__(self) -> None:
        self._center32 = self.center.astype(np.float32)
        self._inv_scale32 = (1.0 / self.scale).astype(np.float32)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Schema rows -> float32 matrix (rows x ``width``). Raises PreprocessError on NaN/inf."""
        return self.encode(features).dense()

    def encode(self, features: np.ndarray, out: EncodedRows | None = None, first_row: int = 0) -> EncodedRows:
        """Schema rows -> EncodedRows (into ``out``'s buffers if given, e.g. a scorer's reused workspace).

        One float32 pass per step over the numeric block (the daemon's hot path; training uses the same
        function, so both see identical numbers). Raises PreprocessError on NaN/inf.
        """
        _check_dtype(features)
        n = len(features)
        enc = EncodedRows.empty(n) if out is None else EncodedRows(out.numeric[:n], out.codes[:n])
        x = enc.numeric
        with np.errstate(over="ignore"):  # a float64 beyond float32 range becomes inf and is refused below
            for col, name, width in _NUMERIC_RUNS:
                run = as_strided(features[name], (n, width), (features.strides[0], 8), writeable=False)
                np.copyto(x[:, col:col + width], run, casting="same_kind")
        if not np.isfinite(x).all():
            _refuse_non_finite(x, first_row)  # first_row: where ``features`` starts in the caller's input
        logged = x[:, _LOG_COLUMNS]
        np.maximum(logged, 0.0, out=logged)
        x[:, _LOG_COLUMNS] = np.log1p(logged, out=logged)
        x -= self._center32
        x *= self._inv_scale32
        np.minimum(x, self.clip, out=x)
        np.maximum(x, -self.clip, out=x)
        for g, (name, size) in enumerate(zip(CATEGORICAL_VOCABULARIES, CATEGORY_SIZES)):
            # int16 codes seen as uint16: negative (unknown) codes become huge, so one minimum maps every
            # code outside the vocabulary to the unknown bucket (the last one)
            np.minimum(features[name].view(np.uint16), size - 1, out=enc.codes[:, g])
        return enc

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale.tolist(), "clip": self.clip,
                "scaling": self.scaling,
                "log_features": list(LOG_FEATURES), "columns": self.columns}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        if list(d.get("log_features", [])) != list(LOG_FEATURES):
            raise PreprocessError("preprocessing was saved with a different set of log-scaled features")
        columns, groups = input_layout()
        if list(d["columns"]) != columns:
            raise PreprocessError("preprocessing was saved with a different column layout")
        return cls(np.asarray(d["center"], np.float64), np.asarray(d["scale"], np.float64), float(d["clip"]),
                   str(d["scaling"]), columns, groups)


def input_layout() -> tuple[list[str], np.ndarray]:
    """Input column names and, for each, the index of the schema feature it encodes."""
    columns = list(NUMERIC_FEATURES)
    groups = [FEATURE_NAMES.index(n) for n in NUMERIC_FEATURES]
    for name, vocab in CATEGORICAL_VOCABULARIES.items():
        columns += [f"{name}={v}" for v in vocab] + [f"{name}=unknown"]
        groups += [FEATURE_NAMES.index(name)] * (len(vocab) + 1)
    return columns, np.asarray(groups, np.int64)
