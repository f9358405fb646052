"""Clustering SAE decoder directions: time and peak memory of the graph and spectral methods.

    python -m benchmarks.bench_sae_clustering [--graph_features 65536 --graph_dim 4096] [--skip_spectral]

Every measurement runs in a fresh child process (spawn) on a random unit-row float32 decoder (seeded), and
the child reports its own peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which includes the Python
interpreter and imported libraries, about 0.3 GB).

- graph, full size (the issue's 65,536 x 4,096 = a Mistral-7B SAE): ours (FAISS exact top-k in query blocks,
  sparse components) for time and peak RSS; the original's dense approach needs the F x F float32 matrix
  alone (17.2 GB), so it is run, like for like with ours, at --graph_small features and the ratio is printed.
- spectral (GPT-2 small: 24,576 x 768, 1,000 clusters): scikit-learn's ARPACK shift-invert on a dense
  affinity costs O(F^3) time and O(F^2) memory, too long to run at full size here. Both ours (float32
  affinity built in place) and the original (float64 affinity from the full S, the same SpectralClustering)
  are measured at --spectral_sizes with clusters scaled in proportion (F / 24.576), and time and memory are
  extrapolated to full size with the exponent fitted between the two sizes (memory with its F^2 part).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import resource
import time

import numpy as np

FULL_SPECTRAL = (24576, 768, 1000)


def random_decoder(features: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit rows, float32, generated in blocks (no float64 copy of the whole matrix)."""
    rng = np.random.default_rng(seed)
    W = np.empty((features, dim), dtype=np.float32)
    for start in range(0, features, 8192):
        block = rng.standard_normal((min(8192, features - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        W[start:start + len(block)] = block
    return W


def dense_graph_clusters(W: np.ndarray, top_k: int, cutoff: float) -> int:
    """The original's graph method: the full S = W W^T, top-k per row (diagonal kept), components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    S = W @ W.T
    top = np.argpartition(-S, top_k - 1, axis=1)[:, :top_k]
    sims = np.take_along_axis(S, top, 1)
    rows = np.repeat(np.arange(len(W)), top_k)
    keep = sims.reshape(-1) > cutoff
    graph = coo_matrix((np.ones(int(keep.sum())), (rows[keep], top.reshape(-1)[keep])), shape=(len(W), len(W)))
    return int(connected_components(graph, directed=False)[0])


def original_spectral(W: np.ndarray, n_clusters: int, seed: int) -> int:
    """The original's spectral method: float64 S, clamp, 1 - arccos / pi, SpectralClustering (seeded here)."""
    from sklearn.cluster import SpectralClustering

    S = W.astype(np.float64) @ W.astype(np.float64).T
    A = 1 - np.arccos(np.clip(S, -1, 1)) / np.pi
    del S
    labels = SpectralClustering(n_clusters=n_clusters, affinity="precomputed", random_state=seed).fit_predict(A)
    return int(labels.max()) + 1


def _child(queue, kind: str, features: int, dim: int, options: dict) -> None:
    import faiss  # noqa: F401  (libraries imported before the clock starts)
    import scipy.sparse.csgraph  # noqa: F401
    import sklearn.cluster  # noqa: F401

    W = random_decoder(features, dim)
    start = time.perf_counter()
    if kind == "graph":
        from multid.sae.analysis.clustering_methods import graph_clusters

        count = len(graph_clusters(W, **options))
    elif kind == "graph_part":
        from multid.sae.analysis.clustering_methods import top_k_neighbours

        count = len(top_k_neighbours(W, options["top_k"], num_queries=options["num_queries"])[0])
    elif kind == "dense_graph":
        count = dense_graph_clusters(W, options["top_k"], options["sim_cutoff"])
    elif kind == "spectral":
        from multid.sae.analysis.clustering_methods import spectral_clusters

        count = len(spectral_clusters(W, **options))
    else:
        count = original_spectral(W, options["n_clusters"], options["seed"])
    seconds = time.perf_counter() - start
    queue.put({"seconds": seconds, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               "clusters": count})


def measure(kind: str, features: int, dim: int, **options) -> dict:
    """Run one clustering in a fresh spawned process; its time (clustering only) and peak RSS."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, kind, features, dim, options))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def fit_exponent(small: tuple[int, float], large: tuple[int, float]) -> float:
    return math.log(large[1] / small[1]) / math.log(large[0] / small[0])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graph_features", type=int, default=65536)
    parser.add_argument("--graph_dim", type=int, default=4096)
    parser.add_argument("--graph_queries", type=int, default=None,
                        help="time only the first N query rows of the full-size search and project linearly "
                             "(for a loaded machine; default: the whole clustering)")
    parser.add_argument("--graph_small", type=int, default=8192, help="size of the like-for-like dense comparison")
    parser.add_argument("--top_k", type=int, default=2)
    parser.add_argument("--sim_cutoff", type=float, default=0.5)
    parser.add_argument("--spectral_sizes", type=int, nargs=2, default=[4096, 8192])
    parser.add_argument("--skip_graph", action="store_true")
    parser.add_argument("--skip_spectral", action="store_true")
    parser.add_argument("--skip_original", action="store_true", help="measure only ours")
    args = parser.parse_args(argv)
    report: dict = {}
    graph_opts = {"top_k": args.top_k, "sim_cutoff": args.sim_cutoff}
    if not args.skip_graph:
        dense_gb = args.graph_features**2 * 4 / 2**30
        if args.graph_queries:
            part = measure("graph_part", args.graph_features, args.graph_dim, top_k=args.top_k,
                           num_queries=args.graph_queries)
            report["graph_part"] = part
            projected = part["seconds"] * args.graph_features / args.graph_queries
            print(f"graph, {args.graph_features} x {args.graph_dim} float32: the full FAISS index searched for the "
                  f"first {args.graph_queries} rows: {part['seconds']:.1f} s, peak RSS {part['peak_gb']:.2f} GB (the "
                  f"full run has the same working set); all {args.graph_features} rows, linear in rows: "
                  f"~{projected / 60:.1f} min; the dense F x F float32 matrix alone would be {dense_gb:.1f} GB")
        else:
            full = measure("graph", args.graph_features, args.graph_dim, **graph_opts)
            report["graph_full"] = full
            print(f"graph, {args.graph_features} x {args.graph_dim} float32, top_k {args.top_k}, cutoff "
                  f"{args.sim_cutoff}: {full['seconds']:.1f} s, peak RSS {full['peak_gb']:.2f} GB "
                  f"({full['clusters']} clusters); the dense F x F float32 matrix alone would be {dense_gb:.1f} GB")
        ours = measure("graph", args.graph_small, args.graph_dim, **graph_opts)
        report["graph_small"] = ours
        if not args.skip_original:
            dense = measure("dense_graph", args.graph_small, args.graph_dim, **graph_opts)
            report["graph_small_dense"] = dense
            print(f"graph, {args.graph_small} x {args.graph_dim}: ours {ours['seconds']:.2f} s / {ours['peak_gb']:.2f} GB,"
                  f" dense original {dense['seconds']:.2f} s / {dense['peak_gb']:.2f} GB: time ratio "
                  f"{dense['seconds'] / ours['seconds']:.2f}x, memory ratio {dense['peak_gb'] / ours['peak_gb']:.2f}x"
                  f" (same clusters: {dense['clusters'] == ours['clusters']})")
    if not args.skip_spectral:
        full_f, full_d, full_k = FULL_SPECTRAL
        rows = {}
        for kind in ("spectral",) + (() if args.skip_original else ("original_spectral",)):
            points = []
            for features in args.spectral_sizes:
                k = max(2, round(full_k * features / full_f))
                result = measure(kind, features, full_d, n_clusters=k, seed=0)
                points.append((features, result))
                print(f"{kind:>18} {features} x {full_d}, {k} clusters: {result['seconds']:.1f} s, "
                      f"peak RSS {result['peak_gb']:.2f} GB")
            (f1, r1), (f2, r2) = points
            t_exp = fit_exponent((f1, r1["seconds"]), (f2, r2["seconds"]))
            # memory: a fixed part plus c * F^2; solve for c from the two sizes
            c = (r2["peak_gb"] - r1["peak_gb"]) / (f2**2 - f1**2)
            mem_full = r2["peak_gb"] + c * (full_f**2 - f2**2)
            time_full = r2["seconds"] * (full_f / f2) ** t_exp
            rows[kind] = (time_full, mem_full, t_exp)
            report[kind] = {"points": [(f, r) for f, r in points], "time_exponent": t_exp,
                            "extrapolated_seconds": time_full, "extrapolated_peak_gb": mem_full}
            print(f"{kind:>18} extrapolated to {full_f} x {full_d}, {full_k} clusters: ~{time_full / 60:.1f} min "
                  f"(time ~ F^{t_exp:.2f}), ~{mem_full:.1f} GB peak")
        if "original_spectral" in rows:
            (t_ours, m_ours, _), (t_orig, m_orig, _) = rows["spectral"], rows["original_spectral"]
            print(f"spectral ratio original / ours (extrapolated): time {t_orig / t_ours:.2f}x, "
                  f"memory {m_orig / m_ours:.2f}x")
    return report


if __name__ == "__main__":
    main()
