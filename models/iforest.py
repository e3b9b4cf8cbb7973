"""IsolationForest baseline behind the autoencoder's scoring interface, for side-by-side evaluation.

Why a baseline: an autoencoder's ROC-AUC means little alone; an IsolationForest fitted on the same
preprocessed normal rows and calibrated on the same held-out rows shows what the network adds. It is
scikit-learn, so only training and ``evaluate`` use it, never the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.calibrate import threshold_at_fpr
from models.preprocess import Preprocessor
from models.scorer import Scores


@dataclass
class IsolationForestScorer:
    preprocessor: Preprocessor
    forest: object  # sklearn.ensemble.IsolationForest
    threshold: float

    @classmethod
    def fit(cls, preprocessor: Preprocessor, fit_rows: np.ndarray, val_rows: np.ndarray, target_fpr: float,
            seed: int) -> "IsolationForestScorer":
        from sklearn.ensemble import IsolationForest

        forest = IsolationForest(n_estimators=200, max_samples=min(1024, len(fit_rows)), random_state=seed,
                                 n_jobs=1)
        forest.fit(preprocessor.transform(fit_rows))
        scorer = cls(preprocessor, forest, 1.0)
        scorer.threshold = threshold_at_fpr(scorer._raw(val_rows), target_fpr)
        return scorer

    def _raw(self, features: np.ndarray) -> np.ndarray:
        # score_samples is higher for normal rows and negative; shift so that higher = more anomalous, > 0.
        return 1.0 - self.forest.score_samples(self.preprocessor.transform(features))

    def score(self, features: np.ndarray, explain: bool = False) -> Scores:
        s = self._raw(features)
        return Scores(s, s / self.threshold, None)
