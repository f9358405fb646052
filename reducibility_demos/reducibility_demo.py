"""Reducibility demo (paper Fig 2 and Fig 9): M and S of four synthetic 2-D clouds, one figure each.

    cd reducibility_demos && python3 reducibility_demo.py
    python -m reducibility_demos.reducibility_demo --mixture_weights rebuttal --steps 500

Writes `reducibility_<dataset>.{png,pdf}` (the mixture cloud as `reducibility_gaussians_<weights>.*`) and
`reducibility_demo_<weights>.json` with M and S (bits) per dataset, under <base_dir>/figs/reducibility_demos/
unless --out_dir is given. Upstream put the values into the file names and gave S there in nats while the
figure showed bits; we keep stable names and report S in bits everywhere (S_nats is in the JSON too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import add_base_dir_arg, add_seed_arg, ensure_writable_dir, figs_dir, resolve_base_dir
from multid.errors import UserError, cli_entry
from multid.io import save_figure, save_json
from multid.reducibility import plots, synthetic
from multid.reducibility.engine import DEMO_MIXTURE


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
             "paper-era code that made Fig 2/9; default), rebuttal = 30/60/10 %% (upstream HEAD)",
    )
    parser.add_argument("--steps", type=int, default=DEMO_MIXTURE.steps,
                        help="gradient-ascent steps for M (default: %(default)s as upstream; e.g. 500 for a quick "
                             "run, the annealing schedule T = 1 - i/steps is rescaled to match)")
    parser.add_argument("--datasets", nargs="+", choices=synthetic.DATASETS, default=list(synthetic.DATASETS),
                        help="which clouds to run (default: all four)")
    parser.add_argument("--num_points", type=int, default=synthetic.NUM_POINTS,
                        help="points per cloud (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=["png", "pdf"], default=["png", "pdf"],
                        help="figure formats (default: png pdf)")
    parser.add_argument("--usetex", action="store_true",
                        help="render text with LaTeX (needs `latex`; default: matplotlib mathtext)")
    return parser


def output_dir(args: argparse.Namespace) -> Path:
    if args.out_dir:
        return ensure_writable_dir(Path(args.out_dir).expanduser().resolve(), what="--out_dir")
    return ensure_writable_dir(figs_dir(resolve_base_dir(args.base_dir)) / "reducibility_demos", what="figure folder")


def figure_stem(name: str, weights: str) -> str:
    """File stem per dataset; only the mixture cloud depends on --mixture_weights, so only it names them."""
    return f"reducibility_{name}_{weights}" if name == "gaussians" else f"reducibility_{name}"


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    if args.num_points < 2:
        raise UserError(f"--num_points must be at least 2, got {args.num_points}")
    out = output_dir(args)
    results = synthetic.demo_indices(args.datasets, seed=args.seed, num_points=args.num_points,
                                     weights=args.mixture_weights, steps=args.steps)
    written: list[Path] = []
    with plots.style(args.usetex):
        for result in results:
            print(f"{result.name:>10}: M = {result.m:.4f} (hard {result.m_hard:.4f})   S = {result.s_bits:.4f} bits")
            fig = plots.reducibility_figure(result, DEMO_MIXTURE.eps, synthetic.CROSS_SIZES[result.name])
            for fmt in args.formats:
                written.append(save_figure(fig, out / f"{figure_stem(result.name, args.mixture_weights)}.{fmt}",
                                           bbox_inches="tight"))
    record = {
        "seed": args.seed,
        "mixture_weights": args.mixture_weights,
        "mixture_shares": synthetic.mixture_shares(args.mixture_weights),
        "steps": args.steps,
        "eps": DEMO_MIXTURE.eps,
        "units": {"M": "fraction of points (surrogate at the last annealed step)", "S": "bits"},
        "datasets": {result.name: result.summary() for result in results},
    }
    written.append(save_json(out / f"reducibility_demo_{args.mixture_weights}.json", record))
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return written


if __name__ == "__main__":
    main()
