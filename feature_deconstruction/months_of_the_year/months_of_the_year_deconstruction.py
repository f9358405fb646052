"""Residual RGB plots for the months task (paper Figure 16): a thin entry point over
multid.deconstruction.residual_rgb, which holds the method and this task's schedule table (MONTHS).

Upstream way (files copied here):  cd feature_deconstruction/months_of_the_year && python3 months_of_the_year_deconstruction.py
From a cache:  python -m feature_deconstruction.months_of_the_year.months_of_the_year_deconstruction --model smollm2 --base_dir DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multid.deconstruction.residual_rgb import MONTHS, script_main  # noqa: E402


def main() -> None:
    script_main(MONTHS, prog="months_of_the_year_deconstruction.py")


if __name__ == "__main__":
    main()
