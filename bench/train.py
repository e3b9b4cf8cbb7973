"""Training time of the default model on the normal rows of NSL-KDD KDDTrain+ (target: under 2 minutes on
2 cores), and its ROC-AUC on KDDTest+. Run as ``.venv/bin/python bench/train.py``.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("NETWARDEN_DATA", ROOT.parent / "shared" / "data"))

from sklearn.metrics import roc_auc_score  # noqa: E402

from features.datasets import load_kdd_file  # noqa: E402
from models.training import TrainingSettings, normal_rows, train_model  # noqa: E402
from sensor.config import defaults  # noqa: E402


def main() -> None:
    train = load_kdd_file(DATA / "nsl-kdd" / "KDDTrain+.txt")
    test = load_kdd_file(DATA / "nsl-kdd" / "KDDTest+.txt")
    rows = normal_rows(train.features, train.labels, ["normal"])
    settings = TrainingSettings.from_mapping(defaults().section("model"))
    start = time.perf_counter()
    result = train_model(rows, settings)
    wall = time.perf_counter() - start
    y = test.labels != "normal"
    ae = roc_auc_score(y, result.scorer.score(test.features).score)
    iforest = roc_auc_score(y, result.baseline.score(test.features).score)
    print(f"trained on {len(rows):,} normal rows: {wall:.1f} s wall (incl. IsolationForest), "
          f"{result.metrics['epochs']} epochs, {os.cpu_count()} CPUs")
    print(f"KDDTest+ ROC-AUC: autoencoder {ae:.4f}, isolation forest {iforest:.4f}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
