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

from features.schema import CATEGORICAL_VOCABULARIES, FEATURE_DTYPE, FEATURE_NAMES, NUMERIC_FEATURES

# Unbounded, heavy-tailed fields; the rate features live in [0, 1] and are left linear.
LOG_FEATURES: tuple[str, ...] = (
    "duration", "src_bytes", "dst_bytes", "wrong_fragment", "urgent", "count", "srv_count",
    "dst_host_count", "dst_host_srv_count",
)
SCALINGS = ("standard", "robust")


class PreprocessError(ValueError):
    """Input the preprocessor refuses (wrong dtype, NaN/inf values, no rows to fit on)."""


def _numeric_matrix(features: np.ndarray) -> np.ndarray:
    if features.dtype != FEATURE_DTYPE:
        raise PreprocessError("features must have the schema's FEATURE_DTYPE")
    x = np.stack([features[n].astype(np.float64) for n in NUMERIC_FEATURES], axis=1) if len(features) else (
        np.zeros((0, len(NUMERIC_FEATURES))))
    bad = ~np.isfinite(x)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise PreprocessError(f"{len(np.unique(rows))} rows have NaN/inf values (first: row {rows[0]}, "
                              f"feature {NUMERIC_FEATURES[cols[0]]})")
    log_cols = [i for i, n in enumerate(NUMERIC_FEATURES) if n in LOG_FEATURES]
    x[:, log_cols] = np.log1p(np.maximum(x[:, log_cols], 0.0))
    return x


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
        columns, groups = _layout()
        return cls(center, scale, float(clip), scaling, columns, groups)

    @property
    def width(self) -> int:
        return len(self.columns)

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Schema rows -> float32 matrix (rows x ``width``). Raises PreprocessError on NaN/inf."""
        x = (_numeric_matrix(features) - self.center) / self.scale
        np.clip(x, -self.clip, self.clip, out=x)
        parts = [x]
        for name, vocab in CATEGORICAL_VOCABULARIES.items():
            codes = features[name].astype(np.int64)
            codes = np.where((codes >= 0) & (codes < len(vocab)), codes, len(vocab))  # unknown bucket last
            onehot = np.zeros((len(features), len(vocab) + 1))
            onehot[np.arange(len(features)), codes] = 1.0
            parts.append(onehot)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def to_dict(self) -> dict:
        return {"center": self.center.tolist(), "scale": self.scale.tolist(), "clip": self.clip,
                "scaling": self.scaling,
                "log_features": list(LOG_FEATURES), "columns": self.columns}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessor":
        if list(d.get("log_features", [])) != list(LOG_FEATURES):
            raise PreprocessError("preprocessing was saved with a different set of log-scaled features")
        columns, groups = _layout()
        if list(d["columns"]) != columns:
            raise PreprocessError("preprocessing was saved with a different column layout")
        return cls(np.asarray(d["center"], np.float64), np.asarray(d["scale"], np.float64), float(d["clip"]),
                   str(d["scaling"]), columns, groups)


def _layout() -> tuple[list[str], np.ndarray]:
    """Input column names and, for each, the index of the schema feature it encodes."""
    columns = list(NUMERIC_FEATURES)
    groups = [FEATURE_NAMES.index(n) for n in NUMERIC_FEATURES]
    for name, vocab in CATEGORICAL_VOCABULARIES.items():
        columns += [f"{name}={v}" for v in vocab] + [f"{name}=unknown"]
        groups += [FEATURE_NAMES.index(name)] * (len(vocab) + 1)
    return columns, np.asarray(groups, np.int64)
