"""The exact epsilon-mixture index against the gradient engine on the same planes (n = 1,000, 5,000, 20,000).

    python -m benchmarks.bench_mixture_exact [--planes 8] [--sizes 1000 5000 20000] [--steps 10000]

For each size, --planes clouds (a mix of Gaussian blobs, noisy circles, two-line mixtures and uniform
squares under random linear maps, as `bench_reducibility`) go through:

- the gradient engine, batched (`mixture_index_batched`, the scan's variant: T = 1, hard fraction), with
  --steps steps (the original's 10,000 by default): the baseline, what the scan runs today;
- `mixture_index_exact`, one plane at a time on one thread (its compiled kernels warmed up first), exact
  (tol = 0), and with tol = 0.01.

Printed per size: seconds per plane for each, the ratio gradient / exact (> 1: exact is faster), the mean
and largest amount by which the gradient value falls short of the maximum, and how often it does. All
times are measured in this run on the same planes; nothing is extrapolated.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.bench_reducibility import make_clouds
from multid.reducibility.indices import SCAN_MIXTURE, MixtureConfig, mixture_index_batched
from multid.reducibility import kernels
from multid.reducibility.exact import mixture_index_exact


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def run_size(num_points: int, planes: int, steps: int, seed: int) -> dict:
    clouds = make_clouds(planes, num_points, seed)
    config = MixtureConfig(**{**SCAN_MIXTURE.__dict__, "steps": steps})
    gradient, t_gradient = timed(lambda: mixture_index_batched(clouds.astype(np.float32), config=config, seed=seed))
    exact, t_exact = timed(lambda: [mixture_index_exact(cloud) for cloud in clouds])
    loose, t_loose = timed(lambda: [mixture_index_exact(cloud, tol=0.01) for cloud in clouds])
    gradient_m = gradient.m.double().numpy()
    exact_m = np.array([result.m for result in exact])
    shortfall = exact_m - gradient_m
    if (shortfall < -1e-9).any():
        raise AssertionError(f"the gradient value exceeds the exact maximum on a plane: {shortfall.min()}")
    loose_m = np.array([result.m for result in loose])
    return {
        "num_points": num_points, "planes": planes,
        "gradient_s_per_plane": t_gradient / planes, "exact_s_per_plane": t_exact / planes,
        "exact_tol001_s_per_plane": t_loose / planes,
        "ratio_gradient_vs_exact": t_gradient / t_exact, "ratio_gradient_vs_exact_tol001": t_gradient / t_loose,
        "mean_shortfall": float(shortfall.mean()), "max_shortfall": float(shortfall.max()),
        "planes_short_by_over_001": int((shortfall > 0.01).sum()),
        "max_tol001_gap": float((exact_m - loose_m).max()),
        "ranges_per_plane": float(np.mean([result.ranges for result in exact])),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planes", type=int, default=8, help="clouds per size (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--steps", type=int, default=SCAN_MIXTURE.steps,
                        help="gradient steps (default: the original's %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the gradient engine (default: 1; the exact search runs one plane at a "
                             "time on one thread)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.planes, args.steps, *args.sizes) < 2:
        parser.error("--planes, --steps and --sizes must be at least 2")
    torch.set_num_threads(args.threads)
    kernels.warm_up()
    print(f"{args.planes} planes per size; gradient engine: {args.steps} steps, batched, {args.threads} torch "
          f"thread(s); exact: one plane at a time")
    print(f"{'n':>7} {'gradient s/plane':>17} {'exact s/plane':>14} {'ratio':>7} {'tol .01 s/plane':>16} "
          f"{'ratio':>7} {'gradient short by: mean':>24} {'max':>6} {'> .01':>6} {'ranges':>7}")
    reports = []
    for size in args.sizes:
        r = run_size(size, args.planes, args.steps, args.seed)
        reports.append(r)
        print(f"{size:7d} {r['gradient_s_per_plane']:17.3f} {r['exact_s_per_plane']:14.3f} "
              f"{r['ratio_gradient_vs_exact']:6.1f}x {r['exact_tol001_s_per_plane']:16.3f} "
              f"{r['ratio_gradient_vs_exact_tol001']:6.1f}x {r['mean_shortfall']:24.3f} {r['max_shortfall']:6.3f} "
              f"{r['planes_short_by_over_001']:3d}/{args.planes} {r['ranges_per_plane']:7.0f}")
    print("ratio = gradient time / exact time on the same planes (> 1: the exact maximum is also faster); "
          "'gradient short by' = exact M - gradient M")
    return reports


if __name__ == "__main__":
    main()
