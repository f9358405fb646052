"""The cluster reducibility scan: 400 PCA planes through the batched engine vs one plane at a time.

    python -m benchmarks.bench_sae_scan [--clusters 100 --num_points 2000 --steps 200]

Synthetic "clusters": PCA coordinates [n, 5] of random shapes (circles, crossing lines, blobs, under random
linear maps), so each has 4 planes; 100 clusters = 400 planes. Both sides compute exactly the same numbers
(M with the scan variant and per-plane seeds, S with 10 x 10 range histograms over 100 angles; the tests
check equality):

- batched: `multid.sae.analysis.cluster_reducibility.scan_many` (all planes padded into stacks of similar size, one engine call each);
- loop: `multid.sae.analysis.cluster_reducibility.scan_clouds_loop`, one one-cloud engine call per plane (what a per-cluster script
  does, without the original's autograd overhead; benchmarks/bench_reducibility.py compares the engine with
  the original's own loop).

M runs --steps optimiser steps instead of the scan's 10,000 to keep this short; its cost is linear in the
steps, so the printout also projects both sides to 10,000 steps, and to a whole GPT-2 scan (about 3,900
planes of up to 20,000 points).

Then the calibrated scan's extra parts, timed on the same planes: the exact M (both sides compute it), and
the Gaussian null of every plane (`multid.reducibility.calibrate_plane` with --null_draws; the nulls are
cached per plane size and shape, so the first planes of a size pay for the rest). Planes of one size share
their M null; pass --distinct_sizes to draw fewer sizes, as a capped scan has (most clusters at the sample
limit).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from multid.reducibility.indices import SCAN_MIXTURE
from multid.sae.analysis import cluster_reducibility


def make_coords(clusters: int, num_points: int, seed: int = 0) -> dict[int, np.ndarray]:
    """cluster id -> [n, 5] coordinates; sizes vary between num_points / 2 and num_points."""
    rng = np.random.default_rng(seed)
    out = {}
    for cid in range(clusters):
        n = int(rng.integers(num_points // 2, num_points + 1))
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=100, help="clusters of 5 PCs = 4 planes each")
    parser.add_argument("--num_points", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--null_draws", type=int, default=200, help="Gaussian draws per null (default: 200)")
    parser.add_argument("--distinct_sizes", type=int, default=None,
                        help="round the cluster sizes to this many distinct values (default: all distinct)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    coords = make_coords(args.clusters, args.num_points)
    if args.distinct_sizes:
        sizes = np.linspace(args.num_points // 2, args.num_points, args.distinct_sizes).astype(int)
        coords = {c: x[:sizes[sizes <= len(x)].max()] for c, x in coords.items()}  # sizes[0] = the smallest n
    planes = [(cid, p, cloud) for cid, x in coords.items() for p, cloud in cluster_reducibility.plane_clouds(x)]
    points = sum(len(c) for _, _, c in planes)
    print(f"{len(planes)} planes, {points} points in all ({args.num_points // 2}..{args.num_points} per plane), "
          f"M with {args.steps} steps, torch threads {torch.get_num_threads()}")

    t_b: dict = {}
    batched = cluster_reducibility.scan_many(coords, steps=args.steps, timings=t_b)
    t_l: dict = {}
    loop = cluster_reducibility.scan_clouds_loop([c for _, _, c in planes], [p for _, p, _ in planes], steps=args.steps, timings=t_l)
    got = {(cid, r.plane): (r.m, r.s_bits) for cid, results in batched.items() for r in results}
    same = all(got[(cid, r.plane)] == (r.m, r.s_bits) for (cid, _, _), r in zip(planes, loop))
    full = SCAN_MIXTURE.steps
    scale = full / args.steps
    print(f"{'':>30} {'loop (s)':>10} {'batched (s)':>12} {'ratio':>8}")
    for name, key in (("M, " + str(args.steps) + " steps", "mixture"), ("S", "separability")):
        print(f"{name:>30} {t_l[key]:10.2f} {t_b[key]:12.2f} {t_l[key] / t_b[key]:7.2f}x")
    t_loop = t_l["mixture"] + t_l["separability"]
    t_batched = t_b["mixture"] + t_b["separability"]  # the exact M is timed apart, below
    print(f"{'M + S, measured':>30} {t_loop:10.2f} {t_batched:12.2f} {t_loop / t_batched:7.2f}x")
    proj_loop = t_l["mixture"] * scale + t_l["separability"]
    proj_batched = t_b["mixture"] * scale + t_b["separability"]
    print(f"{'M + S, projected ' + str(full) + ' steps':>30} {proj_loop:10.1f} {proj_batched:12.1f} "
          f"{proj_loop / proj_batched:7.2f}x")
    print(f"identical M and S on every plane: {same}")
    gpt2_points = 3900 * 20000
    whole = (t_b["mixture"] * scale + t_b["separability"]) * gpt2_points / points
    print(f"projected whole GPT-2 scan (3,900 planes x 20,000 points, {full} steps), batched, linear in points: "
          f"~{whole / 3600:.1f} h on this machine")
    calibration = time_calibration(batched, args.null_draws)
    exact = t_b["mixture_exact"]
    print(f"calibrated scan's parts on these {len(planes)} planes: exact M {exact:.1f} s, S {t_b['separability']:.1f} s, "
          f"Gaussian nulls ({args.null_draws} draws, {calibration['nulls']} distinct (n, ratio)) "
          f"{calibration['seconds']:.1f} s; the gradient M at {full} steps would add {t_b['mixture'] * scale:.1f} s")
    new_scan = exact + t_b["separability"] + calibration["seconds"]
    print(f"exact M + S + null vs the gradient engine's M + S at {full} steps: {new_scan:.1f} s vs {proj_batched:.1f} s "
          f"({proj_batched / new_scan:.2f}x)")
    return {"planes": len(planes), "loop_s": t_loop, "batched_s": t_batched, "ratio": t_loop / t_batched, "timings": {"loop": t_l, "batched": t_b},
            "projected_ratio": proj_loop / proj_batched, "identical": same}


def time_calibration(batched: dict, draws: int) -> dict:
    """Seconds to place every plane against its Gaussian null (S and exact M already computed), and how many
    distinct nulls were drawn."""
    import time

    from multid.reducibility import calibration

    calibration.mixture_null.cache_clear()
    calibration.separability_null.cache_clear()
    start = time.perf_counter()
    for results in batched.values():
        for r in results:
            calibration.calibrate_plane(r.points, draws=draws, s_bits=r.s_bits, m_exact=r.m_exact)
    nulls = calibration.separability_null.cache_info().currsize + calibration.mixture_null.cache_info().currsize
    return {"seconds": time.perf_counter() - start, "nulls": nulls}


if __name__ == "__main__":
    main()
