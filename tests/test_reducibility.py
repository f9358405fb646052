"""Reducibility indices: known answers, engine == upstream-style references, batched == one-cloud, the demo."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from multid.reducibility import synthetic
from multid.reducibility.engine import (
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


def test_annealed_variant_also_finds_the_line(clouds):
    result = mixture_index_batched(np.stack([clouds["lines"]] * 8), config=with_steps(DEMO_MIXTURE, 1500), seed=0)
    assert float(result.m.max()) == pytest.approx(0.713, abs=0.01)
    assert float(result.m_surrogate.max()) == pytest.approx(float(result.m_hard.max()), abs=0.01)  # T -> 0


@pytest.mark.parametrize("config", [with_steps(SCAN_MIXTURE, 600), with_steps(DEMO_MIXTURE, 600)], ids=["scan", "demo"])
def test_isotropic_gaussian_mixture_index(clouds, config):
    # for an isotropic Gaussian every slab through the centre holds P(|z| < 0.1) of the mass, and offsets only
    # lose mass, so the maximum is 2 Phi(0.1) - 1 up to sampling noise
    result = mixture_index(clouds["gaussian"], config=config, seed=3)
    assert abs(float(result.m) - GAUSS_SLAB) < 0.02


def test_hard_fraction_counts_the_slab(clouds):
    result = mixture_index(clouds["gaussian"], config=with_steps(SCAN_MIXTURE, 50), seed=0)
    z = slab_coordinate(clouds["gaussian"], result.v.double().numpy(), float(result.c))
    assert float(result.m_hard) == pytest.approx(np.mean(np.abs(z) < 0.1), abs=1.5 / N)


def test_initial_directions_follow_torch_manual_seed():
    torch.manual_seed(2)
    assert torch.equal(initial_directions(3, 2)[0], torch.randn(2))
    assert torch.equal(initial_directions(3, 7)[2], initial_directions(1, 9)[0])


@pytest.mark.parametrize("threads", [1, 2])
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


def test_isotropic_gaussian_separability_at_the_plugin_floor(clouds):
    floor = scan_floor_bits(N)
    s = float(separability_index(clouds["gaussian"], SCAN_SEPARABILITY).s_bits)
    assert 0.4 * floor < s < 1.2 * floor  # min over 100 angles sits a little under the mean bias


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
def test_circle_is_far_from_separable(clouds, config):
    s = {name: float(separability_index(points, config).s_bits) for name, points in clouds.items()
         if name != "lines"}
    assert s["circle"] > 1.0
    assert s["circle"] > 10 * max(s["gaussian"], s["uniform"])


@pytest.mark.parametrize("config", [SCAN_SEPARABILITY, DEMO_SEPARABILITY], ids=["scan", "demo"])
def test_batched_separability_equals_loop(clouds, config):
    rng = np.random.default_rng(9)
    stack = [clouds["lines"][:3000], clouds["circle"][:1001] * 5, rng.normal(size=(333, 2)), clouds["uniform"]]
    batch = separability_index_batched(stack, config=config, max_elements=1 << 20)
    for b, points in enumerate(stack):
        alone = separability_index(points, config)
        assert abs(float(alone.s_bits - batch.s_bits[b])) <= 1e-6
        np.testing.assert_allclose(alone.mi_bits.numpy(), batch.mi_bits[b].numpy(), atol=1e-6)


def test_reducibility_batched_runs_both(clouds):
    result = reducibility_batched([clouds["circle"], clouds["lines"]], mixture_config=with_steps(SCAN_MIXTURE, 20))
    assert result.mixture.m.shape == (2,) and result.separability.s_bits.shape == (2,)
    assert float(result.separability.s_bits[0]) > float(result.separability.s_bits[1])


def test_bad_clouds_are_rejected():
    with pytest.raises(ValueError, match="B x N x 2"):
        separability_index_batched(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="N >= 2"):
        mixture_index_batched([np.zeros((1, 2))])


# ------------------------------------------------------------------------------------------------ demo


def test_dataset_draws_follow_upstream_order():
    rng = np.random.RandomState(2)
    randmat = rng.randn(2, 2)
    vect1, offset1, vect2, offset2 = (rng.randn(2) for _ in range(4))
    assert np.array_equal(synthetic.make_dataset("gaussian"), rng.randn(N, 2) @ randmat)
    lattice = synthetic.make_dataset("lattice") @ np.linalg.inv(randmat)
    np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(synthetic.make_dataset("circle"), axis=1), 1.0)
    for weights, shares in (("paper", (0.4, 0.3, 0.3)), ("rebuttal", (0.3, 0.6, 0.1))):
        points = synthetic.make_dataset("gaussians", weights=weights)
        on_line = []
        for vect, offset in ((vect1, offset1), (vect2, offset2)):
            rel = points - offset
            on_line.append(np.abs(rel[:, 0] * vect[1] - rel[:, 1] * vect[0]) < 1e-9)
        assert np.mean(on_line[0]) == pytest.approx(shares[1], abs=0.03)
        assert np.mean(on_line[1]) == pytest.approx(shares[2], abs=0.03)
        assert synthetic.mixture_shares(weights) == pytest.approx(shares)


def test_demo_script_end_to_end(tmp_path):
    from reducibility_demos.reducibility_demo import main

    written = main(["--out_dir", str(tmp_path), "--steps", "200"])
    figures = [p for p in written if p.suffix in (".png", ".pdf")]
    assert len(figures) == 8 and all(p.stat().st_size > 1000 for p in figures)
    record = json.loads((tmp_path / "reducibility_demo_paper.json").read_text())
    assert set(record["datasets"]) == set(synthetic.DATASETS)
    for values in record["datasets"].values():
        assert 0.0 <= values["M"] <= 1.0 and values["S"] >= 0.0
    assert record["datasets"]["circle"]["S"] > 10 * record["datasets"]["gaussian"]["S"]


def test_demo_runs_as_plain_script_from_its_folder(tmp_path):
    command = [sys.executable, "reducibility_demo.py", "--out_dir", str(tmp_path), "--steps", "20",
               "--datasets", "circle", "--formats", "png", "--mixture_weights", "rebuttal"]
    done = subprocess.run(command, cwd=REPO / "reducibility_demos", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reducibility_circle.png").stat().st_size > 1000
    assert "circle" in json.loads((tmp_path / "reducibility_demo_rebuttal.json").read_text())["datasets"]


def test_demo_bad_argument_is_one_line(tmp_path, capsys):
    from reducibility_demos.reducibility_demo import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out_dir", str(tmp_path), "--steps", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: --steps must be at least 1")
