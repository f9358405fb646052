"""Patch points inside and outside the start-word circle and record the answer logits (Figure 6 data).

    cd intervention && python3 intervene_in_middle_of_circle.py --only_paper_plots --device 0
        (the paper's setting: mistral, days, layer 5, b = 2..5, k = 5)
    python -m intervention.intervene_in_middle_of_circle --model smollm2 --layer 5 --b 2 3 --num_angles 36 --radii 10

Needs the saved cos/sin a-probe of that layer and k, made by
    python3 intervention/circle_probe_interventions.py day a MODEL --intervention_pca_k 5 --probe_on_cos --probe_on_sin --layers L
Without --only_paper_plots (and no --model/--layer/--b/--problem_type), runs upstream's full mode:
mistral and llama, both tasks, layers 0..7, every b (it says so and how many grids before it starts;
--model_path, which names one model's weights, is refused there). Writes the per-b logits and 2x2
figures (see multid/circles/grid.py) and, for a set of b, the Figure 6 panel figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.tasks.build import add_cache_args, model_loader, open_or_build_cache  # noqa: E402
from multid.circles.grid import (  # noqa: E402
    compute_grid_logits,
    grid_figure_path,
    grid_path,
    plot_grid_panels,
)
from multid.circles.sweep import PROBLEM_TYPES  # noqa: E402
from multid.figures.intervention_figures import figure6, paper_plots_dir  # noqa: E402
from multid.paper import FIGURE6  # noqa: E402
from multid.tasks.registry import ALIASES, get_task_spec  # noqa: E402
from multid.config import print_written, resolve_base_dir  # noqa: E402
from multid.errors import UserError, cli_entry  # noqa: E402

FULL_MODE = {"models": ("mistral", "llama"), "tasks": ("day", "month"), "layers": tuple(range(8))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cache_args(parser)
    parser.set_defaults(model=None)
    parser.add_argument("--only_paper_plots", action="store_true",
                        help="the paper's setting: mistral, days, layer 5, b = 2..5, k = 5 (options below override)")
    parser.add_argument("--problem_type", choices=PROBLEM_TYPES, default=None, help="day or month (default: day)")
    parser.add_argument("--layer", type=int, nargs="+", default=None, help="cache layer(s) (default: 5)")
    parser.add_argument("--b", type=int, nargs="+", default=None, help="durations b (default: 2 3 4 5)")
    parser.add_argument("--pca_k", type=int, default=5, help="PCA dimension of the saved probe (default: %(default)s)")
    parser.add_argument("--num_angles", type=int, default=100, help="angles on the grid (default: %(default)s)")
    parser.add_argument("--radii", type=int, default=20, help="radii on the grid, k * 2 / radii (default: %(default)s: 0.0..1.9)")
    parser.add_argument("--centered_interventions", action="store_true", help="centred patch-circle formula")
    return parser


def settings(args: argparse.Namespace) -> list[tuple[str, str, list[int], list[int] | None]]:
    """(model, problem_type, layers, bs or None for all) to run."""
    explicit = args.model or args.layer or args.b or args.problem_type
    if args.only_paper_plots or explicit:
        return [(args.model or FIGURE6["model"], args.problem_type or "day", args.layer or [FIGURE6["layer"]],
                 args.b or list(FIGURE6["bs"]))]
    if args.model_path:
        raise UserError("--model_path names one model's weights, but without --model/--layer/--b/--problem_type this "
                        "script runs upstream's full mode over mistral and llama; add --model M (or --only_paper_plots)")
    return [(model, task, list(FULL_MODE["layers"]), None) for model in FULL_MODE["models"] for task in FULL_MODE["tasks"]]


def full_mode_plan(num_angles: int, num_radii: int) -> str:
    """One line saying what upstream's full mode will compute."""
    durations = {task: get_task_spec(task).p for task in FULL_MODE["tasks"]}
    grids = len(FULL_MODE["models"]) * len(FULL_MODE["layers"]) * sum(durations.values())
    layers = FULL_MODE["layers"]
    return (f"full mode (upstream's default): models {', '.join(FULL_MODE['models'])}; layers {layers[0]}..{layers[-1]}; "
            + "; ".join(f"{task} b = 1..{p}" for task, p in durations.items())
            + f"; {grids} grids of {num_angles * num_radii} points ({grids * num_angles * num_radii:,} patched runs). "
            "For a smaller run pass --only_paper_plots or --model/--layer/--b")


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    runs = settings(args)
    base_dir = resolve_base_dir(args.base_dir)
    if len(runs) > 1:
        print(full_mode_plan(args.num_angles, args.radii), flush=True)
    written: list[Path] = []
    started = time.time()
    loaders: dict = {}  # one model load per model, also across tasks (upstream reloaded per b)
    for model, problem_type, layers, bs in runs:
        args.model = model
        load = loaders.setdefault(model, model_loader(args))
        cache = open_or_build_cache(args, ALIASES[problem_type], load_model_fn=load)
        bs = bs or list(range(1, cache.p + 1))
        names = cache.meta["answer_words"]
        for layer in layers:
            grids = compute_grid_logits(cache, layer, bs, base_dir, load, args.pca_k, args.num_angles, args.radii,
                                        args.centered_interventions, args.batch_size)
            centered = args.centered_interventions
            for b, grid in grids.items():
                written.append(grid_path(base_dir, cache, layer, args.pca_k, b, centered))
                written.append(plot_grid_panels(grid, names, grid_figure_path(base_dir, cache, layer, args.pca_k, b, centered)))
            suffix = "_centered" if centered else ""
            out = paper_plots_dir(base_dir) / f"{model}_highest_logit_{problem_type}_after_intervention_layer{layer}{suffix}.png"
            written.append(figure6(list(grids.values()), names, out))
    print_written(written, started)
    return written


if __name__ == "__main__":
    main()
