"""Where do "morning on Monday", "very late on Friday", ... land in the plane of the day-name circle? (paper
rebuttal). Hidden states at the last position, PCA fit on the 7 plain day names, every prompt projected on
PC1 / PC2; plus "Approximately two months from <Month>" with its PCA fit on the 12 months.

    cd sae_multid_feature_discovery && python3 other_circle_points.py                  # Mistral-7B, layers 30 / 12
    python -m sae_multid_feature_discovery.other_circle_points --model smollm2 --device cpu

Writes <model>_weekdays_experiment_{1,2}.pdf, <model>_months_from_experiment.pdf and
<model>_other_circle_points.json (coordinates, explained variance) under --out_dir
(default <base_dir>/figs/other_circle_points).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.config import (add_base_dir_arg, add_device_arg, add_dtype_arg, ensure_writable_dir, figs_dir,
                           resolve_base_dir, resolve_device)
from multid.errors import cli_entry
from multid.io import save_figure, save_json
from multid.models import add_model_args, load_model
from multid.sae import day_prompts as dp


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser, default="mistral")
    add_base_dir_arg(parser)
    add_device_arg(parser)
    add_dtype_arg(parser)
    parser.add_argument("--layer", type=int, default=None,
                        help="hidden_states index of the weekday experiments (default: 30 for a 32-block model, "
                             "scaled to the model's depth otherwise)")
    parser.add_argument("--months_layer", type=int, default=None,
                        help="hidden_states index of the months experiment (default: 12 of 32, scaled)")
    parser.add_argument("--paper_limits", choices=["auto", "on", "off"], default="auto",
                        help="fixed axis limits of the paper's Mistral figure (auto: on for mistral only)")
    parser.add_argument("--out_dir", default=None,
                        help="output folder (default: <base_dir>/figs/other_circle_points)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    import matplotlib.pyplot as plt

    args = build_parser().parse_args(argv)
    base_dir = resolve_base_dir(args.base_dir)
    out = ensure_writable_dir(Path(args.out_dir).expanduser().resolve() if args.out_dir
                              else figs_dir(base_dir) / "other_circle_points", what="--out_dir")
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, dtype=args.dtype, model_path=args.model_path, base_dir=base_dir)
    n_layers = model.cfg.n_layers
    layer = args.layer if args.layer is not None else dp.default_layer("days", n_layers)
    months_layer = args.months_layer if args.months_layer is not None else dp.default_layer("months", n_layers)
    dp.hook_for_layer(layer, n_layers)
    dp.hook_for_layer(months_layer, n_layers)
    limits = args.paper_limits == "on" or (args.paper_limits == "auto" and args.model == "mistral")
    written, record = [], {"model": args.model, "layer": layer, "months_layer": months_layer, "experiments": {}}
    for experiment in dp.EXPERIMENTS:
        prompts = dp.weekday_prompts(experiment)
        proj = dp.project(dp.last_position_states(model, prompts.prompts, layer), prompts, layer)
        print(f"experiment {experiment} (layer {layer}): explained variance ratio of the day-name PCA "
              + ", ".join(f"{r:.3f}" for r in proj.explained_variance_ratio))
        fig = dp.weekday_figure(proj, paper_limits=limits)
        written.append(save_figure(fig, out / f"{args.model}_weekdays_experiment_{experiment}.pdf"))
        plt.close(fig)
        record["experiments"][f"weekdays_{experiment}"] = summary(proj)
    prompts = dp.month_prompts()
    proj = dp.project(dp.last_position_states(model, prompts.prompts, months_layer), prompts, months_layer, k=2)
    print(f"months (layer {months_layer}): explained variance ratio "
          + ", ".join(f"{r:.3f}" for r in proj.explained_variance_ratio))
    fig = dp.month_figure(proj)
    written.append(save_figure(fig, out / f"{args.model}_months_from_experiment.pdf"))
    plt.close(fig)
    record["experiments"]["months_from"] = summary(proj)
    written.append(save_json(out / f"{args.model}_other_circle_points.json", record))
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return written


def summary(proj: dp.Projection) -> dict:
    return {"layer": proj.layer, "prompts": proj.prompts.prompts, "groups": proj.prompts.groups,
            "coords": proj.coords.round(6).tolist(),
            "explained_variance_ratio": proj.explained_variance_ratio.round(6).tolist()}


if __name__ == "__main__":
    main()
