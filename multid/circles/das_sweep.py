"""DAS over layers for one model and task: cached stages, the per-layer table, its CSV and figure (docs/das.md).

Each layer is one stage, `<base_dir>/figs/<model>_<task>/das/layer_<L>.npz`, keyed by the task cache, the settings
and the probe; the summary over the finished layers is `das_summary.csv` and `das.png` beside them.
"""

from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from multid.circles import das
from multid.circles.probe import intervention_runs
from multid.circles.sweep import SweepParams, check_layers, fit_layer_probe, problem_type
from multid.config import figure_dir
from multid.errors import UserError
from multid.tasks.phrasings import held_out_examples, training_examples
from multid.io import load_npz, save_csv, save_figure, save_npz
from multid.stage import Stage, is_current, run_stage
from multid.tasks.cache import TaskCache
from multid.tasks.registry import TASKS

TRAIN_MAX_MULTIPLE = 2  # training durations 1..2p, as the fine-tune's (FinetuneSettings.max_multiple)
PROBE = SweepParams("a")  # the probe whose circle plane DAS is set beside: the demos' a-sweeps (cos, sin, PCA 5)


def das_dir(base_dir: Path, cache: TaskCache) -> Path:
    return figure_dir(base_dir, "das", cache.model, cache.task)


def das_command(model: str, task: str, settings: das.DasSettings, layers: Sequence[int] | None = None,
                base_dir: Path | None = None) -> str:
    """The command line that makes these DAS artifacts (for messages)."""
    default = das.DasSettings()
    parts = [f"python3 intervention/das_subspace.py {problem_type(task)} {model}"]
    if layers:
        parts.append("--layers " + " ".join(str(layer) for layer in layers))
    for name, value in settings.to_json().items():
        if value != default.to_json()[name]:
            shown = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
            parts.append(f"--{name} {shown}")
    if base_dir is not None:
        parts.append(f"--base_dir {shlex.quote(str(base_dir))}")
    return " ".join(parts)


def das_stage(base_dir: Path, cache: TaskCache, layer: int, settings: das.DasSettings) -> Stage:
    return Stage(f"DAS at layer {layer} of {cache.model} / {cache.task}", das_dir(base_dir, cache) / f"layer_{layer}.npz",
                 {"cache": cache.artifact_id, "layer": layer, "settings": settings.to_json(),
                  "probe": PROBE.plane_json(), "version": das.DAS_VERSION},
                 command=das_command(cache.model, cache.task, settings, [layer], base_dir))


# ------------------------------------------------------------------------------------------ inputs


def training_sample(task: str, n: int, seed: int):
    """A seeded sample (without replacement) of n of the task's fine-tuning prompts (durations 1..2p, the range
    smollm2-arith was taught), in their original order."""
    examples = training_examples(task, max_multiple=TRAIN_MAX_MULTIPLE)
    picked = np.sort(np.random.default_rng([seed, 2]).choice(len(examples), size=min(n, len(examples)), replace=False))
    return [examples[i] for i in picked]


def das_sets(model, cache: TaskCache, settings: das.DasSettings, batch_size: int = 64) -> dict[str, das.PromptSet]:
    """The training prompts (a sample of the fine-tuning phrasings', those the model answers right), the paper's template (the cache's aligned prompts) and the
    held-out phrasing (same problems, same order), as prompt sets of `model`."""
    spec = TASKS[cache.task]
    held = held_out_examples(cache.task)
    held_infos = np.array([example.info for example in held])
    if not np.array_equal(held_infos, cache.infos):
        raise UserError(f"the held-out phrasing's problems differ from cache {cache.folder}; rebuild the cache (--force)")
    train = training_sample(cache.task, settings.train_prompts, settings.seed)

    def prompt_set(prompts, infos):
        return das.PromptSet(model, prompts, infos, spec.start_words, cache.answer_token_ids, cache.p,
                             batch_size)

    sampled = prompt_set([e.prompt for e in train], np.array([e.info for e in train]))
    right = sampled.clean_correct()
    if right.sum() < 2 or len(np.unique(sampled.infos[right, 0])) < 2:
        raise UserError(f"{cache.model} answers only {int(right.sum())} of {len(right)} training prompts of {cache.task} "
                        f"right: too few to train DAS on")
    sets = {"train": prompt_set([e.prompt for e, ok in zip(train, right) if ok], sampled.infos[right]),
            "paper": prompt_set([problem.prompt for problem in cache.problems], cache.infos),
            "held_out": prompt_set([e.prompt for e in held], held_infos)}
    if sets["paper"].group_position != [cache.layout.a_token]:
        raise UserError(f"the start word of the paper's prompts is not at position {cache.layout.a_token} for this model; "
                        f"rebuild the cache {cache.folder} (--force)")
    return sets


# ------------------------------------------------------------------------------------------ storage


def save_layer(path: Path, result: das.LayerDas) -> None:
    arrays = {"layer": np.array(result.layer), "circle_plane": result.circle_plane,
              "random_planes": np.array(list(result.random.values())).reshape(-1, *result.circle_plane.shape),
              "dims": np.array(sorted(result.fits)), "n_train": np.array(result.n_train)}
    for k, fit in result.fits.items():
        arrays.update({f"plane_{k}": fit.plane, f"losses_{k}": fit.losses, f"train_iia_{k}": np.array(fit.train_iia)})
    for name in result.names:
        arrays.update({f"names_{name}": np.array(result.names[name]), f"logits_{name}": result.logits[name]})
    save_npz(path, **arrays)


def load_layer(path: Path) -> das.LayerDas:
    stored = load_npz(path)
    fits = {int(k): das.DasFit(stored[f"plane_{k}"], stored[f"losses_{k}"], float(stored[f"train_iia_{k}"]))
            for k in stored["dims"]}
    sets = [key[len("names_"):] for key in stored if key.startswith("names_")]
    return das.LayerDas(int(stored["layer"]), fits, {name: [str(n) for n in stored[f"names_{name}"]] for name in sets},
                        {name: stored[f"logits_{name}"] for name in sets}, stored["circle_plane"],
                        {f"random_{i}": plane for i, plane in enumerate(stored["random_planes"])}, int(stored["n_train"]))


# ------------------------------------------------------------------------------------------ running


@dataclass
class DasSweep:
    """The per-layer summary rows of one model and task, and the files written."""

    rows: list[dict]
    dims: tuple[int, ...]
    paths: dict = field(default_factory=dict)


def run_das_sweep(cache: TaskCache, base_dir: Path, layers: Sequence[int] | None, load_model: Callable[[], object],
                  settings: das.DasSettings | None = None, progress: bool = True, make_figure: bool = True,
                  batch_size: int = 64) -> DasSweep:
    """DAS at every layer (each a stage; the model and prompt sets are made only if some layer must be computed)."""
    settings = (settings or das.DasSettings()).check()
    layers = check_layers(layers, cache, "a")  # the start word's layers, as the a-sweep's
    runs = das.sample_runs(intervention_runs(cache.infos, cache.p, "a"), settings.eval_runs, settings.seed)
    held: dict[str, dict] = {}

    def sets() -> dict:
        if "sets" not in held:
            held["sets"] = das_sets(load_model(), cache, settings, batch_size)
        return held["sets"]

    rows = []
    for layer in layers:
        stage = das_stage(base_dir, cache, layer, settings)

        def build(tmp: Path, layer: int = layer) -> None:
            basis = fit_layer_probe(cache, PROBE, layer).basis()
            save_layer(tmp, das.run_layer_das(sets(), runs, basis, layer, settings, progress))

        if progress and not is_current(stage):
            print(f"DAS at layer {layer} of {cache.model} / {cache.task}")
        run_stage(stage, build)
        rows.append(das.layer_summary(load_layer(stage.path), runs, cache.infos, cache.p))
    out = das_dir(base_dir, cache)
    sweep = DasSweep(rows, tuple(settings.dims))
    sweep.paths["summary"] = save_csv(out / "das_summary.csv", list(rows[0]), [list(row.values()) for row in rows])
    if make_figure:
        sweep.paths["figure"] = plot_das(sweep, out / "das.png", f"{cache.model} / {cache.task}: DAS vs the circle")
    return sweep


# ------------------------------------------------------------------------------------------ reporting


def cell(value: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def table_lines(sweep: DasSweep) -> list[str]:
    """Per layer: interchange accuracy (IIA) of each patch on the paper's template and the held-out phrasing, DAS's
    training IIA, and the principal angles between DAS's subspace and the circle plane."""
    small = min(sweep.dims)
    das_heads = "".join(f"{'DAS' + str(k):>7}" for k in sweep.dims)
    lines = [f"interchange accuracy (arg-max answer = c'; chance {cell(sweep.rows[0]['chance_iia'])}); "
             f"circle*: the probe's circle plane interchanged like DAS; anglesK: DAS K vs circle plane (degrees)",
             f"{'':>5} {'--- paper template ':-<{44 + 7 * len(sweep.dims)}} {'--- held-out ':-<29} {'train':>6}",
             f"{'layer':>5} {'full':>6}{das_heads} {'circle*':>7} {'circle':>7} {'random 2-D':>17}"
             f" {'full':>6} {'DAS' + str(small):>6} {'circle*':>7} {'random':>7} {'DAS' + str(small):>6}"
             + "".join(f" {'angles' + str(k):>11}" for k in sweep.dims) + f" {'random':>7}"]
    for row in sweep.rows:
        random = (f"{cell(row['paper_iia_random_mean'])} [{cell(row['paper_iia_random_lo'])},"
                  f"{cell(row['paper_iia_random_hi'])}]")
        dims = "".join(f"{cell(row[f'paper_iia_das_{k}']):>7}" for k in sweep.dims)
        angles = "".join(f" {cell(row[f'angle_min_das_{k}'], 0) + '-' + cell(row[f'angle_max_das_{k}'], 0):>11}"
                         for k in sweep.dims)
        lines.append(f"{row['layer']:>5} {cell(row['paper_iia_patch_layer']):>6}{dims} "
                     f"{cell(row['paper_iia_circle_plane']):>7} {cell(row['paper_iia_patch_circle']):>7} {random:>17} "
                     f"{cell(row['held_out_iia_patch_layer']):>6} {cell(row[f'held_out_iia_das_{small}']):>6} "
                     f"{cell(row['held_out_iia_circle_plane']):>7} {cell(row['held_out_iia_random_mean']):>7} "
                     f"{cell(row[f'train_iia_das_{small}']):>6}{angles} {cell(row['angle_min_random_mean'], 0):>7}")
    lines.append("full: the donor's whole activation (patch layer); circle: the paper's patch circle (the rest set to "
                 "the mean); random: seeded random 2-D planes interchanged like DAS, mean [2.5, 97.5 percentiles]; "
                 "angles random: the smaller principal angle of a random plane with the circle plane")
    return lines


def plot_das(sweep: DasSweep, out_path: Path, title: str = "") -> Path:
    """IIA against layer on both evaluation sets, and DAS's principal angles with the circle plane."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.array([row["layer"] for row in sweep.rows])
    column = lambda key: np.array([row.get(key, np.nan) for row in sweep.rows])  # noqa: E731
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, set_name, label in ((axes[0], "paper", "paper's template"), (axes[1], "held_out", "held-out phrasing")):
        ax.plot(layers, column(f"{set_name}_iia_patch_layer"), color="black", marker=".", label="patch layer (full)")
        for k, shade in zip(sweep.dims, ("tab:blue", "tab:cyan", "tab:olive", "tab:brown")):
            ax.plot(layers, column(f"{set_name}_iia_das_{k}"), color=shade, marker="o", markersize=3, label=f"DAS k={k}")
        ax.plot(layers, column(f"{set_name}_iia_circle_plane"), color="tab:red", linestyle=":", marker="s", markersize=3,
                label="circle plane (interchange)")
        if set_name == "paper":
            ax.plot(layers, column("paper_iia_patch_circle"), color="tab:red", marker="o", markersize=3,
                    label="patch circle (paper)")
        ax.fill_between(layers, column(f"{set_name}_iia_random_lo"), column(f"{set_name}_iia_random_hi"),
                        color="tab:orange", alpha=0.25, linewidth=0, label="random 2-D (95 % band)")
        ax.axhline(sweep.rows[0]["chance_iia"], color="0.6", linewidth=0.8, label="chance 1/p")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("layer")
        ax.set_ylabel("interchange accuracy")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=6, loc="upper right")
    for k, shade in zip(sweep.dims, ("tab:blue", "tab:cyan", "tab:olive", "tab:brown")):
        axes[2].plot(layers, column(f"angle_min_das_{k}"), color=shade, marker="o", markersize=3, label=f"DAS k={k}: smaller")
        axes[2].plot(layers, column(f"angle_max_das_{k}"), color=shade, linestyle="--", label=f"DAS k={k}: larger")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        axes[2].plot(layers, column("angle_min_random_mean"), color="tab:orange", label="random plane: smaller")
    axes[2].set_ylim(0, 92)
    axes[2].set_xlabel("layer")
    axes[2].set_ylabel("principal angle with the circle plane (degrees)")
    axes[2].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_path, dpi=150, close=True)
    return out_path
