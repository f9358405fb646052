"""The batched intervention engine on the tiny random model: equal to upstream's one-at-a-time loop,
and exact at the last layer (patch layer = donor logits, average ablate = logits of the mean)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multid.tasks.cache import prompt_tokens
from multid.circles.engine import (
    PrefixKV,
    answer_logits,
    clean_answer_logits,
    layer_metrics,
    patched_answer_logits,
    reference_layer_metrics,
)
from multid.circles.probe import VARIANTS, intervention_runs
from multid.circles.sweep import SweepParams, fit_layer_probe, letter_token

torch.set_num_threads(1)  # the tiny model is faster on one thread, and the CPU is shared


def engine_inputs(model, cache, letter: str, layer: int, centered: bool = False):
    params = SweepParams(letter, ("cos", "sin"), 5, null_permutations=2)
    token = letter_token(cache, letter)
    basis = fit_layer_probe(cache, params, layer).basis(centered)
    runs = intervention_runs(cache.infos, cache.p, letter)
    tokens = prompt_tokens(model, cache)
    return basis, runs, tokens, PrefixKV(model, tokens, token), token


@pytest.mark.parametrize(
    "task, letter, layer, centered",
    [("days_of_week", "a", 0, False), ("days_of_week", "a", 2, True), ("days_of_week", "c", 3, False), ("months_of_year", "a", 1, False)],
)
def test_batched_equals_reference_loop(tiny_model, tiny_caches, task, letter, layer, centered):
    cache = tiny_caches[task]
    basis, runs, tokens, prefix, token = engine_inputs(tiny_model, cache, letter, layer, centered)
    clean = clean_answer_logits(tiny_model, cache, cache.answer_token_ids)
    batched = layer_metrics(tiny_model, cache, prefix, basis, layer, runs, cache.answer_token_ids, clean, batch_size=97)
    assert batched.shape == (len(VARIANTS), len(runs))
    subset = np.linspace(0, len(runs) - 1, 12).astype(int)
    reference = reference_layer_metrics(tiny_model, cache, tokens, basis, layer, token, runs, cache.answer_token_ids, subset)
    np.testing.assert_allclose(batched[:, subset], reference, atol=1e-4, rtol=0)


def test_patch_layer_at_the_last_layer_gives_the_donor_logits(tiny_model, tiny_caches):
    cache = tiny_caches["days_of_week"]
    last = cache.n_cache_layers - 1
    token = cache.layout.before_c_token
    tokens = prompt_tokens(tiny_model, cache)
    prefix = PrefixKV(tiny_model, tokens, token)
    acts = cache.layer_acts(last)
    rows = torch.tensor([0, 5, 9])
    donors = torch.tensor([7, 1, 30])
    patched = patched_answer_logits(tiny_model, prefix, last, acts[:, token:], rows, acts[donors, token], cache.answer_token_ids)
    with torch.no_grad():
        donor_logits = tiny_model(tokens[donors])[:, -1, cache.answer_token_ids]
    torch.testing.assert_close(patched, donor_logits, atol=1e-4, rtol=0)
    # the sweep's patch-layer metric at the last layer equals the donor's clean logit difference
    basis, runs, _, prefix, _ = engine_inputs(tiny_model, cache, "c", last)
    clean = clean_answer_logits(tiny_model, cache, cache.answer_token_ids)
    raw = layer_metrics(tiny_model, cache, prefix, basis, last, runs, cache.answer_token_ids, clean)
    c = cache.infos[runs.problem, 2]
    expected = clean[runs.donor, c] - clean[runs.donor, runs.new_answer]
    np.testing.assert_allclose(raw[VARIANTS.index("patch_layer")], expected.double().numpy(), atol=1e-4)
    # average ablate at the last layer gives the logits of the mean activation
    mean_logits = answer_logits(tiny_model, basis.mean[None, :], cache.answer_token_ids)[0]
    expected = mean_logits[c] - mean_logits[runs.new_answer]
    np.testing.assert_allclose(raw[VARIANTS.index("average_ablate")], expected.double().numpy(), atol=1e-4)


def test_clean_logits_match_a_full_forward(tiny_model, tiny_caches):
    cache = tiny_caches["months_of_year"]
    with torch.no_grad():
        full = tiny_model(prompt_tokens(tiny_model, cache))[:, -1, cache.answer_token_ids]
    torch.testing.assert_close(clean_answer_logits(tiny_model, cache, cache.answer_token_ids), full, atol=1e-4, rtol=0)


def test_patch_layer_at_layer_zero_is_the_donor_run(tiny_model, tiny_caches):
    """Letter a: the donor differs only in the start word, so patching its layer-0 residual there is its clean run."""
    cache = tiny_caches["days_of_week"]
    basis, runs, _, prefix, _ = engine_inputs(tiny_model, cache, "a", 0)
    clean = clean_answer_logits(tiny_model, cache, cache.answer_token_ids)
    raw = layer_metrics(tiny_model, cache, prefix, basis, 0, runs, cache.answer_token_ids, clean)
    c = cache.infos[runs.problem, 2]
    expected = clean[runs.donor, c] - clean[runs.donor, runs.new_answer]
    np.testing.assert_allclose(raw[VARIANTS.index("patch_layer")], expected.double().numpy(), atol=1e-4)


def test_clean_logits_follow_the_output_soft_cap(tiny_model, tiny_caches):
    """With a soft cap (Gemma-style models) the answer logits are capped as in the model's own forward."""
    cache = tiny_caches["days_of_week"]
    tokens = prompt_tokens(tiny_model, cache)
    uncapped = clean_answer_logits(tiny_model, cache, cache.answer_token_ids)
    saved = tiny_model.cfg.output_logits_soft_cap
    try:
        tiny_model.cfg.output_logits_soft_cap = 0.5
        capped = clean_answer_logits(tiny_model, cache, cache.answer_token_ids)
        with torch.no_grad():
            full = tiny_model(tokens)[:, -1, cache.answer_token_ids]
    finally:
        tiny_model.cfg.output_logits_soft_cap = saved
    torch.testing.assert_close(capped, full, atol=1e-4, rtol=0)
    torch.testing.assert_close(capped, 0.5 * torch.tanh(uncapped / 0.5), atol=1e-5, rtol=0)
    assert capped.abs().max() <= 0.5


def test_answer_logits_per_row_tokens_match_shared_tokens(tiny_model, tiny_caches):
    """Per-row token ids [rows, k] (patching) give the same logits as shared ids [k] (circle engine)."""
    cache = tiny_caches["months_of_year"]
    final = cache.layer_acts(cache.n_cache_layers - 1)[:5, -1, :]
    ids = cache.answer_token_ids
    shared = answer_logits(tiny_model, final, ids)
    per_row = answer_logits(tiny_model, final, torch.tensor([[ids[3], ids[0]]] * 5))
    torch.testing.assert_close(per_row, shared[:, [3, 0]], atol=1e-5, rtol=0)
