"""``netwarden check-config``: validate a config file (or print the documented defaults)."""

from __future__ import annotations

import argparse

HELP = "validate a config file and exit 0 if it is usable (errors name the key)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-defaults", action="store_true",
                        help="print every option with its default and documentation as YAML")
    parser.add_argument("--print-reference", action="store_true",
                        help="print the config reference as a Markdown table (the README's)")


def run(args: argparse.Namespace, cfg) -> int:
    from sensor import config

    if args.print_defaults:
        print(config.render_defaults(), end="")
    elif args.print_reference:
        print(config.render_markdown(), end="")
    else:
        print(f"config ok: {cfg.source or 'built-in defaults'}")
    return 0
