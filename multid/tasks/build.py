"""CLI shared by `days_of_week_task.py` and `months_of_year_task.py`: build a task's cache and PCA files.

    python3 intervention/days_of_week_task.py --model smollm2
    python3 intervention/months_of_year_task.py --model mistral --device 0 --pca_k 20

Writes `<base_dir>/<model>_<task>/` (see intervention/layout.py) and reuses it when it is current.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from multid.tasks.cache import TaskCache, build_task_cache, ensure_pca_files
from multid.tasks.paths import results_csv_path
from multid.tasks.spec import ANSWER_MODES
from multid.tasks.registry import get_task_spec
from multid.config import add_base_dir_arg, add_device_arg, add_dtype_arg, positive_int, resolve_base_dir, resolve_device
from multid.errors import cli_entry
from multid.models import add_model_args, get_spec, lazy_loader


def add_cache_args(parser: argparse.ArgumentParser, positional_model: bool = False) -> None:
    """Flags every script that may build a task cache shares (model positional as upstream, or --model)."""
    add_model_args(parser, positional=positional_model)
    add_base_dir_arg(parser)
    add_device_arg(parser)
    add_dtype_arg(parser)
    parser.add_argument("--batch_size", type=positive_int, default=64, help="prompts per forward pass (default: %(default)s)")
    parser.add_argument(
        "--answer_tokens",
        default="continuation",
        choices=ANSWER_MODES,
        help="continuation (default): score the token the model predicts after 'is' (' Monday' with its space); "
        "bare: upstream's bare-word ids ('Monday')",
    )
    parser.add_argument("--n_devices", type=int, default=None, help="GPUs to split the model over (TransformerLens)")


def model_loader(args: argparse.Namespace) -> Callable[[], Any]:
    """A function that loads the model of `args` on first call and returns the same model afterwards."""
    return lazy_loader(args.model, device=resolve_device(args.device), dtype=args.dtype, model_path=args.model_path,
                       base_dir=resolve_base_dir(args.base_dir), n_devices=args.n_devices)


def open_or_build_cache(
    args: argparse.Namespace, task_name: str, force: bool = False, load_model_fn: Callable[[], Any] | None = None
) -> TaskCache:
    """Reuse the task cache if current, else load the model (with `load_model_fn` if given) and build it."""
    get_spec(args.model)  # unknown model names fail before anything else
    base_dir = resolve_base_dir(args.base_dir)
    return build_task_cache(
        get_task_spec(task_name),
        args.model,
        base_dir,
        load_model_fn or model_loader(args),
        model_path=args.model_path,
        dtype=args.dtype,
        answer_mode=args.answer_tokens,
        batch_size=args.batch_size,
        force=force,
    )


def build_parser(task_name: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=f"Build the {task_name} activation cache (residual stream at every layer and position), "
        f"results.csv and PCA files for a model."
    )
    add_cache_args(parser)
    parser.add_argument("--pca_k", type=int, default=20, help="PCA dimension of the files written (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="recompute even if the cache is current")
    return parser


@cli_entry
def main(task_name: str, argv: list[str] | None = None) -> Path:
    args = build_parser(task_name).parse_args(argv)
    started = time.time()
    cache = open_or_build_cache(args, task_name, force=args.force)
    count = ensure_pca_files(cache, args.pca_k)
    results = cache.results()
    correct = int((results["best_token"] == results["ground_truth"]).sum())
    print(f"{args.model} {task_name}: {correct}/{len(results)} correct (top logit among the {cache.p} answer words)")
    print(f"cache:      {cache.folder}")
    print(f"results:    {results_csv_path(cache.folder)}")
    print(f"PCA-{args.pca_k}:     {count} files in {cache.folder / 'pca'}")
    print(f"done in {time.time() - started:.1f} s")
    return cache.folder
