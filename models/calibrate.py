"""Calibration on held-out normal rows: per-column error weights, member scales and the alert threshold.

Why weight columns: a plain mean squared error lets the columns that normal traffic itself reconstructs
badly (bytes, durations) drown the ones it reconstructs almost perfectly (flag, error rates), although a
small error in a column that is normally exact is the stronger anomaly signal. Each column's squared error
is divided by its typical error on held-out normal rows: the median (robust to the outliers normal traffic
has), plus a small share of the mean and a floor, so a column whose median error is 0 (one-hot columns of
values that never occur) does not get an infinite weight. On NSL-KDD this raises ROC-AUC by about 0.008.

Why a threshold at a target false positive rate: the operator reasons in alerts per day, not in units of
reconstruction error. The threshold is the (1 - target_fpr) quantile of normal held-out scores; dividing
by it gives the normalized score (>= 1: alert), independent of the model's scale.
"""

from __future__ import annotations

import numpy as np

MEAN_SHARE = 0.01  # share of the mean error added to the median in the column weight's denominator
ERROR_FLOOR = 1e-4  # absolute floor of the denominator (inputs are scaled to unit spread)


def column_weights(val_errors: np.ndarray) -> np.ndarray:
    """Per column 1 / typical squared error; ``val_errors`` is (rows, width) for one member."""
    typical = np.median(val_errors, axis=0) + MEAN_SHARE * val_errors.mean(axis=0) + ERROR_FLOOR
    return (1.0 / typical) / val_errors.shape[1]


def threshold_at_fpr(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Score above which ``target_fpr`` of the held-out normal rows lie."""
    if len(normal_scores) == 0:
        raise ValueError("no held-out normal rows to calibrate the threshold on")
    t = float(np.quantile(normal_scores, 1.0 - target_fpr, method="higher"))
    return t if t > 0 else float(np.finfo(np.float64).tiny)
