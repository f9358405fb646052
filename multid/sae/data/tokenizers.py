"""Token ids -> display strings for the SAE figures (hover contexts, colour labels), and the tokenizer of a run.

The tokenizer is the real Hugging Face one a user with internet gets (`AutoTokenizer.from_pretrained` of the
model's hub id), or a local folder (`--tokenizer_path`), or the registry's offline models (`smollm2`'s
converted folder, `tiny`'s word-level tokenizer).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multid.errors import UserError

HUB_TOKENIZERS = {"gpt2": "gpt2", "gpt-2": "gpt2", "mistral": "mistralai/Mistral-7B-v0.1",
                  "llama": "meta-llama/Meta-Llama-3-8B"}
SPIECE_SPACE = "\u2581"


def load_tokenizer(model: str, *, tokenizer_path: str | os.PathLike | None = None,
                   base_dir: Path | None = None) -> Any:
    """The tokenizer of `model` (a registry name, or upstream's "gpt-2"), or the one saved at `tokenizer_path`."""
    from transformers import AutoTokenizer

    if tokenizer_path is not None:
        path = Path(tokenizer_path).expanduser()
        if not path.exists():
            raise UserError(f"--tokenizer_path {path} does not exist; give a folder saved with save_pretrained")
        return AutoTokenizer.from_pretrained(path)
    if model == "tiny":
        from multid.models import build_tiny_tokenizer

        return build_tiny_tokenizer()
    if model == "smollm2":
        from multid.config import models_dir, resolve_base_dir
        from multid.models import ensure_smollm2_converted

        return AutoTokenizer.from_pretrained(ensure_smollm2_converted(models_dir(base_dir or resolve_base_dir())))
    if model not in HUB_TOKENIZERS:
        raise UserError(f"no tokenizer known for model {model!r}; pass --tokenizer_path to a tokenizer folder")
    try:
        return AutoTokenizer.from_pretrained(HUB_TOKENIZERS[model])
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"could not load the {model} tokenizer ({HUB_TOKENIZERS[model]}) from the Hugging Face "
                        f"hub: {first}; without internet pass --tokenizer_path to a local tokenizer folder") from None


def token_strings(tokenizer: Any, ids: Sequence[int] | np.ndarray) -> list[str]:
    """The text of each token id, with its leading space (each distinct id is decoded once).

    Byte-level tokenizers (GPT-2) decode a single token with its space; SentencePiece ones drop the
    word-start marker when decoding one token alone, so it is put back as a space.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    unique, inverse = np.unique(ids, return_inverse=True)
    table = []
    for token_id in unique.tolist():
        text = tokenizer.decode([token_id])
        piece = tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and piece.startswith(SPIECE_SPACE) and not text.startswith(" "):
            text = " " + text
        table.append(text)
    return [table[i] for i in inverse.tolist()]


def display_piece(text: str) -> str:
    """HTML-safe token text with line breaks shown as visible marks (hover labels are one line per context)."""
    return html.escape(text).replace("\r", "").replace("\n", "\u21b5")


def hover_text(context: Sequence[str]) -> str:
    """HTML of a context whose LAST token is the firing token, shown in bold: "... the <b> Monday</b>"."""
    if not context:
        return ""
    *before, last = context
    return "".join(display_piece(t) for t in before) + f"<b>{display_piece(last)}</b>"


def hover_texts(tokenizer: Any, contexts: Sequence[Sequence[int]]) -> list[str]:
    """hover_text of every context (lists of token ids ending at the firing token)."""
    flat = [int(t) for ctx in contexts for t in ctx]
    strings = token_strings(tokenizer, flat) if flat else []
    out, pos = [], 0
    for ctx in contexts:
        out.append(hover_text(strings[pos:pos + len(ctx)]))
        pos += len(ctx)
    return out
