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

from multid.commands import config_from_args
from multid.config import add_base_dir_arg, add_device_arg, add_dtype_arg
from multid.errors import cli_entry
from multid.models import add_model_args
from multid.sae.runners.other_circle_points import run_other_circle_points
from multid.sae.stage_configs import OtherCirclePointsConfig

D = OtherCirclePointsConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_args(parser, default=D.model)
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


def config_from_argv(argv: list[str] | None = None) -> OtherCirclePointsConfig:
    return config_from_args(OtherCirclePointsConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    return run_other_circle_points(config_from_argv(argv))


if __name__ == "__main__":
    main()
