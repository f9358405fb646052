"""Draw every paper figure and table whose artifacts exist, without Jupyter (the notebooks call the same steps).

    python3 intervention/render_figures.py [--base_dir DIR] [--model auto|mistral|llama|smollm2|...] [--part main|appendix|all]

Model choice ("auto"): the paper's models where their artifacts exist (Mistral for weekdays, Llama for
months, as in the paper's single-model figures; both for Figure 5 and the tables), else the first model with
artifacts for both tasks (SmolLM2 after `make demo`). A model named with --model is used for every
figure and table that shows one model per task (the paper models are not preferred then). A step whose
artifacts are missing, or were made from an older cache, is skipped with the command that makes them;
nothing is computed with a model here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from multid.tasks.cache import TaskCache
from multid.tasks.paths import build_cache_command, models_with
from multid.tasks.registry import TASK_NAMES
from multid.figures.paper import (
    all_layer_pca_grid,
    all_layer_pca_path,
    figure3,
    figure5,
    figure6,
    find_sweep_results,
    load_grid_logits,
    paper_plots_dir,
    residual_c_figure,
    write_results_table,
)
from multid.tasks.table1 import write_table1
from multid.config import resolve_base_dir
from multid.errors import UserError
from multid.paper import FIGURE6, PAPER_CHOICE, PAPER_MODELS



@dataclass(frozen=True)
class Selection:
    """Which model's artifacts each task's single-model figures use."""

    base_dir: Path
    models: dict[str, str]  # task -> model
    auto: bool = False  # chosen by "auto" (not named by the user): Figure 5 then prefers the paper models' sweeps

    def cache(self, task: str) -> TaskCache:
        return TaskCache.open(self.base_dir, self.models[task], task)

    def caches(self) -> list[TaskCache]:
        return [self.cache(task) for task in TASK_NAMES]


def choose_models(base_dir: str | Path | None = None, model: str = "auto") -> Selection:
    """Resolve the notebook's first-cell choice into one model per task (see module docstring)."""
    base = resolve_base_dir(base_dir, create=False)
    found = {task: models_with(base, task, "meta.json") for task in TASK_NAMES}
    if model != "auto":
        missing = [task for task in TASK_NAMES if model not in found[task]]
        if missing:
            raise UserError(f"no {model} cache for {', '.join(missing)} under {base}; build it with: "
                            f"{build_cache_command(model, missing[0], base_dir=base)}")
        return Selection(base, {task: model for task in TASK_NAMES})
    if all(PAPER_CHOICE[task] in found[task] for task in TASK_NAMES):
        return Selection(base, dict(PAPER_CHOICE), auto=True)
    both = [name for name in found["days_of_week"] if name in found["months_of_year"]]
    preferred = [name for name in (*PAPER_MODELS, "smollm2") if name in both] + both
    if not preferred:
        raise UserError(f"no model has caches for both tasks under {base}; run `make demo` or "
                        f"{build_cache_command('smollm2', 'days_of_week', base_dir=base)} (and the months_of_year one)")
    return Selection(base, {task: preferred[0] for task in TASK_NAMES}, auto=True)


def tag(selection: Selection) -> str:
    models = sorted(set(selection.models.values()))
    return "_".join(models)


# ------------------------------------------------------------------------------ main text


def render_figure3(selection: Selection) -> Path:
    return figure3(selection.caches(), paper_plots_dir(selection.base_dir) / f"{tag(selection)}_figure3_pca.png")


def render_figure5(selection: Selection) -> Path:
    """The selected models' finished a-circle sweeps; with "auto", all the paper models' sweeps if any exist."""
    from multid.circles.sweep import SweepParams, sweep_command

    runs = find_sweep_results(selection.base_dir)
    paper = [run for run in runs if run[0] in PAPER_MODELS] if selection.auto else []
    chosen = paper or [run for run in runs if run[0] == selection.models[run[1]]]
    if not chosen:
        command = sweep_command(selection.models["days_of_week"], "days_of_week", SweepParams("a"), base_dir=selection.base_dir)
        raise UserError(f"no finished a-circle sweep; run: {command}")
    name = "combined_intervention" if paper else f"{'_'.join(sorted({run[0] for run in chosen}))}_figure5"
    return figure5(chosen, paper_plots_dir(selection.base_dir) / f"{name}.png", base_dir=selection.base_dir)


def figure6_setting(selection: Selection) -> tuple[TaskCache, int, int, tuple[int, ...]]:
    """(weekdays cache, layer, k, bs) of the upstream-formula grids: the paper's layer 5 and k 5 if such grids
    exist, else the first (layer, k) found on disk, with every b stored for that (layer, k)."""
    from multid.circles.grid import grid_dir

    cache = selection.cache("days_of_week")
    folder = grid_dir(selection.base_dir, cache)
    bs_of: dict[tuple[int, int], list[int]] = {}
    for path in sorted(folder.glob(f"logits_*_{cache.layout.a_token}_*_*_a.npz")) if folder.exists() else []:
        _, layer, _, k, b, _ = path.stem.split("_")
        bs_of.setdefault((int(layer), int(k)), []).append(int(b))
    setting = (FIGURE6["layer"], FIGURE6["pca_k"])
    if bs_of and setting not in bs_of:
        setting = min(bs_of)
    return cache, setting[0], setting[1], tuple(sorted(bs_of.get(setting, FIGURE6["bs"])))


def render_figure6(selection: Selection) -> Path:
    cache, layer, k, bs = figure6_setting(selection)
    grids = load_grid_logits(cache, selection.base_dir, layer, k, bs)
    name = ("mistral_highest_logit_day_after_intervention" if cache.model == "mistral"
            else f"{cache.model}_figure6_layer{layer}")
    return figure6(grids, cache.meta["answer_words"], paper_plots_dir(selection.base_dir) / f"{name}.png")


def render_residual_c(selection: Selection) -> Path:
    cache = selection.cache("days_of_week")
    return residual_c_figure(cache, paper_plots_dir(selection.base_dir) / f"{cache.model}_residuals_c_pca.png")


def render_table1(selection: Selection) -> Path:
    text, written = write_table1(selection.base_dir)
    print(text)
    return written[0]


# ------------------------------------------------------------------------------ appendix


def render_all_layer_pca(selection: Selection) -> list[Path]:
    return [all_layer_pca_grid(cache, all_layer_pca_path(selection.base_dir, cache)) for cache in selection.caches()]


def render_results_tables(selection: Selection) -> list[Path]:
    written = []
    for task in TASK_NAMES:
        models = None if selection.auto else [selection.models[task]]  # None: the paper models if present
        path, counts = write_results_table(selection.base_dir, task, models)
        print(f"{task}: correct per model {counts}")
        written.append(path)
    return written


def render_patching_heatmaps(selection: Selection) -> list[Path]:
    """MLP and attention (and residual) patching heat maps for each task that has both keep-same sweeps."""
    from multid.patching.figures import layer_patching_heatmap

    written, missing = [], []
    for task, model in selection.models.items():
        for layer_type in ("mlp", "attention", "resid"):
            try:
                written += layer_patching_heatmap(selection.base_dir, model, task, layer_type)
            except UserError as err:
                missing.append(str(err))
    if not written:
        raise UserError(missing[0] if missing else "no patching sweeps found")
    return written


def render_head_patching(selection: Selection) -> list[Path]:
    """Attention-head heat map and the head table (Table 4) for each task with head sweeps."""
    from multid.patching.figures import head_patching_heatmap, head_table

    written, missing = [], []
    for task, model in selection.models.items():
        try:
            paths, _ = head_patching_heatmap(selection.base_dir, model, task)
            written += paths
            written += head_table(selection.base_dir, model, task)[0]
        except UserError as err:
            missing.append(str(err))
    if not written:
        raise UserError(missing[0] if missing else "no head patching sweeps found")
    return written


MAIN_TEXT_STEPS: dict[str, Callable[[Selection], object]] = {
    "Figure 3 (PCA of the start-word token)": render_figure3,
    "Figure 5 (circle interventions vs layer)": render_figure5,
    "Figure 6 (highest-logit answer over the circle plane)": render_figure6,
    "Residual-c PCA panel": render_residual_c,
    "Table 1 (accuracy)": render_table1,
}
APPENDIX_STEPS: dict[str, Callable[[Selection], object]] = {
    "All-layer PCA grids": render_all_layer_pca,
    "Patching heat maps (MLP, attention, residual)": render_patching_heatmaps,
    "Attention-head patching and head table": render_head_patching,
    "Tables 2 and 3 (per-problem results)": render_results_tables,
}


def run_steps(steps: dict[str, Callable[[Selection], object]], selection: Selection) -> list[Path]:
    """Run each step; a missing artifact or other user-level problem skips the step with its message."""
    written: list[Path] = []
    for title, step in steps.items():
        try:
            result = step(selection)
        except UserError as err:
            print(f"skipped {title}: {err}")
            continue
        paths = result if isinstance(result, list) else [result]
        written += [Path(path) for path in paths]
        for path in paths:
            print(f"{title}: {path}")
    return written


def show(step: Callable[[Selection], object], selection: Selection) -> list[Path]:
    """Notebook helper: run one step, print its paths and display its png figures (or say why it was skipped)."""
    from IPython.display import Image, display

    written = run_steps({getattr(step, "__name__", "step"): step}, selection)
    for path in written:
        if path.suffix == ".png":
            display(Image(filename=str(path)))
    return written


NOTEBOOKS = ("main_text_plots", "appendix_plots")


def execute_notebook(name: str, base_dir: Path, out_dir: Path, model: str = "auto", timeout: int = 600) -> tuple[Path, Path]:
    """Run `intervention/<name>.ipynb` headless against `base_dir`; save the executed notebook and an HTML copy."""
    import os

    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from multid.config import BASE_DIR_ENV, REPO_ROOT
    from multid.io import write_text_atomic

    source = REPO_ROOT / "intervention" / f"{name}.ipynb"
    notebook = nbformat.read(source, as_version=4)
    saved = {key: os.environ.get(key) for key in (BASE_DIR_ENV, "MULTID_NOTEBOOK_MODEL")}
    os.environ[BASE_DIR_ENV], os.environ["MULTID_NOTEBOOK_MODEL"] = str(base_dir), model
    try:
        NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(source.parent)}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    executed = write_text_atomic(out_dir / f"{name}.ipynb", nbformat.writes(notebook))
    html, _ = HTMLExporter().from_notebook_node(notebook)
    return executed, write_text_atomic(out_dir / f"{name}.html", html)
