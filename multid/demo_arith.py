"""`make demo-arith`: the paper's intervention pipeline on SmolLM2 taught the arithmetic (`smollm2-arith`).

Base SmolLM2 carries the weekday and month circles but does not do the arithmetic, so its Figure 5 is
flat. This demo fine-tunes it once (LoRA on other phrasings than the paper's, never the paper's
prompts; docs/finetune.md) and runs the pipeline on the result, next to base SmolLM2:
  1. fine-tune (reused when current): accuracy before/after on the paper's and a held-out template;
  2. both task caches of both models; Table 1;
  3. circle probe R^2 of the start word by layer with the relabelled-classes null;
  4. the seven-variant a-circle sweep, both tasks, every layer of smollm2-arith (base SmolLM2 at the
     `make demo` layers), with the random-subspace controls (docs/controls.md), and Figure 5 in the paper's
     2x2 layout (rows: smollm2-arith, SmolLM2);
  5. Figure 6 on smollm2-arith weekdays; 6. activation patching and the head table, both tasks, both models;
  7. feature deconstruction;
  8. DAS: a learned causal subspace beside the circle, both models, both tasks (docs/das.md).
Every step reuses what an earlier run wrote under the base dir.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # sleeping, not spinning, idle threads (see finetune_arithmetic.py)

from multid.circles.controls import DEFAULT_DRAWS, table_lines
from multid.circles.das import DasSettings
from multid.circles.das_sweep import run_das_sweep, table_lines as das_table_lines
from multid.circles.grid import compute_grid_logits
from multid.circles.sweep import SweepParams, run_circle_sweep
from multid.config import add_base_dir_arg, add_device_arg, figure_dir, resolve_base_dir, resolve_device
from multid.demo import FIGURE6_BS, FIGURE6_GRID, SWEEP_LAYERS, StepRunner, print_probe_table, print_sweep_table, probe_rows
from multid.errors import UserError, cli_entry
from multid.figures.intervention_figures import figure5, figure6, paper_plots_dir
from multid.finetune.train import finetune, format_accuracies
from multid.io import save_csv
from multid.models import lazy_loader
from multid.tasks.cache import build_task_cache
from multid.tasks.registry import TASK_NAMES, get_task_spec
from multid.tasks.table1 import write_table1

MODEL = "smollm2-arith"
BASE = "smollm2"
FIGURE6_LAYER = 8
CONTROL_LAYERS = (0, 4, 8, 12, 16, 20, 24, 28)
DAS_LAYERS = (0, 8, 16, 24)
DAS_DIMS = {MODEL: (2, 8), BASE: (2,)}  # k of the learned subspaces (base SmolLM2 does not do the arithmetic)


def parse_layers(text: str) -> list[int] | None:
    """'all' -> None (every layer), else a comma list."""
    if text == "all":
        return None
    try:
        return sorted({int(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise UserError(f"--layers {text!r} must be 'all' or comma-separated integers such as 0,4,8") from None


class ArithDemo(StepRunner):
    """Fine-tune SmolLM2 on the arithmetic, then the paper's pipeline on it beside base SmolLM2."""

    def __init__(self, base_dir: Path, device: str, layers: dict[str, list[int] | None], base_layers: list[int] | None,
                 controls: int = DEFAULT_DRAWS, control_layers: list[int] | None = None,
                 das_layers: Sequence[int] | None = DAS_LAYERS):
        super().__init__()
        self.das_layers = das_layers
        self.base_dir, self.device, self.controls, self.control_layers = base_dir, device, controls, control_layers
        self.layers, self.base_layers = layers, base_layers
        self.loaders = {name: lazy_loader(name, device=device, base_dir=base_dir) for name in (MODEL, BASE)}
        self.caches: dict[tuple[str, str], object] = {}
        self.sweeps: dict[tuple[str, str], object] = {}

    def finetune(self) -> None:
        folder, report = finetune(MODEL, self.base_dir)
        print(format_accuracies(report["accuracy_before"], report["accuracy_after"]))
        print(f"trained in {report['train_seconds']:.0f} s on {report['torch_threads']} threads")
        self.wrote("fine-tuned model", folder)

    def build_caches(self) -> None:
        for model in (MODEL, BASE):
            for task in TASK_NAMES:
                self.caches[model, task] = build_task_cache(get_task_spec(task), model, self.base_dir, self.loaders[model])

    def table1(self) -> None:
        text, written = write_table1(self.base_dir, [BASE, MODEL])
        print(text)
        self.wrote("Table 1", written[0])

    def probes(self) -> None:
        rows = [row for task in TASK_NAMES for row in probe_rows(self.caches[MODEL, task])]
        print_probe_table(rows)
        path = save_csv(figure_dir(self.base_dir, "demo") / f"{MODEL}_start_token_probe_r2.csv",
                        ("task", "layer", "r2_cos", "r2_sin", "r2_mean", "null_mean", "null_p95"), rows)
        self.wrote("probe R^2 table", path)

    def sweeps_and_figure5(self) -> None:
        for model in (MODEL, BASE):
            for task in TASK_NAMES:
                layers = self.layers[task] if model == MODEL else self.base_layers
                print(f"-- {model} {task}")
                # the controls at fewer layers: 21 patched forwards per run and layer
                result = run_circle_sweep(self.caches[model, task], SweepParams("a"), self.base_dir, layers,
                                          self.loaders[model], controls=self.controls, control_layers=self.control_layers)
                print_sweep_table(result)
                if result.controls is not None:
                    print("\n".join(table_lines(result.controls)))
                    self.wrote(f"controls {model} {task}", result.paths["controls_summary"])
                self.sweeps[model, task] = result
                self.wrote(f"sweep {model} {task}", result.paths["summary"])
        runs = [(model, task, self.sweeps[model, task].paths["combined"]) for model in (MODEL, BASE) for task in TASK_NAMES]
        # not {MODEL}_figure5.png: render_figures.py --model smollm2-arith draws that one (one row)
        self.wrote("Figure 5", figure5(runs, paper_plots_dir(self.base_dir) / f"{MODEL}_vs_{BASE}_figure5.png"))

    def figure6(self) -> None:
        cache = self.caches[MODEL, "days_of_week"]
        grids = compute_grid_logits(cache, FIGURE6_LAYER, list(FIGURE6_BS), self.base_dir, self.loaders[MODEL], **FIGURE6_GRID)
        out = paper_plots_dir(self.base_dir) / f"{MODEL}_figure6_layer{FIGURE6_LAYER}.png"
        self.wrote("Figure 6", figure6(list(grids.values()), cache.meta["answer_words"], out))

    def patching(self) -> None:
        from multid.patching.run import PatchingParams, patch_and_draw

        for model in (MODEL, BASE):
            for task in TASK_NAMES:
                print(f"-- {model} {task}")
                for path in patch_and_draw(self.caches[model, task], self.loaders[model], self.base_dir, PatchingParams()):
                    if path.parent.name == "paper_plots" and path.suffix in (".png", ".csv"):
                        self.wrote(f"patching {model} {task}", path)

    def das(self) -> None:
        for model in (MODEL, BASE):
            for task in TASK_NAMES:
                print(f"-- {model} {task}")
                sweep = run_das_sweep(self.caches[model, task], self.base_dir, self.das_layers, self.loaders[model],
                                      DasSettings(dims=DAS_DIMS[model]))
                print("\n".join(das_table_lines(sweep)))
                self.wrote(f"DAS {model} {task}", sweep.paths["summary"])

    def deconstruction(self) -> None:
        from multid.deconstruction.residual_rgb import run_deconstruction

        for task in TASK_NAMES:
            figure, json_path = run_deconstruction(task, model=MODEL, base_dir=self.base_dir, fmt="png", verbose=False)
            self.wrote(f"residual RGB ({task})", figure)
            self.wrote(f"residual RGB R^2 ({task})", json_path)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    add_device_arg(parser, default="cpu")
    parser.add_argument("--layers", default="all", help="smollm2-arith weekday sweep layers: all (default) or e.g. 0,4,8")
    parser.add_argument("--month_layers", default="all",
                        help="smollm2-arith month sweep layers (default: all; ~5x the weekday cost per layer)")
    parser.add_argument("--base_layers", default=",".join(map(str, SWEEP_LAYERS)),
                        help="base SmolLM2 sweep layers (default: %(default)s, as make demo; or all)")
    parser.add_argument("--controls", type=int, default=DEFAULT_DRAWS,
                        help="random 2-D subspace draws of each kind per control layer (default: %(default)s; 0: none; "
                             "docs/controls.md)")
    parser.add_argument("--control_layers", default=",".join(map(str, CONTROL_LAYERS)),
                        help="sweep layers that also get the controls (default: %(default)s; or all)")
    parser.add_argument("--das_layers", default=",".join(map(str, DAS_LAYERS)),
                        help="layers of the DAS step (default: %(default)s; or all; docs/das.md)")
    args = parser.parse_args(argv)
    started = time.time()
    layers = {"days_of_week": parse_layers(args.layers), "months_of_year": parse_layers(args.month_layers)}
    if args.controls < 0:
        raise UserError(f"--controls must be 0 or more, got {args.controls}")
    demo = ArithDemo(resolve_base_dir(args.base_dir), resolve_device(args.device), layers, parse_layers(args.base_layers),
                     args.controls, parse_layers(args.control_layers), parse_layers(args.das_layers))
    print(f"multid arithmetic demo on {MODEL} (and {BASE}); artifacts under {demo.base_dir}")
    demo.step("1. fine-tune SmolLM2 on the arithmetic (LoRA; reused when current)", demo.finetune)
    demo.step("2. task caches of both models", demo.build_caches)
    demo.step("3. Table 1", demo.table1)
    demo.step("4. circle probe R^2 of the start word by layer, with the relabelled-classes null", demo.probes)
    demo.step("5. a-circle interventions (seven variants, random-subspace controls), both tasks, and Figure 5",
              demo.sweeps_and_figure5)
    demo.step(f"6. Figure 6 (layer {FIGURE6_LAYER}, weekdays)", demo.figure6)
    demo.step("7. activation patching and the head table, both tasks, both models", demo.patching)
    demo.step("8. feature deconstruction (residual RGB), both tasks", demo.deconstruction)
    demo.step("9. DAS: a learned causal subspace beside the circle, both tasks, both models", demo.das)
    demo.print_outputs(started)


if __name__ == "__main__":
    main()
