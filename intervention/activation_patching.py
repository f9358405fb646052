"""Activation patching for one model and task, then the appendix heat maps and head table (paper appendix).

    cd intervention && python3 activation_patching.py --model smollm2 --task days_of_week
    python -m intervention.activation_patching --model mistral --task months_of_year --device 0

For each layer type (resid, mlp, attention, attention_head) and keep-same setting (a, b) it writes
`<base_dir>/figs/<model>_<task>/patching/<layer_type>/keep-same-<a|b>_n<pairs>.npz` and a png of the
mean, reusing files computed from the same cache with the same parameters. With both keep-same
settings it then draws the paper heat maps into `<base_dir>/figs/paper_plots/` and, for attention
heads, stores the top heads' outputs at the last prompt token and writes the head table (.tex/.csv).
Pairs, metric and sites: multid/patching/activation.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from multid.config import resolve_base_dir, resolve_device  # noqa: E402
from multid.errors import UserError, cli_entry  # noqa: E402
from multid.patching.figures import INDICATOR_MODES  # noqa: E402
from multid.models import get_spec  # noqa: E402
from multid.patching.activation import DEFAULT_LIMIT_PER_EXAMPLE, DEFAULT_NUM_PAIRS, DEFAULT_SEED, KEEP_SAME, LAYER_TYPES  # noqa: E402
from multid.patching.run import PatchingParams, patch_and_draw  # noqa: E402
from multid.tasks.build import add_cache_args, model_loader, open_or_build_cache  # noqa: E402
from multid.tasks.registry import get_task_spec  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Activation patching (resid / mlp / attention per layer and position, attention heads at the "
        "last prompt token) on the weekday or month task, with the appendix heat maps and head table."
    )
    parser.add_argument("--task", default="days_of_week", help="days_of_week or months_of_year (also: day, month) (default: %(default)s)")
    add_cache_args(parser)
    parser.add_argument("--keep_same", default="both", choices=(*KEEP_SAME, "both"), help="field shared by clean and corrupted prompts (default: %(default)s)")
    parser.add_argument("--layer_type", nargs="+", default=list(LAYER_TYPES), choices=LAYER_TYPES, help="what to patch (default: all)")
    parser.add_argument("--num_pairs", type=int, default=DEFAULT_NUM_PAIRS, help="(clean, corrupted) pairs per sweep (default: %(default)s)")
    parser.add_argument("--limit_per_example", type=int, default=DEFAULT_LIMIT_PER_EXAMPLE, help="partners per clean prompt (default: %(default)s)")
    parser.add_argument(
        "--head_layers", type=int, nargs=2, metavar=("LO", "HI"), default=None,
        help="layers LO..HI-1 for head patching (default: 12 32 for 32-layer models, the same depth fraction otherwise)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="pair shuffle seed; 42 reproduces upstream's order (default: %(default)s)")
    parser.add_argument("--top_heads", type=int, default=10, help="heads in the head table (default: %(default)s)")
    parser.add_argument(
        "--indicators", default="p", choices=INDICATOR_MODES,
        help="head table one-hot widths: p = every value of a, b, c; 8 = upstream's fixed 8 (default: %(default)s)",
    )
    parser.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads for torch (default: torch's choice); 1 is often fastest on a busy machine, the batches are small",
    )
    parser.add_argument("--max_rows", type=int, default=512, help="patched prompts per forward pass (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="recompute sweeps even if current")
    parser.add_argument("--no_figures", action="store_true", help="only compute and save the arrays")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parsed and checked arguments (the task name normalised, the device checked before any work)."""
    args = build_parser().parse_args(argv)
    params_from_args(args)  # bad values fail before any work
    get_spec(args.model)
    args.task = get_task_spec(args.task).name
    resolve_device(args.device)  # a missing GPU fails before any work
    if args.threads < 0:
        raise UserError(f"--threads must be 0 (torch's default) or a positive count; got {args.threads}")
    return args


def params_from_args(args: argparse.Namespace) -> PatchingParams:
    return PatchingParams(
        keep_same=tuple(KEEP_SAME) if args.keep_same == "both" else (args.keep_same,), layer_types=tuple(args.layer_type),
        num_pairs=args.num_pairs, limit_per_example=args.limit_per_example, seed=args.seed,
        head_layers=tuple(args.head_layers) if args.head_layers else None, top_heads=args.top_heads,
        indicators=args.indicators, max_rows=args.max_rows,
    )


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    loader = model_loader(args)  # loads only if something has to be computed
    cache = open_or_build_cache(args, args.task, load_model_fn=loader)
    written = patch_and_draw(cache, loader, resolve_base_dir(args.base_dir), params_from_args(args), force=args.force,
                             figures=not args.no_figures)
    print("wrote:")
    for path in written:
        print(f"  {path}")
    print(f"done in {time.time() - started:.1f} s")
    return written


if __name__ == "__main__":
    main()
