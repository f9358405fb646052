"""Feature deconstruction (residual RGB plots) on synthetic PCA scores with planted explainer groups.

Synthetic scores are built from known groups plus noise, in the task's real (seed-42 shuffled) problem
order, and written as real files: our cache layout and upstream's copied-files layout.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_deconstruction import simple_example
from multid.tasks.spec import generate_problems
from multid.tasks.registry import get_task_spec
from multid.deconstruction.residual_rgb import (
    DAYS,
    GROUPS,
    MONTHS,
    cli_main,
    deconstruct,
    default_layers,
    fit_groups,
    group_matrix,
    groups_for_layer,
    parse_layers,
    run_deconstruction,
)
from multid.tasks.paths import load_pca_scores, load_results_csv, pca_path, task_dir
from multid.errors import MissingArtifactError, UserError

torch.set_num_threads(1)
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


# ------------------------------------------------------------------------------------ synthetic data


def task_order(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c) in the task's problem order (the project's own generator)."""
    spec = get_task_spec("days_of_week" if p == 7 else "months_of_year")
    infos = np.array([problem.info for problem in generate_problems(spec)])
    return infos[:, 0], infos[:, 1], infos[:, 2]


def planted_scores(p: int, groups, noise: float = 0.2, seed: int = 0, a=None, b=None) -> np.ndarray:
    """PCA-20 scores of a 40-dim representation = sum of unit-RMS random maps of each group + noise."""
    if a is None:
        a, b, _ = task_order(p)
    rng = np.random.default_rng(seed)
    Y = noise * rng.normal(size=(len(a), 40))
    for key in groups:
        if key == "bias":
            continue
        X = group_matrix(key, a % p, b % p, p)
        part = (X - X.mean(axis=0)) @ rng.normal(size=(X.shape[1], 40))
        Y += part / np.sqrt(np.mean(part**2))
    Y -= Y.mean(axis=0)
    U, S, _ = np.linalg.svd(Y, full_matrices=False)
    return (U * S)[:, :20]


def write_cache(base_dir: Path, model: str, spec, layers, token: int, n_cache_layers: int, groups_of) -> Path:
    """Our cache layout: results.csv (7 columns), pca/layer{L}_token{T}_pca20.pt dicts, meta.json."""
    folder = task_dir(base_dir, model, spec.task)
    folder.mkdir(parents=True)
    a, b, c = task_order(spec.p)
    lines = ["a,b,c,ground_truth,model_out,model_correct,best_token"]
    lines += [f"{x},{y},{z},{z},{z},True,{z}" for x, y, z in zip(a, b, c)]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    meta = {"positions": {"b_token": token - 3, "a_token": token - 1, "before_c_token": token}, "seq_len": token + 1, "n_cache_layers": n_cache_layers}
    (folder / "meta.json").write_text(json.dumps(meta))
    for layer in layers:
        path = pca_path(folder, layer, token, 20)
        path.parent.mkdir(exist_ok=True)
        coords = torch.tensor(planted_scores(spec.p, groups_of(layer), seed=layer), dtype=torch.float32)
        torch.save({"coords": coords, "mean": torch.zeros(20), "components": torch.eye(20)}, path)
    return folder


def write_upstream_copy(folder: Path, spec, layers, tokens) -> None:
    """Upstream's copied files: 6-column ", "-separated results.csv and numpy arrays in pca_components/."""
    a, b, c = task_order(spec.p)
    lines = ["a, b, c, ground_truth, model_out, model_correct"]
    lines += [f"{x}, {y}, {z}, {DAY_NAMES[z]}, {DAY_NAMES[z]}, True" for x, y, z in zip(a, b, c)]
    (folder / "results.csv").write_text("\n".join(lines) + "\n")
    (folder / "pca_components").mkdir()
    for layer in layers:
        for token in tokens:
            scores = planted_scores(spec.p, spec.schedule[layer], seed=layer).astype(np.float32)
            torch.save(scores, folder / "pca_components" / f"layer{layer}_token{token}_pca20.pt")


def as_numpy1_pickle(path: Path) -> None:
    """Rewrite a torch-saved numpy array as numpy 1.x names it (numpy.core.multiarray._reconstruct)."""
    with zipfile.ZipFile(path) as source:
        entries = [(info.filename, source.read(info.filename)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries:
            if name.endswith("data.pkl"):
                assert b"numpy._core.multiarray\n_reconstruct" in data
                data = data.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
            target.writestr(name, data)


def structure(tile: np.ndarray, design: np.ndarray) -> float:
    """Share of a tile's colour variance explained by the planted design (1 = pure planted pattern)."""
    colors = tile.reshape(-1, 3) - tile.reshape(-1, 3).mean(axis=0)
    fitted = fit_groups(design, colors)
    return float(1 - np.sum((colors - fitted) ** 2) / np.sum(colors**2))


# ------------------------------------------------------------------------------------ tests


def test_schedule_tables_match_the_spec_for_every_paper_layer():
    ohab, tmr, cc, camb = "one_hot_ab", "a_for_tmr", "circle_c", "circle_a_minus_b"
    days = {17: [ohab], 18: [ohab, tmr, camb], 19: [ohab, tmr, cc, camb], 20: [ohab, tmr, cc, camb], 21: [ohab, cc, camb]}
    days.update({layer: [ohab, cc, camb, tmr] for layer in (22, 23, 24)})
    days.update({layer: [ohab, cc, camb] for layer in (25, 26, 27)})
    days.update({layer: [ohab, cc] for layer in (28, 29)})
    assert {layer: list(groups) for layer, groups in DAYS.schedule.items()} == {layer: ["bias"] + g for layer, g in days.items()}

    oha, ohb, c2, par, ohs, a1b = "one_hot_a", "one_hot_b", "circle_2c", "parity_c", "one_hot_a_plus_b", "a_plus_1_is_b"
    months = {layer: [ohb, oha, a1b] for layer in (13, 14, 15, 16)}
    months[17] = [ohb, oha, c2]
    months[18] = [ohb, oha, par, cc]
    months[19] = [ohb, par, c2, cc, oha, ohs]
    months[20] = [ohb, cc, par, c2, oha, ohs]
    months[21] = [ohb, c2, cc, par, oha, ohs]
    months.update({layer: [cc, ohb, par, c2, oha, ohs] for layer in (22, 23, 24, 25, 26, 29)})
    months.update({layer: [par, cc, ohb, c2, oha, ohs] for layer in (27, 28)})
    assert {layer: list(groups) for layer, groups in MONTHS.schedule.items()} == {layer: ["bias"] + g for layer, g in months.items()}
    assert DAYS.paper_layers == list(range(17, 30)) and MONTHS.paper_layers == list(range(13, 30))


def test_group_columns():
    a, b, _ = task_order(12)
    a, b = a % 12, b % 12
    assert group_matrix("one_hot_a_plus_b", a, b, 12).shape == (144, 23)
    ab = group_matrix("one_hot_ab", a, b, 12)
    assert np.array_equal(ab[:, 0::2], group_matrix("one_hot_a", a, b, 12)) and np.array_equal(ab[:, 1::2], group_matrix("one_hot_b", a, b, 12))
    tmr = group_matrix("a_for_tmr", a, b, 12)
    assert tmr.sum() == 12 and np.all(tmr.sum(axis=0) == 1) and np.all(b[tmr.sum(axis=1) == 1] == 1)
    circle = group_matrix("circle_2c", a, b, 12)
    assert np.allclose(circle[:, 0], np.cos(4 * np.pi * ((a + b) % 12) / 12))
    assert set(GROUPS) >= {"bias", "one_hot_c", "parity_c"}


def test_fit_groups_matches_least_squares_on_collinear_one_hots():
    a, b, _ = task_order(7)
    X = np.concatenate([group_matrix(key, a % 7, b % 7, 7) for key in ("bias", "one_hot_a", "one_hot_b")], axis=1)
    Y = np.random.default_rng(1).normal(size=(49, 5))
    expected = X @ np.linalg.lstsq(X, Y, rcond=None)[0]
    assert np.allclose(fit_groups(X, Y), expected, atol=1e-8)


@pytest.mark.parametrize("spec, layer", [(DAYS, 22), (MONTHS, 20)])
def test_r2_rises_with_the_true_groups_and_the_tiles_lose_structure(spec, layer):
    p, groups = spec.p, spec.schedule[layer]
    a, b, _ = task_order(p)
    result = deconstruct(planted_scores(p, groups), a, b, p, groups, layer)
    assert abs(result.r2[0]) < 1e-6  # bias only: the scores are centred
    assert all(later > earlier + 0.05 for earlier, later in zip(result.r2, result.r2[1:]))
    assert result.r2[-1] > 0.95

    a_grid, b_grid = np.repeat(np.arange(p), p), np.tile(np.arange(p), p)
    design = np.concatenate([group_matrix(key, a_grid, b_grid, p) for key in groups], axis=1)
    scores = [structure(tile, design) for tile in result.tiles]
    assert scores[0] > 0.9 and scores[-1] < 0.05, scores
    assert all(0 <= tile.min() and tile.max() <= 1 and tile.shape == (p, p, 3) for tile in result.tiles)

    shuffled = np.random.default_rng(3).permutation(p * p)  # any row order gives the same answer
    again = deconstruct(planted_scores(p, groups)[shuffled], a[shuffled], b[shuffled], p, groups, layer)
    assert np.allclose(again.r2, result.r2) and np.allclose(again.tiles[-1], result.tiles[-1])


def test_end_to_end_on_our_cache_writes_figure_and_json(tmp_path, capsys):
    base = tmp_path / "base"
    schedule_of = lambda layer: groups_for_layer(DAYS, "scaled", layer, n_blocks=30)  # noqa: E731
    write_cache(base, "smollm2", DAYS, [26, 27, 28], token=15, n_cache_layers=31, groups_of=schedule_of)
    figure, summary = run_deconstruction("days_of_week", model="smollm2", base_dir=base, layers=[26, 27, 28], schedule="scaled", fmt="png")
    assert figure == base / "figs" / "feature_deconstruction" / "feature_deconstruction_day_of_the_week_smollm2.png"
    assert figure.stat().st_size > 5000
    data = json.loads(summary.read_text())
    assert data["token"] == 15 and sorted(data["layers"]) == ["26", "27", "28"]
    for layer, steps in data["layers"].items():
        assert [step["group"] for step in steps] == list(schedule_of(int(layer)))
        assert steps[-1]["r2"] > 0.95
    assert str(figure) in capsys.readouterr().out


def test_upstream_copied_files_run_from_the_script_folder(tmp_path, monkeypatch):
    write_upstream_copy(tmp_path, DAYS, layers=[28, 29], tokens=[12, 16])
    as_numpy1_pickle(tmp_path / "pca_components" / "layer29_token16_pca20.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTID_BASE_DIR", str(tmp_path / "base"))
    figure, summary = cli_main(DAYS, ["--layers", "28-29"])
    data = json.loads(summary.read_text())
    assert data["token"] == 16  # the last prompt token: largest position among the files present
    assert data["model"] == "mistral" and figure.name == "feature_deconstruction_day_of_the_week_mistral.pdf"
    assert [step["group"] for step in data["layers"]["29"]] == ["bias", "one_hot_ab", "circle_c"]
    assert data["layers"]["29"][-1]["r2"] > 0.95 and figure.stat().st_size > 0


def test_six_and_seven_column_results_csv_load_alike(tmp_path):
    seven = tmp_path / "ours.csv"
    a, b, c = task_order(7)
    seven.write_text("a,b,c,ground_truth,model_out,model_correct,best_token\n" + "".join(f"{x},{y},{z},{z},{z},True,{z}\n" for x, y, z in zip(a, b, c)))
    write_upstream_copy(tmp_path, DAYS, layers=[], tokens=[])
    frames = [load_results_csv(seven), load_results_csv(tmp_path / "results.csv")]
    for frame in frames:
        assert len(frame) == 49 and np.array_equal(frame["a"].to_numpy(), a) and np.array_equal(frame["b"].to_numpy(), b)
        assert frame["model_correct"].all()


def test_numpy1_pickled_pca_array_loads_under_numpy2(tmp_path):
    path = tmp_path / "layer1_token2_pca20.pt"
    scores = np.random.default_rng(0).normal(size=(49, 20)).astype(np.float32)
    torch.save(scores, path)
    as_numpy1_pickle(path)
    assert np.array_equal(load_pca_scores(path), scores)


def test_missing_pca_file_names_the_command_that_makes_it(tmp_path):
    base = tmp_path / "base"
    write_cache(base, "smollm2", DAYS, [27], token=15, n_cache_layers=31, groups_of=lambda layer: DAYS.full_groups)
    with pytest.raises(MissingArtifactError) as err:
        run_deconstruction("days_of_week", model="smollm2", base_dir=base, layers=[27, 28], schedule="full")
    message = str(err.value)
    assert "layer28_token15_pca20.pt" in message
    assert "python3 intervention/days_of_week_task.py --model smollm2 --pca_k 20" in message
    with pytest.raises(MissingArtifactError, match="months_of_year_task.py --model smollm2 --pca_k 20"):
        run_deconstruction("months_of_year", model="smollm2", base_dir=base)


def test_schedules_and_layers():
    assert groups_for_layer(DAYS, "scaled", 30, n_blocks=30) == DAYS.schedule[29]  # 32 -> clamped to 29
    assert groups_for_layer(DAYS, "scaled", 15, n_blocks=30) == DAYS.schedule[17]  # 16 -> clamped to 17
    assert groups_for_layer(MONTHS, "scaled", 20, n_blocks=32) == MONTHS.schedule[20]
    assert groups_for_layer(MONTHS, "last", 3) == MONTHS.schedule[29]
    assert groups_for_layer(DAYS, ["bias", "circle_c"], 3) == ("bias", "circle_c")
    assert default_layers(DAYS, "paper", 30) == list(range(17, 30))
    assert default_layers(DAYS, "scaled", 32) == list(range(17, 30))
    assert default_layers(DAYS, "scaled", 30) == list(range(16, 28))
    with pytest.raises(UserError, match="paper layers 17..29"):
        groups_for_layer(DAYS, "paper", 30)
    with pytest.raises(UserError, match="unknown explainer group"):
        groups_for_layer(DAYS, ["bias", "nope"], 3)
    assert parse_layers(["17-19", "25,27"]) == [17, 18, 19, 25, 27]
    with pytest.raises(UserError):
        parse_layers(["x"])


def test_simple_example_writes_four_panels_and_explains_the_toy(tmp_path):
    panels = simple_example.compute_panels()
    r2 = panels["r2"]
    assert r2["b"] < r2["c"] < r2["d"] and r2["d"] > 0.99
    assert abs(panels["final_residual_rms"] - simple_example.NOISE) < 0.02  # only the noise is left
    assert all(0 <= image.min() and image.max() <= 1 for image in panels["images"].values())
    written = simple_example.main(["--out_dir", str(tmp_path), "--format", "png"])
    assert {path.name for path in written} >= {f"simple_example_{panel}.png" for panel in "abcd"} | {"simple_example.json"}
    assert all(path.stat().st_size > 0 for path in written)


def test_fits_missing_pca_files_from_our_activation_cache(tmp_path, tiny_model):
    """A cache built without PCA-20 files (as the demo builds it): the scores are fitted from the activations."""
    from multid.tasks.paths import pca_path
    from tests.conftest import build_caches

    cache = build_caches("tiny", tiny_model, tmp_path)["days_of_week"]
    token = cache.layout.before_c_token
    assert not pca_path(cache.folder, 2, token, 20).exists()
    figure, json_path = run_deconstruction("days_of_week", model="tiny", base_dir=tmp_path, layers=[2, 3],
                                           schedule="full", fmt="png", verbose=False)
    assert figure.stat().st_size > 2_000 and json_path.exists()
    stored = cache.get_pca(2, token, 20)
    assert pca_path(cache.folder, 2, token, 20).exists() and stored.coords.shape == (49, 20)
