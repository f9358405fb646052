"""Weekdays task: "Let's do some days of the week math. Two days from Monday is" -> " Wednesday".

Run as a script to build the task's activation cache, results.csv and PCA-k files for every cache
layer at the important tokens (upstream's `__main__`): see `--help`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intervention.task import TaskSpec  # noqa: E402

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NUMBER_WORDS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven")

DAYS_OF_WEEK = TaskSpec(
    name="days_of_week",
    p=7,
    start_words=DAYS,
    number_words=NUMBER_WORDS,
    template="Let's do some days of the week math. {number} {unit} from {start} is",
    unit_singular="day",
    unit_plural="days",
    singular_for_one=True,
)

if __name__ == "__main__":
    from intervention.build_cache import main

    main(task_name=DAYS_OF_WEEK.name)
