"""Forward passes of the circle interventions: a batched engine and a one-run-at-a-time reference.

An intervention overwrites the residual stream at one position t of cache layer L (the residual
entering block L) and reads the logits of the answer words at the last position.

Batched engine (used by every script): positions before t never change, so their keys and values in
every block are those of the clean run. We compute them once per task (`PrefixKV`, one forward of the
prompt prefixes), then each intervention runs only positions t.. (2 tokens for the start word, 1 for
the last token) through blocks L.. (`model(resid, start_at_layer=L, past_kv_cache=...)`), starting
from the cached clean residual of layer L with position t replaced. All patched vectors of a layer go
through the model in batches, and the no-op (clean) logits come from the cached final residual once.

Reference (`reference_layer_metrics`): upstream's loop, one problem and one variant at a time, the full
prompt through the whole model with a TransformerLens hook at `resid_hook_name(L)`. Tests and the
benchmark check that both agree to 1e-4.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities.activation_functions import apply_softcap

from multid.tasks.cache import TaskCache, resid_hook_name
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
    """Clean keys and values of positions < t in every block, for every problem."""

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
