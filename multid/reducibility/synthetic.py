"""The four synthetic clouds of the reducibility demo (Fig 2 / Fig 9) and their two indices.

Upstream `reducibility_demo.py` seeds numpy and torch with 2 at the start of every dataset, draws five
helper arrays in a fixed order (randmat 2x2, randvect1, randoffset1, randvect2, randoffset2), then the
dataset's own points, and finally the optimiser's starting direction v with torch. We draw the data with
`np.random.RandomState(seed)` (the legacy generator behind `np.random.seed`, so the same numbers) and v
with a torch generator seeded the same way (`reducibility.initial_directions`), so every dataset starts
the optimiser from the same v, as upstream does. The paper-era script looped over all four datasets; upstream
HEAD only runs the mixture ("gaussians") with its rebuttal weights. Both weightings are offered here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from multid.reducibility.engine import (
    DEMO_MIXTURE,
    DEMO_SEPARABILITY,
    MixtureConfig,
    initial_directions,
    mixture_index_batched,
    separability_index_batched,
)

DATASETS = ("gaussian", "gaussians", "circle", "lattice")  # upstream's loop range(1, 5), in this order
NUM_POINTS = 4096
DEFAULT_SEED = 2

# Cumulative thresholds (w1, w2) on u ~ U[0, 1): u < w1 -> Gaussian blob, w1 <= u < w2 -> line 1, else line 2.
MIXTURE_WEIGHTS = {
    "paper": (0.4, 0.7),  # 40/30/30 %: the version of the paper's figures (upstream commit bcc33c1)
    "rebuttal": (0.3, 0.9),  # 30/60/10 %: upstream HEAD ("Rebuttal updates")
}

# Half-length of the green cross drawn along the separating axes, per dataset (upstream's constants).
CROSS_SIZES = {"gaussian": 3.0, "gaussians": 4.0, "circle": 1.2, "lattice": 5.0}


def mixture_shares(weights: str) -> tuple[float, float, float]:
    """(blob, line 1, line 2) fractions for a MIXTURE_WEIGHTS key."""
    first, second = MIXTURE_WEIGHTS[weights]
    return first, second - first, 1.0 - second


def make_dataset(name: str, seed: int = DEFAULT_SEED, num_points: int = NUM_POINTS,
                 weights: str = "paper") -> np.ndarray:
    """One demo cloud (num_points x 2, float64) with upstream's seed and draw order.

    gaussian: N(0, I) @ randmat. gaussians: per point, in order, u = rand(); u < w1 -> randn(2) (isotropic
    blob); w1 <= u < w2 -> randn() * randvect1 + randoffset1 (a line); else randn() * randvect2 + randoffset2.
    circle: randn(N, 2) with rows scaled to unit length. lattice: int(3 * randn(N, 2)) (truncation toward
    zero) @ randmat.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    if weights not in MIXTURE_WEIGHTS:
        raise ValueError(f"unknown mixture weights {weights!r}; choose from {', '.join(MIXTURE_WEIGHTS)}")
    rng = np.random.RandomState(seed)
    randmat = rng.randn(2, 2)
    randvect1, randoffset1 = rng.randn(2), rng.randn(2)
    randvect2, randoffset2 = rng.randn(2), rng.randn(2)
    if name == "gaussian":
        return rng.randn(num_points, 2) @ randmat
    if name == "gaussians":
        first, second = MIXTURE_WEIGHTS[weights]
        points = np.empty((num_points, 2))
        for i in range(num_points):  # per-point draws: the order of the random stream matters
            u = rng.rand()
            if u < first:
                points[i] = rng.randn(2)
            elif u < second:
                points[i] = rng.randn() * randvect1 + randoffset1
            else:
                points[i] = rng.randn() * randvect2 + randoffset2
        return points
    if name == "circle":
        points = rng.randn(num_points, 2)
        return points / np.linalg.norm(points, axis=1, keepdims=True)
    return (3 * rng.randn(num_points, 2)).astype(int).astype(np.float64) @ randmat


@dataclass
class DemoResult:
    """Both indices for one demo cloud, plus what the figure needs."""

    name: str
    points: np.ndarray
    m: float  # reported M (surrogate at the last annealed step)
    m_hard: float  # fraction |z| < eps at the final (v, c)
    v: np.ndarray
    c: float
    s_bits: float
    s_angle: float
    mi_bits: np.ndarray
    angles: np.ndarray

    def summary(self) -> dict:
        """JSON-ready numbers (S in bits; S_nats is what upstream's file names used)."""
        return {
            "M": self.m, "M_hard": self.m_hard, "S": self.s_bits, "S_nats": self.s_bits * np.log(2.0),
            "S_angle": self.s_angle, "v": [float(x) for x in self.v], "c": self.c, "num_points": len(self.points),
        }


def demo_indices(names=DATASETS, seed: int = DEFAULT_SEED, num_points: int = NUM_POINTS, weights: str = "paper",
                 steps: int = DEMO_MIXTURE.steps) -> list[DemoResult]:
    """M (annealed, as the demo) and S (fixed grid, as the demo) for the named datasets, in one batch.

    Every dataset starts the optimiser from the same v (upstream reseeds torch before each dataset).
    """
    clouds = [make_dataset(name, seed, num_points, weights) for name in names]
    config = MixtureConfig(**{**DEMO_MIXTURE.__dict__, "steps": steps})
    v0 = initial_directions(1, seed).repeat(len(clouds), 1)
    mixture = mixture_index_batched(np.stack(clouds), config=config, v0=v0)
    separability = separability_index_batched(np.stack(clouds), config=DEMO_SEPARABILITY)
    return [
        DemoResult(
            name=name, points=cloud, m=float(mixture.m[i]), m_hard=float(mixture.m_hard[i]),
            v=mixture.v[i].to(torch.float64).numpy(), c=float(mixture.c[i]),
            s_bits=float(separability.s_bits[i]), s_angle=float(separability.angle[i]),
            mi_bits=separability.mi_bits[i].numpy(), angles=separability.angles.numpy(),
        )
        for i, (name, cloud) in enumerate(zip(names, clouds))
    ]
