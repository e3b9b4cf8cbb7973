"""The model directory: everything needed to score, written atomically, checked on load.

Layout (``docs/model.md`` has the details):
  model.keras         the Keras ensemble autoencoder (training, parity checks)
  model.h5            the same network in legacy HDF5, the format of the original notebook
  weights.npz         Dense kernels/biases per member, column weights, member scales (the daemon's scorer)
  preprocess.json     fitted preprocessing parameters
  iforest.pkl         the IsolationForest baseline (pickle: only ``evaluate`` loads it, never the daemon)
  meta.json           schema name + version, threshold, inputs (path, sha256, rows), rows, date, metrics,
                      settings

Why atomic: a daemon may reload the model while ``train`` writes it. Everything is written into a temporary
sibling directory which then replaces the target with ``os.replace``; a failure leaves the old model (or
nothing), never a half-written directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from features.schema import FEATURE_NAMES, SCHEMA_NAME, SCHEMA_VERSION, schema_id
from models.preprocess import PreprocessError, Preprocessor
from models.scorer import AutoencoderScorer, NumpyAutoencoder

FORMAT_VERSION = 1
META, WEIGHTS, PREPROCESS, KERAS, H5, BASELINE = (
    "meta.json", "weights.npz", "preprocess.json", "model.keras", "model.h5", "iforest.pkl")
REQUIRED = (META, WEIGHTS, PREPROCESS)


class ModelError(ValueError):
    """A model directory that cannot be used: missing, incomplete, corrupt, or for another schema."""


@dataclass
class LoadedModel:
    scorer: AutoencoderScorer
    meta: dict
    directory: Path


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(directory: str | Path, result, inputs: list[dict], settings: dict) -> Path:
    """Write a trained ``models.training.TrainResult`` to ``directory`` atomically; returns the path."""
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        _write_all(tmp, result, inputs, settings)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _write_all(tmp: Path, result, inputs: list[dict], settings: dict) -> None:
    scorer: AutoencoderScorer = result.scorer
    net = scorer.network
    arrays = {"column_weights": net.column_weights, "member_scale": net.member_scale}
    for m, layers in enumerate(net.members):
        for i, (kernel, bias) in enumerate(layers):
            arrays[f"m{m}_kernel{i}"] = kernel
            arrays[f"m{m}_bias{i}"] = bias
    np.savez(tmp / WEIGHTS, **arrays)
    (tmp / PREPROCESS).write_text(json.dumps(scorer.preprocessor.to_dict(), indent=1))
    result.trained.model.save(tmp / KERAS)
    result.trained.model.save(tmp / H5)
    if result.baseline is not None:
        with open(tmp / BASELINE, "wb") as fh:
            pickle.dump(result.baseline, fh)
    meta = {
        "format": FORMAT_VERSION,
        "schema": schema_id(),
        "activation": net.activation,
        "members": len(net.members),
        "layers": len(net.members[0]),
        "threshold": scorer.threshold,
        "baseline_threshold": result.baseline.threshold if result.baseline is not None else None,
        "inputs": inputs,
        "rows": {"fit": result.rows_fit, "validation": result.rows_val},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "training_seconds": round(result.seconds, 2),
        "metrics": result.metrics,
        "settings": settings,
    }
    (tmp / META).write_text(json.dumps(meta, indent=1, default=_json_default))


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):  # json writes tuples as lists by itself
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; an existing model is moved aside first and removed only after the swap."""
    if target.exists() and not target.is_dir():
        raise ModelError(f"{target} exists and is not a directory")
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_meta(directory: str | Path) -> dict:
    """``meta.json`` of a model directory, with the directory's completeness and schema checked."""
    d = Path(directory)
    if not d.is_dir():
        raise ModelError(f"model directory {d} does not exist")
    missing = [n for n in REQUIRED if not (d / n).is_file()]
    if missing:
        raise ModelError(f"{d} is not a complete model directory (missing {', '.join(missing)})")
    try:
        meta = json.loads((d / META).read_text())
        schema = meta["schema"]
        if not isinstance(schema, dict):
            raise TypeError("schema is not an object")
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{d / META} is corrupt") from None
    if meta.get("format") != FORMAT_VERSION:
        raise ModelError(f"{d}: model format {meta.get('format')!r}, this netwarden reads {FORMAT_VERSION}")
    if (schema.get("name"), schema.get("version")) != (SCHEMA_NAME, SCHEMA_VERSION) or \
            list(schema.get("features", [])) != list(FEATURE_NAMES):
        raise ModelError(f"{d} was trained on feature schema {schema.get('name')} v{schema.get('version')}, "
                         f"the data here is {SCHEMA_NAME} v{SCHEMA_VERSION}: retrain the model")
    return meta


def load_model(directory: str | Path) -> LoadedModel:
    """The numpy scorer of a model directory (no TensorFlow import). Raises ModelError with the reason."""
    d = Path(directory)
    meta = read_meta(d)
    try:
        pre = Preprocessor.from_dict(json.loads((d / PREPROCESS).read_text()))
        with np.load(d / WEIGHTS) as z:
            members = [[(z[f"m{m}_kernel{i}"].astype(np.float32), z[f"m{m}_bias{i}"].astype(np.float32))
                        for i in range(int(meta["layers"]))] for m in range(int(meta["members"]))]
            network = NumpyAutoencoder(members, str(meta["activation"]), z["column_weights"], z["member_scale"])
        threshold = float(meta["threshold"])
    except PreprocessError as exc:
        raise ModelError(f"{d}: {exc}") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError) as exc:
        raise ModelError(f"{d}: corrupt model files ({type(exc).__name__})") from None
    if members[0][0][0].shape[0] != pre.width or network.column_weights.shape != (len(members), pre.width):
        raise ModelError(f"{d}: weights do not match the preprocessing (corrupt model directory)")
    return LoadedModel(AutoencoderScorer(pre, network, threshold), meta, d)


def load_baseline(directory: str | Path):
    """The pickled IsolationForest baseline, or None if the model was trained without it."""
    path = Path(directory) / BASELINE
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except Exception as exc:  # a damaged pickle can raise almost anything
        raise ModelError(f"{path} is corrupt ({type(exc).__name__})") from None


def load_keras(directory: str | Path):
    """The Keras model (imports TensorFlow): for parity checks and retraining, not for scoring."""
    path = Path(directory) / KERAS
    if not path.is_file():
        raise ModelError(f"{path} is missing")
    from models.autoencoder import import_keras

    keras, _ = import_keras()
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise ModelError(f"{path} cannot be loaded ({type(exc).__name__})") from None
