"""The occurrence generator (paper section 4.1): runs the model over a text up to the SAE's hook, encodes with
the SAE and writes this process's shard of the occurrence dataset (multid.sae.data.occurrence_store), or reuses
or resumes it. Also the hook capture that SAE training's residual cache shares.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from multid.errors import UserError
from multid.models import model_fingerprint
from multid.sae.data.occurrence_format import (DEFAULT_CONTEXTS_PER_PART, DEFAULT_MAX_PAIRS, FORMAT_VERSION,
                                               THRESHOLD, EncodeFn, feature_triples)
from multid.sae.data.occurrence_store import (ShardResult, dataset_root, parquet_pages_intact, promote_if_complete,
                                              shard_is_current, shard_settings, write_shard)
from multid.sae.data.run_layout import decoder_path, occurrences_dir, shard_name
from multid.sae.data.sae_loading import check_sae_fits_model
from multid.sae.data.text_sources import iter_contexts, shard_contexts, tl_tokenizer
from multid.stage import Stage, read_record, run_stage


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the SAE's hook needs computing."""


def activations_at_hook(model: Any, tokens: Any, hook: str):
    """The activations [b, T, d] at `hook` for token ids [b, T]; the forward pass stops right there."""
    import torch

    store: dict[str, Any] = {}

    def grab(act, hook=None):  # noqa: ARG001 - TransformerLens hook signature
        store["x"] = act.detach()
        raise _StopForward

    with torch.no_grad():
        try:
            model.run_with_hooks(tokens, fwd_hooks=[(hook, grab)])
        except _StopForward:
            pass
    if "x" not in store:
        raise UserError(f"the model never reached the hook {hook}")
    return store["x"]


def model_encoder(model: Any, sae: Any, ctx_len: int, threshold: float = THRESHOLD) -> EncodeFn:
    """EncodeFn running `model` up to the SAE's hook and keeping SAE activations > threshold."""
    import torch

    device = getattr(model.cfg, "device", None) or "cpu"

    def encode(cs: np.ndarray, ids: np.ndarray):
        tokens = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
        acts = activations_at_hook(model, tokens, sae.hook_name)
        b, T, d = acts.shape
        return feature_triples(sae.encode(acts.reshape(b * T, d)), cs, T, ctx_len, threshold)

    return encode


def portable_model_fingerprint(model_name: str, model_path: str | os.PathLike | None, dtype: str) -> dict[str, Any]:
    """multid.models.model_fingerprint without machine-local parts (paths, mtimes), so shards made on
    different machines from the same weights share their settings."""
    info = dict(model_fingerprint(model_name, model_path, dtype))
    info.pop("model_path", None)
    if "weights" in info:
        info["weights"] = [[name, size] for name, size, *_ in info["weights"]]
    return info


@dataclass
class GenerateOptions:
    """What a run of the occurrence generator is asked to do (see generate_feature_occurence_data.py)."""

    ctx_len: int = 256
    batch_size: int = 64
    max_tokens: int | None = None
    max_pairs: int | None = DEFAULT_MAX_PAIRS
    num_shards: int = 1
    shard_index: int = 0
    contexts_per_part: int = DEFAULT_CONTEXTS_PER_PART
    threshold: float = THRESHOLD
    progress: bool = True

    def check(self) -> None:
        if self.ctx_len < 2:
            raise UserError(f"--ctx_len must be at least 2 (BOS + one token), got {self.ctx_len}")
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise UserError(f"--shard_index must be in [0, {self.num_shards}) for --num_shards {self.num_shards}, "
                            f"got {self.shard_index}")
        if self.max_tokens is not None and self.max_tokens < self.ctx_len:
            raise UserError(f"--max_tokens {self.max_tokens} is less than one context (--ctx_len {self.ctx_len})")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise UserError(f"--max_pairs must be at least 1, got {self.max_pairs}")
        if self.batch_size < 1 or self.contexts_per_part < 1:
            raise UserError("--batch_size and --contexts_per_part must be at least 1")

    @property
    def max_contexts(self) -> int | None:
        """Global context cap from --max_tokens (whole contexts only)."""
        return None if self.max_tokens is None else self.max_tokens // self.ctx_len

    @property
    def shard_max_pairs(self) -> int | None:
        """Each shard's share of --max_pairs (the cap is on the whole run)."""
        return None if self.max_pairs is None else -(-self.max_pairs // self.num_shards)


def dataset_meta(*, model_name: str, layer: int, sae: Any, source: Any, model_info: dict[str, Any],
                 options: GenerateOptions) -> dict[str, Any]:
    """run.json: every setting that changes the dataset's content (nothing machine-local)."""
    return {
        "format": FORMAT_VERSION, "model": model_name, "layer": int(layer), "hook": sae.hook_name,
        "sae_tag": sae.tag, "sae": sae.identity(), "model_weights": model_info, "ctx_len": options.ctx_len,
        "source": source.fingerprint(), "source_description": source.describe(), "bos": True,
        "max_tokens": options.max_tokens, "max_pairs": options.max_pairs, "num_shards": options.num_shards,
        "contexts_per_part": options.contexts_per_part, "threshold": options.threshold,
    }


def generate_occurrences(*, run: Path, model_name: str, layer: int, sae: Any, source: Any,
                         get_model: Callable[[], Any], model_info: dict[str, Any], options: GenerateOptions,
                         command: str | None = None, fail_after_parts: int | None = None,
                         encoder: EncodeFn | None = None) -> ShardResult:
    """Write (or resume, or reuse) this process's shard of the occurrence dataset of one (model, layer, SAE).

    The model is loaded (get_model) only when the shard has work left. decoder.npy and run.json are written
    beside the shards. Returns what the shard holds. `encoder` replaces running the model up to the hook
    (multid.sae.analysis.sae_trainer.cached_encoder reads residuals cached from the same contexts; the dataset is the same).
    """
    options.check()
    run = Path(run)
    meta = dataset_meta(model_name=model_name, layer=layer, sae=sae, source=source, model_info=model_info,
                        options=options)
    root = dataset_root(run, meta)
    write_decoder_stage(run if root == occurrences_dir(run) else root, sae)
    name = shard_name(options.shard_index, options.num_shards)
    settings = shard_settings(meta, options.shard_index)
    if shard_is_current(root / name, settings) and parquet_pages_intact(root / name):
        rec = (read_record(root / name, True) or {}).get("extra", {})
        folder = promote_if_complete(run, meta, root) / name
        return ShardResult(folder, int(rec.get("num_contexts", 0)), int(rec.get("num_triples", 0)), True,
                           str(rec.get("stop_reason", "")))
    model = get_model()
    check_sae_fits_model(sae, model, model_name)
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and options.ctx_len > n_ctx:
        raise UserError(f"--ctx_len {options.ctx_len} is longer than model {model_name!r}'s context ({n_ctx})")
    contexts = shard_contexts(
        iter_contexts(source.documents(), tl_tokenizer(model), options.ctx_len, options.max_contexts),
        options.num_shards, options.shard_index)
    total = None
    if options.max_contexts is not None:
        total = len(range(options.shard_index, options.max_contexts, options.num_shards))
    bar = None
    if options.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="ctx", desc=f"{model_name} layer {layer} shard "
                                                  f"{options.shard_index + 1}/{options.num_shards}")
    try:
        encode = encoder or model_encoder(model, sae, options.ctx_len, options.threshold)
        if options.shard_index == 0:  # shard 0 holds the first context, if the text gives any
            contexts = require_one(contexts, f"the text ({source.describe()}) gives no context of --ctx_len "
                                             f"{options.ctx_len} tokens: give more text or a shorter --ctx_len")
        result = write_shard(root / name, settings, contexts, encode,
                             ctx_len=options.ctx_len, contexts_per_part=options.contexts_per_part,
                             batch_size=options.batch_size, max_pairs=options.shard_max_pairs, command=command,
                             name=f"occurrences of {model_name} layer {layer} ({sae.tag})", progress=bar,
                             fail_after_parts=fail_after_parts)
        return dataclasses.replace(result, path=promote_if_complete(run, meta, root) / name)
    finally:
        if bar is not None:
            bar.close()


def require_one(items: Iterable[Any], message: str) -> Iterator[Any]:
    """`items` unchanged, but a UserError(message) before anything is written when it yields nothing."""
    iterator = iter(items)
    try:
        first = next(iterator)
    except StopIteration:
        raise UserError(message) from None
    return itertools.chain([first], iterator)


def write_decoder_stage(run: Path, sae: Any) -> Path:
    """decoder.npy of the SAE, through multid.stage (reused while the SAE's identity is unchanged)."""
    path = decoder_path(run)

    def build(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(sae.decoder_numpy(), dtype=np.float32), allow_pickle=False)

    return run_stage(Stage(f"decoder of {sae.tag}", path, {"sae": sae.identity()}), build)
