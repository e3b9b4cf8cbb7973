"""``netwarden features``: placeholder until its issue lands (replace this module)."""

from __future__ import annotations

import argparse

HELP = "features (not implemented yet)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace, cfg) -> int:
    raise NotImplementedError
