"""CLI subcommands, one module each.

Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args, cfg) -> int``. Module
top levels import only the standard library and light netwarden modules: heavy dependencies (TensorFlow,
torch, scikit-learn) are imported inside ``run`` of the commands that need them, so ``netwarden stats`` and
``netwarden features`` start in well under a second.
"""

# Subcommand name -> module under sensor.commands. Order is the order shown by --help.
COMMANDS: dict[str, str] = {
    "stats": "stats",
    "capture": "capture",
    "features": "features",
    "train": "train",
    "score": "score",
    "evaluate": "evaluate",
    "check-config": "check_config",
}
