"""``netwarden train``: train the autoencoder on the normal rows of the inputs and save a model directory."""

from __future__ import annotations

import argparse
import sys

HELP = "train the anomaly model on normal traffic (pcap, Zeek conn.log, NSL-KDD/KDD'99) into a model directory"

DEFAULT_LABEL_COLUMN = "label"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="baseline traffic: pcap/pcapng, Zeek conn.log or NSL-KDD/KDD'99 file; of labelled "
                             "inputs only the rows with a model.normal_labels label are used")
    parser.add_argument("-o", "--output", metavar="MODEL_DIR", required=True,
                        help="model directory to write (replaced atomically if it exists)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the IsolationForest baseline (evaluate then shows the autoencoder only)")


def run(args: argparse.Namespace, cfg) -> int:
    import numpy as np

    from models.preprocess import PreprocessError
    from models.store import save_model, sha256_of
    from models.training import TrainingError, TrainingSettings, normal_rows, train_model
    from sensor.cli import UserError
    from sensor.pipeline import InputError, load_input

    inputs, tables = [], []
    try:
        for path in args.inputs:
            table = load_input(path, cfg).table
            tables.append(table)
            inputs.append({"path": str(path), "sha256": sha256_of(path), "rows": len(table),
                           "labelled": table.labels is not None})
    except InputError as exc:
        raise UserError(str(exc)) from None
    label_column = cfg["model.label_column"]
    rows = []
    for path, table in zip(args.inputs, tables):
        if table.labels is None and label_column != DEFAULT_LABEL_COLUMN:
            raise UserError(f"{path}: no label column {label_column!r} (model.label_column)")
        rows.append(normal_rows(table.features, table.labels, cfg["model.normal_labels"]))
    features = np.concatenate(rows)
    if len(features) == 0:
        raise UserError("no normal rows to train on (labels counted as normal: "
                        f"{', '.join(cfg['model.normal_labels'])})")
    settings = TrainingSettings.from_mapping(cfg.section("model"), with_baseline=not args.no_baseline)
    total = sum(len(t) for t in tables)
    print(f"training on {len(features):,} normal rows of {total:,} ({len(args.inputs)} inputs); "
          f"{settings.ae.ensemble} x autoencoder {settings.ae.layer_widths()}, up to {settings.ae.epochs} epochs",
          file=sys.stderr)
    try:
        result = train_model(features, settings, _progress(settings.ae.epochs))
    except (TrainingError, PreprocessError) as exc:
        raise UserError(str(exc)) from None
    try:
        path = save_model(args.output, result, inputs, {**cfg.section("model"), "inputs": list(args.inputs)})
    except OSError as exc:
        raise UserError(f"cannot write model directory {args.output}: {exc.strerror or exc}") from None
    m = result.metrics
    print(f"trained in {result.seconds:.1f} s: {m['epochs']} epochs, loss {m['train_loss']:.5f}, "
          f"validation loss {m['val_loss']:.5f}; rows fit {result.rows_fit:,}, validation {result.rows_val:,}\n"
          f"threshold {m['threshold']:.4g} (validation FPR {m['val_fpr']:.4f}, target "
          f"{settings.target_fpr}); model written to {path}", file=sys.stderr)
    return 0


def _progress(epochs: int):
    """Per-epoch progress: a rewritten line on a terminal, one line per epoch otherwise (logs)."""
    tty = sys.stderr.isatty()

    def show(epoch: int, logs: dict) -> None:
        line = f"epoch {epoch}/{epochs}  loss {logs.get('loss', float('nan')):.5f}  " \
               f"val_loss {logs.get('val_loss', float('nan')):.5f}"
        sys.stderr.write(("\r" + line + "\x1b[K") if tty else line + "\n")
        if tty and epoch == epochs:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
