"""The ``netwarden`` command line: argument parsing, config loading, logging and exit codes.

Exit codes: 0 ok, 1 runtime failure (bad input file, missing model ...), 2 usage or config error. Errors the
operator can act on are ``UserError`` (or ``ConfigError``) and are printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sensor import __version__
from sensor import config as config_mod
from sensor import logs
from sensor.commands import COMMANDS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """A runtime failure caused by the input or environment, reported as one line with exit code 1."""


def _load_command(name: str):
    module = importlib.import_module(f"sensor.commands.{COMMANDS[name]}")
    return module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netwarden",
        description="Network sensor: packets -> Zeek-style connections -> KDD features -> anomaly scores.",
    )
    parser.add_argument("--version", action="version", version=f"netwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load_command(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--config", metavar="FILE", help="YAML config file (default: built-in defaults)")
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"netwarden: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(cfg["logging.level"], cfg["logging.format"])
    try:
        return int(args._module.run(args, cfg) or EXIT_OK)
    except config_mod.ConfigError as exc:
        print(f"netwarden: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as exc:
        print(f"netwarden: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    # ``python -m sensor.cli`` runs this file as __main__, a second copy of the module: delegate to the
    # imported one so its UserError is the one the commands raise.
    from sensor.cli import main as _main

    sys.exit(_main())
