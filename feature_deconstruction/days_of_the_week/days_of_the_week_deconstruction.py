"""Residual RGB plots for the days task (paper Figure 8): a thin entry point over
multid.deconstruction.residual_rgb, which holds the method and this task's schedule table (DAYS).

Upstream way (files copied here):  cd feature_deconstruction/days_of_the_week && python3 days_of_the_week_deconstruction.py
From a cache:  python -m feature_deconstruction.days_of_the_week.days_of_the_week_deconstruction --model smollm2 --base_dir DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multid.deconstruction.residual_rgb import DAYS, script_main  # noqa: E402


def main() -> None:
    script_main(DAYS, prog="days_of_the_week_deconstruction.py")


if __name__ == "__main__":
    main()
