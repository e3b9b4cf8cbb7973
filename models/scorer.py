"""The daemon's scorer: the autoencoder's forward pass in numpy, from exported weights. No TensorFlow.

Why: importing TensorFlow costs seconds and hundreds of MB, and Keras' ``predict`` has a per-call overhead
of milliseconds, which at batch 1 dominates everything. The network is a handful of small dense layers, so
a numpy forward pass (float32, one matrix product per layer) is exact to float rounding and far cheaper.

The score of a row is its reconstruction error, each column's squared error divided by that column's
typical error on held-out normal rows (``column_weights``, see ``models.calibrate``), summed, and averaged
over the ensemble members after dividing by each member's median normal score (``member_scale``), so no
member dominates. Because the score is a plain sum, the per-column terms are an exact decomposition of it:
folded back into the 28 schema features they are the explanation of the score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.schema import FEATURE_NAMES
from models.preprocess import Preprocessor

_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _activate(name: str, h: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(h, 0.0, out=h)
    if name == "tanh":
        return np.tanh(h, out=h)
    if name == "elu":
        return np.where(h > 0, h, np.expm1(np.minimum(h, 0)))
    if name == "selu":
        return _SELU_SCALE * np.where(h > 0, h, _SELU_ALPHA * np.expm1(np.minimum(h, 0)))
    raise ValueError(f"unknown activation {name!r}")


@dataclass
class Scores:
    score: np.ndarray  # float64 per row: higher = more anomalous
    normalized: np.ndarray  # score / threshold: >= 1 means above the calibrated threshold
    contributions: np.ndarray | None = None  # (rows, 28): each schema feature's share of the score


@dataclass
class NumpyAutoencoder:
    """Ensemble forward pass and weighted reconstruction error from plain arrays."""

    members: list[list[tuple[np.ndarray, np.ndarray]]]  # per member: Dense (kernel, bias), forward order
    activation: str
    column_weights: np.ndarray  # (members, width): 1 / typical per-column error on held-out normal rows
    member_scale: np.ndarray  # (members,): median member score on held-out normal rows

    def __post_init__(self) -> None:
        # Fold the per-member normalisation into one weight vector per member: the hot loop then does a
        # single matrix-vector product per member to get the score.
        k = len(self.members)
        self._weights = (self.column_weights / (self.member_scale[:, None] * k)).astype(np.float32)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Reconstructions, shape (members, rows, width): comparable with Keras' predict."""
        return np.stack([self._forward(layers, x) for layers in self.members])

    def _forward(self, layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
        h = x
        for i, (kernel, bias) in enumerate(layers):
            h = h @ kernel
            h += bias
            if i < len(layers) - 1:
                h = _activate(self.activation, h)
        return h

    def errors(self, x: np.ndarray, per_column: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Score per row and, if asked, the per-column terms that sum to it."""
        score = np.zeros(len(x), np.float64)
        terms = np.zeros(x.shape, np.float64) if per_column else None
        for layers, w in zip(self.members, self._weights):
            err = self._forward(layers, x)
            err -= x
            np.square(err, out=err)
            score += err @ w
            if terms is not None:
                terms += err * w
        return score, terms


@dataclass
class AutoencoderScorer:
    """Schema rows -> Scores, with the preprocessing and threshold saved alongside the weights."""

    preprocessor: Preprocessor
    network: NumpyAutoencoder
    threshold: float

    def score(self, features: np.ndarray, explain: bool = False, batch_size: int = 65536) -> Scores:
        """Score rows in batches (bounded memory on big inputs); ``explain`` adds per-feature contributions."""
        scores, contribs = [], []
        group_matrix = _group_matrix(self.preprocessor.groups) if explain else None
        for start in range(0, len(features), batch_size):
            x = self.preprocessor.transform(features[start:start + batch_size])
            s, terms = self.network.errors(x, per_column=explain)
            scores.append(s)
            if explain:
                contribs.append(terms @ group_matrix)
        score = np.concatenate(scores) if scores else np.zeros(0)
        contributions = (np.concatenate(contribs) if contribs else np.zeros((0, len(FEATURE_NAMES)))) if explain \
            else None
        return Scores(score, score / self.threshold, contributions)


def _group_matrix(groups: np.ndarray) -> np.ndarray:
    """(width, 28) 0/1 matrix summing the input columns of each schema feature."""
    g = np.zeros((len(groups), len(FEATURE_NAMES)))
    g[np.arange(len(groups)), groups] = 1.0
    return g
