"""Batched reducibility engine vs a loop of the one-cloud functions (400 clouds of 4,096 points).

    python -m benchmarks.bench_reducibility [--steps 200] [--threads 1]

Both sides compute M (scan variant: T = 1, hard fraction) and S (scan variant: 10 x 10 data-range
histograms, 100 angles) for the same clouds and seeds. M runs fewer optimiser steps than the 10,000 of a
real scan to keep this short; its cost is linear in the steps, so the output also projects both sides to
10,000 steps from the measured per-step times.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reducibility_demos.reducibility import (
    SCAN_MIXTURE,
    SCAN_SEPARABILITY,
    MixtureConfig,
    mixture_index,
    mixture_index_batched,
    separability_index,
    separability_index_batched,
)

FULL_STEPS = SCAN_MIXTURE.steps


def make_clouds(num_clouds: int, num_points: int, seed: int) -> np.ndarray:
    """A mix of Gaussian blobs, crossing lines, circles and squares, each under a random linear map."""
    rng = np.random.default_rng(seed)
    clouds = np.empty((num_clouds, num_points, 2))
    for b in range(num_clouds):
        kind = b % 4
        if kind == 0:
            points = rng.normal(size=(num_points, 2))
        elif kind == 1:
            share = rng.uniform(0.3, 0.8)
            on_first = rng.uniform(size=num_points) < share
            points = np.where(on_first[:, None], rng.normal(size=(num_points, 1)) * [1.0, 0.2],
                              rng.normal(size=(num_points, 1)) * [-0.3, 1.0])
        elif kind == 2:
            theta = rng.uniform(0, 2 * np.pi, num_points)
            points = np.stack([np.cos(theta), np.sin(theta)], 1) + 0.05 * rng.normal(size=(num_points, 2))
        else:
            points = rng.uniform(-1, 1, size=(num_points, 2))
        clouds[b] = points @ rng.normal(size=(2, 2)) + rng.normal(size=2)
    return clouds


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_clouds", type=int, default=400)
    parser.add_argument("--num_points", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200,
                        help="M optimiser steps (real scan: 10,000; default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default: %(default)s, because on a CPU shared with other jobs a "
                             "multi-threaded batch stalls in OpenMP barriers; 0 = torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    clouds = make_clouds(args.num_clouds, args.num_points, args.seed)
    config = MixtureConfig(**{**SCAN_MIXTURE.__dict__, "steps": args.steps})
    print(f"{args.num_clouds} clouds x {args.num_points} points, M with {args.steps} steps (real scan: {FULL_STEPS}), "
          f"S with {SCAN_SEPARABILITY.angles} angles, torch threads: {torch.get_num_threads()}")

    batch_m, t_batch_m = timed(lambda: mixture_index_batched(clouds, config=config, seed=args.seed))
    batch_s, t_batch_s = timed(lambda: separability_index_batched(clouds, config=SCAN_SEPARABILITY))
    loop_m, t_loop_m = timed(
        lambda: [mixture_index(cloud, config=config, seed=args.seed + b) for b, cloud in enumerate(clouds)])
    loop_s, t_loop_s = timed(lambda: [separability_index(c, config=SCAN_SEPARABILITY) for c in clouds])

    diff_m = max(abs(float(r.m) - float(batch_m.m[b])) for b, r in enumerate(loop_m))
    diff_v = max(float((r.v - batch_m.v[b]).abs().max()) for b, r in enumerate(loop_m))
    diff_s = max(abs(float(r.s_bits) - float(batch_s.s_bits[b])) for b, r in enumerate(loop_s))
    scale = FULL_STEPS / args.steps
    full_loop, full_batch = t_loop_m * scale + t_loop_s, t_batch_m * scale + t_batch_s
    report = {
        "ratio_m": t_loop_m / t_batch_m,
        "ratio_s": t_loop_s / t_batch_s,
        "ratio_total": (t_loop_m + t_loop_s) / (t_batch_m + t_batch_s),
        "ratio_total_projected_full_steps": full_loop / full_batch,
        "max_abs_diff_m": diff_m,
        "max_abs_diff_v": diff_v,
        "max_abs_diff_s_bits": diff_s,
    }
    print(f"{'':>6} {'loop (s)':>10} {'batched (s)':>12} {'ratio':>8}")
    print(f"{'M':>6} {t_loop_m:10.2f} {t_batch_m:12.2f} {report['ratio_m']:7.1f}x")
    print(f"{'S':>6} {t_loop_s:10.2f} {t_batch_s:12.2f} {report['ratio_s']:7.1f}x")
    print(f"{'M+S':>6} {t_loop_m + t_loop_s:10.2f} {t_batch_m + t_batch_s:12.2f} {report['ratio_total']:7.1f}x")
    print(f"projected to {FULL_STEPS} M steps: loop {full_loop / 60:.1f} min, batched {full_batch / 60:.1f} min, "
          f"ratio {report['ratio_total_projected_full_steps']:.1f}x")
    print(f"max |M batched - M loop| = {diff_m:.2e}, max |v diff| = {diff_v:.2e}, "
          f"max |S batched - S loop| = {diff_s:.2e} bits")
    return report


if __name__ == "__main__":
    main()
