"""Where day and month phrases ("morning on Monday", "Approximately two months from <Month>") land in the plane
of the day-name (month-name) circle (the paper's rebuttal), as one run. The script is other_circle_points.py;
the prompts, projections and figures are multid.sae.analysis.day_prompts'.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from multid.commands import as_path
from multid.config import ensure_writable_dir, figs_dir, print_written, resolve_base_dir, resolve_device
from multid.io import save_figure, save_json
from multid.models import load_model
from multid.sae.analysis import day_prompts as dp
from multid.sae.stage_configs import OtherCirclePointsConfig


def summary(proj: dp.Projection) -> dict:
    return {"layer": proj.layer, "prompts": proj.prompts.prompts, "groups": proj.prompts.groups,
            "coords": proj.coords.round(6).tolist(),
            "explained_variance_ratio": proj.explained_variance_ratio.round(6).tolist()}


def run_other_circle_points(config: OtherCirclePointsConfig) -> list[Path]:
    """The two weekday experiments and the months experiment: figures and one JSON of coordinates."""
    base_dir = resolve_base_dir(config.base_dir)
    out = ensure_writable_dir(as_path(config.out_dir) or figs_dir(base_dir) / "other_circle_points",
                              what="--out_dir")
    model = load_model(config.model, device=resolve_device(config.device), dtype=config.dtype,
                       model_path=config.model_path, base_dir=base_dir)
    n_layers = model.cfg.n_layers
    layer = config.layer if config.layer is not None else dp.default_layer("days", n_layers)
    months_layer = config.months_layer if config.months_layer is not None else dp.default_layer("months", n_layers)
    dp.hook_for_layer(layer, n_layers)
    dp.hook_for_layer(months_layer, n_layers)
    limits = config.paper_limits == "on" or (config.paper_limits == "auto" and config.model == "mistral")
    written, record = [], {"model": config.model, "layer": layer, "months_layer": months_layer, "experiments": {}}
    for experiment in dp.EXPERIMENTS:
        prompts = dp.weekday_prompts(experiment)
        proj = dp.project(dp.last_position_states(model, prompts.prompts, layer), prompts, layer)
        print(f"experiment {experiment} (layer {layer}): explained variance ratio of the day-name PCA "
              + ", ".join(f"{r:.3f}" for r in proj.explained_variance_ratio))
        fig = dp.weekday_figure(proj, paper_limits=limits)
        written.append(save_figure(fig, out / f"{config.model}_weekdays_experiment_{experiment}.pdf"))
        plt.close(fig)
        record["experiments"][f"weekdays_{experiment}"] = summary(proj)
    prompts = dp.month_prompts()
    proj = dp.project(dp.last_position_states(model, prompts.prompts, months_layer), prompts, months_layer, k=2)
    print(f"months (layer {months_layer}): explained variance ratio "
          + ", ".join(f"{r:.3f}" for r in proj.explained_variance_ratio))
    fig = dp.month_figure(proj)
    written.append(save_figure(fig, out / f"{config.model}_months_from_experiment.pdf"))
    plt.close(fig)
    record["experiments"]["months_from"] = summary(proj)
    written.append(save_json(out / f"{config.model}_other_circle_points.json", record))
    print_written(written)
    return written
