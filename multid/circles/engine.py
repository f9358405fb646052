"""Forward passes of the circle interventions: a batched engine and a one-run-at-a-time reference.

An intervention overwrites the residual stream at one position t of cache layer L (the residual
entering block L) and reads the answer-word logits at the last position. `CleanRun` holds what every
intervention at one position reuses (model, clean prefix keys/values, clean logits); how the batched
engine avoids recomputing the unchanged prefix is explained at `PrefixKV` and `patched_answer_logits`.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities.activation_functions import apply_softcap

from multid.errors import UserError
from multid.tasks.cache import TaskCache, prompt_tokens, resid_hook_name
from multid.circles.probe import (
    PER_PROBLEM_VARIANTS,
    PER_RUN_VARIANTS,
    VARIANTS,
    CircleBasis,
    InterventionRuns,
    variant_vectors,
)


def model_device(model) -> torch.device:
    """Where the model's first parameters (the embedding) live: the device for its inputs."""
    return next(model.parameters()).device


def output_device(model) -> torch.device:
    """Where ln_final and the unembedding live (the last device when the model is split over GPUs)."""
    return model.unembed.W_U.device


def frozen_kv_cache(
    keys: Sequence[torch.Tensor | None],
    values: Sequence[torch.Tensor | None],
    rows: torch.Tensor,
    length: int,
    first_layer: int = 0,
) -> TransformerLensKeyValueCache:
    """A frozen TransformerLens KV cache whose batch row r holds positions < `length` of rows[r].

    keys, values: one tensor [n, >= length, heads, d_head] per block (None for blocks that are never
    run); blocks before `first_layer` get no entry either.
    """
    entries = []
    for layer, (k, v) in enumerate(zip(keys, values)):
        if k is None or layer < first_layer:
            entries.append(None)
            continue
        past_keys = k[rows.to(k.device), :length]
        past_values = v[rows.to(v.device), :length]
        entries.append(TransformerLensKeyValueCacheEntry(past_keys, past_values, frozen=True))
    device = next(entry.past_keys.device for entry in entries if entry is not None)
    mask = torch.ones(len(rows), length, dtype=torch.int, device=device)
    return TransformerLensKeyValueCache(entries, mask, frozen=True)


class PrefixKV:
    """Clean keys and values of positions < t in every block, for every problem.

    Positions before t never change under an intervention at t, so their keys and values are the clean
    run's: computed once per task (one forward of the prompt prefixes) and reused by every patched run.
    """

    def __init__(self, model, tokens: torch.Tensor, position: int, batch_size: int = 64):
        if not 1 <= position < tokens.shape[1]:
            raise ValueError(f"position {position} must be in 1..{tokens.shape[1] - 1}")
        self.position = position
        keys, values = [], []
        with torch.no_grad():
            for start in range(0, tokens.shape[0], batch_size):
                chunk = tokens[start : start + batch_size, :position].to(model_device(model))
                kv = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, chunk.shape[0])
                model(chunk, past_kv_cache=kv, return_type=None)
                keys.append([entry.past_keys for entry in kv.entries])
                values.append([entry.past_values for entry in kv.entries])
        n_layers = model.cfg.n_layers
        self.keys = [torch.cat([batch[layer] for batch in keys]) for layer in range(n_layers)]
        self.values = [torch.cat([batch[layer] for batch in values]) for layer in range(n_layers)]

    def for_rows(self, rows: torch.Tensor) -> TransformerLensKeyValueCache:
        """A frozen cache whose batch row r holds the prefix of problem rows[r]."""
        return frozen_kv_cache(self.keys, self.values, rows, self.position)


@torch.no_grad()
def answer_logits(model, final_resid: torch.Tensor, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Logits [rows, k] of some tokens from the final residual [rows, d] at the last position (before ln_final).

    token_ids: [k] (the same tokens in every row) or [rows, k]. Only those unembedding columns are
    computed; ln_final and the output soft cap are applied as in the model's own forward.
    """
    return readout_logits(model, final_resid, token_ids)


def readout_logits(model, final_resid: torch.Tensor, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """`answer_logits` with gradients (for training an intervention through the model, multid.circles.das)."""
    device = output_device(model)
    resid = final_resid.to(device)
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid[:, None, :])[:, 0, :]
    ids = torch.as_tensor(token_ids, dtype=torch.long).to(device)
    if ids.ndim == 1:
        logits = resid @ model.W_U[:, ids] + model.b_U[ids]
    else:
        logits = torch.einsum("rd,drk->rk", resid, model.W_U[:, ids]) + model.b_U[ids]
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


@torch.no_grad()
def clean_answer_logits(model, cache: TaskCache, answer_ids: Sequence[int]) -> torch.Tensor:
    """[n, p] answer-word logits of the clean runs, from the cached final residual (no forward pass)."""
    final = cache.layer_acts(cache.n_cache_layers - 1)[:, -1, :].to(output_device(model), model.cfg.dtype)
    return answer_logits(model, final, list(answer_ids)).float().cpu()


@torch.no_grad()
def patched_answer_logits(
    model,
    prefix: PrefixKV,
    layer: int,
    clean_suffix: torch.Tensor,
    rows: torch.Tensor,
    vectors: torch.Tensor,
    answer_ids: Sequence[int],
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """[m, p] answer logits after setting position t of cache layer `layer` to `vectors[r]` in problem rows[r].

    clean_suffix: [n, seq - t, d] clean residual of cache layer `layer` at positions t.. of every problem.
    Only positions t.. run, through blocks `layer`.. (`start_at_layer`), reading the prefix from `prefix`.
    """
    device = model_device(model)
    ids = list(answer_ids)
    out = []
    starts = range(0, len(rows), batch_size)
    for start in tqdm(starts, desc=f"layer {layer} forwards", unit="batch", leave=False, disable=not progress):
        chunk_rows = rows[start : start + batch_size]
        resid = clean_suffix[chunk_rows].to(device, model.cfg.dtype).clone()
        resid[:, 0, :] = vectors[start : start + batch_size].to(device, model.cfg.dtype)
        final = model(
            resid, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, past_kv_cache=prefix.for_rows(chunk_rows)
        )
        out.append(answer_logits(model, final[:, -1, :], ids).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(ids))


def rows_per_forward(batch_size: int, seq_len: int, suffix_len: int) -> int:
    """Patched runs per forward pass: `batch_size` counts full prompts, a run computes only `suffix_len` positions."""
    return max(1, batch_size * seq_len // max(1, suffix_len))


class CleanRun:
    """The model plus what every intervention at `position` of a task cache reuses, made on first use.

    `model` is loaded by `load_model_fn()` only when some result must be computed; `prefix` (clean keys
    and values of positions < position), `clean_logits` ([n, p] answer logits of the clean runs) and
    `rows_per_forward` follow from it. One object serves the sweep, the Figure 6 grid and the comparison.
    """

    def __init__(self, cache: TaskCache, position: int, load_model_fn: Callable[[], object] | None, batch_size: int = 64):
        self.cache = cache
        self.position = position
        self.batch_size = batch_size
        self._load_model = load_model_fn
        self.setup_s: float | None = None  # seconds spent on prefix + clean logits (after the model load)

    @cached_property
    def model(self):
        if self._load_model is None:
            raise UserError("this step needs the model but no model loader was given")
        return self._load_model()

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @cached_property
    def prefix(self) -> PrefixKV:
        model = self.model
        started = time.time()
        prefix = PrefixKV(model, prompt_tokens(model, self.cache), self.position, self.batch_size)
        self.setup_s = (self.setup_s or 0.0) + time.time() - started
        return prefix

    @cached_property
    def clean_logits(self) -> torch.Tensor:
        model = self.model
        started = time.time()
        logits = clean_answer_logits(model, self.cache, self.cache.answer_token_ids)
        self.setup_s = (self.setup_s or 0.0) + time.time() - started
        return logits

    @property
    def rows_per_forward(self) -> int:
        seq_len = self.cache.layout.seq_len
        return rows_per_forward(self.batch_size, seq_len, seq_len - self.position)

    def patched_logits(self, layer: int, rows: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """[m, p] answer logits with position `position` of cache layer `layer` set to vectors[r] in problem rows[r]."""
        suffix = self.cache.layer_acts(layer)[:, self.position :, :]
        return patched_answer_logits(self.model, self.prefix, layer, suffix, rows, vectors, self.cache.answer_token_ids,
                                     self.rows_per_forward)


def metric(answer_logits: torch.Tensor, answer: np.ndarray, new_answer: np.ndarray) -> np.ndarray:
    """logit[c] - logit[c'] per row: positive = the model still prefers the original answer."""
    rows = torch.arange(answer_logits.shape[0])
    picked = answer_logits[rows, torch.as_tensor(answer)] - answer_logits[rows, torch.as_tensor(new_answer)]
    return picked.double().numpy()


@torch.no_grad()
def layer_metrics(
    model,
    cache: TaskCache,
    prefix: PrefixKV,
    basis: CircleBasis,
    layer: int,
    runs: InterventionRuns,
    answer_ids: Sequence[int],
    clean_logits: torch.Tensor,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """[7, R] metric of every variant (order `VARIANTS`) for every run, batched.

    Each distinct patched forward runs once: the three per-problem variants (average ablate, zero
    circle, zero everything but circle) once per problem, the three per-run variants once per run,
    and the no-op from the clean logits.
    """
    position = prefix.position
    acts = cache.layer_acts(layer).to(basis.mean.device)  # [n, seq, d]
    x = acts[:, position, :]
    n = x.shape[0]
    problems = torch.as_tensor(runs.problem)
    donors = torch.as_tensor(runs.donor)
    values = torch.as_tensor(runs.value)
    all_rows = torch.arange(n)
    blocks, rows = {}, []
    for variant in PER_PROBLEM_VARIANTS:
        blocks[variant] = variant_vectors(variant, basis, x, x, all_rows, all_rows)
        rows.append(all_rows)
    for variant in PER_RUN_VARIANTS:
        blocks[variant] = variant_vectors(variant, basis, x[problems], x[donors], donors, values)
        rows.append(problems)
    order = PER_PROBLEM_VARIANTS + PER_RUN_VARIANTS
    vectors = torch.cat([blocks[variant] for variant in order])
    logits = patched_answer_logits(
        model, prefix, layer, acts[:, position:, :], torch.cat(rows), vectors, answer_ids, batch_size, progress
    )
    answer = cache.infos[runs.problem, 2]
    raw = np.zeros((len(VARIANTS), len(runs)))
    raw[VARIANTS.index("no_op")] = metric(clean_logits[problems], answer, runs.new_answer)
    offset = 0
    for variant in order:
        size = n if variant in PER_PROBLEM_VARIANTS else len(runs)
        block = logits[offset : offset + size]
        offset += size
        block = block[problems] if variant in PER_PROBLEM_VARIANTS else block
        raw[VARIANTS.index(variant)] = metric(block, answer, runs.new_answer)
    return raw


@torch.no_grad()
def reference_layer_metrics(
    model,
    cache: TaskCache,
    tokens: torch.Tensor,
    basis: CircleBasis,
    layer: int,
    position: int,
    runs: InterventionRuns,
    answer_ids: Sequence[int],
    run_indices: Sequence[int] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """[7, R'] the same metrics as `layer_metrics`, upstream's way: batch size 1, 7 full forwards per run.

    The hook replaces position `position` of the live residual at `resid_hook_name(layer)`;
    `run_indices` restricts to a subset of runs (for timing); the no-op is a hook-free forward.
    """
    device = model_device(model)
    acts = cache.get_acts(layer, position).to(basis.mean.device)  # donors' activations, as upstream's X
    hook_name = resid_hook_name(layer)
    run_indices = range(len(runs)) if run_indices is None else run_indices
    raw = np.zeros((len(VARIANTS), len(run_indices)))
    for column, r in enumerate(tqdm(run_indices, desc=f"reference layer {layer}", leave=False, disable=not progress)):
        i, j, v = int(runs.problem[r]), int(runs.donor[r]), int(runs.value[r])
        c, c_new = int(cache.infos[i, 2]), int(runs.new_answer[r])
        for row, variant in enumerate(VARIANTS):

            def hook(resid, hook, variant=variant):
                live = resid[:, position, :].to(basis.mean.device).float()
                new = variant_vectors(variant, basis, live, acts[j : j + 1], torch.tensor([j]), torch.tensor([v]))
                resid[:, position, :] = new.to(resid.device, resid.dtype)
                return resid

            hooks = [] if variant == "no_op" else [(hook_name, hook)]
            logits = model.run_with_hooks(tokens[i : i + 1].to(device), fwd_hooks=hooks)[0, -1]
            raw[row, column] = float(logits[answer_ids[c]] - logits[answer_ids[c_new]])
    return raw
