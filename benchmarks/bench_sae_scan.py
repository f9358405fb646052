"""The cluster reducibility scan on real-sized planes: the calibrated exact scan against the gradient engine and the
one-plane loop, with the projected time of a whole GPT-2 scan.

    python -m benchmarks.bench_sae_scan [--clusters 100 --num_points 20000 --steps 200 --null_draws 200]

Synthetic "clusters": PCA coordinates [n, 5] of random shapes (circles, crossing lines, blobs, under random
linear maps), n between 3/4 of --num_points and --num_points, so each has 4 planes; 100 clusters = 400 planes
of 15,000-20,000 points by default, the size of a GPT-2 scan's planes (at most 20,000 reconstructions each).
Three ways through the same planes, in one process:

- new scan (`gpt2_compute_reducibility.py --mixture exact --calibrate`): the exact M of every plane
  (`mixture_index_exact_many`, planes side by side on the kernel threads), S (the compiled kernel, every
  (plane, angle) pair spread over the threads), and each plane against its Gaussian null
  (`calibrate_plane`: a sample of at most 2,000 points, nulls cached per sample size and variance ratio);
- gradient engine (the original's M, the default `--mixture both` adds it): `scan_many`'s batched M at --steps
  optimiser steps, projected to the scan's 10,000 (its cost is linear in the steps);
- one-plane loop: `scan_clouds_loop`, each plane alone (one-cloud gradient M, S, exact M).

The projection to a whole GPT-2 scan (about 3,900 planes of up to 20,000 points) scales the measured seconds by
points; the exact M grows a little faster than linearly in n, so planes at the 20,000 cap cost somewhat more.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from multid.reducibility import calibration, kernels
from multid.reducibility.indices import SCAN_MIXTURE
from multid.sae.analysis import cluster_reducibility

GPT2_PLANES = 3900
GPT2_POINTS = 20000


def make_coords(clusters: int, num_points: int, seed: int = 0) -> dict[int, np.ndarray]:
    """cluster id -> [n, 5] coordinates; sizes vary between 3/4 num_points and num_points."""
    rng = np.random.default_rng(seed)
    out = {}
    for cid in range(clusters):
        n = int(rng.integers(3 * num_points // 4, num_points + 1))
        cols = []
        for plane in range(3):
            kind = (cid + plane) % 3
            if kind == 0:
                a = rng.uniform(0, 2 * np.pi, n)
                pts = np.c_[np.cos(a), np.sin(a)] + 0.05 * rng.normal(size=(n, 2))
            elif kind == 1:
                t = rng.normal(size=(n, 1))
                pts = np.where(rng.uniform(size=(n, 1)) < 0.5, t * [1.0, 0.1], t * [-0.3, 1.0])
            else:
                pts = rng.normal(size=(n, 2))
            cols.append(pts @ rng.normal(size=(2, 2)))
        out[cid] = np.concatenate(cols, axis=1)[:, :5]
    return out


def time_calibration(batched: dict, draws: int) -> dict:
    """Seconds to place every plane against its Gaussian null (S and exact M already computed), in two parts:
    drawing the nulls its planes need (once per sample size and variance ratio), then testing each plane's sample
    against them (`cluster_reducibility.calibrate_results`)."""
    calibration.mixture_null.cache_clear()
    calibration.separability_null.cache_clear()
    planes = [r.points for results in batched.values() for r in results]
    keys = {(calibration.calibration_size(len(p)), calibration.grid_ratio(calibration.variance_ratio(p))) for p in planes}
    start = time.perf_counter()
    for size, ratio in keys:
        calibration.mixture_null(size, 0.1, draws, 0)
        calibration.separability_null(size, ratio, draws, 0)
    null_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for results in batched.values():
        cluster_reducibility.calibrate_results(results, draws)
    nulls = calibration.separability_null.cache_info().currsize + calibration.mixture_null.cache_info().currsize
    return {"seconds": null_seconds + time.perf_counter() - start, "nulls": nulls, "null_seconds": null_seconds}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=100, help="clusters of 5 PCs = 4 planes each (default: 100)")
    parser.add_argument("--num_points", type=int, default=GPT2_POINTS, help="largest plane (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=200, help="gradient M steps measured (default: 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch / kernel threads (default: torch's)")
    parser.add_argument("--null_draws", type=int, default=200, help="Gaussian draws per null (default: 200)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kernels.warm_up()
    coords = make_coords(args.clusters, args.num_points)
    planes = [(cid, p, cloud) for cid, x in coords.items() for p, cloud in cluster_reducibility.plane_clouds(x)]
    points = sum(len(c) for _, _, c in planes)
    print(f"{len(planes)} planes, {points} points in all ({3 * args.num_points // 4}..{args.num_points} per plane), "
          f"threads {kernels.threads()}, gradient M measured at {args.steps} steps")

    t_b: dict = {}
    batched = cluster_reducibility.scan_many(coords, steps=args.steps, timings=t_b)
    cal = time_calibration(batched, args.null_draws)
    t_l: dict = {}
    loop = cluster_reducibility.scan_clouds_loop([c for _, _, c in planes], [p for _, p, _ in planes],
                                                 steps=args.steps, timings=t_l)
    got = {(cid, r.plane): (r.m, r.s_bits, r.m_exact) for cid, results in batched.items() for r in results}
    same = all(got[(cid, r.plane)] == (r.m, r.s_bits, r.m_exact) for (cid, _, _), r in zip(planes, loop))
    scale = SCAN_MIXTURE.steps / args.steps
    new = t_b["mixture_exact"] + t_b["separability"] + cal["seconds"]
    gradient = t_b["mixture"] * scale + t_b["separability"]
    looped = t_l["mixture"] * scale + t_l["separability"] + t_l["mixture_exact"]
    print(f"\nwhere the new scan's {new:.1f} s go: exact M {t_b['mixture_exact']:.1f} s, S {t_b['separability']:.1f} s, "
          f"calibration {cal['seconds']:.1f} s ({cal['nulls']} nulls of {args.null_draws} draws: "
          f"{cal['null_seconds']:.1f} s; the rest is each plane's 2,000-point sample)")
    print(f"{'':>44} {'seconds':>9} {'vs new scan':>12}")
    rows = (("new scan (exact M + S + null)", new),
            (f"gradient engine (M at {SCAN_MIXTURE.steps} steps + S)", gradient),
            ("one-plane loop (gradient M + S + exact M)", looped))
    for name, seconds in rows:
        print(f"{name:>44} {seconds:9.1f} {seconds / new:11.2f}x")
    print(f"identical M, S and exact M in the batched scan and the loop: {same}")
    per_point = GPT2_PLANES * GPT2_POINTS / points
    # the nulls are drawn once per (sample size, variance ratio), not per plane: planes of 2,000 points or more
    # all use the 2,000-point nulls, so a whole scan draws about as many as these planes did
    whole = {name: seconds * per_point for name, seconds in rows}
    whole[rows[0][0]] = (new - cal["null_seconds"]) * per_point + cal["null_seconds"]
    print(f"projected whole GPT-2 scan ({GPT2_PLANES} planes x {GPT2_POINTS} points; linear in points, the new "
          f"scan's nulls once): " + ", ".join(f"{name.split(' (')[0]} ~{s / 60:.1f} min" for name, s in whole.items()))
    return {"planes": len(planes), "points": points, "new_s": new, "gradient_s": gradient, "loop_s": looped,
            "projected_new_min": whole[rows[0][0]] / 60, "identical": same, "timings": {"batched": t_b, "loop": t_l},
            "calibration": cal}


if __name__ == "__main__":
    main()
