"""Activation caches: content, reuse, invalidation, corruption, PCA files, results.csv."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multid.tasks import paths
from multid.tasks.cache import TaskCache, build_task_cache, collect_residuals, resid_hook_name
from multid.tasks.registry import get_task_spec
from multid.errors import MissingArtifactError, UserError

DAYS = get_task_spec("days_of_week")


def never_load():
    raise AssertionError("the model should not be loaded: the cache is current")


def build_days(model, base_dir, **kwargs) -> TaskCache:
    return build_task_cache(DAYS, "tiny", base_dir, lambda: model, **kwargs)


def test_cache_files_and_meta(tiny_caches):
    cache = tiny_caches["days_of_week"]
    assert cache.meta["n_problems"] == 49 and cache.n_cache_layers == 4  # 3 blocks + embeddings
    assert cache.meta["positions"] == {"b_token": 12, "a_token": 15, "before_c_token": 16}
    for layer in range(cache.n_cache_layers):
        assert paths.layer_acts_path(cache.folder, layer).exists()
        assert cache.layer_acts(layer).shape == (49, 17, 64)
    assert cache.token_map[15] == "Tuesday" and cache.token_map[17] == "<answer>"


def test_first_get_acts_call_returns_the_requested_slice(tiny_model, tmp_path):
    """Upstream's get_acts returned layer 32 / last token on its first call (spec §6.4)."""
    cache = build_days(tiny_model, tmp_path)
    fresh = TaskCache.open(tmp_path, "tiny", "days_of_week")
    acts = fresh.get_acts(1, 12)
    tokens = tiny_model.to_tokens([problem.prompt for problem in fresh.problems])
    _, run = tiny_model.run_with_cache(tokens, names_filter=resid_hook_name(1))
    torch.testing.assert_close(acts, run[resid_hook_name(1)][:, 12], rtol=0, atol=1e-5)
    assert not torch.allclose(acts, fresh.get_acts(3, 16))
    # layer 0 is the residual entering block 0: the token embedding for this rotary model
    torch.testing.assert_close(fresh.get_acts(0, 15), tiny_model.W_E[tokens[:, 15]], rtol=0, atol=1e-6)
    assert cache.cache_id == fresh.cache_id


def test_batched_equals_one_at_a_time(tiny_model, tiny_caches):
    tokens = tiny_model.to_tokens([problem.prompt for problem in tiny_caches["days_of_week"].problems])
    batched, logits_b = collect_residuals(tiny_model, tokens, 4, batch_size=64)
    single, logits_s = collect_residuals(tiny_model, tokens, 4, batch_size=1)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits_b, logits_s, rtol=0, atol=1e-4)


def test_reuse_and_invalidation(tiny_model, tmp_path):
    first = build_days(tiny_model, tmp_path)
    again = build_task_cache(DAYS, "tiny", tmp_path, never_load)  # current: the model is not loaded
    assert again.cache_id == first.cache_id
    pca_file = paths.pca_path(first.folder, 2, 15, 3)
    first.get_pca(2, 15, 3)
    assert pca_file.exists()

    loads = []
    changed = build_task_cache(DAYS, "tiny", tmp_path, lambda: loads.append(1) or tiny_model, answer_mode="bare")
    assert loads == [1] and changed.cache_id != first.cache_id
    assert not pca_file.exists()  # derived files of the old cache are gone
    assert json.loads(paths.meta_path(first.folder).read_text())["answer_tokens"] == "bare"

    build_task_cache(DAYS, "tiny", tmp_path, lambda: loads.append(2) or tiny_model, force=True)
    assert loads == [1, 2]


def test_missing_layer_file_triggers_rebuild(tiny_model, tmp_path):
    cache = build_days(tiny_model, tmp_path)
    paths.layer_acts_path(cache.folder, 2).unlink()
    loads = []
    build_task_cache(DAYS, "tiny", tmp_path, lambda: loads.append(1) or tiny_model)
    assert loads == [1] and paths.layer_acts_path(cache.folder, 2).exists()


def test_crash_mid_build_leaves_no_valid_looking_cache(tiny_model, tmp_path, monkeypatch):
    import multid.tasks.cache as caches_module

    written = []
    real_save = caches_module.save_pt

    def failing_save(path, obj):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        return real_save(path, obj)

    monkeypatch.setattr(caches_module, "save_pt", failing_save)
    with pytest.raises(KeyboardInterrupt):
        build_days(tiny_model, tmp_path)
    folder = paths.task_dir(tmp_path, "tiny", "days_of_week")
    assert not paths.meta_path(folder).exists()
    assert not list(folder.rglob("*.tmp"))  # no half-written file left behind
    monkeypatch.undo()
    rebuilt = build_days(tiny_model, tmp_path)
    assert rebuilt.layer_acts(3).shape == (49, 17, 64)


def test_corrupted_files_give_one_line_errors(tiny_model, tmp_path):
    cache = build_days(tiny_model, tmp_path)
    paths.layer_acts_path(cache.folder, 1).write_bytes(b"not a tensor")
    with pytest.raises(UserError, match="damaged"):
        TaskCache.open(tmp_path, "tiny", "days_of_week").get_acts(1, 3)
    paths.meta_path(cache.folder).write_text("{broken")
    with pytest.raises(UserError, match="damaged"):
        TaskCache.open(tmp_path, "tiny", "days_of_week")


def test_missing_cache_names_the_command(tmp_path):
    with pytest.raises(MissingArtifactError, match="days_of_week_task.py --model tiny"):
        TaskCache.open(tmp_path, "tiny", "days_of_week")


def test_pca_files_consistent_with_raw_cache(tiny_caches):
    from sklearn.decomposition import PCA

    cache = tiny_caches["months_of_year"]
    fit = cache.get_pca(2, cache.layout.a_token, 5)
    acts = cache.get_acts(2, cache.layout.a_token).double().numpy()
    np.testing.assert_allclose(fit.coords, (acts - fit.mean) @ fit.components.T, atol=1e-4)
    np.testing.assert_allclose(fit.components @ fit.components.T, np.eye(5), atol=1e-5)
    reference = PCA(5).fit(acts)
    np.testing.assert_allclose(np.abs(fit.coords), np.abs(reference.transform(acts)), atol=1e-4)
    np.testing.assert_allclose(fit.explained_variance_ratio, reference.explained_variance_ratio_, atol=1e-6)
    stored = cache.get_pca(2, cache.layout.a_token, 5)  # second call reads the file
    np.testing.assert_array_equal(stored.coords, fit.coords)
    with pytest.raises(UserError, match="PCA k"):
        cache.get_pca(2, cache.layout.a_token, 100)


def test_results_csv_columns_and_best_token_rule(tiny_model, tiny_caches):
    cache = tiny_caches["days_of_week"]
    header = paths.results_csv_path(cache.folder).read_text().splitlines()[0]
    assert header == "a,b,c,ground_truth,model_out,model_correct,best_token"
    results = cache.results()
    assert list(results[["a", "b", "c"]].itertuples(index=False, name=None)) == [tuple(i) for i in cache.infos.tolist()]
    tokens = tiny_model.to_tokens([problem.prompt for problem in cache.problems])
    with torch.no_grad():
        last = tiny_model(tokens)[:, -1]
    words = cache.meta["answer_words"]
    expected_best = [words[i] for i in last[:, cache.answer_token_ids].argmax(-1).tolist()]
    assert results["best_token"].tolist() == expected_best
    expected_out = [tiny_model.to_string([i]).strip() for i in last.argmax(-1).tolist()]
    assert results["model_out"].tolist() == expected_out
    assert (results["model_correct"] == (results["model_out"] == results["ground_truth"])).all()


def test_upstream_results_csv_variants_load(tmp_path):
    six = tmp_path / "six.csv"
    six.write_text("a, b, c, ground_truth, model_out, model_correct\n1, 7, 1, Tuesday, Tuesday, True\n")
    seven = tmp_path / "seven.csv"
    seven.write_text("a, b, c, ground_truth, model_out, model_correct, best_token\n1, 7, 1, Tuesday, , False, Monday\n")
    assert paths.load_results_csv(six)["model_correct"].tolist() == [True]
    frame = paths.load_results_csv(seven)
    assert frame["model_out"].tolist() == [""] and frame["best_token"].tolist() == ["Monday"]
