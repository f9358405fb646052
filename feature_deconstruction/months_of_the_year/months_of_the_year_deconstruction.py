"""Residual RGB plots for the months task (paper Figure 16: Llama-3, layers 13-29, last prompt token 12).

Upstream's way, with results.csv and pca_components/ copied beside this script:
    cd feature_deconstruction/months_of_the_year && python3 months_of_the_year_deconstruction.py
From a task cache under the base dir (any model):
    python -m feature_deconstruction.months_of_the_year.months_of_the_year_deconstruction --model smollm2 --base_dir DIR

multid.deconstruction.residual_rgb holds the method and the months schedule (MONTHS).
"""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from multid.deconstruction.residual_rgb import MONTHS, script_main  # noqa: E402

if __name__ == "__main__":
    script_main(MONTHS, prog=Path(__file__).name)
