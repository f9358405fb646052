"""Calendar classes of tokens, by their text (docs/discover.md): a day is a capitalised weekday name (" Monday",
"Mondays"), a month a capitalised month name, their three-letter abbreviations classes of their own ("Mon",
"Jan"; docs/corpus.md), the verdict's classes "weekday" and "month" a weekday or month in either form
(issue 33: "Mon" in a mail's Date line and " Monday" in its body are the same weekday). A name is a whole word,
labelled at its last token where the tokenizer splits it (SmolLM2: " T" + "ue"). A year digit is a digit token
inside a four-digit number 1500..2099 that stands alone (tokenizers that split numbers into digits, such as
SmolLM2's, give years as four one-digit tokens; a tokenizer with whole-number tokens gives one token of four
digits, also counted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from multid.sae.data.token_labels import DAY_NAMES, DAY_SHORT, MONTH_NAMES, MONTH_SHORT, OTHER

VERDICT_CATEGORIES = ("weekday", "month")  # either form: full name or abbreviation
FIGURE_CATEGORIES = VERDICT_CATEGORIES + ("years",)  # the Figure 1 style panels of make discover
CATEGORIES = ("days", "months", "years", "day_abbr", "month_abbr") + VERDICT_CATEGORIES
PERIODS = {"days": 7, "months": 12, "day_abbr": 7, "month_abbr": 12, "weekday": 7, "month": 12}
YEAR_RANGE = (1500, 2099)


FULL_DAYS = {**{name: i for i, name in enumerate(DAY_NAMES)}, **{name + "s": i for i, name in enumerate(DAY_NAMES)}}
FULL_MONTHS = {name: i for i, name in enumerate(MONTH_NAMES)}
ABBREVIATED_DAYS = {name: i for i, name in enumerate(DAY_SHORT)}
ABBREVIATED_MONTHS = {name: i for i, name in enumerate(MONTH_SHORT) if name not in MONTH_NAMES}  # "May": a name
MAX_PIECES = 4  # the most tokens a calendar word is looked for in
LABELS_VERSION = 2  # in the settings of every stage that labels tokens by class; 2: whole words, split ones too


def spaced(text: str) -> str:
    """A vocabulary string with its word-start marker (SentencePiece's or GPT-2's byte-level one) as a space."""
    return text.replace("\u2581", " ").replace("\u0120", " ")


def is_letter(char: str) -> bool:
    """An ASCII letter: a digit ends a name ("15September"), and byte-level vocabularies write a newline or a
    dash's bytes as other letters ("Ċ", "âĢĵ"), which end one too."""
    return len(char) == 1 and char.isascii() and char.isalpha()


def classes_by_word(token_strings: Sequence[str], days: dict[str, int], months: dict[str, int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(day class, month class) per vocabulary string, looked up by its word (word-start markers and spaces
    stripped); OTHER where the word is in neither table."""
    day = np.full(len(token_strings), OTHER, dtype=np.int64)
    month = np.full(len(token_strings), OTHER, dtype=np.int64)
    for i, text in enumerate(token_strings):
        word = spaced(text).strip()
        day[i] = days.get(word, OTHER)
        month[i] = months.get(word, OTHER)
    return day, month


def strict_classes(token_strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(day class, month class) per vocabulary string; OTHER where it is not a capitalised full name."""
    return classes_by_word(token_strings, FULL_DAYS, FULL_MONTHS)


def abbreviation_classes(token_strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(day class, month class) per vocabulary string where it is a capitalised three-letter abbreviation ("Mon",
    " Thu", "Jan"; "May" is a full name, so not here); OTHER elsewhere. Reported beside the full names, never
    merged into them (docs/corpus.md)."""
    return classes_by_word(token_strings, ABBREVIATED_DAYS, ABBREVIATED_MONTHS)


def run_word_classes(ids: np.ndarray, ctx_len: int, texts: Sequence[str], single: np.ndarray,
                     words: dict[str, int]) -> np.ndarray:
    """The class of each token of the run (token order, contexts of ctx_len) that ends a word of `words`:
    a one-token word (`single`, the vocabulary's classes) or a word spelled over up to MAX_PIECES tokens of
    one context, labelled at its last token, where the whole word is known to the model (SmolLM2 spells
    " Tue" as " T" + "ue"; the original Mistral figure labelled "ue" Tuesday too). Either way only a whole
    word: not where the next token goes on with a letter (" March" + "ing", " June" + "au"), nor where the word
    starts right after a letter ("x" + "Mon"). `texts`: the vocabulary strings, spaced()."""
    n = len(ids)
    pos = np.arange(n) % ctx_len

    def goes_on(index: int) -> bool:  # the token at `index` continues the word before it
        return index < n and pos[index] > 0 and is_letter(texts[ids[index]][:1])

    def starts_inside(index: int) -> bool:  # the token at `index` continues the word before it, with no space
        return (not texts[ids[index]].startswith(" ") and pos[index] > 0
                and is_letter(texts[ids[index - 1]][-1:]))

    out = single[ids].copy()
    for i in np.flatnonzero(out != OTHER):
        if goes_on(i + 1) or starts_inside(i):
            out[i] = OTHER
    prefixes = {word[:j] for word in words for j in range(1, len(word))}
    first = np.array([t.lstrip(" ") in prefixes and t.count(" ") <= 1 for t in texts])
    for i in np.flatnonzero(first[ids]):
        if starts_inside(i):
            continue
        joined = texts[ids[i]].lstrip(" ")
        for j in range(i + 1, min(i + MAX_PIECES, n)):
            piece = texts[ids[j]]
            if pos[j] == 0 or not piece or piece.startswith(" "):
                break
            joined += piece
            if joined in words:
                if not goes_on(j + 1):
                    out[j] = words[joined]
                break
            if joined not in prefixes:
                break
    return out


def year_of_tokens(ids: np.ndarray, ctx_len: int, digit_value: np.ndarray, number_value: np.ndarray) -> np.ndarray:
    """The year (1500..2099) each token is part of, else OTHER; ids are the run's token ids in token order
    (contexts of ctx_len). digit_value[v] = the digit of one-digit token v (else -1); number_value[v] = the
    value of a four-digit token v (else -1)."""
    n = len(ids)
    digits = digit_value[ids]
    year = np.full(n, OTHER, dtype=np.int64)
    whole = number_value[ids]
    in_range = (whole >= YEAR_RANGE[0]) & (whole <= YEAR_RANGE[1])
    year[in_range] = whole[in_range]
    pos = np.arange(n) % ctx_len
    # runs of exactly four digits inside one context: start s with digits[s..s+3] >= 0, digits[s-1] < 0,
    # digits[s+4] < 0 and all in the same context
    is_digit = digits >= 0
    s = np.arange(max(n - 3, 0))
    four = is_digit[s] & is_digit[s + 1] & is_digit[s + 2] & is_digit[s + 3] & (pos[s] <= ctx_len - 4)
    before_ok = np.ones_like(four)
    before_ok[1:] = ~is_digit[s[1:] - 1] | (pos[s[1:]] == 0)
    after = s + 4
    after_ok = np.ones_like(four)
    inside = after < n
    after_ok[inside] = ~is_digit[after[inside]] | (pos[after[inside]] == 0)
    starts = s[four & before_ok & after_ok]
    values = digits[starts] * 1000 + digits[starts + 1] * 100 + digits[starts + 2] * 10 + digits[starts + 3]
    good = (values >= YEAR_RANGE[0]) & (values <= YEAR_RANGE[1])
    for offset in range(4):
        year[starts[good] + offset] = values[good]
    return year


def vocabulary_tables(token_strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(digit value, four-digit number value) per vocabulary string, -1 elsewhere."""
    digit = np.full(len(token_strings), -1, dtype=np.int64)
    number = np.full(len(token_strings), -1, dtype=np.int64)
    for i, text in enumerate(token_strings):
        word = text.replace("\u2581", " ").replace("\u0120", " ").strip()
        if len(word) == 1 and word in "0123456789" and text == word:
            digit[i] = int(word)
        elif len(word) == 4 and all(ch in "0123456789" for ch in word):
            number[i] = int(word)
    return digit, number


def either_form(full: np.ndarray, abbreviation: np.ndarray) -> np.ndarray:
    """The class of a token that is a full name or an abbreviation (never both: they are different words)."""
    return np.where(full != OTHER, full, abbreviation)


@dataclass(frozen=True)
class TokenClasses:
    """Per token of the run (token order): day class, month class, year, and the abbreviations' day and month
    classes (OTHER where none)."""

    day: np.ndarray
    month: np.ndarray
    year: np.ndarray
    day_abbr: np.ndarray
    month_abbr: np.ndarray

    def of(self, category: str) -> np.ndarray:
        if category == "weekday":
            return either_form(self.day, self.day_abbr)
        if category == "month":
            return either_form(self.month, self.month_abbr)
        return {"days": self.day, "months": self.month, "years": self.year, "day_abbr": self.day_abbr,
                "month_abbr": self.month_abbr}[category]

    def totals(self) -> dict[str, int]:
        return {c: int((self.of(c) != OTHER).sum()) for c in CATEGORIES}


def token_classes(ids: np.ndarray, ctx_len: int, token_strings: Sequence[str]) -> TokenClasses:
    """Every token's calendar classes: whole words, one token or several (labelled at the last; run_word_classes)."""
    day_v, month_v = strict_classes(token_strings)
    day_a, month_a = abbreviation_classes(token_strings)
    digit, number = vocabulary_tables(token_strings)
    texts = [spaced(t) for t in token_strings]

    def of(single: np.ndarray, words: dict[str, int]) -> np.ndarray:
        return run_word_classes(ids, ctx_len, texts, single, words)

    return TokenClasses(of(day_v, FULL_DAYS), of(month_v, FULL_MONTHS), year_of_tokens(ids, ctx_len, digit, number),
                        of(day_a, ABBREVIATED_DAYS), of(month_a, ABBREVIATED_MONTHS))
