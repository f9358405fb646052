"""Figures 1 and 12 of the paper: the GPT-2 layer-7 days (cluster 138), months (251) and years (212) clusters'
reconstructions on their principal components, coloured by the firing token.

    cd sae_multid_feature_discovery && python3 gpt2_days_months_years.py
    python -m sae_multid_feature_discovery.gpt2_days_months_years --sample_limit 5000 --formats pdf png

Writes gpt2nonlinears.pdf (Figure 1) and gpt2nonlinears3projs.pdf (Figure 12) under --save_dir (default
<run_dir>/figs) and prints the fraction of grey (unlabelled) points. Also reachable as gpt2_days_weeks_years.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script from inside its folder: import this checkout's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multid.commands import config_from_args
from multid.errors import cli_entry
from multid.sae.runners.script_args import dmy_parser
from multid.sae.runners.calendar_figures import run_days_months_years
from multid.sae.stage_configs import DaysMonthsYearsConfig


def build_parser():
    return dmy_parser(__doc__.split("\n\n")[0])


def config_from_argv(argv: list[str] | None = None) -> DaysMonthsYearsConfig:
    return config_from_args(DaysMonthsYearsConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    return run_days_months_years(config_from_argv(argv))


if __name__ == "__main__":
    main()
