"""Table 1: how many problems each model answers correctly, per task (top logit among the p answer words).

    python3 intervention/table1.py [--base_dir DIR] [--models smollm2 mistral]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.config import add_base_dir_arg, resolve_base_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402
from multid.tasks.table1 import write_table1  # noqa: E402


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print and save Table 1 (accuracy per model and task).")
    add_base_dir_arg(parser)
    parser.add_argument("--models", nargs="*", default=None, help="only these models (default: all found)")
    args = parser.parse_args(argv)
    text, written = write_table1(resolve_base_dir(args.base_dir), args.models)
    print("Table 1: correct answers (top logit among the allowable words)")
    print(text)
    for path in written:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
