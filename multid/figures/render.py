"""The paper's figures and tables drawn from artifacts on disk, step by step (`intervention/render_figures.py`
and both notebooks run these steps; nothing here loads a model).

Each `Step` knows the files it writes, so a step that cannot be drawn moves its older files into
`figs/paper_plots/stale/` instead of leaving them looking current; `run_steps` returns one `Outcome` per step
and `outcome_table` prints them (drawn / skipped, with the command that makes what is missing).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from multid.tasks.cache import TaskCache
from multid.tasks.paths import build_cache_command, models_with
from multid.tasks.registry import TASK_NAMES
from multid.figures.intervention_figures import (
    all_layer_pca_file,
    all_layer_pca_grid,
    figure3,
    figure5,
    figure6,
    find_sweep_results,
    load_grid_logits,
    paper_plots_dir,
    residual_c_figure,
    results_table_path,
    write_results_table,
)
from multid.tasks.table1 import table1_paths, write_table1
from multid.config import resolve_base_dir
from multid.errors import UserError
from multid.paper import FIGURE6, PAPER_CHOICE, PAPER_MODELS

STALE_FOLDER = "stale"  # under figs/paper_plots: older files of a step that could not be drawn now


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


@dataclass
class Drawn:
    """What a step that draws several figures achieved: the files written, and why the others were not."""

    paths: list[Path]
    missing: list[UserError] = field(default_factory=list)


# ------------------------------------------------------------------------------ main text


def figure3_file(selection: Selection) -> Path:
    return paper_plots_dir(selection.base_dir) / f"{tag(selection)}_figure3_pca.png"


def render_figure3(selection: Selection) -> Path:
    return figure3(selection.caches(), figure3_file(selection))


def figure5_file(selection: Selection, models: Sequence[str], paper: bool) -> Path:
    name = "combined_intervention" if paper else f"{'_'.join(sorted(set(models)))}_figure5"
    return paper_plots_dir(selection.base_dir) / f"{name}.png"


def figure5_files(selection: Selection) -> list[Path]:
    """The selection's own Figure 5 file, and with "auto" the paper models' combined one."""
    own = [figure5_file(selection, list(selection.models.values()), paper=False)]
    return own + ([figure5_file(selection, [], paper=True)] if selection.auto else [])


def render_figure5(selection: Selection) -> Path:
    """The selected models' finished a-circle sweeps; with "auto", all the paper models' sweeps if any exist."""
    from multid.circles.sweep import SweepParams, sweep_command

    runs = find_sweep_results(selection.base_dir)
    paper = [run for run in runs if run[0] in PAPER_MODELS] if selection.auto else []
    chosen = paper or [run for run in runs if run[0] == selection.models[run[1]]]
    if not chosen:
        command = sweep_command(selection.models["days_of_week"], "days_of_week", SweepParams("a"), base_dir=selection.base_dir)
        raise UserError(f"no finished a-circle sweep; run: {command}")
    out = figure5_file(selection, [run[0] for run in chosen], paper=bool(paper))
    return figure5(chosen, out, base_dir=selection.base_dir)


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


def figure6_file(base_dir: Path, model: str, layer: int) -> Path:
    name = "mistral_highest_logit_day_after_intervention" if model == "mistral" else f"{model}_figure6_layer{layer}"
    return paper_plots_dir(base_dir) / f"{name}.png"


def figure6_files(selection: Selection) -> list[Path]:
    """The Figure 6 file of the grids on disk, or of the paper's layer when there are none."""
    model = selection.models["days_of_week"]
    try:
        layer = figure6_setting(selection)[1]
    except UserError:  # the cache itself is unreadable: the paper's layer names the file
        layer = FIGURE6["layer"]
    return [figure6_file(selection.base_dir, model, layer)]


def render_figure6(selection: Selection) -> Path:
    cache, layer, k, bs = figure6_setting(selection)
    grids = load_grid_logits(cache, selection.base_dir, layer, k, bs)
    return figure6(grids, cache.meta["answer_words"], figure6_file(selection.base_dir, cache.model, layer))


def residual_c_file(selection: Selection) -> Path:
    return paper_plots_dir(selection.base_dir) / f"{selection.models['days_of_week']}_residuals_c_pca.png"


def render_residual_c(selection: Selection) -> Path:
    return residual_c_figure(selection.cache("days_of_week"), residual_c_file(selection))


def render_table1(selection: Selection) -> Path:
    text, written = write_table1(selection.base_dir)
    print(text)
    return list(written)


# ------------------------------------------------------------------------------ appendix


def render_all_layer_pca(selection: Selection) -> list[Path]:
    return [all_layer_pca_grid(cache, all_layer_pca_file(selection.base_dir, cache.model, cache.task))
            for cache in selection.caches()]


def render_results_tables(selection: Selection) -> list[Path]:
    written = []
    for task in TASK_NAMES:
        models = None if selection.auto else [selection.models[task]]  # None: the paper models if present
        path, counts = write_results_table(selection.base_dir, task, models)
        print(f"{task}: correct per model {counts}")
        written.append(path)
    return written


def patching_files(selection: Selection, kind: str) -> list[Path]:
    from multid.patching.figures import patching_figure_files

    out = paper_plots_dir(selection.base_dir)
    return [path for task, model in selection.models.items() for path in patching_figure_files(out, model, task)[kind]]


def render_patching_heatmaps(selection: Selection) -> Drawn:
    """MLP and attention (and residual) patching heat maps for each task that has both keep-same sweeps."""
    from multid.patching.figures import layer_patching_heatmap

    drawn = Drawn([])
    for task, model in selection.models.items():
        for layer_type in ("mlp", "attention", "resid"):
            try:
                drawn.paths += layer_patching_heatmap(selection.base_dir, model, task, layer_type)
            except UserError as err:
                drawn.missing.append(err)
    return drawn


def render_head_patching(selection: Selection) -> Drawn:
    """Attention-head heat map and the head table (Table 4) for each task with head sweeps."""
    from multid.patching.figures import head_patching_heatmap, head_table

    drawn = Drawn([])
    for task, model in selection.models.items():
        try:
            drawn.paths += head_patching_heatmap(selection.base_dir, model, task)[0]
            drawn.paths += head_table(selection.base_dir, model, task)[0]
        except UserError as err:
            drawn.missing.append(err)
    return drawn


# ------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class Step:
    """One figure or table: `key` for --only, `draw` makes it, `files` says which files it writes."""

    key: str
    title: str
    part: str  # "main" or "appendix"
    draw: Callable[[Selection], object]
    files: Callable[[Selection], list[Path]]


STEPS: tuple[Step, ...] = (
    Step("figure3", "Figure 3 (PCA of the start-word token)", "main", render_figure3, lambda s: [figure3_file(s)]),
    Step("figure5", "Figure 5 (circle interventions vs layer)", "main", render_figure5, figure5_files),
    Step("figure6", "Figure 6 (highest-logit answer over the circle plane)", "main", render_figure6, figure6_files),
    Step("residual_c", "Residual-c PCA panel", "main", render_residual_c, lambda s: [residual_c_file(s)]),
    Step("table1", "Table 1 (accuracy)", "main", render_table1, lambda s: list(table1_paths(s.base_dir))),
    Step("all_layer_pca", "All-layer PCA grids", "appendix", render_all_layer_pca,
         lambda s: [all_layer_pca_file(s.base_dir, model, task) for task, model in s.models.items()]),
    Step("patching", "Patching heat maps (MLP, attention, residual)", "appendix", render_patching_heatmaps,
         lambda s: patching_files(s, "layers")),
    Step("head_patching", "Attention-head patching and head table", "appendix", render_head_patching,
         lambda s: patching_files(s, "heads")),
    Step("results_tables", "Tables 2 and 3 (per-problem results)", "appendix", render_results_tables,
         lambda s: [results_table_path(s.base_dir, task) for task in TASK_NAMES]),
)
STEP_KEYS = tuple(step.key for step in STEPS)


def steps_of(part: str = "all", only: Sequence[str] | None = None) -> list[Step]:
    """The steps of a part ("main", "appendix", "all"), or exactly the named ones."""
    if only:
        unknown = [key for key in only if key not in STEP_KEYS]
        if unknown:
            raise UserError(f"unknown step {unknown[0]!r}; choose from {', '.join(STEP_KEYS)}")
        return [step for step in STEPS if step.key in only]
    if part not in ("main", "appendix", "all"):
        raise UserError(f"unknown part {part!r}; choose main, appendix or all")
    return [step for step in STEPS if part in ("all", step.part)]


@dataclass
class Outcome:
    """What happened to one step: the files drawn, why the rest were not, older files moved aside."""

    step: Step
    drawn: list[Path]
    missing: list[UserError]
    moved: list[Path]  # where older files of the parts not drawn now are (under figs/paper_plots/stale/)

    @property
    def status(self) -> str:
        if not self.missing:
            return "drawn"
        return "partly drawn" if self.drawn else "SKIPPED"


def run_step(step: Step, selection: Selection) -> Outcome:
    """Draw one step; on a missing or outdated artifact keep going, and move this step's older files aside."""
    try:
        result = step.draw(selection)
    except UserError as err:
        result = Drawn([], [err])
    if not isinstance(result, Drawn):
        result = Drawn([Path(path) for path in (result if isinstance(result, list) else [result])])
    if not result.paths and not result.missing:
        result.missing.append(UserError("nothing to draw"))
    moved = move_aside(step, selection, result.paths) if result.missing else []
    for path in result.paths:  # a fresh file makes its moved-aside older copy pointless
        (Path(path).parent / STALE_FOLDER / Path(path).name).unlink(missing_ok=True)
    return Outcome(step, [Path(path) for path in result.paths], result.missing, moved)


def move_aside(step: Step, selection: Selection, drawn: Sequence[Path]) -> list[Path]:
    """Move the step's existing files that this run did not (re)draw into figs/paper_plots/stale/."""
    try:
        candidates = step.files(selection)
    except UserError:
        return []
    keep = {Path(path).resolve() for path in drawn}
    moved = []
    for path in candidates:
        if path.exists() and path.resolve() not in keep:
            target = path.parent / STALE_FOLDER / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            moved.append(target)
    return moved


def run_steps(steps: Sequence[Step], selection: Selection) -> list[Outcome]:
    """Run each step in order, printing each file drawn and each reason for a skip as it happens."""
    outcomes = []
    for step in steps:
        outcome = run_step(step, selection)
        for path in outcome.drawn:
            print(f"{step.title}: {path}")
        for err in outcome.missing:
            print(f"skipped {'part of ' if outcome.drawn else ''}{step.title}: {err}")
        for path in outcome.moved:
            print(f"{step.title}: moved the older {path.name} to {path.parent} (not current)")
        outcomes.append(outcome)
    return outcomes


COMMAND_PATTERN = re.compile(r"(?:make it with|run|with): ((?:python3? |make ).*)$")


def remedy(err: UserError) -> str:
    """The command that makes what is missing (from the error), else the error itself."""
    command = getattr(err, "command", None)
    if command:
        return command
    match = COMMAND_PATTERN.search(str(err))
    return match.group(1) if match else str(err)


def outcome_table(outcomes: Sequence[Outcome], base_dir: Path) -> str:
    """One row per step: status, and the files drawn or the command that makes what is missing."""
    width = max(len(outcome.step.key) for outcome in outcomes)
    lines = [f"{'step':<{width}}  {'result':<12}  files drawn / to make what is missing", "-" * (width + 60)]
    for outcome in outcomes:
        if outcome.drawn:
            names = ", ".join(short(path, base_dir) for path in outcome.drawn if path.suffix != ".pdf")
            lines.append(f"{outcome.step.key:<{width}}  {outcome.status:<12}  {names}")
        key, status = ("", "") if outcome.drawn else (outcome.step.key, outcome.status)
        for command in dict.fromkeys(remedy(err) for err in outcome.missing):
            lines.append(f"{key:<{width}}  {status:<12}  make: {command}")
            key, status = "", ""
        if outcome.moved:
            lines.append(f"{'':<{width}}  {'':<12}  older file(s) moved to {short(outcome.moved[0].parent, base_dir)}/: "
                         + ", ".join(path.name for path in outcome.moved))
    return "\n".join(lines)


def short(path: Path, base_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(base_dir))
    except ValueError:
        return str(path)


def show(draw: Callable[[Selection], object], selection: Selection) -> list[Path]:
    """Notebook helper: run one step, print its paths and display its png figures (or say why it was skipped)."""
    from IPython.display import Image, display

    step = next((step for step in STEPS if step.draw is draw),
                Step(getattr(draw, "__name__", "step"), getattr(draw, "__name__", "step"), "", draw, lambda s: []))
    written = run_steps([step], selection)[0].drawn
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
