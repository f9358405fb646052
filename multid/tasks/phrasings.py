"""Training prompts for the weekday and month arithmetic that never contain the paper's prompts.

Every prompt asks for the start word moved by a duration, in one of several phrasings that differ from
the paper's template ("Let's do some days of the week math. {n} days from {X} is", section 5.1, and
its months twin); durations are written as lower-case words, capitalised words or digits and run past
p (the answer is (a + b) mod p). One more phrasing (`HELD_OUT`) is never trained on: it is the second
test template. `check_no_paper_prompts` is the guard: no prompt may equal a paper prompt, start with
a paper template's opening sentence, or end in its "<n> <unit> from <X> is" form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from multid.errors import UserError
from multid.tasks.registry import TASKS
from multid.tasks.spec import TaskSpec, generate_problems

# Phrasings for training; {start}, {n} (the duration as written) and {unit} are filled in. The
# answer word follows the last word, after a space, as in the paper's prompts.
TRAIN_PHRASINGS: dict[str, tuple[str, ...]] = {
    "days_of_week": (
        "Today is {start}. In {n} {unit} it will be",
        "{n} {unit} after {start} comes",
        "If it is {start} now, then {n} {unit} later it is",
        "Q: Which day is {n} {unit} after {start}? A:",
        "Add {n} {unit} to {start} and you get",
    ),
    "months_of_year": (
        "This month is {start}. In {n} {unit} it will be",
        "{n} {unit} after {start} comes",
        "If it is {start} now, then {n} {unit} later it is",
        "Q: Which month is {n} {unit} after {start}? A:",
        "Add {n} {unit} to {start} and you get",
    ),
}
# Never trained on: the second test template (durations as the paper writes them: "Three").
HELD_OUT: dict[str, str] = {
    "days_of_week": "Starting on {start} and counting {n} {unit} forward, you reach",
    "months_of_year": "Starting in {start} and counting {n} {unit} forward, you reach",
}
UNITS = {"days_of_week": ("day", "days"), "months_of_year": ("month", "months")}
NUMBER_STYLES = ("word", "Word", "digits")

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}


def number_word(n: int) -> str:
    """English words for 0..99 ("twenty-three")."""
    if not 0 <= n <= 99:
        raise ValueError(f"number_word covers 0..99, got {n}")
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def write_duration(n: int, style: str) -> str:
    if style == "digits":
        return str(n)
    word = number_word(n)
    return word[0].upper() + word[1:] if style == "Word" else word


@dataclass(frozen=True)
class Example:
    """One prompt and its answer word; info = (a, b, c) with c = (a + b) mod p."""

    task: str
    prompt: str
    answer: str
    info: tuple[int, int, int]
    phrasing: int  # index into TRAIN_PHRASINGS[task], or -1 for the held-out phrasing


def fill(phrasing: str, task: str, a: int, b: int, style: str) -> str:
    singular, plural = UNITS[task]
    text = phrasing.format(start=TASKS[task].start_words[a], n=write_duration(b, style), unit=singular if b == 1 else plural)
    return text[0].upper() + text[1:]


def training_examples(task: str, max_multiple: int = 4) -> list[Example]:
    """Every (phrasing, start, duration 1..max_multiple*p, number style) prompt of a task, checked."""
    spec = TASKS[task]
    examples = [
        Example(task, fill(phrasing, task, a, b, style), spec.start_words[(a + b) % spec.p], (a, b, (a + b) % spec.p), index)
        for index, phrasing in enumerate(TRAIN_PHRASINGS[task])
        for a in range(spec.p)
        for b in range(1, max_multiple * spec.p + 1)
        for style in NUMBER_STYLES
    ]
    check_no_paper_prompts(example.prompt for example in examples)
    return examples


def held_out_examples(task: str) -> list[Example]:
    """The paper's p*p problems (same a, b and order) in the held-out phrasing, durations as "Three"."""
    spec = TASKS[task]
    examples = [
        Example(task, fill(HELD_OUT[task], task, a, b, "Word"), problem.target, problem.info, -1)
        for problem in generate_problems(spec)
        for a, b, _ in [problem.info]
    ]
    check_no_paper_prompts(example.prompt for example in examples)
    return examples


def paper_examples(task: str) -> list[Example]:
    """The paper's own p*p prompts (the first test template; never trained on)."""
    return [Example(task, problem.prompt, problem.target, problem.info, -1) for problem in generate_problems(TASKS[task])]


# ----------------------------------------------------------------------------------------- the guard


def paper_patterns(spec: TaskSpec) -> tuple[str, re.Pattern]:
    """(opening sentence, regex of the "<n> <unit> from <X> is" ending) of a paper template."""
    head, _, tail = spec.template.partition("{number}")
    tail = re.escape(tail)
    tail = tail.replace(re.escape("{unit}"), f"({'|'.join(map(re.escape, {spec.unit_singular, spec.unit_plural, *UNITS[spec.name]}))})")
    tail = tail.replace(re.escape("{start}"), f"({'|'.join(spec.start_words)})")
    return head.strip(), re.compile(r"\S+" + tail + r"$", re.IGNORECASE)


def check_no_paper_prompts(prompts: Iterable[str], tasks: Sequence[TaskSpec] | None = None) -> int:
    """Raise a UserError if a prompt equals a paper prompt, starts with a paper template's opening
    sentence, or ends in its "<n> <unit> from <X> is" form; return how many prompts were checked."""
    specs = list(tasks or TASKS.values())
    exact = {problem.prompt for spec in specs for problem in generate_problems(spec)}
    patterns = [paper_patterns(spec) for spec in specs]
    count = 0
    for prompt in prompts:
        count += 1
        if prompt in exact:
            raise UserError(f"training prompt {prompt!r} is one of the paper's test prompts; it must not be trained on")
        for head, tail in patterns:
            if prompt.lower().startswith(head.rstrip(".").lower()):
                raise UserError(f"training prompt {prompt!r} starts like the paper's template {head!r}; use another phrasing")
            if tail.search(prompt):
                raise UserError(f"training prompt {prompt!r} ends like the paper's template (<n> <unit> from <X> is)")
    return count


def mixed_order(examples_by_task: dict[str, list[Example]], n: int, seed: int, duration_power: float = 0.0) -> list[Example]:
    """`n` examples drawn with replacement (seeded), tasks alternating.

    Each example is drawn with weight b**-duration_power (b = its duration). With uniform durations
    the answer is independent of the start word and of the duration alone (only (a + b) mod p tells),
    which leaves gradient descent on a plateau at "any answer word"; weighting short durations up
    (b = 1 is "the next day") gives a first-order signal to start from.
    """
    rng = np.random.RandomState(seed)
    tasks = list(examples_by_task)
    weights = {}
    for task, items in examples_by_task.items():
        raw = np.array([float(item.info[1]) ** -duration_power for item in items])
        weights[task] = raw / raw.sum()
    counts = [len(range(index, n, len(tasks))) for index in range(len(tasks))]
    draws = {task: rng.choice(len(examples_by_task[task]), size=count, p=weights[task]) for task, count in zip(tasks, counts)}
    return [examples_by_task[tasks[index % len(tasks)]][draws[tasks[index % len(tasks)]][index // len(tasks)]] for index in range(n)]
