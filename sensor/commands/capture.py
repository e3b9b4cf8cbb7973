"""``netwarden capture``: capture live from an interface and print a JSON summary with kernel counters.

The summary is the one ``netwarden stats`` prints for a file, plus the kernel's own counters for the socket
(frames received after the BPF filter, frames dropped because the ring was full), which are what tells an
operator whether the sensor keeps up. Stops after ``--count`` packets, after ``--duration`` seconds, or on
SIGINT/SIGTERM; every stop is clean: frames already in the ring are counted, then the summary is printed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensor.live import LiveSource
    from sensor.stats import CaptureStats

HELP = "capture live from an interface (AF_PACKET ring) and print a JSON summary with kernel drop counters"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--interface", metavar="IF",
                        help="interface (default: config capture.interface)")
    parser.add_argument("-f", "--filter", metavar="EXPR", dest="bpf_filter",
                        help="tcpdump-syntax BPF filter (default: config capture.bpf_filter)")
    parser.add_argument("-c", "--count", metavar="N", type=_positive_int, help="stop after N packets")
    parser.add_argument("-d", "--duration", metavar="S", type=_positive_float, help="stop after S seconds")
    parser.add_argument("--no-promisc", action="store_true",
                        help="do not put the interface in promiscuous mode")


def run(args: argparse.Namespace, cfg) -> int:
    from sensor.cli import UserError
    from sensor.live import LiveCaptureError, LiveSource
    from sensor.logs import get_logger
    from sensor.stats import CaptureStats

    options = cfg.section("capture")
    if args.interface is not None:
        options["interface"] = args.interface
    if args.bpf_filter is not None:
        options["bpf_filter"] = args.bpf_filter
    if args.no_promisc:
        options["promiscuous"] = False
    log = get_logger("sensor.capture")
    try:
        source = LiveSource(**options)
    except LiveCaptureError as exc:
        raise UserError(str(exc)) from None
    stats = CaptureStats()
    previous = {sig: signal.signal(sig, lambda *_: source.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with source:
            log.info("capture started", interface=source.interface, filter=options["bpf_filter"],
                     linktype=source.linktype)
            _capture(source, stats, args.count, args.duration)
            stats.add_skips(source.skips)
            kernel = source.kernel_stats()
    except LiveCaptureError as exc:
        raise UserError(str(exc)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if kernel.drops:
        log.warning("kernel dropped frames: enlarge capture.block_count/block_size or narrow the filter",
                    dropped=kernel.drops)
    summary = {"interface": source.interface, "filter": options["bpf_filter"], **stats.to_dict(),
               "kernel": kernel.to_dict()}
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


def _capture(source: LiveSource, stats: CaptureStats, count: int | None, duration: float | None) -> None:
    """Feed batches to ``stats`` until the count is reached, the duration has passed, or a signal stops it."""
    deadline = time.monotonic() + duration if duration else None
    seen = 0
    for batch in source:
        if count is not None:
            batch = batch[: count - seen]
        stats.update(batch)
        seen += len(batch)
        if count is not None and seen >= count:
            break
        if deadline is not None and time.monotonic() >= deadline:
            source.stop()  # the iterator hands over what the ring holds, then ends
