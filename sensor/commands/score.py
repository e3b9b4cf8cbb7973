"""``netwarden score``: anomaly score of every input record with the numpy scorer (no TensorFlow import)."""

from __future__ import annotations

import argparse

HELP = "score every record of the inputs with a trained model (CSV or JSON lines by output extension)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="pcap/pcapng, Zeek conn.log or NSL-KDD/KDD'99 file")
    parser.add_argument("--model", metavar="MODEL_DIR", required=True, help="model directory from `train`")
    parser.add_argument("-o", "--output", metavar="OUT", default="-",
                        help="output file: .jsonl/.json = JSON lines, anything else CSV (default: CSV on stdout)")


def run(args: argparse.Namespace, cfg) -> int:
    from threadpoolctl import threadpool_limits

    from models.explain import top_features
    from models.preprocess import PreprocessError
    from models.store import ModelError, load_model
    from sensor import score_output
    from sensor.cli import UserError
    from sensor.outputs import open_output
    from features.table import FeatureTable
    from sensor.pipeline import InputError, load_input

    try:
        model = load_model(args.model)  # first: a bad model must not cost the time of reading the inputs
    except ModelError as exc:
        raise UserError(str(exc)) from None
    try:
        table = FeatureTable.concat([load_input(path, cfg).table for path in args.inputs])
    except InputError as exc:
        raise UserError(str(exc)) from None
    with threadpool_limits(1):  # small matrices: one BLAS thread is fastest and leaves the cores to capture
        try:
            scores = model.scorer.score(table.features, explain=True)
        except PreprocessError as exc:
            raise UserError(f"cannot score the inputs: {exc}") from None
    tops = top_features(scores.contributions, cfg["model.top_features"])
    try:
        with open_output(args.output) as fh:
            score_output.write(fh, score_output.format_for(args.output), table, scores, tops)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return 0
