"""A synthetic SAE run with planted calendar features, for the reconstruction, figure and browser tests.

Word-level vocabulary: filler words, the 7 day names, the 12 month names and the years 1900..1999.
Decoder (d = 24, F = 60): the 7 day features lie on a circle in the plane (e0, e1) in weekday order, the 12
month features on a circle in (e2, e3), the 10 decade features of the years cluster along a curve in
(e4, e5, e6); all other rows are random unit vectors. At a day token of day i, feature day[i] fires with
~1.0 and its two circle neighbours co-fire with 0.3, so the reconstruction points at angle 2 pi i / 7;
months likewise; a year token fires its decade's feature. Every token also fires 3 random background
features (never cluster members). The cluster file (JSON) interleaves singletons with the three clusters:
non-singleton numbering days = 0, months = 1, years = 2; full numbering days = 1, months = 3, years = 4.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multid.sae.data.token_labels import DAY_NAMES, MONTH_NAMES

D, F, CTX_LEN = 24, 60, 32
DAYS = [3, 9, 14, 20, 27, 33, 41]
MONTHS = [1, 5, 7, 11, 16, 18, 22, 25, 30, 35, 38, 44]
YEARS = [46, 47, 48, 49, 50, 51, 52, 53, 54, 55]
SINGLETONS = [[0], [2], [4]]
FILLER = ["the", "on", "a", "meeting", "in", "of", "and", "we", "met", "last"]


@dataclass
class CalendarRun:
    run: Path
    tokenizer_path: Path
    clusters_file: Path
    W_dec: np.ndarray
    vocab: list[str]
    token_ids: np.ndarray  # [n_ctx, ctx_len]
    token: np.ndarray
    feature: np.ndarray
    value: np.ndarray


WORD_START = "\u2581"  # SentencePiece-style pieces, as Mistral's tokenizer: decoding one alone drops the space


def words() -> list[str]:
    return FILLER + list(DAY_NAMES) + list(MONTH_NAMES) + [str(y) for y in range(1900, 2000)]


def vocabulary() -> list[str]:
    """Token strings by id: three specials, then every word as a word-start piece."""
    return ["<unk>", "<bos>", "<pad>"] + [WORD_START + w for w in words()]


def word_of(token_id: int) -> str:
    return vocabulary()[token_id].removeprefix(WORD_START)


def decoder(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(F, D))
    W[:, :8] *= 0.05  # background rows mostly outside the planted planes
    for i, f in enumerate(DAYS):
        a = 2 * np.pi * i / 7
        W[f] = 0.0
        W[f, 0], W[f, 1] = np.cos(a), np.sin(a)
        W[f, 8:] = 0.05 * rng.normal(size=D - 8)
    for i, f in enumerate(MONTHS):
        a = 2 * np.pi * i / 12
        W[f] = 0.0
        W[f, 2], W[f, 3] = np.cos(a), np.sin(a)
        W[f, 8:] = 0.05 * rng.normal(size=D - 8)
    for i, f in enumerate(YEARS):
        t = i / 9
        W[f] = 0.0
        W[f, 4], W[f, 5], W[f, 6] = 1.0, t - 0.5, (t - 0.5) ** 2
        W[f, 8:] = 0.05 * rng.normal(size=D - 8)
    return (W / np.linalg.norm(W, axis=1, keepdims=True)).astype(np.float32)


def corpus(n_ctx: int, seed: int = 1, day_names: tuple[str, ...] = DAY_NAMES):
    """token ids [n_ctx, CTX_LEN] (BOS first) and the triples (token, feature, value), unsorted. day_names[i] is
    the word written where day feature i fires (a permutation of DAY_NAMES puts the circle out of calendar
    order: its features, their co-firing neighbours and so the reconstructions go round as before, the names
    on them do not)."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    index = {w.removeprefix(WORD_START): i for i, w in enumerate(vocab)}
    cluster = set(DAYS) | set(MONTHS) | set(YEARS) | {m for s in SINGLETONS for m in s}
    background = np.array(sorted(set(range(F)) - cluster))
    ids = np.zeros((n_ctx, CTX_LEN), np.int64)
    tok, feat, val = [], [], []
    for c in range(n_ctx):
        for p in range(CTX_LEN):
            t = c * CTX_LEN + p
            fired: dict[int, float] = {}
            if p == 0:
                word = "<bos>"
            else:
                u = rng.random()
                if u < 0.2:
                    day = int(rng.integers(7))
                    word = day_names[day]
                    fired[DAYS[day]] = 1.0 + 0.05 * rng.random()
                    fired[DAYS[(day - 1) % 7]] = 0.3
                    fired[DAYS[(day + 1) % 7]] = 0.3
                elif u < 0.4:
                    month = int(rng.integers(12))
                    word = MONTH_NAMES[month]
                    fired[MONTHS[month]] = 1.0 + 0.05 * rng.random()
                    fired[MONTHS[(month - 1) % 12]] = 0.3
                    fired[MONTHS[(month + 1) % 12]] = 0.3
                elif u < 0.55:
                    year = 1900 + int(rng.integers(100))
                    word = str(year)
                    fired[YEARS[(year - 1900) // 10]] = 1.0 + 0.05 * rng.random()
                else:
                    word = FILLER[int(rng.integers(len(FILLER)))]
            for f in rng.choice(background, size=3, replace=False):
                fired[int(f)] = float(rng.exponential())
            ids[c, p] = index[word]
            for f, v in fired.items():
                tok.append(t)
                feat.append(f)
                val.append(v)
    return ids, np.array(tok, np.int64), np.array(feat, np.int32), np.array(val, np.float32)


def save_tokenizer(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement=WORD_START, prepend_scheme="always")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", unk_token="<unk>", pad_token="<pad>")
    tok.save_pretrained(folder)
    return folder


def make_calendar_run(root: Path, n_ctx: int = 40, num_shards: int = 1, seed: int = 1,
                      day_names: tuple[str, ...] = DAY_NAMES) -> CalendarRun:
    """Write the run under root/sae/tiny_layer1_calendar (occurrences + decoder), tokenizer and cluster file."""
    from multid.sae.data.occurrence_store import write_occurrence_run

    W = decoder()
    ids, tok, feat, val = corpus(n_ctx, seed, day_names)
    run = Path(root) / "sae" / "tiny_layer1_calendar"
    write_occurrence_run(run, ids, tok, feat, val, W_dec=W, num_shards=num_shards, contexts_per_part=16,
                         meta={"model": "tiny", "layer": 1, "sae_tag": "calendar"})
    tokenizer_path = save_tokenizer(Path(root) / "calendar_tokenizer")
    clusters = [SINGLETONS[0], DAYS, SINGLETONS[1], MONTHS, YEARS, SINGLETONS[2]]
    clusters_file = Path(root) / "calendar_clusters.json"
    clusters_file.write_text(json.dumps(clusters))
    return CalendarRun(run, tokenizer_path, clusters_file, W, vocabulary(), ids, tok, feat, val)


def cli_args(cal: CalendarRun, *extra: str) -> list[str]:
    """Flags that point a figure script at the calendar run."""
    return ["--run_dir", str(cal.run), "--model_name", "tiny", "--layer", "1", "--clusters_file",
            str(cal.clusters_file), "--tokenizer_path", str(cal.tokenizer_path), *extra]
