"""Rebuttal grid of the top SAE clusters (paper appendix): for each of the first 10 clusters of a ranking that
have at least 4 principal components, PC pairs of its reconstructions coloured by the firing token (top row)
and by the next token (bottom row); the 10 most frequent tokens in colour, the rest grey.

    cd sae_multid_feature_discovery && python3 explore_features.py                  # the paper's GPT-2 top 20
    python -m sae_multid_feature_discovery.explore_features --ranking ranking.json --top 20

Writes all_clusters_grid.png under --save_dir (default <run_dir>/figs).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.errors import cli_entry
from multid.sae.runners.script_args import explore_parser
from multid.sae.runners.calendar_figures import run_explore
from multid.sae.stage_configs import ExploreConfig


def build_parser():
    return explore_parser(__doc__.split("\n\n")[0])


def config_from_argv(argv: list[str] | None = None) -> ExploreConfig:
    return config_from_args(ExploreConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    return run_explore(config_from_argv(argv))


if __name__ == "__main__":
    main()
