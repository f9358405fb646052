"""Reducibility indices: known answers, upstream formulas re-derived in numpy, batched == one-cloud, the demo."""

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

from reducibility_demos import synthetic
from reducibility_demos.reducibility import (
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


# ------------------------------------------------------------------------------------------------ S


def numpy_scan_mi_bits(points: np.ndarray) -> np.ndarray:
    """Upstream scan S written directly: np.histogram2d(bins=10) of xy @ R for linspace(0, 2pi, 100)."""
    values = []
    for theta in np.linspace(0, 2 * np.pi, 100):
        rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        rotated = points @ rotation
        hist, _, _ = np.histogram2d(rotated[:, 0], rotated[:, 1], bins=10)
        p = hist / hist.sum()
        outer = p.sum(1)[:, None] * p.sum(0)[None, :]
        nz = p > 0
        values.append(np.sum(p[nz] * np.log(p[nz] / (outer[nz] + 1e-10))) / np.log(2))
    return np.array(values)


def numpy_demo_mi_bits(points: np.ndarray) -> np.ndarray:
    """Upstream demo S written directly: normalise by mean(x^2), 40 x 40 bins on [-3, 3]^2, smoothed MI."""
    x = points - points.mean(0)
    x = x / np.mean(x**2)
    values = []
    for i in range(1000):
        theta = 2 * np.pi * i / 1000
        rotation = np.cos(theta) * np.eye(2) + np.sin(theta) * np.array([[0.0, -1.0], [1.0, 0.0]])
        rotated = x @ rotation
        index = np.clip(np.floor(rotated * (20 / 3.0)) + 20, 0, 39).astype(int)
        hist = np.zeros((40, 40))
        np.add.at(hist, (index[:, 0], index[:, 1]), 1)
        p = hist / len(x)
        outer = p.sum(1)[:, None] * p.sum(0)[None, :]
        values.append(np.sum(p * np.log((p + 1e-4) / (outer + 1e-4))) / np.log(2))
    return np.array(values)


def test_scan_separability_matches_numpy_histogram2d(clouds):
    points = clouds["lines"][:1500] * 3.0 + 1.0
    ours = separability_index(points, SCAN_SEPARABILITY)
    reference = numpy_scan_mi_bits(points)
    np.testing.assert_allclose(ours.mi_bits.numpy(), reference, atol=1e-9)
    assert float(ours.s_bits) == pytest.approx(reference.min(), abs=1e-9)


def test_demo_separability_matches_numpy_reference(clouds):
    points = clouds["lines"][:800] @ np.array([[1.5, 0.2], [0.1, 0.7]])
    ours = separability_index(points, DEMO_SEPARABILITY)
    np.testing.assert_allclose(ours.mi_bits.numpy(), numpy_demo_mi_bits(points), atol=1e-9)


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
