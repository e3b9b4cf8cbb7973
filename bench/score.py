"""Daemon scorer speed: µs per row of the numpy scorer at batch 1 and 1024 against Keras' predict in the same
run, import time and peak RSS of the scoring process (which never imports TensorFlow).

A child process trains a default-architecture model briefly on NSL-KDD normal rows (weights need not be
good to be timed), saves it and times Keras' predict; this process then loads the model directory and times
the numpy scorer end to end (``AutoencoderScorer.score`` on schema rows: preprocessing, forward pass,
weighted error), with BLAS pinned to one thread as in the daemon. Run as ``.venv/bin/python bench/score.py``;
``--layers 32,16 --ensemble 3`` times another architecture (the trade-off table in docs/model.md).
"""

from __future__ import annotations

import argparse
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


def keras_child(model_dir: str, layers: str, ensemble: str) -> None:
    """Train briefly, save, time Keras' predict on preprocessed rows; print JSON."""
    from features.datasets import load_kdd_file
    from models.autoencoder import AEParams
    from models.store import save_model
    from models.training import TrainingSettings, normal_rows, train_model

    train = load_kdd_file(DATA / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    params = AEParams(epochs=2, **({"encoder_layers": tuple(int(w) for w in layers.split(","))} if layers else {}),
                      **({"ensemble": int(ensemble)} if ensemble else {}))
    result = train_model(normal_rows(train.features, train.labels, ["normal"]),
                         TrainingSettings(ae=params, with_baseline=False))
    save_model(model_dir, result, [], {"bench": True})
    x = result.scorer.preprocessor.transform(load_kdd_file(TEST).features)
    model = result.trained.model
    out = {f"keras_predict_b{b}": _per_row_us(lambda xb: model.predict(xb, batch_size=b, verbose=0), x, b, 3.0)
           for b in (1, 1024)}
    out["keras_call_b1"] = _per_row_us(lambda xb: model(xb, training=False), x, 1, 2.0)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="", help="encoder widths, e.g. 32,16 (default: the config's)")
    parser.add_argument("--ensemble", default="", help="ensemble members (default: the config's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(Path(tmp) / "model")
        child = subprocess.run([sys.executable, __file__, "--keras-child", model_dir, args.layers, args.ensemble],
                               capture_output=True, text=True, check=True)
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
    widths = [w.shape[1] for w, _ in scorer.network.members[0]]
    print(f"model: {model.meta['members']} member(s) x dense {scorer.preprocessor.width} -> "
          f"{' -> '.join(map(str, widths))}, one BLAS thread")
    for name, value in {**figures, **keras_figures}.items():
        print(f"{name:28s} {value:10.2f} µs/row")
    print(f"scorer import {import_s * 1000:.0f} ms, model load {load_s * 1000:.0f} ms, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB, heavy modules loaded: "
          f"{heavy or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--keras-child":
        keras_child(*sys.argv[2:])
    else:
        main()
