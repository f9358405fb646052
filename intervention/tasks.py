"""Lookup of the two task specs by name."""

from __future__ import annotations

from intervention.days_of_week_task import DAYS_OF_WEEK
from intervention.layout import check_task_name
from intervention.months_of_year_task import MONTHS_OF_YEAR
from intervention.task import TaskSpec

TASKS: dict[str, TaskSpec] = {DAYS_OF_WEEK.name: DAYS_OF_WEEK, MONTHS_OF_YEAR.name: MONTHS_OF_YEAR}
ALIASES = {"day": "days_of_week", "days": "days_of_week", "month": "months_of_year", "months": "months_of_year"}


def get_task_spec(name: str) -> TaskSpec:
    """Task spec by name; also accepts upstream's problem_type words "day" and "month"."""
    return TASKS[check_task_name(ALIASES.get(name, name))]
