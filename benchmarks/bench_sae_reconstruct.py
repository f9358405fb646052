"""Cluster reconstructions: the vectorised segment sum vs a per-triple Python loop (the original's walk).

    python -m benchmarks.bench_sae_reconstruct [--triples 10000000] [--loop_prefix 500000] [--no_parquet]

Synthetic occurrence triples shaped like GPT-2 small layer 7 (F = 24,576 features, d = 768, about 54 active
features per token, sorted by token then feature); a 16-feature cluster fires on about 5 % of the tokens.

- vectorised: `multid.sae.analysis.reconstructions.reconstruct_from_triples` on all triples (measured), with its peak
  extra memory (tracemalloc: every numpy / scipy buffer it allocates, inputs excluded);
- per-triple loop (the baseline): a walk like the original's, one Python step per stored triple over the
  numpy arrays, accumulating value * decoder row per token. It is timed on the first --loop_prefix triples
  and extrapolated linearly to all of them (its cost is one iteration per triple, whatever the triple); the
  printout says so. Both give the same points on the prefix (checked);
- from Parquet (unless --no_parquet): the same triples written as an occurrence dataset, then
  `cluster_reconstructions(open_occurrences(run), ...)`, i.e. the filtered read plus the segment sum; compared
  end to end with the original's per-call cost: np.load of its compressed npz plus the (extrapolated) loop.
Peak RSS of the whole process is printed at the end.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from multid.sae.analysis.reconstructions import reconstruct_from_triples

F, D, MEAN_L0 = 24_576, 768, 54
CLUSTER = list(range(1000, 16_000, 1000))[:15] + [20_000]


def synthetic_triples(num_triples: int, seed: int = 0):
    """(token, feature, value) sorted by (token, feature), unique pairs; cluster features on ~5 % of tokens."""
    rng = np.random.default_rng(seed)
    n_tok = num_triples // MEAN_L0 + 1
    counts = rng.poisson(MEAN_L0, size=n_tok)
    counts = np.maximum(counts, 1)
    token = np.repeat(np.arange(n_tok, dtype=np.int64), counts)[:num_triples]
    feature = rng.integers(0, F, size=token.size).astype(np.int32)
    firing = rng.random(n_tok) < 0.05
    first = np.r_[0, np.cumsum(counts)[:-1]]
    hit = first[firing]
    hit = hit[hit < token.size]
    feature[hit] = rng.choice(CLUSTER, size=hit.size).astype(np.int32)
    order = np.lexsort((feature, token))
    token, feature = token[order], feature[order]
    keep = np.r_[True, (token[1:] != token[:-1]) | (feature[1:] != feature[:-1])]
    token, feature = token[keep], feature[keep]
    value = rng.exponential(size=token.size).astype(np.float32)
    return token, feature, value


def per_triple_loop(token, feature, value, cluster, W):
    """The original's walk: one Python iteration per stored triple (its numpy arrays iterated directly).

    As the original, every triple takes part in the token bookkeeping (a point is closed when the walk moves
    to the next token with any active feature), and only then is cluster membership tested; unlike the
    original it records the firing token's own index, so its points can be checked against ours.
    """
    members = set(int(i) for i in cluster)
    points, tokens = [], []
    current, acc, active = None, np.zeros(W.shape[1], np.float32), False
    for v, f, t in zip(value, feature, token):
        if t != current:
            if active:
                points.append(acc)
                tokens.append(current)
                acc = np.zeros(W.shape[1], np.float32)
            current, active = t, False
        if f in members and v > 0.0:
            acc += v * W[f]
            active = True
    if active:
        points.append(acc)
        tokens.append(current)
    return np.array(points, np.float32).reshape(-1, W.shape[1]), np.array(tokens, np.int64)


def measure_vectorised(token, feature, value, W, repeats: int = 2):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        rec = reconstruct_from_triples(token, feature, value, CLUSTER, W)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    reconstruct_from_triples(token, feature, value, CLUSTER, W)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return rec, best, peak


def measure_parquet(token, feature, value, W, n_ctx_len: int = 256):
    from multid.sae.data.occurrence_store import open_occurrences, write_occurrence_run
    from multid.sae.analysis.reconstructions import cluster_reconstructions

    n_ctx = int(token.max()) // n_ctx_len + 1
    ids = np.zeros((n_ctx, n_ctx_len), np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        start = time.perf_counter()
        write_occurrence_run(run, ids, token, feature, value, contexts_per_part=4096)
        wrote = time.perf_counter() - start
        occ = open_occurrences(run)
        start = time.perf_counter()
        rec = cluster_reconstructions(occ, CLUSTER, W)
        read = time.perf_counter() - start
    return rec, wrote, read


def measure_npz_load(token, feature, value) -> float:
    """The original's storage: savez_compressed of float64 values, int32 features and token indices; the time
    np.load takes to give back the three arrays (each call of the original walk starts with this)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sae_activations.npz"
        np.savez_compressed(path, sparse_sae_values=value.astype(np.float64), sparse_sae_indices=feature,
                            all_token_indices=token.astype(np.int32))
        start = time.perf_counter()
        with np.load(path) as data:
            arrays = [data[key] for key in ("sparse_sae_values", "sparse_sae_indices", "all_token_indices")]
        seconds = time.perf_counter() - start
        del arrays
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--triples", type=int, default=10_000_000)
    parser.add_argument("--loop_prefix", type=int, default=500_000, help="triples the loop is timed on")
    parser.add_argument("--no_parquet", action="store_true", help="skip the Parquet round trip")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both sides (best of each)")
    args = parser.parse_args(argv)

    W = np.random.default_rng(1).normal(size=(F, D)).astype(np.float32)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    start = time.perf_counter()
    token, feature, value = synthetic_triples(args.triples)
    print(f"{token.size:,} triples over {int(token[-1]) + 1:,} tokens (made in {time.perf_counter() - start:.1f} s); "
          f"cluster of {len(CLUSTER)} features, d = {D}")

    n = min(args.loop_prefix, token.size)
    # alternate the two sides and keep each one's best, so a change in machine load hits both alike
    fast_s, loop_prefix_s = float("inf"), float("inf")
    for _ in range(args.rounds):
        rec, seconds, peak = measure_vectorised(token, feature, value, W, repeats=2)
        fast_s = min(fast_s, seconds)
        start = time.perf_counter()
        loop_points, loop_tokens = per_triple_loop(token[:n], feature[:n], value[:n], CLUSTER, W)
        loop_prefix_s = min(loop_prefix_s, time.perf_counter() - start)
    print(f"vectorised: {fast_s:.3f} s (best of {2 * args.rounds}) for all {token.size:,} triples ({len(rec):,} points), "
          f"peak extra memory {peak / 2**20:.0f} MiB (tracemalloc); {fast_s / token.size * 1e6:.4f} s per million")

    loop_total_s = loop_prefix_s * token.size / n
    prefix = reconstruct_from_triples(token[:n], feature[:n], value[:n], CLUSTER, W)
    np.testing.assert_array_equal(prefix.tokens, loop_tokens)
    np.testing.assert_allclose(prefix.points, loop_points, rtol=1e-5, atol=1e-5)
    print(f"per-triple loop: {loop_prefix_s:.2f} s measured (best of {args.rounds}) on the first {n:,} triples "
          f"({loop_prefix_s / n * 1e6:.3f} s per million); extrapolated linearly to {token.size:,}: {loop_total_s:.1f} s")
    ratio = loop_total_s / fast_s
    print(f"ratio (loop, extrapolated / vectorised, measured): {ratio:.0f}x (target >= 100x)")

    result = {"triples": int(token.size), "points": len(rec), "vectorised_s": fast_s,
              "vectorised_peak_extra_mib": peak / 2**20, "loop_prefix_triples": n, "loop_prefix_s": loop_prefix_s,
              "loop_extrapolated_s": loop_total_s, "ratio": ratio}
    if not args.no_parquet:
        from_parquet, wrote, read = measure_parquet(token, feature, value, W)
        np.testing.assert_array_equal(from_parquet.tokens, rec.tokens)
        np.testing.assert_array_equal(from_parquet.points, rec.points)
        print(f"from Parquet: filtered read + reconstruction {read:.2f} s (writing the dataset took {wrote:.1f} s); "
              f"same points as in memory")
        npz_s = measure_npz_load(token, feature, value)
        original = npz_s + loop_total_s
        print(f"from disk, end to end: original (np.load of its compressed npz {npz_s:.2f} s + loop {loop_total_s:.1f} s)"
              f" = {original:.1f} s vs ours from Parquet {read:.2f} s: {original / read:.0f}x")
        result.update(parquet_write_s=wrote, parquet_read_reconstruct_s=read, npz_load_s=npz_s,
                      end_to_end_ratio=original / read)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {rss:.2f} GB (inputs: {(token.nbytes + feature.nbytes + value.nbytes) / 2**20:.0f} "
          f"MiB of triples, {W.nbytes / 2**20:.0f} MiB decoder)")
    result["peak_rss_gb"] = rss
    return result


if __name__ == "__main__":
    main()
