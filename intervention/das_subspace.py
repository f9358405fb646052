"""Distributed alignment search (DAS) beside the probe's circle: is the start word's circle where the model reads it?

    cd intervention && python3 das_subspace.py day smollm2-arith --layers 0 4 8
    python -m intervention.das_subspace month smollm2 --dims 2 8 --steps 150

At each layer and the start word, learns k-dimensional subspaces (--dims) whose interchange between two prompts makes
the model give the counterfactual answer, trained on the fine-tuning phrasings (never the paper's template), and
scores them beside the probe's circle plane, the paper's patch circle and seeded random 2-D planes on the sweep's runs
of the paper's template and of the held-out phrasing: interchange accuracy (chance 1/p), share of patch layer's
effect, and the principal angles between DAS's subspace and the circle plane. Each layer is cached; the method and
its limits: docs/das.md; the code: multid/circles/das.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.circles.das import DasSettings  # noqa: E402
from multid.circles.das_sweep import run_das_sweep, table_lines  # noqa: E402
from multid.circles.sweep import PROBLEM_TYPES  # noqa: E402
from multid.config import add_seed_arg, positive_int, print_written, resolve_base_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402
from multid.tasks.build import add_cache_args, model_loader, open_or_build_cache  # noqa: E402
from multid.tasks.registry import ALIASES  # noqa: E402

DEFAULTS = DasSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problem_type", choices=PROBLEM_TYPES, help="day (weekdays) or month")
    add_cache_args(parser, positional_model=True)
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="cache layers (default: all)")
    parser.add_argument("--dims", type=positive_int, nargs="+", default=list(DEFAULTS.dims),
                        help="dimension k of each learned subspace (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=DEFAULTS.steps, help="Adam steps per subspace (default: %(default)s)")
    parser.add_argument("--train_batch", type=positive_int, default=DEFAULTS.train_batch,
                        help="training pairs per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--train_prompts", type=positive_int, default=DEFAULTS.train_prompts,
                        help="seeded sample of the fine-tuning phrasings' prompts to train on (default: %(default)s)")
    parser.add_argument("--train_eval_pairs", type=positive_int, default=DEFAULTS.train_eval_pairs,
                        help="training pairs on which the training IIA is reported (default: %(default)s)")
    parser.add_argument("--draws", type=int, default=DEFAULTS.draws,
                        help="seeded random 2-D planes per layer, the yardstick (default: %(default)s)")
    parser.add_argument("--eval_runs", type=int, default=DEFAULTS.eval_runs,
                        help="seeded sample of the sweep's runs scored on each template (0: all; default: %(default)s)")
    add_seed_arg(parser)
    return parser


def settings_from_args(args: argparse.Namespace) -> DasSettings:
    return DasSettings(dims=tuple(args.dims), steps=args.steps, train_batch=args.train_batch, lr=args.lr,
                       train_prompts=args.train_prompts, train_eval_pairs=args.train_eval_pairs, draws=args.draws,
                       eval_runs=args.eval_runs, seed=args.seed).check()


@cli_entry
def main(argv: list[str] | None = None):
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    started = time.time()
    load = model_loader(args)
    cache = open_or_build_cache(args, ALIASES[args.problem_type], load_model_fn=load)
    sweep = run_das_sweep(cache, resolve_base_dir(args.base_dir), args.layers, load, settings, batch_size=args.batch_size)
    print("\n".join(table_lines(sweep)))
    print_written([f"{what:<8} {path}" for what, path in sweep.paths.items()], started)
    return sweep


if __name__ == "__main__":
    main()
