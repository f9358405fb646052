"""The reducibility demo (paper section 3, Figures 2 and 9): M and S of four synthetic clouds, a figure each.

Each dataset's numbers are a stage (`multid.stage`): the result file `results/<stem>.json` is stored with its
settings (dataset, mixture weights, steps, points, seed, code version, index settings) and reused while they
match; each figure is a stage built from that result. The summary `reducibility_demo_<weights>.json` is
assembled from every dataset whose result exists, so a run on a subset of the datasets keeps the others.
The figure files keep stable names; S is in bits everywhere (the JSON also gives S_nats, the unit the
paper's code used in its file names).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from multid.config import ensure_writable_dir, figure_dir
from multid.io import load_json, save_figure, save_json
from multid.reducibility import plots, synthetic
from multid.reducibility.indices import DEMO_MIXTURE, DEMO_SEPARABILITY
from multid.stage import Stage, artifact_id, canonical_json, damage, lock_for, read_record, run_stage

# Bump when the clouds, the indices or the figure change: artifacts made by older code are then rebuilt.
# 2: the clouds and the optimiser's start are drawn with torch in the paper's order (1 drew them with numpy).
# 3: the exact M (the maximum over every slab) beside the gradient optimiser's.
CODE_VERSION = 3
COMMAND = "python -m reducibility_demos.reducibility_demo"
FORMATS = ("png", "pdf")
UNITS = {
    "M": "fraction of points (gradient optimiser, as the paper's code: surrogate at the last annealed step)",
    "M_exact": "fraction of points (the maximum over every slab, multid.reducibility.mixture_index_exact)",
    "S": "bits",
}


def default_out_dir(base_dir: Path) -> Path:
    """Where the demo writes by default: <base_dir>/figs/reducibility_demos."""
    return figure_dir(base_dir, "reducibility_demos")


def figure_stem(name: str, weights: str) -> str:
    """File stem per dataset; only the mixture cloud depends on the weights, so only its files name them."""
    return f"reducibility_{name}_{weights}" if name == "gaussians" else f"reducibility_{name}"


def summary_path(out_dir: Path, weights: str) -> Path:
    return Path(out_dir) / f"reducibility_demo_{weights}.json"


def result_path(out_dir: Path, name: str, weights: str) -> Path:
    return Path(out_dir) / "results" / f"{figure_stem(name, weights)}.json"


def result_settings(name: str, weights: str, steps: int, num_points: int, seed: int) -> dict:
    """Everything a dataset's numbers depend on (the weights only matter for the mixture cloud)."""
    mixture = dataclasses.replace(DEMO_MIXTURE, steps=steps)
    return {
        "dataset": name,
        "mixture_weights": weights if name == "gaussians" else None,
        "steps": steps,
        "num_points": num_points,
        "seed": seed,
        "code_version": CODE_VERSION,
        "mixture": dataclasses.asdict(mixture),
        "separability": dataclasses.asdict(DEMO_SEPARABILITY),
    }


def remake_command(name: str, weights: str, settings: dict) -> str:
    return (f"{COMMAND} --datasets {name} --mixture_weights {weights} --steps {settings['steps']} "
            f"--num_points {settings['num_points']} --seed {settings['seed']}")


def result_stage(out_dir: Path, name: str, weights: str, steps: int, num_points: int, seed: int) -> Stage:
    settings = result_settings(name, weights, steps, num_points, seed)
    return Stage(
        name=f"reducibility demo result ({name})",
        path=result_path(out_dir, name, weights),
        settings=settings,
        command=remake_command(name, weights, settings),
    )


def figure_stage(result: Stage, weights: str, fmt: str, usetex: bool, mixture: str = "gradient") -> Stage:
    """A figure is derived from its dataset's result file (call after the result stage has run).

    mixture: whose slab and M the figure draws, the gradient optimiser's (published) or the exact maximum's.
    """
    name = result.settings["dataset"]
    return Stage(
        name=f"reducibility figure ({name}, {fmt})",
        path=result.path.parent.parent / f"{figure_stem(name, weights)}.{fmt}",
        settings={"result": artifact_id(result.path), "format": fmt, "usetex": usetex, "mixture": mixture,
                  "code_version": CODE_VERSION},
        command=f"{result.command} --mixture {mixture}",
    )


def save_result(path: Path, result: synthetic.DemoResult) -> None:
    """The numbers of one dataset as JSON (floats round-trip exactly); the cloud is redrawn from the seed."""
    record = {**result.summary(), "mi_bits": [float(x) for x in result.mi_bits],
              "angles": [float(x) for x in result.angles]}
    save_json(path, record)


def load_result(path: Path, settings: dict) -> synthetic.DemoResult:
    """A saved result with its cloud redrawn from the settings it was made with."""
    data = load_json(path)
    weights = settings["mixture_weights"] or "paper"  # the other clouds do not depend on the weights
    cloud = synthetic.draw_cloud(settings["dataset"], settings["seed"], settings["num_points"], weights)
    return synthetic.DemoResult(
        name=settings["dataset"], points=cloud.points, m=data["M"], m_hard=data["M_hard"],
        v=np.array(data["v"], dtype=np.float64), c=data["c"], s_bits=data["S"], s_angle=data["S_angle"],
        mi_bits=np.array(data["mi_bits"], dtype=np.float64), angles=np.array(data["angles"], dtype=np.float64),
        m_exact=data["M_exact"], v_exact=np.array(data["v_exact"], dtype=np.float64), c_exact=data["c_exact"],
    )


def compute_result(name: str, weights: str, steps: int, num_points: int, seed: int) -> synthetic.DemoResult:
    return synthetic.demo_indices([name], seed=seed, num_points=num_points, weights=weights, steps=steps)[0]


def current_settings(out_dir: Path, name: str, weights: str) -> dict | None:
    """The settings of the dataset's result file if it exists, is undamaged and was made by this code."""
    path = result_path(out_dir, name, weights)
    record = read_record(path, False)
    if record is None or damage(path, False) is not None:
        return None
    settings = record.get("settings", {})
    try:
        expected = result_settings(name, weights, settings["steps"], settings["num_points"], settings["seed"])
    except (KeyError, TypeError):
        return None
    return settings if settings == json.loads(canonical_json(expected)) else None


def summary_record(out_dir: Path, weights: str) -> dict:
    """The summary JSON: every dataset whose result exists, each with the settings it was made with."""
    datasets = {}
    for name in synthetic.DATASETS:
        settings = current_settings(out_dir, name, weights)
        if settings is None:
            continue
        values = load_json(result_path(out_dir, name, weights))
        datasets[name] = {
            **{key: values[key] for key in ("M", "M_hard", "M_exact", "S", "S_nats", "S_angle", "v", "c",
                                            "v_exact", "c_exact", "num_points")},
            "seed": settings["seed"], "steps": settings["steps"],
        }
    return {
        "mixture_weights": weights,
        "mixture_shares": list(synthetic.mixture_shares(weights)),
        "eps": DEMO_MIXTURE.eps,
        "code_version": CODE_VERSION,
        "units": UNITS,
        "datasets": datasets,
    }


def write_summary(out_dir: Path, weights: str) -> Path:
    """Assemble and write the summary JSON (under a lock; left untouched when its content is unchanged)."""
    path = summary_path(out_dir, weights)
    with lock_for(path):
        record = summary_record(out_dir, weights)
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            save_json(path, record)
    return path


def run_demo(
    out_dir: Path,
    datasets: Sequence[str] = synthetic.DATASETS,
    weights: str = "paper",
    steps: int = DEMO_MIXTURE.steps,
    num_points: int = synthetic.NUM_POINTS,
    seed: int = synthetic.DEFAULT_SEED,
    formats: Iterable[str] = FORMATS,
    usetex: bool = False,
    mixture: str = "gradient",
    *,
    log: Callable[[str], None] | None = print,
) -> list[Path]:
    """Compute (or reuse) M and S for `datasets`, draw their figures, update the summary; return the paths.

    Both M are computed and printed; `mixture` ("gradient", as published, or "exact") picks the slab drawn.

    The returned list holds every figure of the requested datasets (in `formats`) and the summary JSON,
    whether written now or reused.
    """
    for name in datasets:
        synthetic.check_choice(name, weights)
    if mixture not in synthetic.MIXTURE_CHOICES:
        raise ValueError(f"unknown mixture index {mixture!r}; choose from {', '.join(synthetic.MIXTURE_CHOICES)}")
    if steps < 1 or num_points < 2:
        raise ValueError(f"need steps >= 1 and num_points >= 2, got {steps} and {num_points}")
    formats = list(formats)
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; choose from {', '.join(FORMATS)}")
    out_dir = ensure_writable_dir(Path(out_dir), what="figure folder")
    emit = log or (lambda line: None)
    paths: list[Path] = []
    with plots.style(usetex):
        for name in datasets:
            stage = result_stage(out_dir, name, weights, steps, num_points, seed)
            made = []

            def build_result(tmp: Path, name=name, made=made) -> None:
                save_result(tmp, compute_result(name, weights, steps, num_points, seed))
                made.append(True)

            run_stage(stage, build_result)
            result = load_result(stage.path, stage.settings)
            emit(f"{name:>10}: M = {result.m:.4f} (hard {result.m_hard:.4f}; exact maximum {result.m_exact:.4f})"
                 f"   S = {result.s_bits:.4f} bits{'' if made else '   (reused)'}")
            figure = []

            def build_figure(tmp: Path, fmt: str, result=result, figure=figure) -> None:
                if not figure:
                    figure.append(plots.reducibility_figure(result.with_slab(mixture), DEMO_MIXTURE.eps,
                                                            synthetic.CROSS_SIZES[name]))
                save_figure(figure[0], tmp, format=fmt, bbox_inches="tight")

            for fmt in formats:
                fig_stage = figure_stage(stage, weights, fmt, usetex, mixture)
                paths.append(run_stage(fig_stage, lambda tmp, fmt=fmt: build_figure(tmp, fmt)))
    paths.append(write_summary(out_dir, weights))
    return paths
