"""``netwarden features``: captures or conn logs -> connection records -> the 28 KDD features, written out."""

from __future__ import annotations

import argparse
import contextlib

HELP = "compute KDD features (or a Zeek conn.log) from pcap/pcapng files, Zeek conn logs or KDD datasets"

FORMAT_CHOICES = ("kdd", "zeek", "zeek-json", "csv", "jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="pcap/pcapng (optionally gzip), Zeek conn.log (TSV or JSON) or NSL-KDD/KDD'99 file")
    parser.add_argument("--format", choices=FORMAT_CHOICES, default="kdd",
                        help="kdd: the C++ KDD extractor's columns (default); zeek/zeek-json: conn.log with "
                             "kdd.* columns; csv: header, ids, features; jsonl: one object per connection")
    parser.add_argument("-o", "--output", metavar="OUT", default="-",
                        help="output file (default: stdout); a regular file is replaced atomically")


def run(args: argparse.Namespace, cfg) -> int:
    from pathlib import Path

    from sensor import outputs
    from sensor.cli import UserError
    from sensor.pipeline import InputError, detect_input, load_dataset, record_chunks
    from sensor.readahead import usable_cpus
    from sensor.writebehind import FeatureSink, WriteBehind

    try:
        kinds = [detect_input(path) for path in args.inputs]  # all first: a bad last file must not cost minutes
        for path, kind in zip(args.inputs, kinds):
            if kind == "kdd" and args.format in outputs.RECORD_FORMATS:
                raise UserError(f"{path}: --format {args.format} needs connection records, a KDD dataset "
                                "file has only feature rows (use kdd, csv or jsonl)")
        in_child = cfg["reader.workers"] > 2 and usable_cpus() > 1
        with outputs.open_output(args.output) as fh:
            # windows, vectors and text in a child process (reader.workers 3), else here
            with (WriteBehind if in_child else FeatureSink)(args.format, fh, cfg) as sink:
                for path, kind in zip(args.inputs, kinds):
                    if kind == "kdd":
                        if len(table := load_dataset(path)):
                            sink.table(table)
                        continue
                    sink.begin(str(path))  # rows are written chunk by chunk as connections finish
                    # closed at once on any error (a closed output pipe ...): ends the reader process if any
                    with contextlib.closing(record_chunks(Path(path), kind, cfg)) as chunks:
                        for records, watermark in chunks:
                            sink.records(records, watermark)
                sink.close()
    except InputError as exc:
        raise UserError(str(exc)) from None
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return 0
