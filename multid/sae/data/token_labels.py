"""Token -> class maps used to colour the paper's day / month / year figures (section 5, Figures 1, 12, 13).

A point is labelled by its firing token's text, lower-cased and stripped (SentencePiece's "▁" removed first).
Days are 0 (Monday) .. 6 (Sunday); months 0 (January) .. 11 (December); years of the 20th century are
their offset from 1900. Tokens that match nothing are "other" (None / -1), drawn in grey.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

OTHER = -1
SPIECE_SPACE = "\u2581"  # SentencePiece's word-start marker

DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_SHORT = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")
MONTH_SHORT = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SEASONS = ("Winter", "Spring", "Summer", "Autumn")  # Mistral months figure: classes 12..15

# Days: full name, plural, and the common abbreviation (GPT-2 figure script).
DAY_TOKENS: dict[str, int] = {}
for _i, (_name, _abbr) in enumerate(zip(DAY_NAMES, ("mon", "tues", "wed", "thurs", "fri", "sat", "sun"))):
    DAY_TOKENS[_name.lower()] = _i
    DAY_TOKENS[_name.lower() + "s"] = _i
    DAY_TOKENS[_abbr] = _i

# Mistral's tokenizer splits some day names; the figure script mapped the fragments, and "weekend" to class 7.
WEEKEND = 7
MISTRAL_DAY_TOKENS: dict[str, int] = {**DAY_TOKENS, "uesday": 1, "ue": 1, "aturday": 5,
                                      "weekend": WEEKEND, "weekends": WEEKEND, "end": WEEKEND, "ends": WEEKEND}

# Months: full name or three-letter abbreviation ("may" is both); no "sept".
MONTH_TOKENS: dict[str, int] = {}
for _i, (_name, _abbr) in enumerate(zip(MONTH_NAMES, MONTH_SHORT)):
    MONTH_TOKENS[_name.lower()] = _i
    MONTH_TOKENS[_abbr.lower()] = _i

MISTRAL_MONTH_TOKENS: dict[str, int] = {**MONTH_TOKENS, "winter": 12, "spring": 13, "summer": 14, "fall": 15,
                                        "autumn": 15}

YEAR_FIRST, YEAR_LAST = 1900, 1999


def normalise_token(text: str) -> str:
    """The text a label map is keyed on: SentencePiece marker removed, lower-cased, stripped."""
    return text.replace(SPIECE_SPACE, "").lower().strip()


def map_labels(tokens: Iterable[str], mapping: Mapping[str, int]) -> np.ndarray:
    """Class index of every token (OTHER where the map has no entry)."""
    return np.array([mapping.get(normalise_token(t), OTHER) for t in tokens], dtype=np.int64)


def year_labels(tokens: Sequence[str], stale_colours: bool = False) -> np.ndarray:
    """Year offset (0..99 for 1900..1999) of every token, OTHER for anything else.

    `stale_colours=True` reproduces the original figure script's bug: a token that is not all digits kept
    the previous point's colour (the first such point is OTHER). Digit strings outside 1900..1999 are
    OTHER in both modes.
    """
    out = np.full(len(tokens), OTHER, dtype=np.int64)
    previous = OTHER
    for i, text in enumerate(tokens):
        stripped = text.replace(SPIECE_SPACE, "").strip()
        if stripped.isdigit():
            year = int(stripped)
            previous = year - YEAR_FIRST if YEAR_FIRST <= year <= YEAR_LAST else OTHER
            out[i] = previous
        elif stale_colours:
            out[i] = previous
    return out


def other_fraction(labels: np.ndarray) -> float:
    """Share of points labelled OTHER (printed by the figure scripts as the grey fraction)."""
    labels = np.asarray(labels)
    return float(np.mean(labels == OTHER)) if labels.size else 0.0
