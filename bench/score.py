"""Daemon scorer speed: µs per row of the numpy scorer at batch 1 and 1024 against Keras' predict in the same
run, import time and peak RSS of the scoring process (which never imports TensorFlow).

A child process trains a default-architecture model briefly on NSL-KDD normal rows (weights need not be
good to be timed), saves it and times Keras' predict; this process then loads the model directory and times
the numpy scorer. Run as ``.venv/bin/python bench/score.py``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("NETWARDEN_DATA", ROOT.parent / "shared" / "data"))
TEST = DATA / "nsl-kdd" / "KDDTest+.txt"


def _per_row_us(fn, rows, batch: int, min_seconds: float = 1.0) -> float:
    """Best-of-5 mean time per row of ``fn`` over consecutive batches of ``rows``."""
    best = float("inf")
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_seconds / 5:
            i = (n * batch) % (len(rows) - batch)
            fn(rows[i:i + batch])
            n += 1
        best = min(best, (time.perf_counter() - start) / (n * batch))
    return best * 1e6


def keras_child(model_dir: str) -> None:
    """Train briefly, save, time Keras' predict on preprocessed rows; print JSON."""
    from features.datasets import load_kdd_file
    from models.autoencoder import AEParams
    from models.store import save_model
    from models.training import TrainingSettings, normal_rows, train_model

    train = load_kdd_file(DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    result = train_model(normal_rows(train.features, train.labels, ["normal"]),
                         TrainingSettings(ae=AEParams(epochs=2), with_baseline=False))
    save_model(model_dir, result, [], {"bench": True})
    x = result.scorer.preprocessor.transform(load_kdd_file(TEST).features)
    model = result.trained.model
    out = {f"keras_predict_b{b}": _per_row_us(lambda xb: model.predict(xb, batch_size=b, verbose=0), x, b, 3.0)
           for b in (1, 1024)}
    out["keras_call_b1"] = _per_row_us(lambda xb: model(xb, training=False), x, 1, 2.0)
    print(json.dumps(out))


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "model")
        child = subprocess.run([sys.executable, __file__, "--keras-child", model_dir], capture_output=True,
                               text=True, check=True)
        keras_figures = json.loads(child.stdout.strip().splitlines()[-1])

        start = time.perf_counter()
        from threadpoolctl import threadpool_limits

        from features.datasets import load_kdd_file
        from models.store import load_model
        import_s = time.perf_counter() - start
        start = time.perf_counter()
        model = load_model(model_dir)
        load_s = time.perf_counter() - start
        feats = load_kdd_file(TEST).features
        scorer = model.scorer
        with threadpool_limits(1):
            figures = {f"numpy_score_b{b}": _per_row_us(lambda f: scorer.score(f), feats, b) for b in (1, 1024)}
            figures["numpy_score_explain_b1024"] = _per_row_us(lambda f: scorer.score(f, explain=True), feats, 1024)
        heavy = sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules)
    print(f"model: {model.meta['members']} members x {model.meta['layers']} dense layers, "
          f"{scorer.preprocessor.width} inputs")
    for name, value in {**figures, **keras_figures}.items():
        print(f"{name:28s} {value:10.2f} µs/row")
    print(f"scorer import {import_s * 1000:.0f} ms, model load {load_s * 1000:.0f} ms, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, heavy modules loaded: "
          f"{heavy or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--keras-child":
        keras_child(sys.argv[2])
    else:
        main()
