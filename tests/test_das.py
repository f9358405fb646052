"""DAS (multid.circles.das): on a planted model whose answer is routed through a known 2-D plane, with a second
circle of the same value that nothing reads, DAS finds the routed plane and not the read-out one; with the route
removed it finds nothing. The prompt machinery gives the model's own logits and a hook's patched logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multid.circles import das
from multid.circles.probe import CircleBasis, intervention_runs

P, D = 7, 32
ROUTED, READ_OUT = (0, 1), (2, 3)  # the plane the answer is read from; a circle of a that nothing reads
# The read-out circle turns twice as fast: were it the same function of a as the routed one, a plane mixing both
# would interchange exactly as well (DAS can only tell directions apart by what interchanging them does).


def plane_of(axes: tuple[int, int]) -> torch.Tensor:
    return torch.eye(D)[:, list(axes)]


class PlantedSet:
    """Problems (a, b) whose start-word activation carries a on two circles (ROUTED; READ_OUT, at twice the angle)
    and noise; the
    planted read-out answers b + (the angle in the ROUTED plane), or, with the route removed, b + the true a."""

    groups: list[np.ndarray]

    def __init__(self, durations: range, routed: bool = True, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.p = P
        self.infos = np.array([(a, b, (a + b) % P) for a in range(P) for b in durations])
        angle = 2 * np.pi * self.infos[:, 0] / P
        acts = rng.normal(scale=0.5, size=(len(self.infos), D))
        for axes, turns in ((ROUTED, 1), (READ_OUT, 2)):
            acts[:, axes[0]] = 3 * np.cos(turns * angle) + 0.05 * rng.normal(size=len(angle))
            acts[:, axes[1]] = 3 * np.sin(turns * angle) + 0.05 * rng.normal(size=len(angle))
        self.acts = torch.tensor(acts, dtype=torch.float32)
        self.routed = routed
        self.groups = [np.arange(len(self.infos))]

    def use_layer(self, layer: int) -> None:
        pass

    def start_acts(self) -> torch.Tensor:
        return self.acts

    def answer_logits(self, rows: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        b = torch.as_tensor(self.infos[np.asarray(rows), 1])
        if self.routed:
            angle = torch.atan2(vectors[:, ROUTED[1]], vectors[:, ROUTED[0]])
        else:  # the value reaches the answer another way: the activation is not read (0 * keeps the graph)
            angle = 2 * np.pi * torch.as_tensor(self.infos[np.asarray(rows), 0]) / P + 0 * vectors.sum(1)
        k = torch.arange(P)
        return 5 * torch.cos(2 * np.pi * (k[None, :] - b[:, None]) / P - angle[:, None])


def planted_basis(data: PlantedSet, axes: tuple[int, int]) -> CircleBasis:
    acts = data.acts
    _, _, components = torch.linalg.svd(acts - acts.mean(0), full_matrices=False)
    return CircleBasis(plane=plane_of(axes), r=torch.eye(2), target_to_embedding=torch.zeros(P, 2),
                       mean=acts.mean(0), pca_components=components[:5], pca_coords=torch.zeros(len(acts), 5))


def planted_run(routed: bool, circle: tuple[int, int] = READ_OUT):
    settings = das.DasSettings(dims=(2,), steps=150, train_batch=32, lr=0.02, train_eval_pairs=256, draws=5, seed=0)
    train = PlantedSet(range(1, 4 * P + 1), routed, seed=1)
    paper = PlantedSet(range(P), routed, seed=2)
    runs = intervention_runs(paper.infos, P, "a")
    result = das.run_layer_das({"train": train, "paper": paper}, runs, planted_basis(paper, circle), 0, settings)
    return result, das.layer_summary(result, runs, paper.infos, P)


@pytest.mark.unit
def test_das_finds_the_routed_plane_and_not_the_read_out_circle():
    result, row = planted_run(routed=True, circle=READ_OUT)
    assert das.principal_angles_deg(result.fits[2].plane, plane_of(ROUTED).numpy())[-1] < 10  # 4.6 and 5.4 degrees at 150 steps
    assert row["angle_min_das_2"] > 80  # the probe-style circle that nothing reads is orthogonal to DAS's plane
    assert row["paper_iia_das_2"] > 0.95 and row["train_iia_das_2"] > 0.95
    assert row["paper_iia_patch_layer"] == 1.0
    assert row["paper_iia_circle_plane"] < 0.1  # interchanging the read-out circle moves nothing
    assert row["paper_iia_random_hi"] < 0.3 and row["chance_iia"] == pytest.approx(1 / P)
    assert row["paper_share_das_2"] > 0.9 and abs(row["paper_share_circle_plane"]) < 0.1


@pytest.mark.unit
def test_with_the_route_removed_das_finds_nothing():
    result, row = planted_run(routed=False, circle=ROUTED)
    assert row["paper_iia_das_2"] == 0.0 and row["train_iia_das_2"] == 0.0 and row["paper_iia_patch_layer"] == 0.0
    assert row["paper_iia_circle_plane"] == 0.0
    assert np.isnan(row["paper_share_das_2"])  # patch layer changes nothing: no share to report


@pytest.mark.unit
def test_training_is_seeded():
    settings = das.DasSettings(dims=(2,), steps=5, seed=3)
    data = PlantedSet(range(1, P + 1))
    first, again = das.train_das(data, 2, settings, seed=3), das.train_das(data, 2, settings, seed=3)
    other = das.train_das(data, 2, settings, seed=4)
    np.testing.assert_array_equal(first.plane, again.plane)
    assert not np.allclose(first.plane, other.plane)
    np.testing.assert_allclose(first.plane.T @ first.plane, np.eye(2), atol=1e-5)


@pytest.mark.integration
def test_prompt_set_gives_the_models_own_and_a_hooks_patched_logits(tiny_model):
    from multid.tasks.phrasings import training_examples
    from multid.tasks.cache import resid_hook_name
    from multid.tasks.registry import TASKS
    from multid.tasks.spec import answer_token_ids, model_tokenize

    spec = TASKS["days_of_week"]
    examples = training_examples("days_of_week")[::97]  # every phrasing, several lengths and start positions
    prompts, infos = [e.prompt for e in examples], np.array([e.info for e in examples])
    ids = answer_token_ids(spec.allowable_tokens, model_tokenize(tiny_model), prompts[0])
    data = das.PromptSet(tiny_model, prompts, infos, spec.start_words, ids, P, batch_size=4)
    assert len(data.groups) > 3
    layer = 2
    data.use_layer(layer)
    acts = data.start_acts()
    rows = torch.arange(len(prompts))
    shift = torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))
    own, patched = data.answer_logits(rows, acts), data.answer_logits(rows, acts + shift)
    for row in (0, 5, len(prompts) - 1):
        tokens = tiny_model.to_tokens(prompts[row])
        position = das.start_position(model_tokenize(tiny_model), prompts[row], spec.start_words[infos[row, 0]])

        def hook(resid, hook, row=row, position=position):
            resid[:, position, :] = resid[:, position, :] + shift[row]
            return resid

        with torch.no_grad():
            clean = tiny_model(tokens)[0, -1, ids]
            hooked = tiny_model.run_with_hooks(tokens, fwd_hooks=[(resid_hook_name(layer), hook)])[0, -1, ids]
        torch.testing.assert_close(own[row], clean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(patched[row], hooked, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(own, patched, atol=1e-3)
    vectors = acts.clone().requires_grad_(True)
    data.answer_logits(rows, vectors).sum().backward()  # gradients reach the vectors, not the model's weights
    assert vectors.grad is not None and vectors.grad.abs().sum() > 0
    assert all(parameter.grad is None and parameter.requires_grad for parameter in tiny_model.parameters())


@pytest.mark.integration
def test_das_sweep_caches_each_layer_and_writes_its_table(tiny_model, tiny_base):
    from multid.circles import das_sweep
    from multid.stage import is_current
    from multid.tasks.cache import TaskCache

    cache = TaskCache.open(tiny_base, "tiny", "days_of_week")
    settings = das.DasSettings(dims=(2, 3), steps=4, train_prompts=256, train_eval_pairs=32, draws=2, seed=1)
    calls = []

    def load():
        calls.append(1)
        return tiny_model

    sweep = das_sweep.run_das_sweep(cache, tiny_base, [1, 2], load, settings, progress=False)
    assert len(calls) == 1 and [row["layer"] for row in sweep.rows] == [1, 2]
    header = sweep.paths["summary"].read_text().splitlines()[0].split(",")
    for column in ("paper_iia_das_3", "held_out_iia_circle_plane", "paper_iia_patch_circle", "paper_share_das_2",
                   "angle_min_das_2", "train_iia_das_3", "paper_iia_random_hi", "chance_iia"):
        assert column in header
    assert "held_out_iia_patch_circle" not in header  # the paper's patch circle needs the paper template's means
    assert sweep.paths["figure"].exists()
    lines = das_sweep.table_lines(sweep)
    assert len(lines) == 3 + 2 + 1 and lines[3].split()[0] == "1"
    again = das_sweep.run_das_sweep(cache, tiny_base, [1, 2], load, settings, progress=False, make_figure=False)
    assert len(calls) == 1 and again.rows == sweep.rows  # every layer reused: no model load
    stage = das_sweep.das_stage(tiny_base, cache, 1, settings)
    assert is_current(stage) and not is_current(das_sweep.das_stage(tiny_base, cache, 1, das.DasSettings(seed=2)))
    stored = das_sweep.load_layer(stage.path)
    assert stored.fits[3].plane.shape == (64, 3)
    assert stored.names["paper"] == ["no_op", "patch_layer", "das_2", "das_3", "circle_plane", "random_0", "random_1",
                                     "patch_circle"]
    assert stored.logits["paper"].shape == (8, P * P * (P - 1), P) and stored.logits["held_out"].shape == (7, P * P * (P - 1), P)


@pytest.mark.integration
def test_das_cli_refuses_bad_settings(tiny_base, capsys):
    import importlib

    script = importlib.import_module("intervention.das_subspace")
    with pytest.raises(SystemExit):
        script.main(["day", "tiny", "--base_dir", str(tiny_base), "--layers", "9"])
    assert "--layers [9] out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["day", "tiny", "--base_dir", str(tiny_base), "--draws", "-1"])
    assert "--draws must be >= 0" in capsys.readouterr().err
