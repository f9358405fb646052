"""Clustering SAE decoder directions (paper section 4.1): graph components of nearest neighbours, or spectral.

Both methods work on the cosine similarity S_ij = d_i . d_j of decoder rows. The paper's SAEs have unit-norm
decoder rows, so S is the cosine; like the paper's code we never renormalise (pass normalised rows if yours
are not).

- `graph_clusters` (method "graph"): for each row i its top-k entries of row i of S, kept when S_ij > cutoff,
  made symmetric, then connected components. The exact top-k comes from FAISS `IndexFlatIP` searched in query
  blocks, so the F x F matrix never exists (a 65,536 x 4,096 decoder needs about 2 GB). Two diagonal
  conventions of the original code: "kept" (paper era: S_ii = |d_i|^2 = 1 is one of the top-k, so k = 2 means
  one real neighbour; the paper's Mistral file is k = 2, cutoff 0.5, kept) and "zeroed" (later code: S_ii = 0,
  so the self entry never counts as a neighbour; with a negative cutoff it could become a self-loop, which
  does not change any component).
- `spectral_clusters` (method "spectral"): angular affinity A = 1 - arccos(clip(S, -1, 1)) / pi and
  scikit-learn `SpectralClustering(n_clusters, affinity="precomputed", random_state=seed)`. Faithful defaults
  (ARPACK eigensolver, k-means label assignment, diagonal kept) with three documented changes: the affinity is
  float32, built in place in row blocks, and goes through SpectralClustering's own public steps
  (`spectral_labels`) without the float64 copy `fit` makes (upstream: float64 S, A and that copy; here one
  float32 F x F matrix plus the eigensolver's working copies; same clusters up to float32 rounding), the run is
  seeded (upstream unseeded), and `eigen_solver` / `assign_labels` can be chosen.

Output order (both methods, deterministic): members ascending within a cluster, clusters ordered by their
smallest member. (Upstream listed spectral clusters by k-means label and graph components by DFS visit
order; neither order carries meaning.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from multid.errors import UserError

DIAGONALS = ("kept", "zeroed")
METHODS = ("graph", "spectral")
QUERY_BLOCK = 4096


def check_decoder(W_dec: np.ndarray, d_model: int | None = None, source: str = "decoder") -> np.ndarray:
    """The decoder as a C-contiguous float32 [F, d] array; UserError for the wrong shape or non-finite values."""
    W = np.asarray(W_dec)
    if W.ndim != 2:
        raise UserError(f"{source} must be a 2-D array [features, d_model], got shape {tuple(W.shape)}")
    if W.shape[0] < 1 or W.shape[1] < 1:
        raise UserError(f"{source} is empty: shape {tuple(W.shape)}")
    if d_model is not None and W.shape[1] != d_model:
        raise UserError(
            f"{source} has rows of width {W.shape[1]} but the model's residual width is {d_model}; "
            f"pass a decoder [features, {d_model}] (W_dec, not W_enc)"
        )
    if not np.issubdtype(W.dtype, np.floating):
        raise UserError(f"{source} must hold floating-point numbers, got dtype {W.dtype}")
    W = np.ascontiguousarray(W, dtype=np.float32)
    if not np.isfinite(W).all():
        raise UserError(f"{source} contains NaN or infinite values")
    return W


RESIDUAL_WIDTH = {"gpt2": 768, "mistral": 4096, "llama": 4096, "smollm2": 576, "tiny": 64}


def load_decoder_source(model: str, layer: int | None, *, decoder_file=None, sae_path=None,
                        check_width: bool = True) -> tuple[np.ndarray, str, str]:
    """(W_dec float32 [F, d], short tag for folder names, description) from --decoder_file or the SAE.

    The SAE comes from `multid.sae.data.sae_loading.load_sae` (SAELens release, the paper's .pt, or --sae_path).
    With check_width, a decoder whose rows do not have the model's residual width is a one-line error.
    """
    from multid.sae.data.sae_loading import load_decoder_file, load_sae

    if decoder_file:
        W, tag, source = load_decoder_file(decoder_file), f"decoder-{Path(decoder_file).stem}", f"decoder {decoder_file}"
    else:
        sae = load_sae(model, layer, sae_path=sae_path, device="cpu")
        W, tag, source = sae.decoder_numpy(), sae.tag, f"{model} layer {layer} SAE decoder ({sae.tag})"
    return check_decoder(W, RESIDUAL_WIDTH.get(model) if check_width else None, source), tag, source


def order_clusters(clusters: Sequence[Sequence[int]]) -> list[list[int]]:
    """Members ascending, clusters ordered by smallest member (empty clusters dropped)."""
    sorted_clusters = [sorted(int(m) for m in c) for c in clusters if len(c)]
    return sorted(sorted_clusters, key=lambda c: c[0])


# ----------------------------------------------------------------------------------------------------------
# graph method


def top_k_neighbours(W: np.ndarray, top_k: int, diagonal: str = "kept", block: int = QUERY_BLOCK,
                     progress: bool = False, num_queries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For every row i the k largest entries of row i of S = W W^T under the diagonal convention.

    Returns (similarities float32 [F, k'], neighbour ids int64 [F, k']), k' = min(k, number of candidates).
    "kept": the row includes S_ii (for unit rows the row itself comes first). "zeroed": S_ii is 0, so row i
    itself is a candidate only through that 0; it is searched with k + 1 and its own id is removed (a 0 entry
    could only matter for a negative cutoff, where it would add a self-loop that changes no component).
    num_queries: answer only the first rows (benchmarks time a part of a large search; default all rows).
    """
    import faiss

    if diagonal not in DIAGONALS:
        raise UserError(f"unknown --diagonal {diagonal!r}; allowed: {', '.join(DIAGONALS)}")
    if top_k < 1:
        raise UserError(f"--top_k must be at least 1, got {top_k}")
    num, dim = W.shape
    index = faiss.IndexFlatIP(dim)
    index.add(W)
    extra = 1 if diagonal == "zeroed" else 0
    search_k = min(top_k + extra, num)
    keep = min(top_k, num - extra) if diagonal == "zeroed" else search_k
    queries = num if num_queries is None else min(num, int(num_queries))
    sims = np.empty((queries, keep), dtype=np.float32)
    ids = np.empty((queries, keep), dtype=np.int64)
    starts = range(0, queries, block)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="nearest neighbours", unit="block")
    for start in starts:
        stop = min(start + block, queries)
        block_sims, block_ids = index.search(W[start:stop], search_k)
        if diagonal == "zeroed":
            block_sims, block_ids = drop_self(block_sims, block_ids, np.arange(start, stop), keep)
        sims[start:stop] = block_sims[:, :keep]
        ids[start:stop] = block_ids[:, :keep]
    return sims, ids


def drop_self(sims: np.ndarray, ids: np.ndarray, rows: np.ndarray, keep: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id from its result list (stable), keeping the first `keep` of the rest."""
    is_self = ids == rows[:, None]
    # a stable sort on the flag moves the self entry (if present) to the end, other entries keep their order
    order = np.argsort(is_self, axis=1, kind="stable")[:, :keep]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(ids, order, 1)


def components(num_nodes: int, rows: np.ndarray, cols: np.ndarray) -> list[list[int]]:
    """Connected components of the undirected graph with the given edges (scipy.sparse.csgraph)."""
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(num_nodes, num_nodes)).tocsr()
    count, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")  # members ascending inside each label
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    return order_clusters([order[bounds[i]:bounds[i + 1]].tolist() for i in range(count)])


def graph_clusters(
    W_dec: np.ndarray,
    top_k: int = 2,
    sim_cutoff: float = 0.5,
    diagonal: str = "kept",
    drop_singletons: bool = False,
    max_size: int | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """Connected components of the top-k-above-cutoff neighbour graph of decoder rows (see module docstring).

    Defaults are the paper-era settings of the Mistral file (k = 2 with the diagonal kept, cutoff 0.5).
    drop_singletons: leave out components of one feature; max_size: leave out components of more than
    max_size features (upstream's optional prune dropped sizes >= 1000, i.e. max_size = 999).
    """
    W = check_decoder(W_dec)
    sims, ids = top_k_neighbours(W, top_k, diagonal, progress=progress)
    rows = np.repeat(np.arange(W.shape[0], dtype=np.int64), ids.shape[1])
    sims, ids = sims.reshape(-1), ids.reshape(-1)
    edge = (sims > sim_cutoff) & (ids >= 0)  # FAISS pads missing results with id -1
    clusters = components(W.shape[0], rows[edge], ids[edge])
    if drop_singletons:
        clusters = [c for c in clusters if len(c) > 1]
    if max_size is not None:
        clusters = [c for c in clusters if len(c) <= max_size]
    return clusters


def reference_graph_clusters(W_dec: np.ndarray, top_k: int, sim_cutoff: float, diagonal: str = "kept"
                             ) -> list[list[int]]:
    """Slow dense reference (tests): the full S, per-row argsort top-k, union-find. Small inputs only."""
    W = np.asarray(W_dec, dtype=np.float32)
    S = W @ W.T
    if diagonal == "zeroed":
        np.fill_diagonal(S, 0.0)
    parent = list(range(len(W)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i in range(len(W)):
        for j in np.argsort(-S[i], kind="stable")[:top_k]:
            if S[i, j] > sim_cutoff:
                parent[find(i)] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(W)):
        groups.setdefault(find(i), []).append(i)
    return order_clusters(groups.values())


# ----------------------------------------------------------------------------------------------------------
# spectral method


def angular_affinity(W_dec: np.ndarray, diagonal: str = "kept", block: int = QUERY_BLOCK) -> np.ndarray:
    """A = 1 - arccos(clip(S, -1, 1)) / pi as one float32 F x F matrix, built in row blocks (no F x F temporaries).

    diagonal "kept": S_ii as computed (1 for unit rows, so A_ii = 1, paper era); "zeroed": S_ii = 0, A_ii = 0.5.
    """
    if diagonal not in DIAGONALS:
        raise UserError(f"unknown --diagonal {diagonal!r}; allowed: {', '.join(DIAGONALS)}")
    W = check_decoder(W_dec)
    num = W.shape[0]
    affinity = np.empty((num, num), dtype=np.float32)
    for start in range(0, num, block):
        stop = min(start + block, num)
        rows = affinity[start:stop]
        np.matmul(W[start:stop], W.T, out=rows)
        if diagonal == "zeroed":
            rows[np.arange(stop - start), np.arange(start, stop)] = 0.0
        np.clip(rows, -1.0, 1.0, out=rows)
        np.arccos(rows, out=rows)
        rows *= np.float32(-1.0 / np.pi)
        rows += np.float32(1.0)
    # W W^T computed in blocks can differ from its transpose in the last bit; make A exactly symmetric so
    # scikit-learn does not warn and copy it
    symmetrise_in_place(affinity, block)
    return affinity


def symmetrise_in_place(matrix: np.ndarray, block: int) -> None:
    """Copy the upper triangle onto the lower one, block by block (no full-size temporary)."""
    num = matrix.shape[0]
    for start in range(0, num, block):
        stop = min(start + block, num)
        for other in range(start, num, block):
            other_stop = min(other + block, num)
            if other == start:
                tile = matrix[start:stop, start:stop]
                lower = np.tril_indices(stop - start, -1)
                tile[lower] = tile.T[lower]
            else:
                matrix[other:other_stop, start:stop] = matrix[start:stop, other:other_stop].T


def spectral_clusters(
    W_dec: np.ndarray,
    n_clusters: int = 1000,
    seed: int = 0,
    diagonal: str = "kept",
    eigen_solver: str | None = None,
    assign_labels: str = "kmeans",
) -> list[list[int]]:
    """scikit-learn spectral clustering on the angular affinity of decoder rows (see module docstring).

    eigen_solver None = scikit-learn's default (ARPACK, as upstream); "lobpcg", or "amg" when pyamg is
    installed. assign_labels "kmeans" (upstream), "discretize" or "cluster_qr" (no k-means restarts).
    """
    W = check_decoder(W_dec)
    if not 1 <= n_clusters <= W.shape[0]:
        raise UserError(f"--n_clusters must be between 1 and the number of features {W.shape[0]}, got {n_clusters}")
    if eigen_solver == "amg":
        try:
            import pyamg  # noqa: F401
        except ImportError:
            raise UserError("--eigen_solver amg needs the pyamg package, which is not installed; "
                            "use arpack (default) or lobpcg") from None
    affinity = angular_affinity(W, diagonal)
    labels = spectral_labels(affinity, n_clusters, seed, eigen_solver=eigen_solver, assign_labels=assign_labels)
    del affinity
    groups: list[list[int]] = [[] for _ in range(n_clusters)]
    for feature, label in enumerate(labels.tolist()):
        groups[label].append(feature)
    return order_clusters(groups)


def spectral_labels(affinity: np.ndarray, n_clusters: int, seed: int, eigen_solver: str | None = None,
                    assign_labels: str = "kmeans", n_init: int = 10) -> np.ndarray:
    """The steps of scikit-learn's `SpectralClustering(affinity="precomputed").fit`, without its float64 copy.

    `SpectralClustering.fit` converts the affinity to float64 first (a second F x F matrix, 4.8 GB for
    GPT-2's 24,576 features); here the same public steps run on the matrix as given (float32): one
    RandomState from `seed` feeds `spectral_embedding(n_components=n_clusters, drop_first=False)` and then
    the label assignment (`k_means` with n_init=10, or `cluster_qr` / `discretize`), in the order `fit` uses
    it, so a float64 affinity gives exactly SpectralClustering's labels (tests check this). Cost: ARPACK
    (shift-invert on a dense F x F matrix) and, with the default k-means assignment, k_means with 10 restarts
    on F x n_clusters dominate; assign_labels="cluster_qr" replaces the latter with one pivoted QR.
    """
    from sklearn.cluster import k_means
    from sklearn.manifold import spectral_embedding
    from sklearn.utils import check_random_state

    random_state = check_random_state(seed)
    maps = spectral_embedding(affinity, n_components=n_clusters, eigen_solver=eigen_solver,
                              random_state=random_state, eigen_tol="auto", drop_first=False)
    # the embedding is small (F x n_clusters); in float64, as in SpectralClustering, k-means converges as there
    # (in float32 it took several times longer in our measurements)
    maps = np.asarray(maps, dtype=np.float64)
    if assign_labels == "kmeans":
        return k_means(maps, n_clusters, random_state=random_state, n_init=n_init)[1]
    # the other two assignments have no public function outside SpectralClustering
    from sklearn.cluster._spectral import cluster_qr, discretize

    if assign_labels == "cluster_qr":
        return cluster_qr(maps)
    if assign_labels == "discretize":
        return discretize(maps, random_state=random_state)
    raise UserError(f"unknown --assign_labels {assign_labels!r}; allowed: kmeans, discretize, cluster_qr")


def cluster_decoder(W_dec: np.ndarray, method: str, **options) -> list[list[int]]:
    """Dispatch on method "graph" / "spectral" (the clustering script's --method)."""
    if method == "graph":
        return graph_clusters(W_dec, **options)
    if method == "spectral":
        return spectral_clusters(W_dec, **options)
    raise UserError(f"unknown clustering method {method!r}; allowed: {', '.join(METHODS)}")
