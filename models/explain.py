"""Explanations: which schema features drive an anomaly score.

The scorer's per-feature contributions sum to the score (see ``models.scorer``), so the top-k of them are
the features whose reconstruction error made the row anomalous, e.g. ``serror_rate`` and ``flag`` for a
SYN flood. Rendered as ``name:share`` (share of the row's score) so an analyst sees how dominant each is.
"""

from __future__ import annotations

import numpy as np

from features.schema import FEATURE_NAMES


def top_features(contributions: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
    """Per row the ``k`` largest contributions as (feature name, share of the row's score), largest first."""
    k = max(0, min(k, contributions.shape[1]))
    if k == 0 or len(contributions) == 0:
        return [[] for _ in range(len(contributions))]
    idx = np.argpartition(-contributions, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(contributions, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    totals = contributions.sum(axis=1, keepdims=True)
    shares = np.divide(vals, totals, out=np.zeros_like(vals), where=totals > 0)
    return [[(FEATURE_NAMES[i], float(s)) for i, s in zip(ri, rs)] for ri, rs in zip(idx, shares)]


def format_top(items: list[tuple[str, float]]) -> str:
    """``src_bytes:0.62;flag:0.20`` - one cell of the score output."""
    return ";".join(f"{name}:{share:.2f}" for name, share in items)
