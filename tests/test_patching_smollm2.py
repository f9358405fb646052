"""Residual-stream patching on the real SmolLM2-135M, weekdays, 4 keep-same-b pairs (clean and corrupted share b)."""

from __future__ import annotations

import numpy as np
import pytest

from multid.patching.activation import activation_patching

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def resid_same_b(smollm2_model, smollm2_caches):
    cache = smollm2_caches["days_of_week"]
    return cache, activation_patching(smollm2_model, cache, "b", "resid", num_pairs=4, progress=False)


def test_shape_and_identical_prefix(resid_same_b):
    cache, result = resid_same_b
    layout = cache.layout
    assert result.scores.shape == (4, 30, layout.seq_len)
    assert np.all(result.pair_infos[:, 0, 1] == result.pair_infos[:, 1, 1])  # same b
    # clean and corrupted prompts agree up to the start word: patching there changes nothing
    assert np.all(result.scores[:, :, : layout.a_token] == 0)


def test_start_word_carries_the_answer_early_and_the_last_token_late(resid_same_b):
    cache, result = resid_same_b
    a_pos, last = cache.layout.a_token, cache.layout.before_c_token
    scores = result.scores
    # the whole clean run's final state at the last position restores the clean logit difference
    np.testing.assert_allclose(scores[:, -1, last], 1.0, atol=1e-4)
    # at layer 0 the only difference is the start word: patching it there restores the answer ...
    assert np.all(scores[:, 0, a_pos] > 0.9)
    # ... while the last token has not read it yet
    assert np.all(np.abs(scores[:, 0, last]) < 0.1)
    # after the last block nothing reads the start-word position any more
    np.testing.assert_allclose(scores[:, -1, a_pos], 0.0, atol=1e-4)
