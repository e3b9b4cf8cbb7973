"""The Keras dense autoencoder: built from the ``model.*`` config, trained reproducibly on normal rows.

One Keras model holds an ensemble of ``ensemble`` independent autoencoders side by side (same input, outputs
concatenated). Why an ensemble: on NSL-KDD the ROC-AUC of single autoencoders that differ only in their seed
spreads by about +-0.003; averaging a few removes most of that variance at little cost, and training them as
branches of one model takes one ``fit`` (bigger matrix products, the same number of steps) instead of K.

Why Keras is imported lazily: this module is only needed to train (and to check parity); the daemon scores
with ``models.scorer`` from exported weights and must not pay TensorFlow's import time or memory.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np

ACTIVATIONS = ("relu", "tanh", "elu", "selu")


@dataclass(frozen=True)
class AEParams:
    """Architecture and training settings; the ``model.*`` config section maps onto these names."""

    encoder_layers: tuple[int, ...] = (64, 32)
    bottleneck: int = 8
    activation: str = "relu"
    dropout: float = 0.0
    noise_stddev: float = 0.0
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 0.001
    early_stopping_patience: int = 5
    ensemble: int = 1
    seed: int = 42

    @classmethod
    def from_mapping(cls, section: dict) -> "AEParams":
        """Pick this dataclass's keys out of a config section (other ``model.*`` keys are not ours)."""
        kw = {f.name: section[f.name] for f in fields(cls) if f.name in section}
        if "encoder_layers" in kw:
            kw["encoder_layers"] = tuple(int(w) for w in kw["encoder_layers"])
        return cls(**kw)

    def layer_widths(self) -> list[int]:
        """Widths of the hidden Dense layers of one member, encoder then decoder."""
        enc = list(self.encoder_layers)
        return enc + [self.bottleneck] + enc[::-1]


@dataclass
class TrainedAE:
    model: object  # keras.Model: input (n, d) -> output (n, ensemble * d)
    params: AEParams
    history: dict[str, list[float]] = field(default_factory=dict)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Keras' own forward pass, shape (ensemble, n, d); the reference for the numpy scorer."""
        out = self.model.predict(x, batch_size=4096, verbose=0)
        return out.reshape(len(x), self.params.ensemble, x.shape[1]).transpose(1, 0, 2)


# An INFO line of absl's C++ logging ("I0000 00:00:1796... 123 port.cc:153] oneDNN custom operations are
# on ...") and the notice absl prints before the first line it logs unconfigured.
_NATIVE_INFO = re.compile(rb"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::)")


@contextmanager
def _without_native_info():
    """Drop the INFO lines TensorFlow's C++ code writes to fd 2 while it is imported, keep everything else.

    Why: TF_CPP_MIN_LOG_LEVEL does not reach the oneDNN notice TensorFlow logs through absl before its own
    log level applies; raising the level far enough to hide it everywhere would hide errors too. So fd 2
    goes to a temporary file during the import and every line but those INFO lines is written back.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = b"".join(line for line in captured if not _NATIVE_INFO.match(line))
            if kept:
                sys.stderr.write(kept.decode(errors="replace"))
                sys.stderr.flush()


def import_keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO and WARNING lines; errors stay
    if "tensorflow" in sys.modules:
        quiet = nullcontext()
    else:
        quiet = _without_native_info()
    with quiet:
        import absl.logging
        import keras
        import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)  # Keras' "HDF5 is legacy" notice on every model.h5 export
    return keras, tf


def build(width: int, params: AEParams):
    """The ensemble autoencoder: each member input -> [noise] -> encoder -> bottleneck -> decoder -> linear."""
    if params.activation not in ACTIVATIONS:
        raise ValueError(f"activation {params.activation!r} is not one of {', '.join(ACTIVATIONS)}")
    keras, _ = import_keras()
    inp = keras.Input((width,), name="features")
    outputs = []
    for m in range(params.ensemble):
        h = inp
        if params.noise_stddev > 0:
            h = keras.layers.GaussianNoise(params.noise_stddev, name=f"m{m}_noise")(h)
        for i, w in enumerate(params.layer_widths()):
            h = keras.layers.Dense(w, activation=params.activation, name=f"m{m}_dense{i}")(h)
            if params.dropout > 0:
                h = keras.layers.Dropout(params.dropout, name=f"m{m}_dropout{i}")(h)
        outputs.append(keras.layers.Dense(width, name=f"m{m}_output")(h))
    out = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(name="members")(outputs)
    model = keras.Model(inp, out, name="netwarden_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(params.learning_rate), loss="mse")
    return model


def train(x_fit: np.ndarray, x_val: np.ndarray, params: AEParams,
          on_epoch: Callable[[int, dict], None] | None = None) -> TrainedAE:
    """Train on ``x_fit`` (normal rows), early-stop on ``x_val``; same seed + same data = same weights."""
    keras, tf = import_keras()
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    model = build(x_fit.shape[1], params)
    callbacks = [keras.callbacks.EarlyStopping(patience=params.early_stopping_patience,
                                               restore_best_weights=True)]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e + 1, logs)))
    k = params.ensemble
    hist = model.fit(x_fit, np.tile(x_fit, k), validation_data=(x_val, np.tile(x_val, k)),
                     epochs=params.epochs, batch_size=params.batch_size, shuffle=True, verbose=0,
                     callbacks=callbacks)
    return TrainedAE(model, params, {key: [float(v) for v in vals] for key, vals in hist.history.items()})


def export_layers(trained: TrainedAE) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per member, its Dense layers' (kernel, bias) in forward order (noise/dropout are inactive at inference)."""
    members = []
    for m in range(trained.params.ensemble):
        layers = [trained.model.get_layer(f"m{m}_dense{i}") for i in range(len(trained.params.layer_widths()))]
        layers.append(trained.model.get_layer(f"m{m}_output"))
        members.append([(np.asarray(l.kernel.numpy(), np.float32), np.asarray(l.bias.numpy(), np.float32))
                        for l in layers])
    return members
