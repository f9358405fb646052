"""Circle probes and the seven interventions per layer (paper Figure 5 data), upstream's CLI.

    cd intervention && python3 circle_probe_interventions.py day a smollm2 --device cpu \\
        --intervention_pca_k 5 --probe_on_cos --probe_on_sin --layers 2 4
    python -m intervention.circle_probe_interventions month a mistral --device 0 --intervention_pca_k 5 --probe_on_cos --probe_on_sin

Builds the task cache if needed, then for each layer fits the probe (saved per layer) and runs the
interventions (batched, resumable per layer). The artifacts: multid/circles/sweep.py; the formulas:
multid/circles/probe.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.tasks.build import add_cache_args, model_loader, open_or_build_cache  # noqa: E402
from multid.circles.controls import DEFAULT_DRAWS, table_lines  # noqa: E402
from multid.circles.probe import check_target_names  # noqa: E402
from multid.circles.sweep import (  # noqa: E402
    DEFAULT_NULL_PERMUTATIONS,
    PROBLEM_TYPES,
    SweepParams,
    check_params,
    default_pca_k,
    run_circle_sweep,
)
from multid.tasks.registry import ALIASES  # noqa: E402
from multid.config import add_seed_arg, positive_int, print_written, resolve_base_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("problem_type", choices=PROBLEM_TYPES, help="day (weekdays) or month")
    parser.add_argument("intervene_on", choices=("a", "c"), help="a: start-word circle; c: answer circle at the last token")
    add_cache_args(parser, positional_model=True)
    parser.add_argument("--use_inverse_regression_probe", action="store_true",
                        help="letter c only: intervention plane from find_c_circle instead of the least-squares probe")
    parser.add_argument("--intervention_pca_k", type=int, default=None,
                        help="PCA dimension k (default: 20 with --use_inverse_regression_probe, else 5)")
    parser.add_argument("--repeat_probing", action="store_true", help="accepted for upstream compatibility; no effect")
    parser.add_argument("--probe_on_cos", action="store_true", help="probe target cos(2 pi x / p)")
    parser.add_argument("--probe_on_sin", action="store_true", help="probe target sin(2 pi x / p)")
    parser.add_argument("--probe_on_centered_linear", action="store_true", help="probe target x - (p - 1) / 2")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="cache layers to run (default: all, 0..n for a, 1..n for c)")
    parser.add_argument("--centered_interventions", action="store_true",
                        help="centred 'patch circle' / 'patch PCA' formulas (default: upstream's, see multid/circles/probe.py)")
    parser.add_argument("--upstream_one_hot_8", action="store_true",
                        help="find_c_circle with upstream's 8 indicators per variable (wrong for months) instead of p")
    parser.add_argument("--null_permutations", type=int, default=DEFAULT_NULL_PERMUTATIONS,
                        help="relabellings for the probe R^2 null (default: %(default)s)")
    parser.add_argument("--controls", type=positive_int, nargs="?", const=DEFAULT_DRAWS, default=0, metavar="K",
                        help="also patch K seeded random 2-D subspaces of the residual stream and K of the PCA space "
                             f"per layer, beside the circle plane under the same rule (`--controls` alone: K = "
                             f"{DEFAULT_DRAWS}; multid/circles/controls.py): writes <stem>_controls.csv / .png and "
                             "prints each layer's shares")
    add_seed_arg(parser)
    return parser


def params_from_args(args: argparse.Namespace) -> SweepParams:
    chosen = tuple(name for name in ("cos", "sin", "centered_linear") if getattr(args, f"probe_on_{name}"))
    targets = check_target_names(chosen)
    k = args.intervention_pca_k if args.intervention_pca_k is not None else default_pca_k(args.use_inverse_regression_probe)
    return SweepParams(letter=args.intervene_on, targets=targets, pca_k=k, inverse_regression=args.use_inverse_regression_probe,
                       centered=args.centered_interventions, upstream_one_hot_8=args.upstream_one_hot_8,
                       null_permutations=args.null_permutations, seed=args.seed)


@cli_entry
def main(argv: list[str] | None = None):
    parser = build_parser()
    args = parser.parse_args(argv)
    params = check_params(params_from_args(args))
    started = time.time()
    base_dir = resolve_base_dir(args.base_dir)
    load = model_loader(args)
    cache = open_or_build_cache(args, ALIASES[args.problem_type], load_model_fn=load)
    result = run_circle_sweep(cache, params, base_dir, args.layers, load, batch_size=args.batch_size,
                              controls=args.controls)
    print(f"{'layer':>5} {'R2':>6} {'null':>6} {'null95':>6} " + " ".join(f"{name[:12]:>12}" for name in
          ("no_op", "patch_circle", "patch_pca", "patch_layer", "average_ablate")))
    for index, layer in enumerate(result.layers):
        means = result.means[index]
        print(f"{layer:>5} {result.r2[index].mean():>6.3f} {result.null_mean[index]:>6.3f} {result.null_p95[index]:>6.3f} "
              + " ".join(f"{value:>12.3f}" for value in means[:5]))
    if result.controls is not None:
        print("\n" + "\n".join(table_lines(result.controls)))
    print_written([f"{what:<20} {path}" for what, path in result.paths.items() if path is not None], started)
    return result


if __name__ == "__main__":
    main()
