"""Residual RGB plots for the weekdays task (paper Figure 8: Mistral, layers 17-29, last prompt token 16).

    cd feature_deconstruction/days_of_the_week && python3 days_of_the_week_deconstruction.py   (upstream's way: files copied here)
    python -m feature_deconstruction.days_of_the_week.days_of_the_week_deconstruction --model smollm2 --base_dir DIR

The method and this task's explainer schedule (DAYS) live in multid.deconstruction.residual_rgb.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multid.deconstruction.residual_rgb import DAYS, script_main  # noqa: E402

if __name__ == "__main__":
    script_main(DAYS, prog=Path(__file__).name)
