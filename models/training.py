"""Training orchestration: normal rows -> preprocessing -> autoencoder -> calibration -> scorer (+ baseline).

Why the order: the validation split of normal rows is drawn first and touched by nothing that is fitted
(preprocessing statistics, network weights, the IsolationForest), so the column weights and the threshold
calibrated on it see errors like those of unseen normal traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.autoencoder import AEParams, TrainedAE, export_layers, train
from models.calibrate import column_weights, threshold_at_fpr
from models.iforest import IsolationForestScorer
from models.preprocess import EncodedRows, Preprocessor
from models.scorer import AutoencoderScorer, NumpyAutoencoder

MIN_TRAINING_ROWS = 10


class TrainingError(ValueError):
    """Training cannot start: no (or too few) normal rows, bad values in them."""


@dataclass(frozen=True)
class TrainingSettings:
    ae: AEParams = field(default_factory=AEParams)
    validation_fraction: float = 0.2
    target_fpr: float = 0.01
    clip: float = 1000.0
    scaling: str = "standard"
    with_baseline: bool = True

    @classmethod
    def from_mapping(cls, section: dict, with_baseline: bool = True) -> "TrainingSettings":
        """From the ``model.*`` config section (as ``cfg.section("model")`` returns it)."""
        return cls(AEParams.from_mapping(section), section["validation_fraction"], section["target_fpr"],
                   section["clip"], section["scaling"], with_baseline)


@dataclass
class TrainResult:
    scorer: AutoencoderScorer
    trained: TrainedAE
    baseline: IsolationForestScorer | None
    rows_fit: int
    rows_val: int
    seconds: float
    metrics: dict[str, float]


def normal_rows(features: np.ndarray, labels: np.ndarray | None, normal_labels: list[str]) -> np.ndarray:
    """The rows the model learns from: those labelled normal, or every row of unlabelled input."""
    if labels is None:
        return features
    return features[np.isin(labels.astype(str), list(normal_labels))]


def split(rows: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) rows: a seeded random split, so a rerun sees the same validation rows."""
    order = np.random.default_rng(seed).permutation(len(rows))
    n_val = max(1, int(round(fraction * len(rows))))
    return rows[order[n_val:]], rows[order[:n_val]]


def train_model(rows: np.ndarray, settings: TrainingSettings,
                on_epoch: Callable[[int, dict], None] | None = None) -> TrainResult:
    """Train, calibrate and return the numpy scorer (plus the IsolationForest baseline on the same split)."""
    if len(rows) < MIN_TRAINING_ROWS:
        raise TrainingError(f"only {len(rows)} normal rows to train on (need at least {MIN_TRAINING_ROWS})")
    start = time.monotonic()
    fit_rows, val_rows = split(rows, settings.validation_fraction, settings.ae.seed)
    pre = Preprocessor.fit(fit_rows, clip=settings.clip, scaling=settings.scaling)
    val = pre.encode(val_rows)
    trained = train(pre.transform(fit_rows), val.dense(), settings.ae, on_epoch)
    scorer = calibrated_scorer(pre, trained, val, settings.target_fpr)
    baseline = (IsolationForestScorer.fit(pre, fit_rows, val_rows, settings.target_fpr, settings.ae.seed)
                if settings.with_baseline else None)
    val_scores = scorer.score(val_rows).score
    metrics = {
        "epochs": len(trained.history.get("loss", [])),
        "train_loss": min(trained.history.get("loss", [np.nan])),
        "val_loss": min(trained.history.get("val_loss", [np.nan])),
        "threshold": scorer.threshold,
        "val_fpr": float(np.mean(val_scores > scorer.threshold)),
    }
    return TrainResult(scorer, trained, baseline, len(fit_rows), len(val_rows), time.monotonic() - start,
                       metrics)


def calibrated_scorer(pre: Preprocessor, trained: TrainedAE, val: EncodedRows,
                      target_fpr: float) -> AutoencoderScorer:
    """Column weights and member scales from validation errors, then the threshold at ``target_fpr``."""
    members = export_layers(trained)
    plain = NumpyAutoencoder(members, trained.params.activation, np.ones((len(members), pre.width)),
                             np.ones(len(members)))
    errors = (plain.reconstruct(val) - val.dense()[None]) ** 2
    weights = np.stack([column_weights(e) for e in errors])
    scales = np.array([np.median(e @ w) for e, w in zip(errors, weights)])
    network = NumpyAutoencoder(members, trained.params.activation, weights, np.maximum(scales, 1e-12))
    val_scores, _ = network.errors(val, explain=False)
    return AutoencoderScorer(pre, network, threshold_at_fpr(val_scores, target_fpr))
