"""``netwarden stats``: JSON summary of capture files (what is in them, what could not be decoded).

Also the outside check of decode speed: it runs the same ``FileSource`` the pipeline uses and nothing else.
"""

from __future__ import annotations

import argparse
import json

HELP = "summarize capture files as JSON: packets by link type, network and transport protocol, skips, pps"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="pcap or pcapng file, optionally gzip'ed")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the JSON here instead of stdout")
    parser.add_argument("--via-tshark", action="store_true",
                        help="read through tshark: any format it knows (snoop, ERF, NetMon ...); slow")


def run(args: argparse.Namespace, cfg) -> int:
    from sensor.cli import UserError
    from sensor.outputs import open_output
    from sensor.sources import CaptureError, open_source
    from sensor.stats import CaptureStats

    if args.via_tshark:
        from sensor.pyshark_source import TsharkSource as open_source
    try:  # open every input first, so a bad one fails before minutes of reading the others
        sources = [open_source(path, cfg["reader.batch_size"]) for path in args.inputs]
    except CaptureError as exc:
        raise UserError(str(exc)) from None
    total = CaptureStats()
    per_input = []
    for source in sources:
        stats = CaptureStats()
        for batch in source:
            stats.update(batch)
        stats.add_skips(source.skips)
        total.merge(stats)
        per_input.append({"input": str(source.path), "format": source.format, **stats.to_dict()})
    text = json.dumps({"inputs": per_input, "total": total.to_dict()}, indent=2) + "\n"
    try:
        with open_output(args.output or "-") as fh:  # a file is replaced atomically
            fh.write(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise UserError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    return 0
