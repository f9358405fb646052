"""Reducibility indices: known answers, engine == upstream-style references, batched == one-cloud; the demo's
clouds (the paper code's torch draws), its stages and its figures' content."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from multid.reducibility import synthetic_demo as demo_lib
from multid.reducibility import mixture_index_exact
from multid.reducibility import plots, synthetic
from multid.reducibility.indices import (
    DEMO_MIXTURE,
    DEMO_SEPARABILITY,
    SCAN_MIXTURE,
    SCAN_SEPARABILITY,
    MixtureConfig,
    _MixtureState,
    as_cloud_stack,
    initial_directions,
    mixture_index,
    mixture_index_batched,
    reducibility_batched,
    reference_mixture_index,
    reference_separability_index,
    separability_index,
    separability_index_batched,
    slab_coordinate,
    surrogate_autograd,
)
from multid.reducibility.exact import slab_share
from multid.stage import artifact_id, read_record, record_path

torch.set_num_threads(1)  # other jobs share this CPU

REPO = Path(__file__).resolve().parent.parent
N = 4096
GAUSS_SLAB = 2 * norm.cdf(0.1) - 1  # P(|z| < 0.1) for z ~ N(0, 1): about 0.0797


def with_steps(config: MixtureConfig, steps: int) -> MixtureConfig:
    return MixtureConfig(**{**config.__dict__, "steps": steps})


def scan_floor_bits(num_points: int, bins: int = 10) -> float:
    """Plug-in MI bias of independent coordinates, (B - 1)^2 / (2N) nats, in bits."""
    return (bins - 1) ** 2 / (2 * num_points) / math.log(2)


@pytest.fixture(scope="module")
def clouds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, 2 * np.pi, N)
    majority = int(0.7 * N)
    offset = np.array([0.5, 0.2])
    lines = np.concatenate([rng.normal(size=(majority, 1)) * np.array([1.0, 0.3]),
                            rng.normal(size=(N - majority, 1)) * np.array([-0.4, 1.0])]) + offset
    return {
        "gaussian": rng.normal(size=(N, 2)),
        "uniform": rng.uniform(size=(N, 2)),
        "circle": np.stack([np.cos(theta), np.sin(theta)], 1),
        "lines": lines,
    }


@pytest.fixture(scope="module")
def padded_stack(clouds) -> list[np.ndarray]:
    """Four different clouds of four different sizes (padded together in a batch), moved off the origin."""
    return [clouds["gaussian"] @ np.array([[1.5, 0.3], [0.2, 0.6]]) + [2.0, -1.0], clouds["uniform"][:3000],
            clouds["circle"][:1001] * 2.0, clouds["lines"][::3]]


# ------------------------------------------------------------------------------------------------ M


@pytest.mark.unit
def test_closed_form_gradient_equals_autograd():
    rng = np.random.default_rng(1)
    points = torch.as_tensor(rng.normal(size=(700, 2)) * [2.0, 0.5] + [3.0, -1.0])
    v, c = torch.tensor([0.7, -1.3], dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    stacked, mask = as_cloud_stack(points[None])
    state = _MixtureState.build(stacked, mask, torch.float64)
    for temp in (1.0, 0.3, 0.01):
        value, grad_v, grad_c = state.surrogate_and_gradient(v[None], c[None], 0.1, temp)
        ref_value, ref_v, ref_c = surrogate_autograd(points, v, c, 0.1, temp)
        assert float(value[0]) == pytest.approx(float(ref_value), abs=1e-12)
        assert torch.allclose(grad_v[0], ref_v, atol=1e-12, rtol=1e-9)
        assert float(grad_c[0]) == pytest.approx(float(ref_c), abs=1e-12)


@pytest.mark.unit
def test_crossing_lines_give_the_larger_share(clouds):
    # 70 % on one line, 30 % on another; the best slab holds the 70 % line plus the few points of the other
    # line inside eps * rms: 0.7 + 0.3 * P(|t| < 0.1 * sqrt(0.3)) = 0.713. Gradient ascent is local, so M is
    # the best of 8 restarts (one batch, seeds 0..7).
    expected = 0.7 + 0.3 * (2 * norm.cdf(0.1 * math.sqrt(0.3)) - 1)
    result = mixture_index_batched(np.stack([clouds["lines"]] * 8), config=with_steps(SCAN_MIXTURE, 1000), seed=0)
    best = int(result.m.argmax())
    assert float(result.m[best]) == pytest.approx(expected, abs=0.01)
    normal = result.v[best].double() / result.v[best].double().norm()
    line = torch.tensor([1.0, 0.3], dtype=torch.float64) / math.hypot(1.0, 0.3)
    assert abs(float(normal @ line)) < 0.02  # the slab lies along the line (within about 1 degree)
    # every restart ends on one of the two lines: 0.713 or 0.3 + 0.7 * P(|t| < 0.1 sqrt(0.7)) = 0.347
    minority = 0.3 + 0.7 * (2 * norm.cdf(0.1 * math.sqrt(0.7)) - 1)
    for m in result.m.tolist():
        assert min(abs(m - expected), abs(m - minority)) < 0.01


@pytest.mark.unit
def test_annealed_variant_also_finds_the_line(clouds):
    result = mixture_index_batched(np.stack([clouds["lines"]] * 8), config=with_steps(DEMO_MIXTURE, 1500), seed=0)
    assert float(result.m.max()) == pytest.approx(0.713, abs=0.01)
    assert float(result.m_surrogate.max()) == pytest.approx(float(result.m_hard.max()), abs=0.01)  # T -> 0


@pytest.mark.parametrize("config", [with_steps(SCAN_MIXTURE, 600), with_steps(DEMO_MIXTURE, 600)], ids=["scan", "demo"])
@pytest.mark.unit
def test_isotropic_gaussian_mixture_index(clouds, config):
    # for an isotropic Gaussian every slab through the centre holds P(|z| < 0.1) of the mass, and offsets only
    # lose mass, so the maximum is 2 Phi(0.1) - 1 up to sampling noise
    result = mixture_index(clouds["gaussian"], config=config, seed=3)
    assert abs(float(result.m) - GAUSS_SLAB) < 0.02


@pytest.mark.unit
def test_hard_fraction_counts_the_slab(clouds):
    result = mixture_index(clouds["gaussian"], config=with_steps(SCAN_MIXTURE, 50), seed=0)
    z = slab_coordinate(clouds["gaussian"], result.v.double().numpy(), float(result.c))
    assert float(result.m_hard) == pytest.approx(np.mean(np.abs(z) < 0.1), abs=1.5 / N)


@pytest.mark.unit
def test_initial_directions_follow_torch_manual_seed():
    torch.manual_seed(2)
    assert torch.equal(initial_directions(3, 2)[0], torch.randn(2))
    assert torch.equal(initial_directions(3, 7)[2], initial_directions(1, 9)[0])


# two threads (the slow half: about 7 s of CPU each) run with the acceptance tier
@pytest.mark.parametrize("threads", [pytest.param(1, marks=pytest.mark.unit), pytest.param(2, marks=pytest.mark.acceptance)])
@pytest.mark.parametrize("config", [with_steps(DEMO_MIXTURE, 800), with_steps(SCAN_MIXTURE, 800)], ids=["demo", "scan"])
def test_batched_mixture_equals_loop(config, threads):
    # clouds of different sizes (padded in the batch): the annealed optimiser amplifies any rounding
    # difference, so this only holds because the engine is padding-invariant by construction
    rng = np.random.default_rng(5)
    sizes = [4096, 3000, 1001, 200, 5000]
    clouds = [rng.normal(size=(n, 2)) @ rng.normal(size=(2, 2)) + rng.normal(size=2) for n in sizes]
    clouds[1][:1500, 1] = 0.5 * clouds[1][:1500, 0]
    torch.set_num_threads(threads)
    try:
        batch = mixture_index_batched(clouds, config=config, seed=11, max_points=1 << 16)  # one chunk
        for b, cloud in enumerate(clouds):
            alone = mixture_index(cloud, config=config, seed=11 + b)
            assert abs(float(alone.m - batch.m[b])) <= 1e-5
            assert torch.allclose(alone.v, batch.v[b], atol=1e-5, rtol=0)
            assert abs(float(alone.c - batch.c[b])) <= 1e-5
    finally:
        torch.set_num_threads(1)


# The engine against upstream's one-cloud loop (`reference_mixture_index`: torch autograd, v += lr * grad).
# Both compute the same gradient, with different rounding (closed form on per-cloud sums vs autograd through
# x @ v + c), and plain gradient ascent with a fixed lr amplifies rounding differences:
# - the step in direction is lr / |(v, c)|^2 (z is scale-invariant), so a small start |v0| (below about 1)
#   makes the ascent overshoot and end in a small chaotic orbit around the maximum, where any difference
#   grows about 10x every 25 steps until it saturates at 1e-5..1e-3 in (v, c); perturbing v0 by 1e-14 in
#   the reference itself does the same. The tests therefore use seeds with |v0| >= 1.5 (0, 4, 6, 9);
# - on an exact line (here 70 % / 30 % of the "lines" cloud) the optimum sits on the kink of |z|: once the
#   slab is aligned to rounding precision the signs of z on the line are rounding noise. In float32 that
#   happens within ~150 steps, in float64 much later;
# - annealing divides the gradient by T -> 1/steps, so the annealed run is chaotic in its late phase: with
#   the demo's 10,000 steps the trajectories separate after a few hundred steps even in float64, and the
#   final M of the demo's gaussian and circle depends on rounding (in the reference alone too), while the
#   mixture of lines and the lattice end on the same M. Agreement to 1e-5 is therefore only expected for
#   short annealed runs (40 steps in float32, 200 in float64, where T still ends at 1/steps).
# The hard fraction M is far more robust than (v, c): at 300 scan steps in float32 it is identical.
EQUIVALENCE_SEEDS = (0, 4, 6, 9)  # |initial_directions| = 1.57, 1.62, 2.12, 1.91


@pytest.mark.parametrize(
    "config, dtype, check_slab",
    [
        (with_steps(SCAN_MIXTURE, 500), torch.float64, True),
        (with_steps(SCAN_MIXTURE, 100), torch.float32, True),
        (with_steps(SCAN_MIXTURE, 300), torch.float32, False),
        (with_steps(DEMO_MIXTURE, 200), torch.float64, True),
        (with_steps(DEMO_MIXTURE, 40), torch.float32, True),
    ],
    ids=["scan-f64-500", "scan-f32-100", "scan-f32-300-M-only", "demo-f64-200", "demo-f32-40"],
)
@pytest.mark.unit
def test_batched_mixture_equals_reference(padded_stack, config, dtype, check_slab):
    seeds = [EQUIVALENCE_SEEDS[(b + shift) % 4] for shift in (0, 1) for b in range(len(padded_stack))]
    stack = padded_stack * 2
    v0 = torch.stack([initial_directions(1, seed)[0] for seed in seeds])
    batch = mixture_index_batched(stack, config=config, v0=v0, dtype=dtype)
    for b, (points, seed) in enumerate(zip(stack, seeds)):
        reference = reference_mixture_index(points, config, seed=seed, dtype=dtype)
        assert abs(float(batch.m[b] - reference.m)) <= 1e-5
        assert abs(float(batch.m_hard[b] - reference.m_hard)) <= 1e-5
        if check_slab:
            assert abs(float(batch.m_surrogate[b] - reference.m_surrogate)) <= 1e-5
            assert torch.allclose(batch.v[b], reference.v, atol=1e-5, rtol=0)
            assert abs(float(batch.c[b] - reference.c)) <= 1e-5


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.unit
def test_points_with_zero_z_contribute_no_gradient(dtype, tol):
    # the demo lattice has ~7 % of its points exactly at the origin, so at step 0 (c = 0) their z is exactly 0;
    # autograd's |z| has gradient sign(0) = 0 there, and so must the engine (which computes z from the raw
    # coordinates as upstream does)
    points = synthetic.make_dataset("lattice")
    assert np.mean(np.all(points == 0, axis=1)) > 0.05
    config = with_steps(DEMO_MIXTURE, 1)
    engine = mixture_index(points, config=config, seed=2, dtype=dtype)
    reference = reference_mixture_index(points, config, seed=2, dtype=dtype)
    assert torch.allclose(engine.v, reference.v, atol=tol, rtol=0)
    assert abs(float(engine.c - reference.c)) <= tol


# ------------------------------------------------------------------------------------------------ S


@pytest.mark.parametrize("config", [SCAN_SEPARABILITY, DEMO_SEPARABILITY], ids=["scan", "demo"])
@pytest.mark.unit
def test_batched_separability_equals_reference(padded_stack, config):
    # the engine (index arithmetic + scatter_add on a padded stack) against upstream's way (a Python loop over
    # angles, xy @ R, np.histogram2d for the scan / the fixed 40 x 40 grid for the demo, plug-in MI): the
    # histograms are the same counts, so only the summation order of the MI differs
    batch = separability_index_batched(padded_stack, config=config)
    for b, points in enumerate(padded_stack):
        reference = reference_separability_index(points, config)
        assert abs(float(batch.s_bits[b] - reference.s_bits)) <= 1e-6
        np.testing.assert_allclose(batch.mi_bits[b].numpy(), reference.mi_bits.numpy(), atol=1e-9, rtol=0)
        # rotations by a quarter turn give the same MI up to rounding, so compare the minimum, not the argmin
        at_angle = reference.mi_bits[int(torch.argmin((reference.angles - batch.angle[b]).abs()))]
        assert float(at_angle) == pytest.approx(float(reference.s_bits), abs=1e-9)
    alone = separability_index(padded_stack[3] * 3.0 + 1.0, config)  # the one-cloud function, too
    reference = reference_separability_index(padded_stack[3] * 3.0 + 1.0, config)
    np.testing.assert_allclose(alone.mi_bits.numpy(), reference.mi_bits.numpy(), atol=1e-9, rtol=0)


@pytest.mark.unit
def test_isotropic_gaussian_separability_at_the_plugin_floor(clouds):
    floor = scan_floor_bits(N)
    s = float(separability_index(clouds["gaussian"], SCAN_SEPARABILITY).s_bits)
    assert 0.4 * floor < s < 1.2 * floor  # min over 100 angles sits a little under the mean bias


@pytest.mark.unit
def test_independent_uniforms_separate_at_angle_zero(clouds):
    result = separability_index(clouds["uniform"], SCAN_SEPARABILITY)
    floor = scan_floor_bits(N)
    assert float(result.mi_bits[0]) < 1.5 * floor  # angle 0: the two coordinates are independent
    assert float(result.s_bits) <= float(result.mi_bits[0])
    step = 2 * np.pi / 99
    folded = float(result.angle) % (np.pi / 2)
    assert min(folded, np.pi / 2 - folded) <= 1.01 * step  # a square separates only along its own axes
    diagonal = int(round((np.pi / 4) / step))
    assert float(result.mi_bits[diagonal]) > 10 * floor  # the diamond at 45 degrees is dependent


@pytest.mark.parametrize("config", [SCAN_SEPARABILITY, DEMO_SEPARABILITY], ids=["scan", "demo"])
@pytest.mark.unit
def test_circle_is_far_from_separable(clouds, config):
    s = {name: float(separability_index(points, config).s_bits) for name, points in clouds.items()
         if name != "lines"}
    assert s["circle"] > 1.0
    assert s["circle"] > 10 * max(s["gaussian"], s["uniform"])


@pytest.mark.parametrize("config", [SCAN_SEPARABILITY, DEMO_SEPARABILITY], ids=["scan", "demo"])
@pytest.mark.unit
def test_batched_separability_equals_loop(clouds, config):
    rng = np.random.default_rng(9)
    stack = [clouds["lines"][:3000], clouds["circle"][:1001] * 5, rng.normal(size=(333, 2)), clouds["uniform"]]
    batch = separability_index_batched(stack, config=config)
    for b, points in enumerate(stack):
        alone = separability_index(points, config)
        assert abs(float(alone.s_bits - batch.s_bits[b])) <= 1e-6
        np.testing.assert_allclose(alone.mi_bits.numpy(), batch.mi_bits[b].numpy(), atol=1e-6)


@pytest.mark.unit
def test_reducibility_batched_runs_both(clouds):
    result = reducibility_batched([clouds["circle"], clouds["lines"]], mixture_config=with_steps(SCAN_MIXTURE, 20))
    assert result.mixture.m.shape == (2,) and result.separability.s_bits.shape == (2,)
    assert float(result.separability.s_bits[0]) > float(result.separability.s_bits[1])


@pytest.mark.unit
def test_bad_clouds_are_rejected():
    with pytest.raises(ValueError, match="B x N x 2"):
        separability_index_batched(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="N >= 2"):
        mixture_index_batched([np.zeros((1, 2))])


# ------------------------------------------------------------------------------------------------ demo


def upstream_clouds(name: str, weights: str, seed: int = 2, num: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper code's draws, spelled out with torch's global generator: the cloud and the next randn(2)."""
    torch.manual_seed(seed)
    randmat = torch.randn([2, 2])
    randvect1 = torch.randn([2])
    randoffset1 = torch.randn([2])
    randvect2 = torch.randn([2])
    randoffset2 = torch.randn([2])
    if name == "gaussian":
        x = torch.tensordot(torch.randn([num, 2]), randmat, dims=1)
    elif name == "gaussians":
        a = torch.randn([num, 2])
        b = torch.randn([num, 1]) * randvect1 + randoffset1
        c = torch.randn([num, 1]) * randvect2 + randoffset2
        picker = torch.rand([num, 1])
        w1, w2 = {"paper": (0.4, 0.7), "rebuttal": (0.3, 0.9)}[weights]
        in_a = (picker < w1).float()
        in_b = (picker < w2).float() - in_a
        in_c = 1.0 - in_a - in_b
        x = a * in_a + b * in_b + c * in_c
    elif name == "circle":
        x = torch.randn([num, 2])
        x = x / torch.sqrt(torch.sum(x**2, dim=1))[:, None]
    else:
        x = torch.randn([num, 2])
        x = torch.tensordot((3 * x).int().float(), randmat, dims=1)
    return x, torch.randn([2])


@pytest.mark.unit
@pytest.mark.parametrize("weights", ["paper", "rebuttal"])
@pytest.mark.parametrize("name", synthetic.DATASETS)
def test_demo_clouds_equal_the_paper_codes_torch_draws(name, weights):
    expected, expected_v0 = upstream_clouds(name, weights)
    cloud = synthetic.draw_cloud(name, seed=2, weights=weights)
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (N, 2)
    assert np.array_equal(cloud.points, expected.numpy())
    assert np.array_equal(synthetic.make_dataset(name, weights=weights), expected.numpy())
    # the optimiser's start is the next draw of the same stream, not a fresh seed
    assert cloud.v0.dtype == np.float32
    assert np.array_equal(cloud.v0, expected_v0.numpy())


@pytest.mark.unit
def test_demo_cloud_shapes():
    lattice = synthetic.make_dataset("lattice").astype(np.float64)
    torch.manual_seed(2)
    randmat = torch.randn(2, 2).double().numpy()
    integer = lattice @ np.linalg.inv(randmat)
    np.testing.assert_allclose(integer, np.round(integer), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(synthetic.make_dataset("circle").astype(np.float64), axis=1), 1.0,
                               atol=1e-6)
    for weights, shares in (("paper", (0.4, 0.3, 0.3)), ("rebuttal", (0.3, 0.6, 0.1))):
        assert synthetic.mixture_shares(weights) == pytest.approx(shares)
        points = synthetic.make_dataset("gaussians", weights=weights)
        torch.manual_seed(2)
        torch.randn(2, 2)
        vect1, offset1, vect2, offset2 = (torch.randn(2).numpy() for _ in range(4))
        for (vect, offset), share in zip(((vect1, offset1), (vect2, offset2)), shares[1:]):
            rel = points - offset
            on_line = np.abs(rel[:, 0] * vect[1] - rel[:, 1] * vect[0]) < 1e-5
            assert np.mean(on_line) == pytest.approx(share, abs=0.03)


@pytest.mark.unit
def test_demo_optimiser_starts_from_the_v_drawn_after_the_cloud():
    _, v0 = upstream_clouds("lattice", "paper", num=500)
    result = synthetic.demo_indices(["lattice"], num_points=500, steps=3)[0]
    alone = mixture_index(synthetic.make_dataset("lattice", num_points=500), config=with_steps(DEMO_MIXTURE, 3), v0=v0)
    np.testing.assert_array_equal(result.v, alone.v.double().numpy())
    assert result.m == float(alone.m)


def run_small(out_dir: Path, datasets, weights: str = "paper", steps: int = 5, num_points: int = 300,
              lines: list | None = None) -> list[Path]:
    return demo_lib.run_demo(out_dir, datasets, weights=weights, steps=steps, num_points=num_points, seed=2,
                             formats=["png"], log=(lines.append if lines is not None else None))


@pytest.mark.integration
def test_demo_subset_runs_keep_the_other_datasets(tmp_path):
    run_small(tmp_path, ["circle"])
    run_small(tmp_path, ["lattice"], weights="rebuttal")
    run_small(tmp_path, ["lattice"])
    record = json.loads((tmp_path / "reducibility_demo_paper.json").read_text())
    assert set(record["datasets"]) == {"circle", "lattice"}
    for values in record["datasets"].values():
        assert values["steps"] == 5 and values["num_points"] == 300 and values["seed"] == 2
    # the weights only change the mixture cloud: circle and lattice are shared by both summaries
    rebuttal = json.loads((tmp_path / "reducibility_demo_rebuttal.json").read_text())
    assert set(rebuttal["datasets"]) == {"circle", "lattice"}
    assert rebuttal["datasets"]["circle"] == record["datasets"]["circle"]
    # a run with other settings replaces that dataset's entry, and says so in the entry
    run_small(tmp_path, ["circle"], steps=7)
    record = json.loads((tmp_path / "reducibility_demo_paper.json").read_text())
    assert record["datasets"]["circle"]["steps"] == 7 and record["datasets"]["lattice"]["steps"] == 5
    # a result made by older code (other clouds) is left out of the summary and rebuilt when asked for
    stale = record_path(demo_lib.result_path(tmp_path, "circle", "paper"), False)
    stored = json.loads(stale.read_text())
    stored["settings"]["code_version"] = demo_lib.CODE_VERSION - 1
    stale.write_text(json.dumps(stored))
    run_small(tmp_path, ["lattice"])
    assert set(json.loads((tmp_path / "reducibility_demo_paper.json").read_text())["datasets"]) == {"lattice"}
    lines: list[str] = []
    run_small(tmp_path, ["circle"], lines=lines)
    assert not lines[0].endswith("(reused)")
    assert set(json.loads((tmp_path / "reducibility_demo_paper.json").read_text())["datasets"]) == {"circle", "lattice"}


def stamp(path: Path) -> tuple[int, bytes]:
    return path.stat().st_mtime_ns, path.read_bytes()


@pytest.mark.integration
def test_demo_rerun_reuses_each_dataset(tmp_path):
    lines: list[str] = []
    written = run_small(tmp_path, ["gaussians", "circle"], lines=lines)
    result_file = demo_lib.result_path(tmp_path, "circle", "paper")
    watched = [result_file, record_path(result_file, False), *written]
    before = {path: stamp(path) for path in watched}
    assert not any("reused" in line for line in lines)
    lines.clear()
    assert run_small(tmp_path, ["gaussians", "circle"], lines=lines) == written
    assert len(lines) == 2 and all(line.endswith("(reused)") for line in lines)
    assert {path: stamp(path) for path in watched} == before
    settings = read_record(result_file, False)["settings"]
    assert settings["dataset"] == "circle" and settings["steps"] == 5 and settings["num_points"] == 300
    assert settings["seed"] == 2 and settings["code_version"] == demo_lib.CODE_VERSION
    assert read_record(demo_lib.result_path(tmp_path, "gaussians", "paper"), False)["settings"]["mixture_weights"] == "paper"
    # a damaged result is rebuilt (and its figure redrawn), never trusted
    result_file.write_text(result_file.read_text()[:-20])
    lines.clear()
    run_small(tmp_path, ["circle"], lines=lines)
    assert not lines[0].endswith("(reused)")
    assert result_file.read_bytes() == before[result_file][1]  # same settings, same numbers
    # so the figure drawn from it is still current: its record names the result by settings and sizes
    figure = tmp_path / "reducibility_circle.png"
    assert stamp(figure) == before[figure]
    # other settings: a new result, and the figure is redrawn from it
    run_small(tmp_path, ["circle"], steps=6)
    assert read_record(result_file, False)["settings"]["steps"] == 6
    assert read_record(figure, False)["settings"]["result"] == artifact_id(result_file)
    assert stamp(figure) != before[figure]


@pytest.fixture(scope="module")
def demo_result() -> synthetic.DemoResult:
    return synthetic.demo_indices(["gaussians"], num_points=1000, steps=50)[0]


def artists(ax, gid: str) -> list:
    found = [a for a in (*ax.lines, *ax.collections, *ax.patches) if a.get_gid() == gid]
    return found


@pytest.mark.integration
def test_demo_figure_shows_the_cloud_and_the_slab(demo_result):
    eps = DEMO_MIXTURE.eps
    with plots.style():
        fig = plots.reducibility_figure(demo_result, eps, synthetic.CROSS_SIZES["gaussians"])
    cloud_ax, hist_ax, mi_ax = fig.axes
    (scatter,) = artists(cloud_ax, "cloud")
    np.testing.assert_array_equal(scatter.get_offsets(), demo_result.points)
    v, c = demo_result.v, demo_result.c
    y = demo_result.points @ v + c
    half_width = eps * np.sqrt(np.mean(y * y))
    slab = artists(cloud_ax, "slab")
    assert len(slab) == 2
    levels = []
    for line in slab:
        xy = np.column_stack([line.get_xdata(), line.get_ydata()])
        values = xy @ v + c
        assert values[0] == pytest.approx(values[1], abs=1e-9)
        levels.append(values[0])
    assert sorted(levels) == pytest.approx([-half_width, half_width], abs=1e-9)
    cross = artists(cloud_ax, "cross")
    assert len(cross) == 2
    for line in cross:
        ends = np.column_stack([line.get_xdata(), line.get_ydata()])
        np.testing.assert_allclose(ends.mean(0), demo_result.points.astype(np.float64).mean(0), atol=1e-9)
        direction = ends[1] - ends[0]
        assert np.linalg.norm(direction) == pytest.approx(2 * synthetic.CROSS_SIZES["gaussians"])
        angle = np.arctan2(direction[1], direction[0])
        assert math.sin(2 * (angle - demo_result.s_angle)) == pytest.approx(0.0, abs=1e-9)  # along an axis
    # middle: the histogram of z in 100 bins and the slab edges at +-eps
    bars = artists(hist_ax, "z histogram")
    assert len(bars) == 100
    z = slab_coordinate(demo_result.points, v, c)
    counts, edges = np.histogram(z, bins=100)
    np.testing.assert_array_equal([bar.get_height() for bar in bars], counts)
    np.testing.assert_allclose([bar.get_x() for bar in bars], edges[:-1])
    assert sorted(line.get_xdata()[0] for line in artists(hist_ax, "eps")) == pytest.approx([-eps, eps])
    assert [t.get_text() for t in hist_ax.texts] == [rf"$M_\epsilon(f)={demo_result.m:.4f}$"]
    # right: the MI curve, its minimum S, and the argmin folded into a quarter turn
    (curve,) = artists(mi_ax, "mutual information")
    np.testing.assert_array_equal(curve.get_xdata(), demo_result.angles)
    np.testing.assert_array_equal(curve.get_ydata(), demo_result.mi_bits)
    assert float(np.min(curve.get_ydata())) == demo_result.s_bits
    (argmin,) = artists(mi_ax, "argmin")
    assert argmin.get_xdata()[0] == pytest.approx(demo_result.s_angle % (np.pi / 2))
    turned = dataclasses.replace(demo_result, s_angle=demo_result.s_angle + 2.5 * np.pi)  # a quarter turn on
    with plots.style():
        (argmin_turned,) = artists(plots.reducibility_figure(turned, eps, 4.0).axes[2], "argmin")
    assert argmin_turned.get_xdata()[0] == pytest.approx(argmin.get_xdata()[0])
    assert [t.get_text() for t in mi_ax.texts] == [rf"$S(f)={demo_result.s_bits:.4f}$"]


@pytest.mark.integration
def test_demo_labels_match_the_printed_and_stored_numbers(tmp_path):
    lines: list[str] = []
    run_small(tmp_path, ["lattice"], lines=lines)
    (line,) = lines
    m_text, s_text = line.split("M = ")[1].split()[0], line.split("S = ")[1].split()[0]
    stored = demo_lib.load_result(demo_lib.result_path(tmp_path, "lattice", "paper"),
                                  read_record(demo_lib.result_path(tmp_path, "lattice", "paper"), False)["settings"])
    assert f"{stored.m:.4f}" == m_text and f"{stored.s_bits:.4f}" == s_text
    np.testing.assert_array_equal(stored.points, synthetic.make_dataset("lattice", num_points=300))
    with plots.style():
        fig = plots.reducibility_figure(stored, DEMO_MIXTURE.eps, synthetic.CROSS_SIZES["lattice"])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(m_text in t for t in texts) and any(s_text in t for t in texts)
    summary = json.loads((tmp_path / "reducibility_demo_paper.json").read_text())["datasets"]["lattice"]
    assert f"{summary['M']:.4f}" == m_text and f"{summary['S']:.4f}" == s_text


@pytest.mark.integration
def test_demo_script_end_to_end(tmp_path, capsys):
    from reducibility_demos.reducibility_demo import main

    written = main(["--out_dir", str(tmp_path), "--steps", "200"])
    figures = [p for p in written if p.suffix in (".png", ".pdf")]
    assert len(figures) == 8 and all(p.stat().st_size > 1000 for p in figures)
    record = json.loads((tmp_path / "reducibility_demo_paper.json").read_text())
    assert set(record["datasets"]) == set(synthetic.DATASETS)
    for values in record["datasets"].values():
        assert 0.0 <= values["M"] <= 1.0 and values["S"] >= 0.0
    assert record["datasets"]["circle"]["S"] > 10 * record["datasets"]["gaussian"]["S"]
    printed = capsys.readouterr().out
    for name, values in record["datasets"].items():
        assert f"{name:>10}: M = {values['M']:.4f}" in printed


@pytest.mark.integration
def test_demo_draws_the_exact_slab_when_asked(tmp_path, capsys):
    """Both M are printed and stored; --mixture exact redraws the figure with the exact slab, reusing the numbers."""
    from reducibility_demos.reducibility_demo import main

    args = ["--out_dir", str(tmp_path), "--datasets", "gaussians", "--steps", "30", "--num_points", "400",
            "--formats", "png"]
    main(args)
    values = json.loads((tmp_path / "reducibility_demo_paper.json").read_text())["datasets"]["gaussians"]
    cloud = synthetic.make_dataset("gaussians", num_points=400)
    exact = mixture_index_exact(cloud)
    assert values["M_exact"] == exact.m and values["M_exact"] >= values["M_hard"]
    assert slab_share(cloud, values["v_exact"], values["c_exact"]) == exact.m
    assert f"exact maximum {exact.m:.4f}" in capsys.readouterr().out
    figure = tmp_path / "reducibility_gaussians_paper.png"
    assert read_record(figure, False)["settings"]["mixture"] == "gradient"
    main([*args, "--mixture", "exact"])
    assert capsys.readouterr().out.count("(reused)") == 1  # the numbers, not the figure
    assert read_record(figure, False)["settings"]["mixture"] == "exact"
    stored = demo_lib.load_result(demo_lib.result_path(tmp_path, "gaussians", "paper"),
                                  read_record(demo_lib.result_path(tmp_path, "gaussians", "paper"), False)["settings"])
    drawn = stored.with_slab("exact")
    assert drawn.m == exact.m and np.array_equal(drawn.v, np.array(values["v_exact"]))
    with plots.style():
        fig = plots.reducibility_figure(drawn, DEMO_MIXTURE.eps, synthetic.CROSS_SIZES["gaussians"])
    assert [t.get_text() for t in fig.axes[1].texts] == [rf"$M_\epsilon(f)={exact.m:.4f}$"]
    with pytest.raises(SystemExit):
        main([*args, "--mixture", "annealed"])


@pytest.mark.integration
def test_demo_script_writes_under_the_base_dir_by_default(tmp_path):
    from reducibility_demos.reducibility_demo import main

    written = main(["--base_dir", str(tmp_path), "--datasets", "circle", "--steps", "3", "--num_points", "100",
                    "--formats", "png"])
    folder = tmp_path / "figs" / "reducibility_demos"
    assert written == [folder / "reducibility_circle.png", folder / "reducibility_demo_paper.json"]
    assert demo_lib.default_out_dir(tmp_path) == folder


@pytest.mark.acceptance
def test_demo_runs_as_plain_script_from_its_folder(tmp_path):
    command = [sys.executable, "reducibility_demo.py", "--out_dir", str(tmp_path), "--steps", "20",
               "--datasets", "circle", "--formats", "png", "--mixture_weights", "rebuttal"]
    done = subprocess.run(command, cwd=REPO / "reducibility_demos", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reducibility_circle.png").stat().st_size > 1000
    assert "circle" in json.loads((tmp_path / "reducibility_demo_rebuttal.json").read_text())["datasets"]


@pytest.mark.integration
def test_demo_bad_argument_is_one_line(tmp_path, capsys):
    from reducibility_demos.reducibility_demo import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out_dir", str(tmp_path), "--steps", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: --steps must be at least 1")
