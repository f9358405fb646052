"""The modular-arithmetic tasks (weekdays, months): problems, token alignment and answer tokens.

A task is pure data (`TaskSpec`): p start words, duration number words and a prompt template.
`generate_problems` gives the upstream problem list in its seed-42 order. `align_problems` then
fits the prompts to one model's tokenizer: every prompt of a task must have the same token length
and the named positions (duration word, start word, last prompt token) must sit at the same index
in every prompt, so that all problems can run as one batch and be stacked.

Upstream hard-coded positions per model and, for Mistral months only, prefixed ". " to prompts whose
number word is one token (Nine/Eleven/Twelve are two). Our rule generalises that: prompts shorter
than the longest get the shortest run of ". " prefixes that makes them exactly as long, and the
alignment is then verified; a tokenizer that cannot be aligned this way is a clear error.

Activation patching (upstream `task.py`) lives in `multid.patching.activation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from multid.errors import UserError

Tokenize = Callable[[str], list[int]]
ANSWER_MODES = ("continuation", "bare")
PROBLEM_SEED = 42
PAD_UNIT = ". "


@dataclass(frozen=True)
class Problem:
    """One prompt. `target` is the answer word without a leading space; info = (a, b, c)."""

    prompt: str
    target: str
    info: tuple[int, int, int]


@dataclass(frozen=True)
class TaskSpec:
    """The data that defines a task; the two tasks are in `multid.tasks.registry`."""

    name: str  # "days_of_week" or "months_of_year"
    title: str  # for figures and tables ("Weekdays", "Months")
    aliases: tuple[str, ...]  # upstream's problem_type words ("day", "days")
    script: str  # the script that builds its cache
    p: int
    start_words: tuple[str, ...]  # index a
    number_words: tuple[str, ...]  # index b (0..p)
    template: str  # with {number}, {unit} and {start}
    unit_singular: str
    unit_plural: str
    singular_for_one: bool  # "One day" (days) vs "One months" (months, as upstream)

    @property
    def allowable_tokens(self) -> tuple[str, ...]:
        return self.start_words

    def durations(self) -> range:
        """b runs over 1..p (b = p included, so c = a there), as upstream."""
        return range(1, self.p + 1)

    def unit(self, b: int) -> str:
        return self.unit_singular if (b == 1 and self.singular_for_one) else self.unit_plural

    def prompt(self, a: int, b: int) -> str:
        return self.template.format(number=self.number_words[b], unit=self.unit(b), start=self.start_words[a])

    def word_ends(self, a: int, b: int) -> tuple[int, int]:
        """Character offsets in `prompt(a, b)` where the number word and the start word end."""
        text = self.prompt(a, b)
        number_end = text.index(f"{self.number_words[b]} {self.unit(b)} ") + len(self.number_words[b])
        start_end = text.rindex(f" {self.start_words[a]} ") + 1 + len(self.start_words[a])
        return number_end, start_end


def generate_problems(spec: TaskSpec) -> list[Problem]:
    """All p*p problems in upstream's order: (a outer, b inner), then numpy legacy shuffle with seed 42.

    Upstream reseeded the global numpy RNG; we use a private RandomState(42), which draws the same
    permutation without touching global state.
    """
    problems = [
        Problem(spec.prompt(a, b), spec.start_words[(a + b) % spec.p], (a, b, (a + b) % spec.p))
        for a in range(spec.p)
        for b in spec.durations()
    ]
    np.random.RandomState(PROBLEM_SEED).shuffle(problems)
    return problems


@dataclass(frozen=True)
class TokenLayout:
    """Where the named tokens sit in every (aligned) prompt of a task, for one tokenizer."""

    b_token: int  # last sub-token of the duration number word
    a_token: int  # last sub-token of the start word
    before_c_token: int  # last prompt token ("is"), whose next-token logits give the answer
    seq_len: int
    prefixes: tuple[str, ...]  # padding prefix of each problem, in problem order ("" for most)

    def important_tokens(self) -> list[int]:
        """Positions from the duration word to the last prompt token (upstream `important_tokens()`)."""
        return list(range(self.b_token, self.before_c_token + 1))

    def to_json(self) -> dict:
        return {
            "b_token": self.b_token,
            "a_token": self.a_token,
            "before_c_token": self.before_c_token,
            "seq_len": self.seq_len,
            "prefixes": list(self.prefixes),
        }

    @classmethod
    def from_json(cls, data: dict) -> "TokenLayout":
        return cls(
            int(data["b_token"]),
            int(data["a_token"]),
            int(data["before_c_token"]),
            int(data["seq_len"]),
            tuple(data.get("prefixes", ())),
        )


def last_token_index(tokenize: Tokenize, full: list[int], text_prefix: str, what: str) -> int:
    """Index in `full` of the last token of `text_prefix`, checking the prefix tokenizes consistently."""
    head = tokenize(text_prefix)
    if full[: len(head)] != head:
        raise UserError(
            f"cannot locate the {what} token: the tokenizer splits {text_prefix!r} differently inside the full prompt"
        )
    return len(head) - 1


def padding_prefix(tokenize: Tokenize, prompt: str, target_len: int) -> str:
    """The shortest run of ". " that makes `prompt` exactly `target_len` tokens long."""
    current = len(tokenize(prompt))
    for repeats in range(0, 2 * (target_len - current) + 3):
        prefix = PAD_UNIT * repeats
        if len(tokenize(prefix + prompt)) == target_len:
            return prefix
    raise UserError(
        f"cannot pad {prompt!r} from {current} to {target_len} tokens with '. ' prefixes for this tokenizer; "
        f"the task cannot be aligned for it"
    )


def align_problems(spec: TaskSpec, problems: Sequence[Problem], tokenize: Tokenize) -> tuple[list[Problem], TokenLayout]:
    """Pad prompts to one token length and check that the named positions agree across problems."""
    lengths = [len(tokenize(problem.prompt)) for problem in problems]
    target_len = max(lengths)
    prefixes = [padding_prefix(tokenize, problem.prompt, target_len) if n < target_len else "" for problem, n in zip(problems, lengths)]
    aligned = [Problem(prefix + problem.prompt, problem.target, problem.info) for prefix, problem in zip(prefixes, problems)]
    positions = set()
    for prefix, problem in zip(prefixes, aligned):
        a, b, _ = problem.info
        full = tokenize(problem.prompt)
        number_end, start_end = spec.word_ends(a, b)
        b_token = last_token_index(tokenize, full, problem.prompt[: len(prefix) + number_end], "duration word")
        a_token = last_token_index(tokenize, full, problem.prompt[: len(prefix) + start_end], "start word")
        positions.add((b_token, a_token, len(full) - 1, len(full)))
    if len(positions) != 1:
        raise UserError(
            f"task {spec.name} cannot be aligned for this tokenizer: (duration, start, last, length) positions "
            f"differ between prompts: {sorted(positions)[:4]}"
        )
    b_token, a_token, last, seq_len = positions.pop()
    return aligned, TokenLayout(b_token, a_token, last, seq_len, tuple(prefixes))


def answer_token_ids(words: Sequence[str], tokenize: Tokenize, prompt: str, mode: str = "continuation") -> list[int]:
    """Token id that stands for each answer word at the last position.

    continuation (default): the first token of " Word" as the tokenizer splits `prompt + " Word"`,
    i.e. the token the model actually predicts after "is" (with a leading space where the tokenizer
    uses one). bare (upstream): the first token of the bare word tokenized alone ("Monday" without a
    space): right for SentencePiece (Mistral), but for BPE tokenizers (Llama-3, GPT-2, SmolLM2) it is
    the no-space token the model rarely predicts mid-sentence. Both modes need distinct ids.
    """
    if mode not in ANSWER_MODES:
        raise UserError(f"unknown answer token mode {mode!r}; choose one of {', '.join(ANSWER_MODES)}")
    base = tokenize(prompt)
    ids = []
    for word in words:
        if mode == "continuation":
            full = tokenize(f"{prompt} {word}")
            if full[: len(base)] != base or len(full) == len(base):
                raise UserError(f"the tokenizer merges the answer {word!r} into the prompt; cannot score it")
            ids.append(full[len(base)])
        else:
            ids.append(tokenize_bare(tokenize, word)[0])
    if len(set(ids)) != len(ids):
        raise UserError(f"answer words share a first token for this tokenizer ({dict(zip(words, ids))}); cannot score")
    return ids


def tokenize_bare(tokenize: Tokenize, word: str) -> list[int]:
    """Tokens of `word` alone, without the BOS token that `tokenize` may prepend."""
    with_bos = tokenize(word)
    empty = tokenize("")
    return with_bos[len(empty):] if with_bos[: len(empty)] == empty else with_bos


def model_tokenize(model) -> Tokenize:
    """The tokenization the model sees in a forward pass (TransformerLens `to_tokens`, BOS prepended)."""

    def tokenize(text: str) -> list[int]:
        return model.to_tokens(text)[0].tolist()

    return tokenize


def token_map(model, prompt: str, layout: TokenLayout) -> dict[int, str]:
    """Position -> token string for the named positions (duration word .. answer slot), as upstream."""
    tokens = model.to_str_tokens(prompt)
    mapping = {position: tokens[position] for position in range(layout.b_token, layout.seq_len)}
    mapping[layout.seq_len] = "<answer>"
    return mapping
