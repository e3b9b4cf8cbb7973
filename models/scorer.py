"""The daemon's scorer: the autoencoder's forward pass in numpy, from exported weights. No TensorFlow.

Why: importing TensorFlow costs seconds and hundreds of MB, and Keras' ``predict`` has a per-call overhead
of milliseconds, which at batch 1 dominates everything. The network is a handful of small dense layers, so
a numpy forward pass (float32, one matrix product per layer) is exact to float rounding and far cheaper.

The score of a row is its reconstruction error, each column's squared error divided by that column's
typical error on held-out normal rows (``column_weights``, see ``models.calibrate``), summed, and averaged
over the ensemble members after dividing by each member's median normal score (``member_scale``), so no
member dominates. Because the score is a plain sum, the per-column terms are an exact decomposition of it:
folded back into the 28 schema features they are the explanation of the score.

Where the time goes, and what is done about it (figures in docs/model.md):
- 91 of the 116 inputs are one-hot, so the first layer's product with them is a row lookup: the scorer
  works on ``EncodedRows`` (numeric block + codes) and adds one precomputed row per input of a table that
  holds, for every protocol x service x flag combination, the sum of their kernel rows and the bias. Same
  math as the dense product, a quarter of the multiply-adds.
- The first layers of all ensemble members share that input, so they are one matrix product.
- Every intermediate lives in a per-thread workspace reused from call to call: freshly allocated arrays
  of a few hundred KB are mmap-ed by malloc and page-faulted in on every call, which cost more than the
  arithmetic.
- Long inputs are processed in chunks of ``CHUNK_ROWS`` so the workspace stays in the L2 cache.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from features.schema import FEATURE_NAMES
from models.preprocess import CATEGORY_SIZES, NUMERIC_WIDTH, EncodedRows, Preprocessor, input_layout

CHUNK_ROWS = 1024
LOOKUP_TABLE_LIMIT = 16 << 20  # bytes; above it one lookup table per categorical instead of one for all
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _activate(name: str, h: np.ndarray) -> None:
    """Apply the activation in place."""
    if name == "relu":
        np.maximum(h, 0.0, out=h)
    elif name == "tanh":
        np.tanh(h, out=h)
    elif name in ("elu", "selu"):
        neg = np.minimum(h, 0.0)
        np.expm1(neg, out=neg)
        np.maximum(h, 0.0, out=h)
        if name == "selu":
            neg *= _SELU_ALPHA
        h += neg
        if name == "selu":
            h *= _SELU_SCALE
    else:
        raise ValueError(f"unknown activation {name!r}")


@dataclass
class Scores:
    score: np.ndarray  # float64 per row: higher = more anomalous
    normalized: np.ndarray  # score / threshold: >= 1 means above the calibrated threshold
    contributions: np.ndarray | None = None  # (rows, 28): each schema feature's share of the score


def _lookup_tables(kernel: np.ndarray, bias: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(table, code strides) pairs with sum(table[codes @ strides]) == one-hot(codes) @ kernel + bias.

    ``kernel`` holds the first layer's rows for the one-hot columns. One table over all combinations of the
    categoricals (one lookup per row) while it stays under LOOKUP_TABLE_LIMIT, else one per categorical.
    """
    blocks = np.split(kernel, np.cumsum(CATEGORY_SIZES)[:-1])
    width = kernel.shape[1]
    combined = math.prod(CATEGORY_SIZES) * width * 4 <= LOOKUP_TABLE_LIMIT
    partition = [list(range(len(blocks)))] if combined else [[g] for g in range(len(blocks))]
    tables = []
    for i, part in enumerate(partition):
        table = bias if i == 0 else np.zeros(width, np.float32)
        for g in part:
            table = table[..., None, :] + blocks[g]  # outer sum: one more axis per categorical
        strides = np.zeros(len(blocks), np.intp)
        sizes = [CATEGORY_SIZES[g] for g in part]
        strides[part] = np.cumprod([1] + sizes[:0:-1])[::-1]  # row-major strides of the table's axes
        tables.append((np.ascontiguousarray(table.reshape(-1, width), np.float32), strides))
    return tables


@dataclass
class _Workspace:
    """Reused buffers for up to ``rows`` rows (see the module docstring for why)."""

    rows: int
    encoded: EncodedRows
    index: np.ndarray  # (rows,) lookup table row
    onehot: np.ndarray  # (rows, categoricals) flat position of each one-hot 1 in ``output``
    row_starts: np.ndarray  # (rows, 1) row * width
    first: np.ndarray  # (rows, sum of members' first-layer widths)
    gathered: np.ndarray  # same shape: looked-up table rows
    layers: list[np.ndarray]  # per later layer (rows, width); the last is the reconstruction
    member_score: np.ndarray  # (rows,)
    member_contrib: np.ndarray  # (rows, 28)


@dataclass
class NumpyAutoencoder:
    """Ensemble forward pass and weighted reconstruction error from plain arrays."""

    members: list[list[tuple[np.ndarray, np.ndarray]]]  # per member: Dense (kernel, bias), forward order
    activation: str
    column_weights: np.ndarray  # (members, width): 1 / typical per-column error on held-out normal rows
    member_scale: np.ndarray  # (members,): median member score on held-out normal rows
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = len(self.members)
        if any(len(layers) < 2 for layers in self.members):
            raise ValueError("every member needs at least two Dense layers")
        self._width = self.members[0][0][0].shape[0]
        # The per-member normalisation folds into one weight vector per member, and the per-feature fold of
        # the explanation into a (width, 28) matrix per member: one matrix product each in the hot loop.
        self._weights = (self.column_weights / (self.member_scale[:, None] * k)).astype(np.float32)
        groups = np.zeros((self._width, len(FEATURE_NAMES)), np.float32)
        groups[np.arange(self._width), input_layout()[1]] = 1.0
        self._explain = np.ascontiguousarray(self._weights[:, :, None] * groups[None])
        first = [layers[0] for layers in self.members]
        self._numeric_kernel = np.concatenate([kernel[:NUMERIC_WIDTH] for kernel, _ in first], axis=1)
        self._tables = _lookup_tables(np.concatenate([kernel[NUMERIC_WIDTH:] for kernel, _ in first], axis=1),
                                      np.concatenate([bias for _, bias in first]))
        bounds = np.cumsum([0] + [kernel.shape[1] for kernel, _ in first])
        self._slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        self._onehot_offsets = (NUMERIC_WIDTH + np.cumsum((0,) + CATEGORY_SIZES[:-1])).astype(np.intp)

    def _workspace(self, rows: int) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.rows < rows:
            depth = len(self.members[0])
            widths = [max(m[i][0].shape[1] for m in self.members) for i in range(1, depth)]
            first = self._numeric_kernel.shape[1]
            ws = _Workspace(rows, EncodedRows.empty(rows), np.empty(rows, np.intp),
                            np.empty((rows, len(CATEGORY_SIZES)), np.intp),
                            (np.arange(rows, dtype=np.intp) * self._width)[:, None],
                            np.empty((rows, first), np.float32), np.empty((rows, first), np.float32),
                            [np.empty((rows, w), np.float32) for w in widths], np.empty(rows, np.float32),
                            np.empty((rows, len(FEATURE_NAMES)), np.float32))
            self._local.ws = ws
        return ws

    def encode_buffer(self, rows: int) -> EncodedRows:
        """This thread's reusable EncodedRows buffer for up to ``rows`` (<= CHUNK_ROWS) rows."""
        return self._workspace(rows).encoded

    def _first_layer(self, rows: EncodedRows, ws: _Workspace) -> np.ndarray:
        n = len(rows)
        h = np.matmul(rows.numeric, self._numeric_kernel, out=ws.first[:n])
        for table, strides in self._tables:
            index = np.matmul(rows.codes, strides, out=ws.index[:n])
            h += np.take(table, index, axis=0, out=ws.gathered[:n])
        _activate(self.activation, h)
        return h

    def _member_output(self, m: int, first: np.ndarray, ws: _Workspace) -> np.ndarray:
        """Member ``m``'s reconstruction, in the workspace (valid until the next member runs)."""
        n = len(first)
        layers = self.members[m]
        h = first[:, self._slices[m]]
        for i, (kernel, bias) in enumerate(layers[1:]):
            out = np.matmul(h, kernel, out=ws.layers[i][:n])
            out += bias
            if i < len(layers) - 2:
                _activate(self.activation, out)
            h = out
        return h

    def _chunks(self, rows: EncodedRows):
        for start in range(0, len(rows), CHUNK_ROWS):
            yield start, EncodedRows(rows.numeric[start:start + CHUNK_ROWS], rows.codes[start:start + CHUNK_ROWS])

    def reconstruct(self, rows: EncodedRows) -> np.ndarray:
        """Reconstructions, shape (members, rows, width): comparable with Keras' predict on ``rows.dense()``."""
        out = np.empty((len(self.members), len(rows), self._width), np.float32)
        for start, chunk in self._chunks(rows):
            ws = self._workspace(len(chunk))
            first = self._first_layer(chunk, ws)
            for m in range(len(self.members)):
                out[m, start:start + len(chunk)] = self._member_output(m, first, ws)
        return out

    def errors(self, rows: EncodedRows, explain: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Score per row and, if ``explain``, its exact split over the 28 schema features (rows, 28)."""
        score = np.zeros(len(rows), np.float64)
        contrib = np.zeros((len(rows), len(FEATURE_NAMES)), np.float64) if explain else None
        for start, chunk in self._chunks(rows):
            end = start + len(chunk)
            if explain:
                self._chunk_errors(chunk, self._explain, contrib[start:end])
            else:
                self._chunk_errors(chunk, self._weights, score[start:end, None])
        if explain:
            score = contrib.sum(axis=1)
        return score, contrib

    def _chunk_errors(self, rows: EncodedRows, weights: np.ndarray, total: np.ndarray) -> None:
        """Add sum over members of squared error @ weights[m] to ``total`` (rows, weights' last axis)."""
        n = len(rows)
        ws = self._workspace(n)
        first = self._first_layer(rows, ws)
        onehot = np.add(rows.codes, self._onehot_offsets, out=ws.onehot[:n])
        onehot += ws.row_starts[:n]
        onehot = onehot.ravel()
        buffer = ws.member_contrib[:n] if weights.ndim == 3 else ws.member_score[:n, None]
        for m in range(len(self.members)):
            err = self._member_output(m, first, ws)
            err[:, :NUMERIC_WIDTH] -= rows.numeric
            flat = err.reshape(-1)  # a view: the workspace buffer is contiguous
            flat[onehot] -= 1.0
            np.square(err, out=err)
            total += np.matmul(err, weights[m].reshape(self._width, -1), out=buffer)


@dataclass
class AutoencoderScorer:
    """Schema rows -> Scores, with the preprocessing and threshold saved alongside the weights."""

    preprocessor: Preprocessor
    network: NumpyAutoencoder
    threshold: float

    def score(self, features: np.ndarray, explain: bool = False) -> Scores:
        """Score rows in chunks of CHUNK_ROWS (bounded memory); ``explain`` adds per-feature contributions."""
        scores, contribs = [], []
        for start in range(0, len(features), CHUNK_ROWS):
            chunk = features[start:start + CHUNK_ROWS]
            rows = self.preprocessor.encode(chunk, out=self.network.encode_buffer(len(chunk)), first_row=start)
            s, c = self.network.errors(rows, explain)
            scores.append(s)
            contribs.append(c)
        if not scores:
            return Scores(np.zeros(0), np.zeros(0), np.zeros((0, len(FEATURE_NAMES))) if explain else None)
        score = np.concatenate(scores) if len(scores) > 1 else scores[0]
        contributions = (np.concatenate(contribs) if len(contribs) > 1 else contribs[0]) if explain else None
        return Scores(score, score / self.threshold, contributions)
