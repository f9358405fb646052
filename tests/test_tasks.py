"""Tasks: problem lists and order, token alignment, answer tokens."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from multid.tasks.spec import (
    Problem,
    align_problems,
    answer_token_ids,
    generate_problems,
    model_tokenize,
)
from multid.tasks.registry import get_task_spec
from multid.errors import UserError

DAYS = get_task_spec("day")
MONTHS = get_task_spec("month")

# Spec §1.2 / §1.3: the first ten (a, b, c) after numpy's legacy seed-42 shuffle.
FIRST_DAYS = [(1, 7, 1), (6, 4, 3), (6, 6, 5), (6, 3, 2), (2, 4, 6), (3, 7, 3), (3, 6, 2), (3, 5, 1), (4, 4, 1), (2, 6, 1)]
FIRST_MONTHS = [(9, 10, 7), (1, 8, 9), (6, 11, 5), (8, 2, 10), (4, 9, 1), (1, 1, 2), (11, 1, 0), (5, 6, 11), (5, 7, 0), (1, 7, 8)]


def test_problem_counts_and_seed42_order():
    days, months = generate_problems(DAYS), generate_problems(MONTHS)
    assert len(days) == 49 and len(months) == 144
    assert [problem.info for problem in days[:10]] == FIRST_DAYS
    assert [problem.info for problem in months[:10]] == FIRST_MONTHS
    assert sorted(problem.info[:2] for problem in days) == [(a, b) for a in range(7) for b in range(1, 8)]


def test_problem_text_target_and_c():
    days = generate_problems(DAYS)
    assert days[0] == Problem("Let's do some days of the week math. Seven days from Tuesday is", "Tuesday", (1, 7, 1))
    one_day = next(problem for problem in days if problem.info[1] == 1)
    assert " One day from " in one_day.prompt
    months = generate_problems(MONTHS)
    assert months[0].prompt == "Let's do some calendar math. Ten months from October is" and months[0].target == "August"
    assert " One months from " in next(p for p in months if p.info[1] == 1).prompt  # upstream's plural
    for problem in days + months:
        a, b, c = problem.info
        p = 7 if problem in days else 12
        assert c == (a + b) % p


def test_problem_generation_leaves_global_numpy_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    generate_problems(MONTHS)
    assert np.random.rand() == expected


def word_tokenizer(split_words: dict[str, int], space_sensitive_first: bool = False):
    """A toy tokenizer: BOS + one token per word/punctuation, some words split into several pieces."""
    import re

    def tokenize(text: str) -> list[int]:
        pieces = ["<bos>"]
        for word in re.findall(r"\w+|[^\w\s]", text):
            pieces += [f"{word}#{i}" for i in range(split_words.get(word, 1))]
        return [hash(piece) % 100_003 for piece in pieces]

    return tokenize


def test_alignment_pads_short_prompts_like_upstream_mistral_months():
    # Nine/Eleven/Twelve are two tokens (as for Mistral): the other prompts get one ". " prefix.
    tokenize = word_tokenizer({"Nine": 2, "Eleven": 2, "Twelve": 2})
    aligned, layout = align_problems(MONTHS, generate_problems(MONTHS), tokenize)
    lengths = {len(tokenize(problem.prompt)) for problem in aligned}
    assert lengths == {layout.seq_len}
    for problem in aligned:
        assert problem.prompt.startswith(". ") == (problem.info[1] not in (9, 11, 12))
    # BOS Let ' s do some calendar math . [pad .] Two months from January is
    assert (layout.b_token, layout.a_token, layout.before_c_token, layout.seq_len) == (10, 13, 14, 15)
    assert layout.important_tokens() == [10, 11, 12, 13, 14]


def test_alignment_fails_clearly_when_positions_cannot_agree():
    # A split start word and a split number word: no front padding aligns both positions.
    spec = dataclasses.replace(MONTHS, start_words=("January", "Wednesday") + MONTHS.start_words[2:])
    problems = [Problem(spec.prompt(a, b), "x", (a, b, (a + b) % 12)) for a, b in [(0, 1), (1, 1), (0, 11)]]
    with pytest.raises(UserError, match="cannot be aligned"):
        align_problems(spec, problems, word_tokenizer({"Wednesday": 2, "Eleven": 2}))


def test_tiny_model_positions(tiny_model):
    tokenize = model_tokenize(tiny_model)
    _, days = align_problems(DAYS, generate_problems(DAYS), tokenize)
    # word-level: <bos> Let ' s do some days of the week math . Two days from Monday is
    assert (days.b_token, days.a_token, days.before_c_token, days.seq_len) == (12, 15, 16, 17)
    _, months = align_problems(MONTHS, generate_problems(MONTHS), tokenize)
    assert (months.b_token, months.a_token, months.before_c_token, months.seq_len) == (9, 12, 13, 14)
    assert set(months.prefixes) == {""}


@pytest.mark.smollm2
def test_smollm2_positions_and_answer_tokens(smollm2_model):
    tokenize = model_tokenize(smollm2_model)
    aligned, days = align_problems(DAYS, generate_problems(DAYS), tokenize)
    # Same pieces as Llama-3 ('s is one token): upstream's Llama positions 11 / 14 / 15, length 16.
    assert (days.b_token, days.a_token, days.before_c_token, days.seq_len) == (11, 14, 15, 16)
    tokens = smollm2_model.to_str_tokens(aligned[0].prompt)
    assert tokens[days.b_token] == " Seven" and tokens[days.a_token] == " Tuesday" and tokens[-1] == " is"

    aligned, months = align_problems(MONTHS, generate_problems(MONTHS), tokenize)
    # " Eleven" is two tokens for SmolLM2: every other prompt gets the ". " prefix.
    assert (months.b_token, months.a_token, months.before_c_token, months.seq_len) == (9, 12, 13, 14)
    assert sum(prefix == ". " for prefix in months.prefixes) == 144 - 12
    eleven = next(problem for problem in aligned if problem.info[1] == 11)
    assert smollm2_model.to_str_tokens(eleven.prompt)[months.b_token] == "ven"

    spaced = answer_token_ids(DAYS.start_words, tokenize, aligned[0].prompt, "continuation")
    assert [smollm2_model.to_string([i]) for i in spaced] == [f" {day}" for day in DAYS.start_words]
    bare = answer_token_ids(DAYS.start_words, tokenize, aligned[0].prompt, "bare")
    assert [smollm2_model.to_string([i]) for i in bare] == list(DAYS.start_words)


def test_unknown_task_and_answer_mode():
    with pytest.raises(UserError, match="unknown task"):
        get_task_spec("weeks")
    with pytest.raises(UserError, match="answer token mode"):
        answer_token_ids(["a"], lambda text: [0], "x", "spaced")
