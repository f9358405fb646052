"""Weekdays task: "Let's do some days of the week math. Two days from Monday is" -> " Wednesday".

Builds the task's activation cache, results.csv and PCA-k files for every cache layer at the important
tokens (upstream's `__main__`): see `--help`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.tasks.build import main  # noqa: E402
from multid.tasks.registry import DAYS_OF_WEEK  # noqa: E402,F401  (upstream-style import of the task)

if __name__ == "__main__":
    main(task_name="days_of_week")
