"""Figures 1 and 12 (the name the upstream README uses for gpt2_days_months_years.py; same script).

    cd sae_multid_feature_discovery && python3 gpt2_days_weeks_years.py
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
from multid.sae.stage_configs import DaysWeeksYearsConfig


def build_parser():
    return dmy_parser(__doc__.split("\n\n")[0])


def config_from_argv(argv: list[str] | None = None) -> DaysWeeksYearsConfig:
    return config_from_args(DaysWeeksYearsConfig, build_parser().parse_args(argv))


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    return run_days_months_years(config_from_argv(argv))


if __name__ == "__main__":
    main()
