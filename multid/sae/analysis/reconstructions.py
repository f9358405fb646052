"""Cluster reconstructions (paper section 4.1) and their PCA.

For a cluster K of SAE features, every token t at which at least one feature of K fires gives one point

    r_t = sum over i in K with f_i(t) > threshold of f_i(t) * W_dec[i]      (no decoder bias, no other features)

The points, in corpus order, are what the paper projects on its top principal components (Figures 1, 12, 13)
and what the reducibility scan measures (section 4.2). The occurrence triples are stored sorted by token
then feature (docs/sae_occurrences.md), so the points are a segment sum over runs of equal tokens: we do it
with one matrix product (activations [firing tokens, cluster features], sparse or dense by fill, times the
cluster's decoder rows) instead of the original per-triple Python loop, which needs hours per call on 1e9
triples.

Token index: we record the firing token's OWN global index t. The original walk emitted a point only when it
reached the next token with any active feature, and recorded that next token's index (its GPT-2 scripts), or
that index minus one (its Mistral scripts); with tens of active features per token the next active token is
almost always t + 1, so the Mistral variant is nearly always t, and the GPT-2 variant is shifted by one.
The original walk also never emitted the last token of the file; we do.

`reconstruction_pca` is an exact SVD (not a randomized solver), with a fixed sign convention, so the same
points give the same components on every run and machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from multid.errors import UserError
from multid.io import load_npz, save_npz


class TripleSource(Protocol):
    """Anything with the occurrence reader's `triples(features=...)` (multid.sae.data.occurrence_store.Occurrences)."""

    def triples(self, features: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Reconstructions:
    """points[n, d] float32 (one per firing token, in corpus order) and tokens[n] int64 (their global indices)."""

    points: np.ndarray
    tokens: np.ndarray

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class Pca:
    """PCA of reconstructions: coords[n, k] (centred scores), components[k, d] (orthonormal rows), mean[d],
    explained_variance_ratio[k] (share of the total variance of all d directions), singular_values[k]."""

    coords: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray

    @property
    def k(self) -> int:
        return int(self.components.shape[0])


# ----------------------------------------------------------------------------------------- checks


def cluster_feature_ids(features: Sequence[int] | np.ndarray, num_features: int, *,
                        size_limit: int | None = None, what: str = "cluster") -> np.ndarray:
    """The cluster's feature ids as a sorted int64 array, checked: non-empty, within [0, F), not over size_limit."""
    ids = np.asarray(list(features) if not isinstance(features, np.ndarray) else features)
    if ids.size == 0:
        raise UserError(f"{what} is empty; a cluster needs at least one feature id")
    if not np.issubdtype(ids.dtype, np.integer):
        raise UserError(f"{what} holds non-integer feature ids ({ids.dtype}); expected SAE feature indices")
    ids = np.unique(ids.astype(np.int64))
    if ids[0] < 0 or ids[-1] >= num_features:
        raise UserError(f"{what} has feature ids {int(ids[0])}..{int(ids[-1])}, but the SAE has features "
                        f"0..{num_features - 1}")
    if size_limit is not None and ids.size > size_limit:
        raise UserError(f"{what} has {ids.size} features, more than --size_limit {size_limit}; pick a smaller "
                        f"cluster or raise --size_limit")
    return ids


def check_sample_limit(sample_limit: int | None) -> None:
    if sample_limit is not None and sample_limit < 1:
        raise UserError(f"--sample_limit must be at least 1 (or omitted for all points), got {sample_limit}")


# ----------------------------------------------------------------------------------------- reconstructions


MEMBER_CHUNK = 1 << 16
DENSE_WEIGHTS_MAX = 1 << 24  # entries of the dense [points, features] activation matrix (64 MiB of float32)
DENSE_FILL = 0.25  # below this share of nonzero activations the sparse product does less work


def member_positions(feature: np.ndarray, ids: np.ndarray, num_features: int) -> np.ndarray:
    """Indices of the triples whose feature is in `ids` (sorted ids within 0..num_features-1).

    A lookup table gathered in cache-sized chunks with np.take into one preallocated mask: about twice as
    fast as one fancy index on int32 ids (which first converts all ids to int64) and much faster than
    np.isin's passes. An id >= num_features raises IndexError (feature ids come from the SAE).
    """
    member = np.zeros(num_features, dtype=bool)
    member[ids] = True
    mask = np.empty(feature.shape[0], dtype=bool)
    for start in range(0, feature.shape[0], MEMBER_CHUNK):
        stop = start + MEMBER_CHUNK
        np.take(member, feature[start:stop], out=mask[start:stop])
    return np.flatnonzero(mask)


def reconstruct_from_triples(token: np.ndarray, feature: np.ndarray, value: np.ndarray, features: Sequence[int],
                             W_dec: np.ndarray, *, sample_limit: int | None = None,
                             threshold: float = 0.0) -> Reconstructions:
    """Reconstructions of cluster `features` from triples sorted by (token, feature) (vectorised).

    Only triples of the cluster's features with value > threshold (strict, as the original) count; a token
    with no such triple gives no point. `sample_limit` keeps the first n points in corpus order.
    The product is done in float32 (the dtype of the stored values and of W_dec as stored).
    """
    import scipy.sparse as sp

    W_dec = np.asarray(W_dec)
    ids = cluster_feature_ids(features, W_dec.shape[0])
    check_sample_limit(sample_limit)
    token = np.asarray(token, dtype=np.int64)
    feature = np.asarray(feature)
    value = np.asarray(value, dtype=np.float32)
    if not (token.shape == feature.shape == value.shape) or token.ndim != 1:
        raise ValueError(f"triples must be three 1-D arrays of one length, got {token.shape}, {feature.shape}, "
                         f"{value.shape}")
    keep = member_positions(feature, ids, W_dec.shape[0])
    keep = keep[value[keep] > np.float32(threshold)]
    t, f, v = token[keep], feature[keep].astype(np.int64), value[keep]
    d = W_dec.shape[1]
    if t.size == 0:
        return Reconstructions(np.zeros((0, d), np.float32), np.zeros(0, np.int64))
    if t.size > 1 and np.any(t[1:] < t[:-1]):
        raise ValueError("triples must be sorted by token (the occurrence reader returns them so)")
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    if sample_limit is not None and starts.size > sample_limit:
        cut = starts[sample_limit]
        t, f, v, starts = t[:cut], f[:cut], v[:cut], starts[:sample_limit]
    rows = np.cumsum(np.r_[False, t[1:] != t[:-1]])  # 0-based point index of each kept triple
    cols = np.searchsorted(ids, f)  # position of the feature inside the cluster
    sub = np.ascontiguousarray(W_dec[ids], dtype=np.float32)
    cells = starts.size * ids.size
    if cells <= DENSE_WEIGHTS_MAX and v.size >= DENSE_FILL * cells:
        # a small, well-filled activation matrix [points, cluster features]: one BLAS product
        weights = np.zeros((starts.size, ids.size), dtype=np.float32)
        np.add.at(weights, (rows, cols), v)
        points = weights @ sub
    else:  # few active features per point (the usual case) or a huge matrix: the sparse product
        weights = sp.csr_matrix((v, (rows, cols)), shape=(starts.size, ids.size), dtype=np.float32)
        points = np.asarray(weights @ sub, dtype=np.float32)
    return Reconstructions(np.ascontiguousarray(points, dtype=np.float32), t[starts].copy())


def reference_reconstructions(token: np.ndarray, feature: np.ndarray, value: np.ndarray, features: Sequence[int],
                              W_dec: np.ndarray, *, sample_limit: int | None = None,
                              threshold: float = 0.0) -> Reconstructions:
    """Slow, obviously-correct version (one Python step per triple, like the original walk) for tests and the
    benchmark; records the firing token's own index and flushes the last token."""
    members = {int(i) for i in features}
    W_dec = np.asarray(W_dec, dtype=np.float32)
    points: list[np.ndarray] = []
    tokens: list[int] = []
    current: int | None = None
    acc = np.zeros(W_dec.shape[1], np.float32)
    for t, f, v in zip(np.asarray(token).tolist(), np.asarray(feature).tolist(),
                       np.asarray(value, dtype=np.float32)):
        if int(f) not in members or not v > np.float32(threshold):
            continue
        if current is not None and t != current:
            points.append(acc)
            tokens.append(current)
            acc, current = np.zeros(W_dec.shape[1], np.float32), None
            if sample_limit is not None and len(tokens) >= sample_limit:
                break
        current = t
        acc = acc + v * W_dec[f]
    if current is not None and (sample_limit is None or len(tokens) < sample_limit):
        points.append(acc)
        tokens.append(current)
    d = W_dec.shape[1]
    return Reconstructions(np.array(points, np.float32).reshape(-1, d), np.array(tokens, np.int64))


def cluster_reconstructions(occ: TripleSource, features: Sequence[int], W_dec: np.ndarray, *,
                            sample_limit: int | None = None, threshold: float = 0.0) -> Reconstructions:
    """Reconstructions of a cluster read from an occurrence dataset (its reader filters on the feature ids)."""
    ids = cluster_feature_ids(features, np.asarray(W_dec).shape[0])
    token, feature, value = occ.triples(features=ids.tolist())
    return reconstruct_from_triples(token, feature, value, ids, W_dec, sample_limit=sample_limit,
                                    threshold=threshold)


# ----------------------------------------------------------------------------------------- PCA


def reconstruction_pca(points: np.ndarray, k: int) -> Pca:
    """PCA of the points by exact SVD in float64, k = number of components (at most min(n, d)).

    Signs: each component is flipped so that its largest-magnitude entry is positive (ties: the first),
    which fixes the otherwise arbitrary SVD sign; scores are the centred points times the components.
    """
    X = np.asarray(points, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"points must be [n, d], got shape {X.shape}")
    n, d = X.shape
    if n < 2:
        raise UserError(f"the cluster fired on {n} token(s); a PCA needs at least 2 reconstructions (use more "
                        f"occurrence data or another cluster)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n, d)
    mean = X.mean(axis=0)
    centred = X - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:k]
    pivot = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(k), pivot])
    signs[signs == 0] = 1.0
    comps = comps * signs[:, None]
    total = float(np.sum(s**2))
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    return Pca(coords=centred @ comps.T, components=comps, mean=mean, explained_variance_ratio=ratio,
               singular_values=s[:k].copy())


def save_sae_pca(path: str | os.PathLike, pca: Pca, **extra: np.ndarray) -> Path:
    """Write the PCA as the .npz that `compare_circle_intervention_types.py --sae_pca` reads.

    Keys: components [k, d], mean [d], explained_variance_ratio [k], singular_values [k], coords [n, k],
    plus any `extra` arrays (the figure scripts add the token indices and token ids of the points).
    """
    arrays: dict[str, Any] = {
        "components": np.asarray(pca.components, np.float64),
        "mean": np.asarray(pca.mean, np.float64),
        "explained_variance_ratio": np.asarray(pca.explained_variance_ratio, np.float64),
        "singular_values": np.asarray(pca.singular_values, np.float64),
        "coords": np.asarray(pca.coords, np.float64),
    }
    for key, value in extra.items():
        if key in arrays:
            raise ValueError(f"extra key {key!r} would overwrite a PCA array")
        arrays[key] = np.asarray(value)
    return save_npz(path, **arrays)


def load_sae_pca(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a file written by save_sae_pca (all its arrays, by key)."""
    data = load_npz(path)
    if "components" not in data:
        raise UserError(f"{path} has no 'components' array; it was not written by save_sae_pca")
    return data
