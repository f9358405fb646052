"""Cluster reconstructions and their PCA (multid.sae.analysis.reconstructions, multid.sae.analysis.cluster_points)."""

from __future__ import annotations

import numpy as np
import pytest

from multid.errors import MissingArtifactError, UserError
from multid.sae.analysis.reconstructions import (cluster_reconstructions, reconstruct_from_triples, reconstruction_pca,
                                    reference_reconstructions, save_sae_pca)
from tests import sae_calendar as cal_mod


def random_triples(seed: int, n_tokens: int = 400, F: int = 30, d: int = 12, max_active: int = 6):
    """Triples sorted by (token, feature) with gaps in the token index, as the reader returns them."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(F, d)).astype(np.float32)
    tok, feat, val = [], [], []
    t = 0
    for _ in range(n_tokens):
        t += int(rng.integers(1, 4))
        for f in np.sort(rng.choice(F, size=int(rng.integers(0, max_active)), replace=False)):
            tok.append(t)
            feat.append(f)
            val.append(rng.exponential())
    return (np.array(tok, np.int64), np.array(feat, np.int32), np.array(val, np.float32), W)


@pytest.mark.unit
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.7])
@pytest.mark.parametrize("sample_limit", [None, 1, 13])
def test_vectorised_equals_slow_reference(seed, threshold, sample_limit):
    token, feature, value, W = random_triples(seed)
    cluster = [2, 5, 11, 17, 29]
    fast = reconstruct_from_triples(token, feature, value, cluster, W, sample_limit=sample_limit, threshold=threshold)
    slow = reference_reconstructions(token, feature, value, cluster, W, sample_limit=sample_limit, threshold=threshold)
    assert len(slow) > 0
    if sample_limit is not None:
        assert len(fast) == sample_limit
    np.testing.assert_array_equal(fast.tokens, slow.tokens)
    assert fast.points.dtype == np.float32 and fast.points.shape == slow.points.shape
    np.testing.assert_allclose(fast.points, slow.points, rtol=2e-6, atol=1e-6)


@pytest.mark.unit
@pytest.mark.parametrize("dense_max, dense_fill", [(0, 0.0), (1 << 24, 0.0), (1 << 24, 2.0)])
def test_sparse_and_dense_products_agree(monkeypatch, dense_max, dense_fill):
    import multid.sae.analysis.reconstructions as rec_mod

    monkeypatch.setattr(rec_mod, "DENSE_WEIGHTS_MAX", dense_max)  # 0: always sparse
    monkeypatch.setattr(rec_mod, "DENSE_FILL", dense_fill)  # 0.0: dense when small enough; 2.0: never dense
    token, feature, value, W = random_triples(5)
    cluster = list(range(0, 30, 2))
    fast = reconstruct_from_triples(token, feature, value, cluster, W, threshold=0.2)
    slow = reference_reconstructions(token, feature, value, cluster, W, threshold=0.2)
    np.testing.assert_array_equal(fast.tokens, slow.tokens)
    np.testing.assert_allclose(fast.points, slow.points, rtol=2e-6, atol=1e-6)


@pytest.mark.unit
def test_reconstruction_by_hand():
    """Two tokens; strict threshold; other features ignored; no bias; the firing token's own index."""
    W = np.eye(4, dtype=np.float32) * np.array([1, 2, 3, 4], np.float32)[:, None]
    token = np.array([5, 5, 5, 8, 9], np.int64)
    feature = np.array([0, 1, 3, 1, 2], np.int32)
    value = np.array([0.5, 0.25, 9.0, 0.5, 1.0], np.float32)
    rec = reconstruct_from_triples(token, feature, value, [0, 1], W, threshold=0.25)
    np.testing.assert_array_equal(rec.tokens, [5, 8])
    np.testing.assert_array_equal(rec.points, [[0.5, 0, 0, 0], [0, 1.0, 0, 0]])
    rec0 = reconstruct_from_triples(token, feature, value, [0, 1], W)
    np.testing.assert_array_equal(rec0.points[0], [0.5, 0.5, 0, 0])


@pytest.mark.unit
def test_bad_clusters_and_limits():
    token, feature, value, W = random_triples(0, n_tokens=20)
    with pytest.raises(UserError, match="empty"):
        reconstruct_from_triples(token, feature, value, [], W)
    with pytest.raises(UserError, match="0..29"):
        reconstruct_from_triples(token, feature, value, [3, 30], W)
    with pytest.raises(UserError, match="sample_limit"):
        reconstruct_from_triples(token, feature, value, [3], W, sample_limit=0)
    with pytest.raises(UserError, match="at least 2"):
        reconstruction_pca(np.ones((1, 4)), 2)


def angles_in_plane(coords: np.ndarray) -> np.ndarray:
    return np.arctan2(coords[:, 1], coords[:, 0])


def cyclic_order_ok(mean_angles: np.ndarray) -> bool:
    """True when the classes' mean angles go round the circle in class order (either direction)."""
    steps = np.diff(np.r_[mean_angles, mean_angles[0]])
    steps = (steps + np.pi) % (2 * np.pi) - np.pi
    return bool(np.all(steps > 0) or np.all(steps < 0)) and np.isclose(abs(steps.sum()), 2 * np.pi)


def planted_circle_check(points, tokens, token_ids, vocab):
    pca = reconstruction_pca(points, 5)
    assert pca.explained_variance_ratio[:2].sum() > 0.95  # a 2-D circle
    words = [cal_mod.word_of(i) for i in token_ids[tokens // cal_mod.CTX_LEN, tokens % cal_mod.CTX_LEN]]
    day = np.array([cal_mod.DAY_NAMES.index(w) for w in words])  # every firing token is a day name
    theta = angles_in_plane(pca.coords[:, :2])
    mean = np.array([np.angle(np.mean(np.exp(1j * theta[day == i]))) for i in range(7)])
    assert cyclic_order_ok(mean)
    radius = np.linalg.norm(pca.coords[:, :2], axis=1)
    assert radius.std() / radius.mean() < 0.1  # on a circle, not a disc
    spread = [np.abs(np.angle(np.exp(1j * (theta[day == i] - mean[i])))).max() for i in range(7)]
    assert max(spread) < np.pi / 14  # each day sits at its own point of the circle
    return pca


@pytest.mark.unit
def test_planted_circle_in_memory():
    ids, tok, feat, val = cal_mod.corpus(20)
    W = cal_mod.decoder()
    order = np.lexsort((feat, tok))
    rec = reconstruct_from_triples(tok[order], feat[order], val[order], cal_mod.DAYS, W)
    planted_circle_check(rec.points, rec.tokens, ids, cal_mod.vocabulary())


@pytest.fixture(scope="module")
def calendar(tmp_path_factory):
    return cal_mod.make_calendar_run(tmp_path_factory.mktemp("calendar"), n_ctx=30, num_shards=2)


@pytest.mark.integration
def test_planted_circle_from_parquet(calendar):
    from multid.sae.data.occurrence_store import open_occurrences

    occ = open_occurrences(calendar.run)
    rec = cluster_reconstructions(occ, cal_mod.DAYS, calendar.W_dec)
    day_positions = np.isin(calendar.token_ids, [calendar.vocab.index(cal_mod.WORD_START + d) for d in cal_mod.DAY_NAMES])
    np.testing.assert_array_equal(rec.tokens, np.flatnonzero(day_positions.ravel()))  # own index, all of them
    planted_circle_check(rec.points, rec.tokens, calendar.token_ids, calendar.vocab)
    limited = cluster_reconstructions(occ, cal_mod.DAYS, calendar.W_dec, sample_limit=10)
    np.testing.assert_array_equal(limited.tokens, rec.tokens[:10])
    np.testing.assert_array_equal(limited.points, rec.points[:10])


@pytest.mark.integration
def test_cluster_points_stage_and_sae_pca_file(calendar):
    from multid.circles.compare import read_sae_components
    from multid.sae.analysis.cluster_points import cluster_points_stage, read_cluster_points

    points = cluster_points_stage(calendar.run, "days", cal_mod.DAYS, calendar.W_dec, k=4, sample_limit=None,
                                  decoder_id="test")
    comps = read_sae_components(points.path, [0, 1])
    assert comps.shape == (2, cal_mod.D)
    np.testing.assert_allclose(comps @ comps.T, np.eye(2), atol=1e-10)
    # the planted circle lives in (e0, e1): the two PCs span that plane
    assert np.linalg.norm(comps[:, :2], axis=1).min() > 0.99
    # contexts end at the firing token, and the next id is the following token of the same context
    ctx = points.contexts
    flat = calendar.token_ids.ravel()
    np.testing.assert_array_equal(ctx[:, -1], flat[points.tokens])
    inside = (points.tokens + 1) % cal_mod.CTX_LEN != 0
    np.testing.assert_array_equal(points.next_ids[inside], flat[points.tokens[inside] + 1])
    assert np.all(points.next_ids[~inside] == -1)
    j = int(np.argmax(points.tokens % cal_mod.CTX_LEN >= 10))
    np.testing.assert_array_equal(ctx[j], flat[points.tokens[j] - 10:points.tokens[j] + 1])
    first = int(np.argmin(points.tokens % cal_mod.CTX_LEN))
    pos = int(points.tokens[first] % cal_mod.CTX_LEN)
    assert np.all(ctx[first, :10 - pos] == -1)  # padded before the context start
    # reused when nothing changed; the reread equals the first
    mtime = points.path.stat().st_mtime_ns
    again = cluster_points_stage(calendar.run, "days", cal_mod.DAYS, calendar.W_dec, k=4, sample_limit=None,
                                 decoder_id="test")
    assert again.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(read_cluster_points(points.path).pca.coords, points.pca.coords)


@pytest.mark.unit
def test_pca_exact_deterministic_signs(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 10)) @ rng.normal(size=(10, 10))
    a = reconstruction_pca(X, 4)
    b = reconstruction_pca(X[:, :] * 1.0, 4)
    np.testing.assert_array_equal(a.components, b.components)
    pivot = np.abs(a.components).argmax(axis=1)
    assert np.all(a.components[np.arange(4), pivot] > 0)
    # equals the eigen-decomposition of the covariance
    cov = np.cov(X, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    top = evecs[:, ::-1][:, :4].T
    np.testing.assert_allclose(np.abs(np.sum(top * a.components, axis=1)), 1, atol=1e-8)
    np.testing.assert_allclose(a.explained_variance_ratio, evals[::-1][:4] / evals.sum(), rtol=1e-8)
    np.testing.assert_allclose(a.coords, (X - X.mean(0)) @ a.components.T, atol=1e-10)
    path = save_sae_pca(tmp_path / "p.npz", a)
    assert path.read_bytes() == save_sae_pca(tmp_path / "q.npz", b).read_bytes()


@pytest.mark.unit
def test_missing_occurrence_dataset_names_the_command(tmp_path):
    from multid.sae.analysis.cluster_points import find_run_dir

    with pytest.raises(MissingArtifactError, match="generate_feature_occurence_data.py --model_name gpt2 --layers 7"):
        find_run_dir(tmp_path, "gpt2", 7)
    with pytest.raises(MissingArtifactError, match="generate_feature_occurence_data.py"):
        find_run_dir(tmp_path, "gpt2", 7, run_dir=tmp_path / "nothing")
