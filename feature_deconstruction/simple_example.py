"""Toy four-panel feature deconstruction (residual RGB) illustration; the computation is multid/deconstruction/toy.py.

    cd feature_deconstruction && python3 simple_example.py          (or: python -m feature_deconstruction.simple_example)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.config import add_base_dir_arg, add_seed_arg, figure_dir, print_written, resolve_base_dir  # noqa: E402
from multid.deconstruction.toy import NOISE, compute_panels, run_simple_example  # noqa: E402,F401  (upstream-style names)
from multid.errors import cli_entry  # noqa: E402


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description="Toy four-panel feature deconstruction (residual RGB) illustration.")
    add_base_dir_arg(parser)
    add_seed_arg(parser, default=42)
    parser.add_argument("--out_dir", default=None, help="output folder (default: <base_dir>/figs/feature_deconstruction)")
    parser.add_argument("--format", default="pdf", choices=("pdf", "png", "svg"), help="figure format (default: %(default)s)")
    parser.add_argument("--upstream_panel_a", action="store_true", help="colour panel a as upstream (divide by column max; negatives clip)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else figure_dir(resolve_base_dir(args.base_dir), "feature_deconstruction")
    written = run_simple_example(out_dir, seed=args.seed, fmt=args.format, upstream_panel_a=args.upstream_panel_a)
    print_written(written)
    return written


if __name__ == "__main__":
    cli_entry(main)()
