"""Reducibility demo (paper Fig 2 and Fig 9): M and S of four synthetic 2-D clouds, one figure each.

    cd reducibility_demos && python3 reducibility_demo.py
    python -m reducibility_demos.reducibility_demo --mixture_weights rebuttal --steps 500
    python -m reducibility_demos.reducibility_demo --mixture exact   # draw the exact maximum's slab

Writes `reducibility_<dataset>.{png,pdf}` (the mixture cloud as `reducibility_gaussians_<weights>.*`) and
`reducibility_demo_<weights>.json` with M (the paper code's gradient value and the exact maximum) and S (bits)
per dataset, under <base_dir>/figs/reducibility_demos/
unless --out_dir is given. Each dataset's numbers are kept in `results/` and reused by a rerun with the same
settings; the JSON lists every dataset computed so far. The work is done by `multid.reducibility.synthetic_demo`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import add_base_dir_arg, add_seed_arg, ensure_writable_dir, print_written, resolve_base_dir
from multid.errors import UserError, cli_entry
from multid.reducibility import synthetic_demo as demo, synthetic
from multid.reducibility.indices import DEMO_MIXTURE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--out_dir", default=None,
                        help="folder for the figures and JSON (default: <base_dir>/figs/reducibility_demos)")
    add_seed_arg(parser, default=synthetic.DEFAULT_SEED)
    parser.add_argument(
        "--mixture_weights", choices=sorted(synthetic.MIXTURE_WEIGHTS), default="paper",
        help="shares of (Gaussian blob, line 1, line 2) in the 'gaussians' cloud: paper = 40/30/30 %% (the "
             "version that drew Fig 2/9; default), rebuttal = 30/60/10 %% (the authors' later version)",
    )
    parser.add_argument("--steps", type=int, default=DEMO_MIXTURE.steps,
                        help="gradient-ascent steps for M (default: %(default)s as the paper; e.g. 500 for a quick "
                             "run, the annealing schedule T = 1 - i/steps is rescaled to match)")
    parser.add_argument("--datasets", nargs="+", choices=synthetic.DATASETS, default=list(synthetic.DATASETS),
                        help="which clouds to run (default: all four)")
    parser.add_argument("--num_points", type=int, default=synthetic.NUM_POINTS,
                        help="points per cloud (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=list(demo.FORMATS), default=list(demo.FORMATS),
                        help="figure formats (default: png pdf)")
    parser.add_argument("--mixture", choices=synthetic.MIXTURE_CHOICES, default="gradient",
                        help="whose slab and M the figures draw: gradient = the paper code's optimiser (a "
                             "seed-dependent local optimum; what was published; default) or exact = the maximum "
                             "over every slab. Both values are printed and saved either way")
    parser.add_argument("--usetex", action="store_true",
                        help="render text with LaTeX (needs `latex`; default: matplotlib mathtext)")
    return parser


def output_dir(args: argparse.Namespace) -> Path:
    if args.out_dir:
        return ensure_writable_dir(Path(args.out_dir).expanduser().resolve(), what="--out_dir")
    return ensure_writable_dir(demo.default_out_dir(resolve_base_dir(args.base_dir)), what="figure folder")


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if args.num_points < 2:
        raise UserError(f"--num_points must be at least 2, got {args.num_points}")
    written = demo.run_demo(output_dir(args), args.datasets, weights=args.mixture_weights, steps=args.steps,
                            num_points=args.num_points, seed=args.seed, formats=args.formats, usetex=args.usetex,
                            mixture=args.mixture)
    print_written(written)
    return written


if __name__ == "__main__":
    main()
