"""Cluster files, clustering of decoder directions (graph and spectral) and cluster stability."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from multid.config import REPO_ROOT
from multid.errors import MissingArtifactError, UserError
from multid.sae.analysis import clustering_methods, clustering_stability
from multid.sae.data.cluster_files import (check_members, load_clusters, mean_pairwise_cosine, non_singleton, pick_cluster,
                                 write_clusters)

SHARED = REPO_ROOT.parent / "shared" / "data"
GPT2_FILE = SHARED / "gpt-2_layer_7_clusters_spectral_n1000.pkl"
MISTRAL_FILE = SHARED / "mistral_layer_8_clusters_cutoff_0.5.pkl"

DAYS = [2592, 4445, 4663, 4733, 6531, 8179, 9566, 20927, 24185]
MONTHS = [3977, 4140, 5993, 7299, 9104, 9401, 10449, 11196, 12661, 14715, 17068, 17528, 19589, 21033, 22043, 23304]
YEARS = [1052, 2753, 4427, 6382, 8314, 9576, 9606, 13551, 19734, 20349]
MISTRAL_DAYS = [398, 20629, 23936, 31484, 35234, 52464, 54166]


def needs(path: Path):
    return pytest.mark.skipif(not path.is_file(), reason=f"the paper's cluster file {path} is not present")


def planted_decoder(groups: int = 12, size: int = 5, extra: int = 0, d: int = 64, noise: float = 0.05, seed: int = 0):
    """Unit rows: `groups` groups of `size` near-parallel rows, plus `extra` random rows, shuffled.
    Returns (W float32, the planted groups as sorted index lists ordered by smallest member)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, d))
    rows = [c + noise * np.linalg.norm(c) * rng.normal(size=d) / np.sqrt(d) for c in centres for _ in range(size)]
    rows += list(rng.normal(size=(extra, d)))
    W = np.array(rows)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    perm = rng.permutation(len(W))
    position = np.argsort(perm)  # row r of the original order lands at position[r]
    truth = sorted((sorted(position[g * size:(g + 1) * size].tolist()) for g in range(groups)), key=lambda c: c[0])
    return W[perm].astype(np.float32), truth


# ----------------------------------------------------------------------------------------- the paper's files


@pytest.mark.unit
@needs(GPT2_FILE)
def test_gpt2_paper_file_days_months_years():
    clusters = load_clusters(GPT2_FILE)
    assert len(clusters) == 1000
    assert clusters[138] == DAYS and clusters[251] == MONTHS and clusters[212] == YEARS
    assert sorted(f for c in clusters for f in c) == list(range(24576))
    # no singletons: both numberings agree
    assert pick_cluster(clusters, 138, "all") == pick_cluster(clusters, 138, "non_singleton") == DAYS


@pytest.mark.unit
@needs(MISTRAL_FILE)
def test_mistral_paper_file_non_singleton_61_is_days():
    clusters = load_clusters(MISTRAL_FILE)
    assert len(clusters) == 53519 and len(non_singleton(clusters)) == 2789
    assert sorted(pick_cluster(clusters, 61)) == MISTRAL_DAYS
    assert pick_cluster(clusters, 61, "all") == [63]
    assert max(len(c) for c in clusters) == 5231


@pytest.mark.unit
def test_pickle_with_objects_is_refused(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(OrderedDict([(0, [1, 2])])))
    with pytest.raises(UserError, match="plain data"):
        load_clusters(path)


@pytest.mark.unit
def test_dict_pickle_ordered_by_key_and_json_round_trip(tmp_path):
    path = tmp_path / "c.pkl"
    path.write_bytes(pickle.dumps({2: [7, 8], 0: [1, 2, 3], 1: [4]}))
    assert load_clusters(path) == [[1, 2, 3], [4], [7, 8]]
    out = write_clusters(tmp_path / "c.json", [[1, 2, 3], [4], [7, 8]])
    assert json.loads(out.read_text()) == [[1, 2, 3], [4], [7, 8]]
    assert load_clusters(out) == [[1, 2, 3], [4], [7, 8]]
    (tmp_path / "bad.json").write_text('[[1, "a"]]')
    with pytest.raises(UserError, match="non-negative integers"):
        load_clusters(tmp_path / "bad.json")
    with pytest.raises(MissingArtifactError, match="clustering.py"):
        load_clusters(tmp_path / "missing.json")


@pytest.mark.unit
def test_pick_cluster_conventions_and_bad_input():
    clusters = [[5], [1, 2], [], [3, 4, 6]]
    assert pick_cluster(clusters, 1) == [3, 4, 6]  # non-singleton numbering skips [5] and []
    assert pick_cluster(clusters, 1, "all") == [1, 2]
    with pytest.raises(UserError, match=r"out of range: there are 2 clusters .*0\.\.1"):
        pick_cluster(clusters, 2)
    with pytest.raises(UserError, match="out of range"):
        pick_cluster(clusters, -1, "all")
    with pytest.raises(UserError, match="is empty"):
        pick_cluster(clusters, 2, "all")
    with pytest.raises(UserError, match="3 features, more than --size_limit 2"):
        pick_cluster(clusters, 3, "all", size_limit=2)
    with pytest.raises(UserError, match="numbering"):
        pick_cluster(clusters, 0, "filtered")


@pytest.mark.unit
def test_repeated_features_in_a_cluster_are_refused(tmp_path):
    """A repeated id would count its decoder row twice (mean pairwise cosine, reconstructions)."""
    with pytest.raises(UserError, match="lists feature 4 more than once"):
        check_members([1, 4, 2, 4], num_features=10, what="cluster 3")
    check_members([1, 4, 2], num_features=10)
    path = tmp_path / "dup.json"
    path.write_text(json.dumps([[0, 1], [2, 3, 2]]))
    with pytest.raises(UserError, match="cluster 1 lists feature 2 more than once"):
        load_clusters(path)


@pytest.mark.unit
def test_mean_pairwise_cosine_hand_built():
    s = 1 / np.sqrt(2)
    W = np.array([[1, 0, 0], [1, 0, 0], [s, s, 0], [0, 0, 1]], dtype=np.float32)
    # pairs (0,1)=1, (0,2)=s, (1,2)=s, each counted twice over i != j
    assert mean_pairwise_cosine(W, [0, 1, 2]) == pytest.approx((1 + 2 * s) / 3, abs=1e-7)
    assert mean_pairwise_cosine(W, [0, 3]) == pytest.approx(0.0)
    with pytest.raises(UserError, match="at least 2"):
        mean_pairwise_cosine(W, [0])
    with pytest.raises(UserError, match="feature index 9"):
        mean_pairwise_cosine(W, [0, 9])


@pytest.mark.integration
@needs(GPT2_FILE)
def test_readme_mean_cosines_on_the_real_gpt2_sae():
    """The upstream README's 0.63 / 0.53 / 0.55 (needs the gpt2-small-res-jb layer-7 SAE: from the hub cache, or
    $MULTID_GPT2_L7_SAE pointing at an SAELens folder or a decoder .npy/.npz)."""
    from multid.sae.data.sae_loading import load_decoder

    source = os.environ.get("MULTID_GPT2_L7_SAE")
    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" /
                                                                        "huggingface")) / "hub")
    if not source and not (hub_cache / "models--jbloom--GPT2-Small-SAEs-Reformatted").is_dir():
        pytest.skip("GPT-2 layer-7 SAE (gpt2-small-res-jb) not in the hub cache; set $MULTID_GPT2_L7_SAE to an "
                    "SAELens folder or a decoder .npy/.npz to run this check")
    try:
        if source and source.endswith((".npy", ".npz")):
            W = load_decoder(decoder_file=source)
        else:
            W = load_decoder("gpt2", 7, sae_path=source)
    except (UserError, OSError) as err:
        pytest.skip(f"GPT-2 layer-7 SAE not available offline ({str(err)[:80]})")
    clusters = load_clusters(GPT2_FILE)
    got = [round(mean_pairwise_cosine(W, clusters[i]), 2) for i in (138, 251, 212)]
    assert got == [0.63, 0.53, 0.55]


# ----------------------------------------------------------------------------------------- clustering


@pytest.mark.unit
@pytest.mark.parametrize("diagonal,top_k", [("kept", 5), ("zeroed", 4)])
def test_graph_recovers_planted_groups(diagonal, top_k):
    W, truth = planted_decoder(groups=12, size=5, extra=60)
    got = clustering_methods.graph_clusters(W, top_k=top_k, sim_cutoff=0.5, diagonal=diagonal, drop_singletons=True)
    assert got == truth
    everything = clustering_methods.graph_clusters(W, top_k=top_k, sim_cutoff=0.5, diagonal=diagonal)
    assert len(everything) == 12 + 60 and sorted(f for c in everything for f in c) == list(range(120))
    assert [c[0] for c in everything] == sorted(c[0] for c in everything)  # ordered by smallest member


@pytest.mark.unit
@pytest.mark.parametrize("diagonal", ["kept", "zeroed"])
def test_graph_equals_dense_reference(diagonal):
    rng = np.random.default_rng(3)
    W = rng.normal(size=(150, 16))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    W[:20] = W[:20] * 0.7 + W[20:40] * 0.4  # some close pairs, rows of other norms (no exact ties)
    for k in (1, 2, 3, 6):
        for cutoff in (-0.3, 0.0, 0.2, 0.45, 0.7):
            got = clustering_methods.graph_clusters(W, top_k=k, sim_cutoff=cutoff, diagonal=diagonal)
            assert got == clustering_methods.reference_graph_clusters(W, k, cutoff, diagonal), (k, cutoff)


@pytest.mark.unit
def test_diagonal_conventions_differ_as_documented():
    W, _ = planted_decoder(groups=4, size=3)
    # kept: k = 1 is the feature itself -> only singletons; zeroed: k = 1 is the nearest other feature
    assert all(len(c) == 1 for c in clustering_methods.graph_clusters(W, top_k=1, sim_cutoff=0.5, diagonal="kept"))
    assert clustering_methods.graph_clusters(W, top_k=2, sim_cutoff=0.5, diagonal="kept") == \
        clustering_methods.graph_clusters(W, top_k=1, sim_cutoff=0.5, diagonal="zeroed")
    assert max(len(c) for c in clustering_methods.graph_clusters(W, top_k=1, sim_cutoff=0.5, diagonal="zeroed")) > 1


@pytest.mark.unit
def test_spectral_recovers_planted_groups_deterministically():
    W, truth = planted_decoder(groups=8, size=4, d=24, noise=0.1, seed=1)
    got = clustering_methods.spectral_clusters(W, n_clusters=8, seed=0)
    assert got == truth
    assert clustering_methods.spectral_clusters(W, n_clusters=8, seed=0, assign_labels="cluster_qr") == truth


@pytest.mark.unit
def test_angular_affinity_matches_formula():
    W, _ = planted_decoder(groups=3, size=3, d=8)
    S = np.clip(W.astype(np.float64) @ W.T.astype(np.float64), -1, 1)
    A = clustering_methods.angular_affinity(W, block=4)  # several blocks
    assert np.allclose(A, 1 - np.arccos(S) / np.pi, atol=2e-4)
    assert np.array_equal(A, A.T) and A.dtype == np.float32
    Z = clustering_methods.angular_affinity(W, diagonal="zeroed", block=4)
    assert np.allclose(np.diag(Z), 0.5)


@pytest.mark.unit
def test_decoder_shape_errors():
    with pytest.raises(UserError, match="2-D"):
        clustering_methods.check_decoder(np.zeros((2, 3, 4)))
    with pytest.raises(UserError, match="width 5 but the model's residual width is 768"):
        clustering_methods.check_decoder(np.ones((3, 5)), d_model=768)
    with pytest.raises(UserError, match="NaN"):
        clustering_methods.check_decoder(np.full((3, 5), np.nan))
    with pytest.raises(UserError, match="--n_clusters"):
        clustering_methods.spectral_clusters(np.eye(4), n_clusters=5)


@pytest.mark.integration
def test_clustering_cli(tmp_path, capsys):
    from sae_multid_feature_discovery import clustering as script

    W, truth = planted_decoder(groups=6, size=4, extra=10)
    np.savez(tmp_path / "W.npz", W_dec=W)
    out = tmp_path / "c.json"
    argv = ["--decoder_file", str(tmp_path / "W.npz"), "--top_k", "4", "--sim_cutoff", "0.5", "--out", str(out)]
    script.main(argv)
    assert json.loads(out.read_text()) == clustering_methods.graph_clusters(W, top_k=4, sim_cutoff=0.5)
    record = out.with_name(out.name + ".stage.json")
    stamp = record.stat().st_mtime_ns
    script.main(argv)  # reused, not recomputed
    assert record.stat().st_mtime_ns == stamp
    script.main(["--decoder_file", str(tmp_path / "W.npz"), "--clustering_type", "graph", "--top_k", "4",
                 "--drop_singletons", "--out", str(tmp_path / "d.json")])
    assert load_clusters(tmp_path / "d.json") == truth
    script.main(["--decoder_file", str(tmp_path / "W.npz"), "--top_k", "4", "--include_only_first_k_sae_features",
                 "10", "--out", str(tmp_path / "first.json")])
    assert load_clusters(tmp_path / "first.json") == clustering_methods.graph_clusters(W[:10], top_k=4, sim_cutoff=0.5)
    script.main(["--decoder_file", str(tmp_path / "W.npz"), "--top_k", "4", "--max_cluster_size", "1",
                 "--out", str(tmp_path / "small.json")])
    assert load_clusters(tmp_path / "small.json") == [[i] for i in range(len(W)) if not any(i in t for t in truth)]
    np.save(tmp_path / "W3.npy", W[None])
    capsys.readouterr()
    zero_rows = W.copy()
    zero_rows[[3, 11]] = 0.0
    np.save(tmp_path / "W0.npy", zero_rows)
    for bad, phrase in ((["--decoder_file", str(tmp_path / "W3.npy")], "2-D"),
                        (["--decoder_file", str(tmp_path / "W.npz"), "--model_name", "gpt-2"], "width"),
                        (["--decoder_file", str(tmp_path / "W.npz"), "--sim_cutoff", "nan"], "[-1, 1], got nan"),
                        (["--decoder_file", str(tmp_path / "W.npz"), "--sim_cutoff", "1.5"], "[-1, 1], got 1.5"),
                        (["--decoder_file", str(tmp_path / "W.npz"), "--include_only_first_k_sae_features", "99"],
                         f"more than the {len(W)} features"),
                        (["--decoder_file", str(tmp_path / "W0.npy")], "2 all-zero decoder row(s) (features 3, 11)")):
        with pytest.raises(SystemExit) as exit_info:
            script.main(bad + ["--out", str(tmp_path / "x.json")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and phrase in err, err
    assert not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------------------- stability


@pytest.mark.unit
def test_jaccard_hand_built():
    assert clustering_stability.jaccard([1, 2, 3], [2, 3, 4]) == 0.5
    assert clustering_stability.best_jaccard([1, 2, 3], [[9], [1, 2, 3, 4, 5, 6], [2, 3, 4]]) == (0.5, 1)
    assert clustering_stability.best_jaccard([1], [[2]]) == (0.0, -1)


@pytest.mark.unit
def test_sweep_matches_separate_clusterings_and_grid():
    W, truth = planted_decoder(groups=5, size=4, extra=30, noise=0.4, seed=2)
    ks, cutoffs = [2, 3, 4], [0.2, 0.5, 0.8, 1.0]
    sweep = list(clustering_stability.sweep_graph_clusterings(W, ks, cutoffs, diagonal="zeroed"))
    assert len(sweep) == 12
    for (k, cutoff), clusters in sweep:
        assert clusters == clustering_methods.graph_clusters(W, top_k=k, sim_cutoff=cutoff, diagonal="zeroed")
    result = clustering_stability.stability_grid({"g": truth[0]}, iter(sweep), ks, cutoffs)
    grid = result.best["g"]
    assert grid.shape == (4, 3)
    assert np.all(grid[-1] == 0.25)  # cutoff 1.0: singletons, best overlap 1 of 4
    expected = [[clustering_stability.best_jaccard(truth[0], c)[0] for (k, cut), c in sweep if cut == cutoff] for cutoff in cutoffs]
    assert np.array_equal(grid, np.array(expected))
    fig = clustering_stability.heatmap_figure(result, "g", "Days of Week")
    ax = fig.axes[0]
    assert ax.get_title() == "Cluster Stability Across Parameters for Days of Week Cluster"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.20", "0.50", "0.80", "1.00"]
    assert np.array_equal(ax.images[0].get_array(), grid)


@pytest.mark.unit
def test_upstream_cutoffs():
    cutoffs = clustering_stability.upstream_cutoffs()
    assert len(cutoffs) == 21 and cutoffs[0] == pytest.approx(0.1) and cutoffs[-1] == 1.0 and 0.5 in cutoffs


@pytest.mark.unit
@pytest.mark.parametrize("assign_labels", ["kmeans", "cluster_qr", "discretize"])
def test_spectral_labels_are_scikit_learns_spectral_clustering(assign_labels):
    from sklearn.cluster import SpectralClustering

    W, _ = planted_decoder(groups=6, size=4, d=16, noise=0.6, seed=4)  # noisy: the labels are not trivial
    A = clustering_methods.angular_affinity(W).astype(np.float64)
    expected = SpectralClustering(n_clusters=6, affinity="precomputed", random_state=3,
                                  assign_labels=assign_labels).fit_predict(A)
    assert np.array_equal(clustering_methods.spectral_labels(A, 6, 3, assign_labels=assign_labels), expected)


@pytest.mark.integration
def test_cluster_stability_cli(tmp_path):
    from sae_multid_feature_discovery import cluster_stability as script

    W, truth = planted_decoder(groups=5, size=4, extra=30, noise=0.4, seed=2)
    np.save(tmp_path / "W.npy", W)
    write_clusters(tmp_path / "truth.json", [[0], truth[1], truth[3]])
    out = script.main(["--decoder_file", str(tmp_path / "W.npy"), "--clusters_file", str(tmp_path / "truth.json"),
                       "--truth", "1", "0", "--truth_names", "Second", "First", "--cutoffs", "0.3", "0.6",
                       "--save_dir", str(tmp_path / "stab")])
    data = json.loads((out / "clustering_stability.json").read_text())
    assert data["top_ks"] == [2, 3, 4] and data["cutoffs"] == [0.3, 0.6] and data["truth"]["First"] == truth[1]
    sweep = clustering_stability.sweep_graph_clusterings(W, [2, 3, 4], [0.3, 0.6], diagonal="zeroed")
    expected = clustering_stability.stability_grid({"First": truth[1], "Second": truth[3]}, sweep, [2, 3, 4], [0.3, 0.6])
    assert np.array_equal(np.array(data["best_jaccard"]["Second"]), expected.best["Second"])
    assert {p.name for p in out.iterdir()} >= {"cluster_stability_first.png", "cluster_stability_second.pdf",
                                               "cluster_sizes.png", "cluster_cosines.png"}
