"""``netwarden evaluate``: detection quality of a model on labelled inputs, autoencoder vs IsolationForest."""

from __future__ import annotations

import argparse
import sys

HELP = "measure a model on labelled inputs (ROC-AUC, PR-AUC, F1/FPR at the threshold) and write a report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="labelled Zeek conn.log or NSL-KDD/KDD'99 file")
    parser.add_argument("--model", metavar="MODEL_DIR", required=True, help="model directory from `train`")
    parser.add_argument("--report", metavar="DIR",
                        help="write report.md with ROC, PR and score-distribution plots into DIR")


def run(args: argparse.Namespace, cfg) -> int:
    import numpy as np

    from models.evaluate import compute_metrics, write_report
    from models.preprocess import PreprocessError
    from models.store import ModelError, load_baseline, load_model
    from sensor.cli import UserError
    from sensor.pipeline import InputError, load_input

    try:
        model = load_model(args.model)
        baseline = load_baseline(args.model)
    except ModelError as exc:
        raise UserError(str(exc)) from None
    try:
        tables = [load_input(p, cfg).table for p in args.inputs]
    except InputError as exc:
        raise UserError(str(exc)) from None
    for path, t in zip(args.inputs, tables):
        if t.labels is None:
            raise UserError(f"{path}: no labels (label column {cfg['model.label_column']!r}): evaluate needs "
                            "labelled input")
    from features.table import FeatureTable

    table = FeatureTable.concat(tables)
    ignored = np.isin(table.labels.astype(str), list(cfg["model.ignore_labels"]))
    if ignored.any():  # neither normal nor attack (e.g. Stratosphere's Background): no truth to score against
        print(f"{int(ignored.sum()):,} rows labelled {', '.join(sorted(set(table.labels[ignored].astype(str))))} "
              "left out (model.ignore_labels)", file=sys.stderr)
        keep = ~ignored
        table = FeatureTable(table.features[keep], [i for i, k in zip(table.ids, keep) if k] if table.ids else [],
                             table.labels[keep], table.categories[keep] if table.categories is not None else None,
                             table.source)
    if len(table) == 0:
        raise UserError("every row has an ignored label (model.ignore_labels): nothing to evaluate")
    y = (~np.isin(table.labels.astype(str), list(cfg["model.normal_labels"]))).astype(int)
    if y.min() == y.max():
        raise UserError("the inputs hold only " + ("attack" if y[0] else "normal") + " rows: ROC-AUC needs both")
    detectors = {"autoencoder": model.scorer} | ({"isolation forest": baseline} if baseline is not None else {})
    try:
        results = {name: d.score(table.features).normalized for name, d in detectors.items()}
    except PreprocessError as exc:
        raise UserError(f"cannot score the inputs: {exc}") from None
    metrics = [compute_metrics(name, y, s, table.categories) for name, s in results.items()]
    print(f"{len(table):,} rows ({int(y.sum()):,} attacks) from {', '.join(map(str, args.inputs))}")
    print(f"{'detector':18s} {'ROC-AUC':>8s} {'PR-AUC':>8s} {'prec':>6s} {'recall':>6s} {'F1':>6s} {'FPR':>7s} "
          f"{'FPR@95%rec':>10s}")
    for m in metrics:
        print(f"{m.name:18s} {m.roc_auc:8.4f} {m.pr_auc:8.4f} {m.precision:6.3f} {m.recall:6.3f} {m.f1:6.3f} "
              f"{m.fpr:7.4f} {m.fpr_at_95_recall:10.4f}")
        for cat, c in m.per_category.items():
            print(f"  {cat:16s} ROC-AUC {c['roc_auc']:.4f}  recall {c['recall']:.3f}  ({c['rows']:,} rows)")
    if args.report:
        notes = [f"Model `{args.model}` (trained {model.meta.get('created', '?')} on "
                 f"{model.meta['rows']['fit']:,} rows), inputs: {', '.join(f'`{p}`' for p in args.inputs)}; "
                 f"{len(table):,} rows, {int(y.sum()):,} attacks."]
        try:
            md = write_report(args.report, "netwarden evaluation", y, results, metrics, notes)
        except OSError as exc:
            raise UserError(f"cannot write the report to {args.report}: {exc.strerror or exc}") from None
        print(f"report written to {md}", file=sys.stderr)
    return 0
