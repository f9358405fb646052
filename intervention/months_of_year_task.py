"""Months task: "Let's do some calendar math. Two months from January is" -> " March".

The template says "months" also for One, as upstream. Run as a script to build the task's
activation cache, results.csv and PCA-k files (see `--help`).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intervention.task import TaskSpec  # noqa: E402

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)
NUMBER_WORDS = (
    "Zero", "One", "Two", "Three", "Four", "Five", "Six",
    "Seven", "Eight", "Nine", "Ten", "Eleven", "Twelve",
)

MONTHS_OF_YEAR = TaskSpec(
    name="months_of_year",
    p=12,
    start_words=MONTHS,
    number_words=NUMBER_WORDS,
    template="Let's do some calendar math. {number} {unit} from {start} is",
    unit_singular="months",
    unit_plural="months",
    singular_for_one=False,
)

if __name__ == "__main__":
    from intervention.build_cache import main

    main(task_name=MONTHS_OF_YEAR.name)
