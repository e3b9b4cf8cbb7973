"""The anomaly model: dataset loader, preprocessing, training, numpy scorer parity, model directory, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.datasets import attack_category, load_kdd_file
from features.schema import FEATURE_DTYPE, FEATURE_NAMES
from models.autoencoder import AEParams
from models.preprocess import PreprocessError, Preprocessor
from models.store import ModelError, load_keras, load_model, save_model
from models.training import TrainingSettings, normal_rows, train_model
from sensor.cli import main
from tests.conftest import ROOT

SMALL_AE = AEParams(encoder_layers=(16,), bottleneck=4, epochs=3, ensemble=2, seed=7)
SMALL_CONFIG = "model:\n  epochs: 2\n  ensemble: 2\n  encoder_layers: [16]\n  bottleneck: 4\n"


@pytest.fixture(scope="module")
def kdd20(data_dir):
    return load_kdd_file(data_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt")


@pytest.fixture(scope="module")
def small_result(kdd20):
    rows = normal_rows(kdd20.features[:6000], kdd20.labels[:6000], ["normal"])
    return train_model(rows, TrainingSettings(ae=SMALL_AE))


@pytest.fixture(scope="module")
def model_dir(small_result, tmp_path_factory):
    return save_model(tmp_path_factory.mktemp("m") / "model", small_result, [], {"test": True})


@pytest.fixture
def small_kdd(data_dir, tmp_path):
    path = tmp_path / "small.txt"
    lines = (data_dir / "nsl-kdd" / "KDDTrain+_20Percent.txt").read_text().splitlines()[:1500]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- dataset loader ---------------------------------------------------------------------------------------

def test_kdd_loader_maps_labels_categories_and_counts(kdd20, data_dir):
    assert len(kdd20) == 25192 and kdd20.features.dtype == FEATURE_DTYPE
    assert (kdd20.labels == "normal").sum() == 13449
    assert set(kdd20.categories) == {"normal", "dos", "probe", "r2l", "u2r"}
    assert kdd20.ids[0] == {"file": "KDDTrain+_20Percent.txt", "line": 1}
    first = kdd20.features[0]
    assert first["src_bytes"] == 491 and first["dst_host_count"] == 150 and first["flag"] == 0  # SF
    assert attack_category("mscan") == "probe" and attack_category("apache2") == "dos"
    assert attack_category("snmpguess") == "r2l" and attack_category("nonsense") == "unknown"


def test_kdd99_gz_labels_lose_the_dot(data_dir, tmp_path):
    import gzip
    with gzip.open(data_dir / "kddcup99" / "kddcup.data_10_percent.gz", "rt") as fh:
        head = [next(fh) for _ in range(50)]
    path = tmp_path / "k.gz"
    with gzip.open(path, "wt") as fh:
        fh.writelines(head)
    table = load_kdd_file(path)
    assert len(table) == 50 and "normal" in set(table.labels) and not any(l.endswith(".") for l in table.labels)


def test_kdd_loader_skips_bad_lines_and_keeps_the_rest(data_dir, tmp_path):
    good = (data_dir / "nsl-kdd" / "KDDTest+.txt").read_text().splitlines()[:5]
    bad_value = good[0].replace("tcp,private,REJ,0,", "tcp,private,REJ,abc,", 1)
    nan_value = good[1].replace(",0.00,", ",nan,", 1)
    path = tmp_path / "mixed.txt"
    path.write_text("\n".join([good[0], "1,2,3", bad_value, nan_value, good[2], good[3]]) + "\n")
    table = load_kdd_file(path)
    assert [i["line"] for i in table.ids] == [1, 5, 6]
    assert np.isfinite(table.features["count"]).all()


# --- preprocessing ----------------------------------------------------------------------------------------

def test_preprocessing_one_hot_unknown_bucket_and_nan_refused(kdd20):
    pre = Preprocessor.fit(kdd20.features[:2000])
    rows = kdd20.features[:3].copy()
    rows["service"][0] = -1
    x = pre.transform(rows)
    assert x.shape == (3, pre.width) and x.dtype == np.float32
    assert x[0, pre.columns.index("service=unknown")] == 1.0
    assert x[:, [i for i, c in enumerate(pre.columns) if c.startswith("service=")]].sum(axis=1).tolist() == [1, 1, 1]
    rows["src_bytes"][1] = np.nan
    with pytest.raises(PreprocessError, match="NaN/inf"):
        pre.transform(rows)
    with pytest.raises(PreprocessError, match="no rows"):
        Preprocessor.fit(np.zeros(0, FEATURE_DTYPE))
    assert Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict()))).transform(kdd20.features[:50]).tolist() \
        == pre.transform(kdd20.features[:50]).tolist()


# --- training, parity, reproducibility --------------------------------------------------------------------

def test_numpy_scorer_matches_keras_predict(small_result, kdd20):
    rows = small_result.scorer.preprocessor.encode(kdd20.features[6000:9000])
    keras_out = small_result.trained.reconstruct(rows.dense())
    numpy_out = small_result.scorer.network.reconstruct(rows)  # one-hot block as table lookups, in chunks
    assert numpy_out.shape == keras_out.shape and np.max(np.abs(keras_out - numpy_out)) <= 1e-5


def test_training_is_reproducible_for_a_fixed_seed(kdd20, small_result):
    rows = normal_rows(kdd20.features[:6000], kdd20.labels[:6000], ["normal"])
    again = train_model(rows, TrainingSettings(ae=SMALL_AE, with_baseline=False))
    for (k1, b1), (k2, b2) in zip(small_result.scorer.network.members[0], again.scorer.network.members[0]):
        assert np.array_equal(k1, k2) and np.array_equal(b1, b2)
    assert again.scorer.threshold == small_result.scorer.threshold


def test_scores_separate_attacks_and_explanations_sum_to_score(small_result, kdd20):
    feats, labels = kdd20.features[6000:10000], kdd20.labels[6000:10000]
    s = small_result.scorer.score(feats, explain=True)
    assert np.allclose(s.contributions.sum(axis=1), s.score, rtol=1e-6)
    assert np.median(s.normalized[labels != "normal"]) > 3 * np.median(s.normalized[labels == "normal"])
    assert s.contributions.shape == (len(feats), len(FEATURE_NAMES))


# --- model directory --------------------------------------------------------------------------------------

def test_model_directory_round_trip(model_dir, small_result, kdd20):
    loaded = load_model(model_dir)
    feats = kdd20.features[:500]
    assert np.array_equal(loaded.scorer.score(feats).score, small_result.scorer.score(feats).score)
    meta = loaded.meta
    assert meta["schema"]["name"] == "kdd-header-28" and meta["threshold"] == small_result.scorer.threshold
    assert {p.name for p in model_dir.iterdir()} == {"model.keras", "model.h5", "weights.npz",
                                                     "preprocess.json", "iforest.pkl", "meta.json"}
    keras_model = load_keras(model_dir)
    rows = loaded.scorer.preprocessor.encode(feats)
    x = rows.dense()
    assert np.max(np.abs(keras_model.predict(x, verbose=0)[:, :x.shape[1]]
                         - loaded.scorer.network.reconstruct(rows)[0])) <= 1e-5
    from models.autoencoder import import_keras

    keras, _ = import_keras()  # the legacy .h5 export (the notebook's format) reloads to the same network
    h5_model = keras.saving.load_model(model_dir / "model.h5", compile=False)
    assert np.max(np.abs(h5_model.predict(x, verbose=0) - keras_model.predict(x, verbose=0))) <= 1e-6


def test_schema_mismatch_and_corruption_refused(model_dir, tmp_path):
    import shutil
    bad = tmp_path / "other"
    shutil.copytree(model_dir, bad)
    meta = json.loads((bad / "meta.json").read_text())
    meta["schema"]["version"] = 99
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="feature schema kdd-header-28 v99"):
        load_model(bad)
    shutil.rmtree(bad)
    shutil.copytree(model_dir, bad)
    (bad / "weights.npz").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="corrupt"):
        load_model(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nothing")


def test_failed_save_leaves_no_half_directory(small_result, tmp_path, monkeypatch):
    target = tmp_path / "model"
    monkeypatch.setattr(type(small_result.trained.model), "save",
                        lambda self, path, *a, **k: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(OSError):
        save_model(target, small_result, [], {})
    assert list(tmp_path.iterdir()) == []


def test_scorer_does_not_import_tensorflow(model_dir, data_dir):
    code = (
        "import sys\n"
        "from features.datasets import load_kdd_file\n"
        "from models.store import load_model\n"
        f"t = load_kdd_file({str(data_dir / 'nsl-kdd' / 'KDDTest+.txt')!r})\n"
        f"s = load_model({str(model_dir)!r}).scorer.score(t.features[:100], explain=True)\n"
        "assert len(s.score) == 100\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- CLI --------------------------------------------------------------------------------------------------

def _cli(args, tmp_path, capsys, config=SMALL_CONFIG):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config)
    rc = main([args[0], "--config", str(cfg), *args[1:]])
    return rc, capsys.readouterr()


@pytest.mark.slow
def test_cli_train_score_evaluate_end_to_end(small_kdd, tmp_path, capsys):
    model = tmp_path / "model"
    rc, out = _cli(["train", str(small_kdd), "-o", str(model)], tmp_path, capsys)
    assert rc == 0 and "threshold" in out.err and (model / "weights.npz").is_file()
    scores = tmp_path / "scores.csv"
    rc, _ = _cli(["score", str(small_kdd), "--model", str(model), "-o", str(scores)], tmp_path, capsys)
    assert rc == 0
    rows = list(csv.DictReader(scores.open()))
    assert list(rows[0]) == ["file", "line", "score", "normalized_score", "top_features", "label"]
    assert [int(r["line"]) for r in rows] == list(range(1, 1501))
    assert all(len(r["top_features"].split(";")) == 3 for r in rows)
    jl = tmp_path / "scores.jsonl"
    rc, _ = _cli(["score", str(small_kdd), "--model", str(model), "-o", str(jl)], tmp_path, capsys)
    first = json.loads(jl.read_text().splitlines()[0])
    assert rc == 0 and first["line"] == 1 and float(rows[0]["score"]) == pytest.approx(first["score"], rel=1e-5)
    report = tmp_path / "report"
    rc, out = _cli(["evaluate", "--model", str(model), str(small_kdd), "--report", str(report)], tmp_path, capsys)
    assert rc == 0 and "autoencoder" in out.out and "isolation forest" in out.out
    assert {"report.md", "roc.png", "pr.png", "scores.png"} <= {p.name for p in report.iterdir()}
    assert (report / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "  dos " in out.out and "| dos |" in (report / "report.md").read_text()  # per attack category


def test_cli_bad_inputs_give_one_line_errors(small_kdd, data_dir, tmp_path, capsys):
    rc, out = _cli(["score", str(small_kdd), "--model", str(tmp_path / "missing")], tmp_path, capsys)
    assert rc == 1 and "does not exist" in out.err and "Traceback" not in out.err
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "meta.json").write_text("{")
    rc, out = _cli(["score", str(small_kdd), "--model", str(tmp_path / "corrupt")], tmp_path, capsys)
    assert rc == 1 and "not a complete model directory" in out.err
    attacks = tmp_path / "attacks.txt"
    attacks.write_text("".join(l + "\n" for l in small_kdd.read_text().splitlines() if ",normal," not in l))
    rc, out = _cli(["train", str(attacks), "-o", str(tmp_path / "m")], tmp_path, capsys)
    assert rc == 1 and "no normal rows" in out.err and not (tmp_path / "m").exists()
    conn = tmp_path / "conn.log"
    day = data_dir / "labelled-conn-logs" / "stratosphere" / "008-zeek-mixed" / "data" / "conn.log.labeled"
    conn.write_text("".join(day.read_text().splitlines(keepends=True)[:200]))
    rc, out = _cli(["train", str(conn), "-o", str(tmp_path / "m")], tmp_path, capsys,
                   SMALL_CONFIG + "  label_column: verdict\n")
    assert rc == 1 and "no label column 'verdict'" in out.err and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_nsl_kdd_auc_floor(data_dir):
    """Train on the normal rows of KDDTrain+ with the default config, test on KDDTest+ (28 features)."""
    from sklearn.metrics import roc_auc_score

    from sensor.config import defaults

    train = load_kdd_file(data_dir / "nsl-kdd" / "KDDTrain+.txt")
    test = load_kdd_file(data_dir / "nsl-kdd" / "KDDTest+.txt")
    settings = TrainingSettings.from_mapping(defaults().section("model"), with_baseline=False)
    result = train_model(normal_rows(train.features, train.labels, ["normal"]), settings)
    auc = roc_auc_score(test.labels != "normal", result.scorer.score(test.features).score)
    assert auc >= 0.965


def test_evaluate_leaves_out_ignored_labels(model_dir, data_dir, tmp_path, capsys):
    """Stratosphere's Background rows are neither benign nor malicious: not counted either way."""
    day = data_dir / "labelled-conn-logs" / "stratosphere" / "010-zeek-mixed" / "data" / "conn.log.labeled"
    rc, out = _cli(["evaluate", "--model", str(model_dir), str(day)], tmp_path, capsys)
    assert rc == 0 and "37 rows labelled Background left out (model.ignore_labels)" in out.err
    assert "5,310 rows (3,373 attacks)" in out.out
    rc, out = _cli(["evaluate", "--model", str(model_dir), str(day)], tmp_path, capsys,
                   SMALL_CONFIG + "  ignore_labels: []\n")
    assert rc == 0 and "left out" not in out.err and "5,347 rows (3,410 attacks)" in out.out


def test_native_info_lines_dropped_errors_kept(capfd):
    import os

    from models.autoencoder import _without_native_info

    with _without_native_info():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1796418339.381789   15055 port.cc:153] oneDNN custom operations are on.\n"
                    b"E0000 00:00:1796418339.381789   15055 dso_loader.cc:9] cannot load libfoo.so\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "absl::InitializeLog" not in err and "cannot load libfoo.so" in err
