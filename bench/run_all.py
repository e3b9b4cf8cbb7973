"""`make bench`: every benchmark in turn, each printing its own figures (run on a quiet machine).

usage: .venv/bin/python bench/run_all.py [NAME ...]   (default: all; names: decode tracker features score
train live)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("decode", "tracker", "features", "score", "train", "live")


def main(argv: list[str]) -> int:
    names = argv or list(ORDER)
    failed = []
    for name in names:
        script = HERE / f"{name}.py"
        if not script.exists():
            print(f"unknown benchmark {name!r}; choose from {', '.join(ORDER)}", file=sys.stderr)
            return 2
        print(f"\n=== bench/{name}.py", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
