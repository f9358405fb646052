"""The paper's two modular-arithmetic tasks (section 5.1): weekdays (p = 7) and months (p = 12)."""

from __future__ import annotations

from multid.errors import UserError
from multid.tasks.spec import TaskSpec

DAYS_OF_WEEK = TaskSpec(
    name="days_of_week",
    title="Weekdays",
    aliases=("day", "days"),
    script="intervention/days_of_week_task.py",
    p=7,
    start_words=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    number_words=("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven"),
    template="Let's do some days of the week math. {number} {unit} from {start} is",
    unit_singular="day",
    unit_plural="days",
    singular_for_one=True,
)

MONTHS_OF_YEAR = TaskSpec(
    name="months_of_year",
    title="Months",
    aliases=("month", "months"),
    script="intervention/months_of_year_task.py",
    p=12,
    start_words=(
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
    ),
    number_words=(
        "Zero", "One", "Two", "Three", "Four", "Five", "Six",
        "Seven", "Eight", "Nine", "Ten", "Eleven", "Twelve",
    ),
    template="Let's do some calendar math. {number} {unit} from {start} is",  # "months" also for One, as upstream
    unit_singular="months",
    unit_plural="months",
    singular_for_one=False,
)

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (DAYS_OF_WEEK, MONTHS_OF_YEAR)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
ALIASES: dict[str, str] = {alias: spec.name for spec in TASKS.values() for alias in spec.aliases}
TASK_TITLES: dict[str, str] = {spec.name: spec.title for spec in TASKS.values()}


def check_task_name(task: str) -> str:
    """`task` if it names a task (upstream's "day"/"month" words accepted), else a one-line error."""
    name = ALIASES.get(task, task)
    if name not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASK_NAMES)} (or {', '.join(ALIASES)})")
    return name


def get_task_spec(name: str) -> TaskSpec:
    """Task spec by name; also accepts upstream's problem_type words "day" and "month"."""
    return TASKS[check_task_name(name)]
