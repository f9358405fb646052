"""Activation patching: pairs, metric, batched sweep vs one-at-a-time TransformerLens patching, files, figures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from multid.tasks.cache import prompt_tokens
from multid.patching import activation as patching
from multid.patching.activation import (
    activation_patching,
    default_head_layers,
    head_outputs,
    patching_pairs,
    top_heads,
)
from multid.patching.figures import head_r2, indicator_widths
from multid.errors import MissingArtifactError, UserError

TASKS = ("days_of_week", "months_of_year")


def targets_of(cache) -> list[str]:
    return [problem.target for problem in cache.problems]


# ----------------------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("keep_same", ["a", "b"])
def test_pairs_follow_the_rule(tiny_caches, task, keep_same):
    cache = tiny_caches[task]
    infos, targets = cache.infos, targets_of(cache)
    kept = {"a": 0, "b": 1}[keep_same]
    everything = patching_pairs(infos, targets, keep_same, num_pairs=10**6)
    for i, j in everything:
        same = infos[i] == infos[j]
        assert same[kept] and same.sum() == 1
        assert targets[i][0] != targets[j][0]
    partners = np.bincount(everything[:, 0], minlength=len(infos))
    assert partners.max() <= 10
    assert len(set(map(tuple, everything.tolist()))) == len(everything)
    pairs = patching_pairs(infos, targets, keep_same)
    assert pairs.shape == (20, 2)
    np.testing.assert_array_equal(pairs, everything[:20])  # the first 20 of the same shuffle
    np.testing.assert_array_equal(pairs, patching_pairs(infos, targets, keep_same))
    assert not np.array_equal(pairs, patching_pairs(infos, targets, keep_same, seed=1))


def test_pairs_replay_upstream_global_rng(tiny_caches):
    """seed 42 gives what upstream's global RNG gave right after its seed-42 problem shuffle."""
    cache = tiny_caches["days_of_week"]
    infos, targets = cache.infos, targets_of(cache)
    candidates = [tuple(pair) for pair in patching_pairs(infos, targets, "a", num_pairs=10**6, seed=42)]
    unshuffled = sorted(candidates)  # candidates are generated in (i, j) order before the shuffle
    saved = np.random.get_state()
    try:
        np.random.seed(42)
        np.random.shuffle(list(cache.problems))
        expected = list(unshuffled)
        np.random.shuffle(expected)
    finally:
        np.random.set_state(saved)
    assert candidates == expected


def test_pairs_bad_keep_same(tiny_caches):
    cache = tiny_caches["days_of_week"]
    with pytest.raises(UserError, match="keep_same"):
        patching_pairs(cache.infos, targets_of(cache), "c")


def test_default_head_layers():
    assert default_head_layers(32) == (12, 32)
    assert default_head_layers(30) == (11, 30)
    assert default_head_layers(3) == (1, 3)


# ----------------------------------------------------------------------------------------- metric


@pytest.fixture(scope="module")
def tiny_sweeps(tiny_model, tiny_caches):
    """All four sweeps, keep-same-a and -b, 3 pairs, tiny days cache."""
    cache = tiny_caches["days_of_week"]
    return {
        (layer_type, keep): activation_patching(tiny_model, cache, keep, layer_type, num_pairs=3, progress=False)
        for layer_type in patching.LAYER_TYPES
        for keep in ("a", "b")
    }


def test_shapes(tiny_model, tiny_caches, tiny_sweeps):
    layout = tiny_caches["days_of_week"].layout
    n_layers, n_heads = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
    lo, hi = default_head_layers(n_layers)
    for (layer_type, _), result in tiny_sweeps.items():
        expected = (3, hi - lo, n_heads) if layer_type == "attention_head" else (3, n_layers, layout.seq_len)
        assert result.scores.shape == expected
        assert np.isfinite(result.scores).all()


def test_metric_is_zero_without_a_change_and_one_for_the_whole_clean_run(tiny_caches, tiny_sweeps):
    layout = tiny_caches["days_of_week"].layout
    first_differing = {"a": layout.b_token, "b": layout.a_token}  # keep-same-a pairs differ from the duration word on
    for layer_type in ("resid", "mlp", "attention"):
        for keep in ("a", "b"):
            scores = tiny_sweeps[(layer_type, keep)].scores
            assert np.all(scores[:, :, : first_differing[keep]] == 0), (layer_type, keep)
    for keep in ("a", "b"):
        # the last residual at the last position is the whole clean run's final state
        np.testing.assert_allclose(tiny_sweeps[("resid", keep)].scores[:, -1, -1], 1.0, atol=1e-5)


def tl_reference(model, tokens, clean: int, corrupt: int, ids: tuple[int, int], layer_type: str, layers, position: int) -> np.ndarray:
    """One-at-a-time TransformerLens patching of one pair (full forward per site)."""
    import pandas as pd
    import transformer_lens.patching as tl_patching

    clean_tokens, corrupt_tokens = tokens[clean : clean + 1], tokens[corrupt : corrupt + 1]
    _, clean_cache = model.run_with_cache(clean_tokens)

    def ld(logits):
        return logits[0, -1, ids[0]] - logits[0, -1, ids[1]]

    with torch.no_grad():
        ld_clean, ld_corrupt = ld(model(clean_tokens)), ld(model(corrupt_tokens))

    def metric(logits):
        return (ld(logits) - ld_corrupt) / (ld_clean - ld_corrupt)

    if layer_type == "resid":
        grid = tl_patching.generic_activation_patch(
            model, corrupt_tokens, clean_cache, metric, tl_patching.layer_pos_patch_setter, "resid_post",
            index_axis_names=("layer", "pos"),
        )
    elif layer_type == "mlp":
        grid = tl_patching.get_act_patch_mlp_out(model, corrupt_tokens, clean_cache, metric)
    elif layer_type == "attention":
        grid = tl_patching.get_act_patch_attn_out(model, corrupt_tokens, clean_cache, metric)
    else:
        index = pd.DataFrame([(layer, position, head) for layer in layers for head in range(model.cfg.n_heads)], columns=["layer", "pos", "head"])
        flat = tl_patching.generic_activation_patch(
            model, corrupt_tokens, clean_cache, metric, tl_patching.layer_pos_head_vector_patch_setter, "z", index_df=index,
        )
        grid = flat.reshape(len(layers), model.cfg.n_heads)
    return grid.detach().numpy()


@pytest.mark.parametrize("layer_type", patching.LAYER_TYPES)
def test_batched_sweep_matches_one_at_a_time_patching(tiny_model, tiny_caches, tiny_sweeps, layer_type):
    cache = tiny_caches["days_of_week"]
    tokens = prompt_tokens(tiny_model, cache)
    ids = np.asarray(cache.answer_token_ids)
    result = tiny_sweeps[(layer_type, "b")]
    for k, (clean, corrupt) in enumerate(result.pairs[:2]):
        answer = (int(ids[cache.infos[clean, 2]]), int(ids[cache.infos[corrupt, 2]]))
        expected = tl_reference(tiny_model, tokens, clean, corrupt, answer, layer_type, result.layers, cache.layout.before_c_token)
        np.testing.assert_allclose(result.scores[k], expected, atol=1e-4)


def test_head_outputs_match_transformer_lens_stacked_results(tiny_model, tiny_caches):
    cache = tiny_caches["months_of_year"]
    tokens = prompt_tokens(tiny_model, cache)[:5]
    heads = [(2, 3), (1, 0)]
    position = cache.layout.before_c_token
    ours = head_outputs(tiny_model, tokens, heads, position, batch_size=2)
    with torch.no_grad():
        _, full = tiny_model.run_with_cache(tokens)
    stacked = full.stack_head_results(layer=-1)  # [layer*head, batch, pos, d]
    n_heads = tiny_model.cfg.n_heads
    expected = torch.stack([stacked[layer * n_heads + head, :, position] for layer, head in heads], dim=1)
    np.testing.assert_allclose(ours, expected.detach().numpy(), atol=1e-5)


def test_top_heads_clip_and_order():
    grid = np.array([[0.1, -2.0], [0.5, 0.3]])
    assert top_heads(grid, [7, 8], k=3) == [(8, 0, 0.5), (8, 1, 0.3), (7, 0, 0.1)]


# ----------------------------------------------------------------------------------------- head table


def test_head_r2_on_planted_outputs():
    rng = np.random.default_rng(0)
    p = 12
    infos = np.array([(a, b, (a + b) % p) for a in range(p) for b in range(1, p + 1)])
    table_a, table_b, table_c = rng.normal(size=(p, 6)), rng.normal(size=(p + 1, 6)), rng.normal(size=(p, 6))
    additive = table_a[infos[:, 0]] + table_b[infos[:, 1]]
    r2_ab, r2_abc = head_r2(additive, infos, p)
    assert r2_ab == pytest.approx(1.0, abs=1e-9) and r2_abc == pytest.approx(1.0, abs=1e-9)
    with_c = additive + table_c[infos[:, 2]]
    r2_ab, r2_abc = head_r2(with_c, infos, p)
    assert r2_ab < 0.9 and r2_abc == pytest.approx(1.0, abs=1e-9)
    upstream_ab, _ = head_r2(additive, infos, p, indicators="8")  # months >= 8 get no indicator
    assert upstream_ab < 0.99
    assert indicator_widths(7, "8") == (8, 8, 8) and indicator_widths(7, "p") == (7, 8, 7)


# ----------------------------------------------------------------------------------------- CLI, files, figures


@pytest.fixture(scope="module")
def cli_base(tiny_base_dir, tiny_caches, tmp_path_factory):
    """A private base dir holding a copy of the tiny days cache."""
    base = tmp_path_factory.mktemp("patching_cli")
    folder = tiny_caches["days_of_week"].folder
    shutil.copytree(folder, base / folder.name)
    return base


def run_cli(base, *extra):
    from intervention.activation_patching import main

    return main(["--model", "tiny", "--device", "cpu", "--base_dir", str(base), "--num_pairs", "3", *extra])


def test_cli_writes_arrays_heatmaps_and_head_table(cli_base, capsys):
    from multid.patching.activation import load_patching_result, patching_path

    written = run_cli(cli_base, "--top_heads", "4")
    out = capsys.readouterr().out
    assert "computed" in out and "reused" not in out
    for layer_type in patching.LAYER_TYPES:
        for keep in ("a", "b"):
            npz = patching_path(cli_base, "tiny", "days_of_week", layer_type, keep, 3)
            assert npz in written and npz.with_suffix(".png").stat().st_size > 0
            result = load_patching_result(cli_base, "tiny", "days_of_week", layer_type, keep, 3)
            assert result.params["keep_same"] == keep and len(result.pairs) == 3
    plots = cli_base / "figs" / "paper_plots"
    for name in ("tiny_mlp_days_of_week_patching", "tiny_attention_days_of_week_patching", "tiny_resid_days_of_week_patching",
                 "tiny_attention_head_days_of_week_patching"):
        for suffix in (".pdf", ".png"):
            assert (plots / (name + suffix)).stat().st_size > 1000
    tex = (plots / "tiny_days_of_week_attention_head_patching.tex").read_text()
    assert "Average Intervention Effect" in tex and tex.count("\\\\") == 5  # header + 4 heads
    csv = (plots / "tiny_days_of_week_attention_head_patching.csv").read_text().splitlines()
    assert len(csv) == 5 and csv[0].startswith("Layer,Head,Average Intervention Effect")

    run_cli(cli_base, "--top_heads", "4")
    out = capsys.readouterr().out
    assert "computed" not in out and out.count("reused") == 8

    run_cli(cli_base, "--layer_type", "resid", "--keep_same", "a", "--seed", "7")
    out = capsys.readouterr().out
    assert "resid keep-same-a: computed" in out and "paper heat maps need both" in out
    stored = patching.read_patching_result(patching_path(cli_base, "tiny", "days_of_week", "resid", "a", 3))
    assert stored.params["seed"] == 7 and json.loads(json.dumps(stored.params)) == stored.params


def test_heat_map_labels_come_from_the_token_map(tiny_caches):
    from multid.patching.figures import named_position_labels

    cache = tiny_caches["days_of_week"]
    positions, labels = named_position_labels(cache)
    assert positions == list(range(cache.layout.b_token, cache.layout.before_c_token + 1))
    first = cache.problems[0].prompt.split()
    assert labels == [f"b ({first[-5]})", "days", "from", f"a ({first[-2]})", "is"]


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        run_cli(tmp_path, "--num_pairs", "0")
    assert raised.value.code == 2 and "--num_pairs must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(tmp_path, "--head_layers", "2", "9", "--layer_type", "attention_head")
    assert "head layers 2 9" in capsys.readouterr().err


def test_figures_say_which_command_makes_missing_sweeps(cli_base, tmp_path):
    from multid.patching.figures import layer_patching_heatmap

    base = tmp_path / "base"
    shutil.copytree(cli_base / "tiny_days_of_week", base / "tiny_days_of_week")
    with pytest.raises(MissingArtifactError, match="activation_patching.py --model tiny --task days_of_week"):
        layer_patching_heatmap(base, "tiny", "days_of_week", "mlp", num_pairs=3)
