"""The four synthetic clouds of the reducibility demo (paper section 3, Figures 2 and 9) and their two indices.

Every cloud is drawn, as the paper's code draws it, from torch's generator seeded with `seed` at the start of
the dataset, in a fixed order: five helper draws (randmat 2x2, randvect1, randoffset1, randvect2,
randoffset2), then the dataset as whole tensors, then the optimiser's start v = randn(2) (c starts at 0).
So the clouds are float32 (torch's default) and each dataset starts M's optimiser from its own v.
We draw from a private generator seeded the same way, which gives the same numbers as
`torch.manual_seed(seed)` without touching torch's global state (tests/test_reducibility.py checks both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from multid.reducibility.indices import (
    DEMO_MIXTURE,
    DEMO_SEPARABILITY,
    CloudIndices,
    MixtureConfig,
    mixture_index_batched,
    separability_index_batched,
)
from multid.reducibility.exact import mixture_index_exact

DATASETS = ("gaussian", "gaussians", "circle", "lattice")  # the paper's order
NUM_POINTS = 4096
DEFAULT_SEED = 2

# Cumulative thresholds (w1, w2) on picker ~ U[0, 1): picker < w1 -> Gaussian blob, w1 <= picker < w2 -> line 1,
# else line 2.
MIXTURE_WEIGHTS = {
    "paper": (0.4, 0.7),  # 40/30/30 %: the version that drew the paper's figures
    "rebuttal": (0.3, 0.9),  # 30/60/10 %: the authors' later (rebuttal) version
}

# Half-length of the green cross drawn along the separating axes, per dataset (the paper's figure constants).
CROSS_SIZES = {"gaussian": 3.0, "gaussians": 4.0, "circle": 1.2, "lattice": 5.0}


def mixture_shares(weights: str) -> tuple[float, float, float]:
    """(blob, line 1, line 2) fractions for a MIXTURE_WEIGHTS key."""
    first, second = MIXTURE_WEIGHTS[weights]
    return first, round(second - first, 12), round(1.0 - second, 12)


def check_choice(name: str, weights: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if weights not in MIXTURE_WEIGHTS:
        raise ValueError(f"unknown mixture weights {weights!r}; choose from {', '.join(MIXTURE_WEIGHTS)}")


@dataclass(frozen=True)
class DemoCloud:
    """One demo cloud (num_points x 2, float32) and the optimiser's start v (2, float32) drawn after it."""

    name: str
    points: np.ndarray
    v0: np.ndarray


def draw_cloud(name: str, seed: int = DEFAULT_SEED, num_points: int = NUM_POINTS, weights: str = "paper") -> DemoCloud:
    """The cloud `name` and the start v, from one torch generator seeded with `seed`, in the paper's order.

    gaussian: randn(N, 2) @ randmat. gaussians: blob = randn(N, 2), line1 = randn(N, 1) * randvect1 +
    randoffset1, line2 = randn(N, 1) * randvect2 + randoffset2, picker = rand(N, 1); a point is the blob's
    where picker < w1, line 1's where w1 <= picker < w2, else line 2's (the thresholds compared in float32).
    circle: randn(N, 2) with every row divided by its length sqrt(x0^2 + x1^2). lattice: 3 * randn(N, 2)
    truncated toward zero to int32, back to float32, @ randmat.
    """
    check_choice(name, weights)
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    randmat = normal(2, 2)
    randvect1, randoffset1 = normal(2), normal(2)
    randvect2, randoffset2 = normal(2), normal(2)
    if name == "gaussian":
        points = normal(num_points, 2) @ randmat
    elif name == "gaussians":
        blob = normal(num_points, 2)
        line1 = normal(num_points, 1) * randvect1 + randoffset1
        line2 = normal(num_points, 1) * randvect2 + randoffset2
        picker = torch.rand(num_points, 1, generator=generator)
        first, second = MIXTURE_WEIGHTS[weights]
        points = torch.where(picker < first, blob, torch.where(picker < second, line1, line2))
    elif name == "circle":
        raw = normal(num_points, 2)
        points = raw / torch.sqrt(torch.sum(raw * raw, dim=1, keepdim=True))
    else:
        raw = normal(num_points, 2)
        points = (3 * raw).to(torch.int32).to(raw.dtype) @ randmat
    v0 = normal(2)
    return DemoCloud(name=name, points=points.numpy(), v0=v0.numpy())


def make_dataset(name: str, seed: int = DEFAULT_SEED, num_points: int = NUM_POINTS,
                 weights: str = "paper") -> np.ndarray:
    """The points of `draw_cloud` (num_points x 2, float32)."""
    return draw_cloud(name, seed, num_points, weights).points


MIXTURE_CHOICES = ("gradient", "exact")


@dataclass
class DemoResult(CloudIndices):
    """Both indices for one demo cloud, plus what the figure needs.

    m, m_hard, v, c: the gradient optimiser's (the paper code's, a seed-dependent local optimum);
    m_exact, v_exact, c_exact: the maximum over every slab (`multid.reducibility.mixture_index_exact`).
    """

    name: str = ""
    m_exact: float = float("nan")
    v_exact: np.ndarray | None = None
    c_exact: float = float("nan")

    def summary(self) -> dict:
        """JSON-ready numbers (S in bits; S_nats is what the paper's code put into its file names)."""
        return {
            "M": self.m, "M_hard": self.m_hard, "S": self.s_bits, "S_nats": self.s_bits * float(np.log(2.0)),
            "S_angle": self.s_angle, "v": [float(x) for x in self.v], "c": self.c, "num_points": len(self.points),
            "M_exact": self.m_exact, "v_exact": [float(x) for x in self.v_exact], "c_exact": self.c_exact,
        }

    def with_slab(self, mixture: str) -> "DemoResult":
        """This result with M and its slab taken from the gradient optimiser or the exact maximum."""
        if mixture not in MIXTURE_CHOICES:
            raise ValueError(f"unknown mixture index {mixture!r}; choose from {', '.join(MIXTURE_CHOICES)}")
        if mixture == "gradient":
            return self
        return dataclasses.replace(self, m=self.m_exact, m_hard=self.m_exact, v=self.v_exact, c=self.c_exact)


def demo_indices(names=DATASETS, seed: int = DEFAULT_SEED, num_points: int = NUM_POINTS, weights: str = "paper",
                 steps: int = DEMO_MIXTURE.steps) -> list[DemoResult]:
    """M (annealed, as the demo), the exact M, and S (fixed grid, as the demo) for the named datasets.

    Each dataset's optimiser starts from the v drawn right after its cloud. The engine gives a cloud the
    same numbers alone or in a batch, so the batch is only a speed-up.
    """
    clouds = [draw_cloud(name, seed, num_points, weights) for name in names]
    points = np.stack([cloud.points for cloud in clouds])
    config = MixtureConfig(**{**DEMO_MIXTURE.__dict__, "steps": steps})
    v0 = torch.as_tensor(np.stack([cloud.v0 for cloud in clouds]))
    mixture = mixture_index_batched(points, config=config, v0=v0)
    separability = separability_index_batched(points, config=DEMO_SEPARABILITY)
    exacts = [mixture_index_exact(cloud.points, eps=config.eps) for cloud in clouds]
    return [
        DemoResult(
            name=cloud.name, points=cloud.points, m=float(mixture.m[i]), m_hard=float(mixture.m_hard[i]),
            v=mixture.v[i].to(torch.float64).numpy(), c=float(mixture.c[i]),
            s_bits=float(separability.s_bits[i]), s_angle=float(separability.angle[i]),
            mi_bits=separability.mi_bits[i].numpy(), angles=separability.angles.numpy(),
            m_exact=exact.m, v_exact=exact.v, c_exact=exact.c,
        )
        for i, (cloud, exact) in enumerate(zip(clouds, exacts))
    ]
