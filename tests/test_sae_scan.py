"""The cluster reducibility scan (multid.sae.analysis.cluster_reducibility, multid.sae.analysis.scan_batches) and its two scripts."""

from __future__ import annotations

import json
import shutil
import math

import numpy as np
import pytest

from multid.errors import UserError
from multid.reducibility import mixture_index_exact
from multid.sae.analysis import cluster_reducibility

STEPS = 100  # M's optimiser steps in these tests (10,000 in a real scan; the cost is linear in the steps)


def circle(rng, n):
    a = rng.uniform(0, 2 * np.pi, n)
    return np.c_[np.cos(a), np.sin(a)] * (1 + 0.02 * rng.normal(size=(n, 1)))


def two_lines(rng, n):
    on_first = rng.uniform(size=n) < 0.5
    t = rng.normal(size=(n, 1))
    return np.where(on_first[:, None], t * [1.0, 0.1], t * [-0.2, 1.0])


def blob(rng, n):
    return rng.normal(size=(n, 2))


@pytest.mark.integration
def test_batched_equals_one_plane_at_a_time():
    rng = np.random.default_rng(0)
    clouds = [circle(rng, 300), two_lines(rng, 400), blob(rng, 120), circle(rng, 500), two_lines(rng, 50)]
    planes = [0, 1, 2, 0, 3]
    batched = cluster_reducibility.scan_clouds(clouds, planes, eps=0.1, seed=4, steps=STEPS)
    loop = cluster_reducibility.scan_clouds_loop(clouds, planes, eps=0.1, seed=4, steps=STEPS)
    for a, b in zip(batched, loop):
        assert a.m == b.m and a.m_hard == b.m_hard
        assert np.array_equal(a.v, b.v) and a.c == b.c
        assert a.s_bits == pytest.approx(b.s_bits, abs=1e-12) and a.s_angle == b.s_angle
    # seeds are per plane: another seed moves M's start, so M changes somewhere
    other = cluster_reducibility.scan_clouds(clouds, planes, eps=0.1, seed=5, steps=STEPS)
    assert any(not np.array_equal(a.v, b.v) for a, b in zip(batched, other))


@pytest.mark.integration
def test_scan_many_is_independent_of_batch_composition():
    rng = np.random.default_rng(1)
    coords = {7: rng.normal(size=(200, 4)) * [3, 2, 1, 0.5], 9: rng.normal(size=(90, 3)), 11: rng.normal(size=(500, 2))}
    together = cluster_reducibility.scan_many(coords, steps=STEPS, batch_points=1000)  # several batches
    for cid, x in coords.items():
        alone = cluster_reducibility.scan_many({cid: x}, steps=STEPS)[cid]
        assert [r.key for r in alone] == [cluster_reducibility.plane_key(p) for p in range(x.shape[1] - 1)]
        assert [(r.m, r.s_bits) for r in alone] == [(r.m, r.s_bits) for r in together[cid]]


@pytest.mark.unit
def test_planted_circle_high_s_and_two_lines_high_m():
    rng = np.random.default_rng(2)
    res = cluster_reducibility.scan_clouds([circle(rng, 600), two_lines(rng, 600), blob(rng, 600)], [0, 0, 0], steps=600)
    ring, lines, gauss = res
    assert ring.s_bits > 1.0 and ring.s_bits > 3 * gauss.s_bits
    assert lines.m > 0.4 and lines.m > 2 * max(ring.m, gauss.m)


@pytest.mark.unit
def test_plane_clouds_radius_rank_and_degenerate_planes():
    coords = np.array([[0.5, 0.0, 1.0], [2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    planes = cluster_reducibility.plane_clouds(coords, radius=1.0)
    assert [p for p, _ in planes] == [0, 1]
    assert np.array_equal(planes[0][1], coords[1:, :2])  # (0.5, 0) has norm 0.5 <= 1: dropped
    assert np.array_equal(planes[1][1], coords[[2, 3], 1:])  # the two (0, 1) rows have norm 1 <= 1: dropped
    flat = np.c_[np.arange(5.0), np.zeros(5), np.arange(5.0)]
    assert [p for p, _ in cluster_reducibility.plane_clouds(flat)] == []  # constant axis in both planes
    assert cluster_reducibility.numerical_rank(np.array([3.0, 1.0, 1e-9, 0.0])) == 2
    assert cluster_reducibility.num_components(9) == 5 and cluster_reducibility.num_components(3) == 3 and cluster_reducibility.num_components(9, 4) == 4


@pytest.mark.unit
def test_ranking_hand_built():
    metrics = {
        0: {"0-1": {"mixture_index": 0.5, "separability_index": 1.0},
            "1-2": {"mixture_index": 0.005, "separability_index": 5.0}},  # dropped: M < 0.01
        1: {"0-1": {"mixture_index": 0.0, "separability_index": 9.0}},  # nothing kept
        2: {"0-1": {"mixture_index": 0.1, "separability_index": 1.0},
            "1-2": {"mixture_index": 0.2, "separability_index": 0.5}},
    }
    assert cluster_reducibility.ranking_score(metrics[0]) == pytest.approx(0.25)  # mean([0, 0.5])
    assert cluster_reducibility.ranking_score(metrics[0], leading_zero=False) == pytest.approx(0.5)
    assert cluster_reducibility.ranking_score(metrics[1]) == 0.0 and cluster_reducibility.ranking_score(metrics[1], leading_zero=False) == 0.0
    assert cluster_reducibility.ranking_score(metrics[2]) == pytest.approx((0 + 0.9 + 0.4) / 3)
    summaries = cluster_reducibility.summarise(metrics)
    assert [(s.cluster, s.kept) for s in summaries] == [(0, 1), (1, 0), (2, 2)]
    assert summaries[2].mean_m == pytest.approx(0.15) and summaries[2].mean_s == pytest.approx(0.75)
    assert math.isnan(summaries[1].mean_m)
    assert [s.cluster for s in cluster_reducibility.ranking(summaries)] == [2, 0, 1]
    assert [s.cluster for s in cluster_reducibility.ranking(cluster_reducibility.summarise(metrics, leading_zero=False))] == [2, 0, 1]
    plain = cluster_reducibility.summarise(metrics, leading_zero=False)
    assert plain[2].score == pytest.approx(0.65)

    fig = cluster_reducibility.summary_figure(summaries, {2: "Weekdays cluster"})
    ax = fig.axes[0]
    assert ax.xaxis_inverted()
    grey, orange = ax.collections[0], ax.collections[1]
    assert np.allclose(grey.get_offsets(), [[0.5, 1.0], [0.15, 0.75]])  # cluster 1 has no kept plane
    assert np.allclose(orange.get_offsets(), [[0.15, 0.75]])
    assert [t.get_text() for t in ax.texts] == ["Weekdays cluster"]


@pytest.mark.integration
def test_scan_figure_content():
    rng = np.random.default_rng(3)
    results = cluster_reducibility.scan_clouds([circle(rng, 200), two_lines(rng, 200)], [0, 1], steps=10)
    fig = cluster_reducibility.scan_figure(results, 0.1, title="cluster 5")
    assert len(fig.axes) == 6
    assert fig.axes[0].get_ylabel() == "PCs 0-1" and fig.axes[3].get_ylabel() == "PCs 1-2"
    assert fig.axes[1].get_title() == f"M = {results[0].m:.4f}"
    assert fig.axes[5].get_title() == f"S = {results[1].s_bits:.4f} bits"
    assert len(fig.axes[0].collections[0].get_offsets()) == 200
    assert np.allclose(fig.axes[2].lines[0].get_ydata(), results[0].mi_bits)
    assert cluster_reducibility.metrics_json(results) == {
        "0-1": {"mixture_index": results[0].m, "mixture_index_exact": results[0].m_exact,
                "separability_index": results[0].s_bits},
        "1-2": {"mixture_index": results[1].m, "mixture_index_exact": results[1].m_exact,
                "separability_index": results[1].s_bits}}
    for result in results:  # the exact M is the maximum itself: never below the optimiser's share
        assert result.m_exact == mixture_index_exact(result.points).m >= result.m_hard


# ----------------------------------------------------------------------------------------- the scripts


@pytest.fixture()
def planted_run(tmp_path):
    from tests.sae_helpers import write_planted_circle_run

    run = write_planted_circle_run(tmp_path / "sae" / "gpt2_layer7_planted", n_contexts=30, ctx_len=32)
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps([run.cluster, [0, 1], [2, 4, 5, 6], [7], list(range(8, 20))]))
    return tmp_path, run, clusters


@pytest.mark.integration
def test_compute_reducibility_cli_one_cluster_and_all(planted_run, capsys):
    from sae_multid_feature_discovery import analyze_reducibilities, gpt2_compute_reducibility as script

    base, run, clusters = planted_run
    common = ["--base_dir", str(base), "--clusters_file", str(clusters), "--steps", str(STEPS)]
    (path,) = script.main(common + ["--cluster", "0"])
    metrics = json.loads(path.read_text())
    assert list(metrics) == ["0-1"]  # the circle spans 2 dimensions: one plane, the rest is rounding noise
    assert metrics["0-1"]["separability_index"] > 1.0 and metrics["0-1"]["mixture_index"] < 0.2
    assert path.with_name(path.name.replace("-metrics.json", ".png")).is_file()
    assert path.name == "gpt2-layer7-cluster0-threshold0.0-radius0.0-metrics.json"
    stamp = (path.parent / "stage.json").stat().st_mtime_ns

    written = script.main(common + ["--clusters", "all", "--size_limit", "10", "--no_figures"])
    assert [p.parent.name for p in written] == ["0", "1", "2"]  # [7] is a singleton, cluster 4 has 12 > 10
    # --no_figures changes the settings: cluster 0 is rebuilt without its figure
    assert not any(written[0].parent.glob("*.png"))
    again = script.main(common + ["--clusters", "all", "--size_limit", "10", "--no_figures"])
    assert again == written and (written[0].parent / "stage.json").stat().st_mtime_ns != stamp
    stamp2 = [(p.parent / "stage.json").stat().st_mtime_ns for p in written]
    script.main(common + ["--clusters", "all", "--size_limit", "10", "--no_figures"])
    assert [(p.parent / "stage.json").stat().st_mtime_ns for p in written] == stamp2  # all reused

    capsys.readouterr()
    (empty,) = script.main(common + ["--cluster", "1", "--threshold", "100"])  # nothing fires above 100
    assert json.loads(empty.read_text()) == {} and empty.name.endswith("threshold100.0-radius0.0-metrics.json")
    assert "1 cluster(s) fired on fewer than 2 tokens" in capsys.readouterr().out
    for bad, phrase in ((["--cluster", "5"], "out of range"), (["--cluster", "4", "--size_limit", "10"], "size_limit"),
                        (["--cluster", "0", "--epsilon", "0"], "--epsilon"),
                        (["--cluster", "0", "--device", "cuda:7"], "cuda:7")):
        with pytest.raises(SystemExit) as exit_info:
            script.main(common + bad)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert phrase in err and "\n" not in err

    out = analyze_reducibilities.main(["--base_dir", str(base), "--clusters_file", str(clusters), "--named", "0:Circle"])
    rows = (out / "ranking.csv").read_text().splitlines()
    assert rows[0].startswith("rank,cluster,score")
    by_cluster = {int(r.split(",")[1]): r.split(",") for r in rows[1:]}
    assert set(by_cluster) == {0, 1, 2}
    expected = cluster_reducibility.ranking_score(metrics)
    assert float(by_cluster[0][2]) == pytest.approx(expected)
    assert (out / "reducibility_metrics_threshold0_radius0.pdf").is_file()
    printed = capsys.readouterr().out
    assert "Circle (cluster 0): rank" in printed and "against the ranking by the exact M: Spearman" in printed
    out = analyze_reducibilities.main(["--base_dir", str(base), "--clusters_file", str(clusters), "--mixture", "exact"])
    rows = (out / "ranking.csv").read_text().splitlines()
    by_cluster = {int(r.split(",")[1]): r.split(",") for r in rows[1:]}
    assert float(by_cluster[0][2]) == pytest.approx(cluster_reducibility.ranking_score(metrics, mixture="exact"))
    assert float(by_cluster[0][3]) == pytest.approx(metrics["0-1"]["mixture_index_exact"])
    assert "top 3 (exact M)" in capsys.readouterr().out


@pytest.mark.integration
def test_scans_of_two_clusterings_never_mix(planted_run, capsys):
    """Two cluster files of one run: default folders apart; one --save_dir for both is refused; a folder that
    mixes them anyway is refused by the ranking; a re-made cluster file drops its stale cluster folders."""
    from sae_multid_feature_discovery import analyze_reducibilities, gpt2_compute_reducibility as script

    base, run, clusters = planted_run
    other = clusters.with_name("other.json")
    other.write_text(json.dumps([[2, 4, 5, 6], run.cluster]))
    common = ["--base_dir", str(base), "--steps", "50", "--no_figures", "--clusters", "all"]
    first = script.main(common + ["--clusters_file", str(clusters)])
    second = script.main(common + ["--clusters_file", str(other)])
    assert first[0].parent.parent != second[0].parent.parent
    assert first[0].parent.parent.parent.name == "clusters" and second[0].parent.parent.parent.name == "other"
    shared = base / "shared_scan"
    script.main(common + ["--clusters_file", str(clusters), "--save_dir", str(shared)])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        script.main(common + ["--clusters_file", str(other), "--save_dir", str(shared)])
    err = capsys.readouterr().err
    assert "holds the scan of another clustering (clusters.json: 4 clusters" in err and "other.json" in err
    # a folder mixed by hand (or by an older version of the scan): the ranking refuses it
    mixed = base / "mixed_scan"
    shutil.copytree(first[0].parent.parent, mixed)
    shutil.rmtree(mixed / "0")
    shutil.copytree(second[0].parent, mixed / "0")
    with pytest.raises(SystemExit):
        analyze_reducibilities.main(["--scan_dir", str(mixed)])
    err = capsys.readouterr().err
    assert "holds scans of different clusterings" in err and "clusters.json: 3 clusters" in err
    # the same cluster file re-made with fewer clusters: the folders scanned from its old version go, 0 and 1 are redone
    clusters.write_text(json.dumps([run.cluster, [0, 1]]))
    again = script.main(common + ["--clusters_file", str(clusters)])
    assert [p.parent.name for p in again] == ["0", "1"]
    assert sorted(p.name for p in again[0].parent.parent.iterdir() if p.is_dir()) == ["0", "1"]
    assert "removed 4 cluster folder(s) scanned from an older version of clusters.json" in capsys.readouterr().out


@pytest.mark.integration
def test_a_decoder_file_of_another_shape_than_the_runs_is_refused(planted_run, capsys):
    from sae_multid_feature_discovery import gpt2_compute_reducibility as script

    base, run, clusters = planted_run
    own = np.load(run.run_dir / "decoder.npy")
    np.save(base / "narrow.npy", own[:, :-1])
    with pytest.raises(SystemExit):
        script.main(["--base_dir", str(base), "--clusters_file", str(clusters), "--cluster", "0",
                     "--decoder_file", str(base / "narrow.npy")])
    err = capsys.readouterr().err.strip()
    assert f"is [{own.shape[0]}, {own.shape[1] - 1}] but the run's SAE decoder" in err and "\n" not in err
    with_nan = own.copy()
    with_nan[[4, 7]] = np.nan
    np.save(base / "nan.npy", with_nan)
    with pytest.raises(SystemExit):
        script.main(["--base_dir", str(base), "--clusters_file", str(clusters), "--cluster", "0",
                     "--decoder_file", str(base / "nan.npy")])
    err = capsys.readouterr().err.strip()
    assert "has NaN or infinite values in 2 row(s) (features 4, 7)" in err and "\n" not in err
    np.save(base / "same.npy", own)  # the same shape (a copy) is accepted
    (path,) = script.main(["--base_dir", str(base), "--clusters_file", str(clusters), "--cluster", "0", "--steps",
                           "20", "--no_figures", "--decoder_file", str(base / "same.npy")])
    assert path.is_file()


@pytest.mark.integration
def test_same_size_edits_of_the_decoder_or_a_metrics_file_are_refused(planted_run, capsys):
    from sae_multid_feature_discovery import analyze_reducibilities, gpt2_compute_reducibility as script

    base, run, clusters = planted_run
    common = ["--base_dir", str(base), "--clusters_file", str(clusters), "--steps", "20", "--no_figures"]
    written = script.main(common + ["--clusters", "all", "--size_limit", "10"])
    metrics = written[1]
    text = metrics.read_text()
    digit = next(i for i, ch in enumerate(text) if ch.isdigit() and ch != "0")
    metrics.write_text(text[:digit] + ("1" if text[digit] != "1" else "2") + text[digit + 1:])  # same size
    capsys.readouterr()
    with pytest.raises(SystemExit):
        analyze_reducibilities.main(["--base_dir", str(base), "--clusters_file", str(clusters)])
    err = capsys.readouterr().err
    assert "the scan result of cluster 1" in err and "checksum mismatch" in err
    decoder = run.run_dir / "decoder.npy"
    data = bytearray(decoder.read_bytes())
    data[-1] ^= 0x01  # one bit of the last float
    decoder.write_bytes(bytes(data))
    with pytest.raises(SystemExit):
        script.main(common + ["--cluster", "0"])
    err = capsys.readouterr().err
    assert "does not match what was written (decoder.npy was changed after it was written" in err


@pytest.mark.integration
def test_missing_occurrences_and_metrics_name_the_command(tmp_path, capsys):
    from sae_multid_feature_discovery import analyze_reducibilities, gpt2_compute_reducibility as script

    with pytest.raises(SystemExit):
        script.main(["--base_dir", str(tmp_path), "--clusters_file", str(tmp_path / "c.json")])
    assert "generate_feature_occurence_data.py" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        analyze_reducibilities.main(["--scan_dir", str(tmp_path / "nothing")])
    assert "gpt2_compute_reducibility.py --model_name gpt2 --layer 7 --clusters all" in capsys.readouterr().err


@pytest.mark.unit
def test_planes_beyond_the_numerical_rank_are_not_scanned():
    from multid.sae.analysis.scan_batches import ScanSettings, cluster_coords

    rng = np.random.default_rng(5)
    W = np.zeros((4, 6), np.float32)
    W[0, 0] = W[1, 1] = 1.0
    W[2, :3] = [0.6, 0.8, 1e-7]  # a rounding-level third direction
    token = np.repeat(np.arange(50), 2)
    feature = np.tile([0, 2], 50).astype(np.int32)
    feature[1::4] = 1
    value = rng.uniform(0.5, 2.0, size=100).astype(np.float32)
    coords = cluster_coords(token, feature, value, [0, 1, 2], W, ScanSettings(model="gpt2", layer=7))
    assert coords.shape == (50, 2)
    assert cluster_coords(token[:2], feature[:2], value[:2], [0, 1, 2], W, ScanSettings("gpt2", 7)) is None


@pytest.mark.unit
def test_rank_comparison_of_two_rankings():
    def summaries(scores):
        return [cluster_reducibility.ClusterSummary(cid, 0.5, 1.0, 1, score) for cid, score in enumerate(scores)]

    rho, moves = cluster_reducibility.rank_comparison(summaries([0.9, 0.8, 0.7, 0.6]), summaries([0.9, 0.8, 0.7, 0.6]))
    assert rho == pytest.approx(1.0) and all(a == b for _, a, b in moves)
    # cluster 3 goes from last to first, the others move down one
    rho, moves = cluster_reducibility.rank_comparison(summaries([0.9, 0.8, 0.7, 0.6]), summaries([0.9, 0.8, 0.7, 1.0]), top=2)
    assert rho == pytest.approx(1 - 6 * (1 + 1 + 1 + 9) / (4 * 15)) and moves[0] == (3, 4, 1)
    with pytest.raises(UserError, match="no 'mixture_index_exact'"):
        cluster_reducibility.kept_planes({"0-1": {"mixture_index": 0.2, "separability_index": 1.0}}, mixture="exact")


@pytest.mark.integration
def test_calibrated_scan_ranks_the_planted_circle_first(planted_run, capsys):
    """--calibrate puts each plane's S p-value and M z-score beside M and S; --score calibrated ranks by the
    Benjamini-Hochberg q of S over every kept plane, and refuses a scan made without the null."""
    from sae_multid_feature_discovery import analyze_reducibilities, gpt2_compute_reducibility as script

    base, run, clusters = planted_run
    common = ["--base_dir", str(base), "--clusters_file", str(clusters), "--steps", str(STEPS), "--no_figures",
              "--clusters", "all", "--size_limit", "10"]
    plain = script.main(common)
    ranking = ["--base_dir", str(base), "--clusters_file", str(clusters), "--mixture", "exact"]
    with pytest.raises(SystemExit):
        analyze_reducibilities.main(ranking + ["--score", "calibrated"])
    assert "--calibrate" in capsys.readouterr().err
    written = script.main(common + ["--calibrate", "--null_draws", "50"])
    assert written == plain
    circle = json.loads(written[0].read_text())["0-1"]
    assert circle["s_p"] == pytest.approx(1 / 51, abs=1e-6) and circle["separability_index"] > circle["s_null_p95"]
    assert set(cluster_reducibility.CALIBRATION_KEYS) <= set(circle)
    out = analyze_reducibilities.main(ranking + ["--score", "calibrated"])
    rows = [r.split(",") for r in (out / "ranking.csv").read_text().splitlines()]
    assert rows[0][-4:] == ["best_q", "significant_planes", "s_z", "m_z"] and rows[1][1] == "0"
    assert "top 3 (exact M, calibrated): 0" in capsys.readouterr().out


@pytest.mark.integration
def test_exact_only_scan_skips_the_gradient_and_ranks_the_same(planted_run, capsys):
    """--mixture exact writes the exact M and S without the gradient M (same values as the full scan); ranking
    it by the gradient M is refused with the way out."""
    from sae_multid_feature_discovery import analyze_reducibilities, gpt2_compute_reducibility as script

    base, run, clusters = planted_run
    common = ["--base_dir", str(base), "--clusters_file", str(clusters), "--steps", str(STEPS), "--no_figures",
              "--clusters", "all", "--size_limit", "10"]
    both = {path.parent.name: json.loads(path.read_text()) for path in script.main(common)}
    exact = {path.parent.name: json.loads(path.read_text()) for path in script.main(common + ["--mixture", "exact"])}
    assert exact.keys() == both.keys()
    for cluster, planes in exact.items():
        for key, values in planes.items():
            assert "mixture_index" not in values
            assert values["mixture_index_exact"] == both[cluster][key]["mixture_index_exact"]
            assert values["separability_index"] == pytest.approx(both[cluster][key]["separability_index"], abs=1e-12)
    ranking = ["--base_dir", str(base), "--clusters_file", str(clusters)]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        analyze_reducibilities.main(ranking)
    assert "scanned with --mixture exact" in capsys.readouterr().err
    analyze_reducibilities.main(ranking + ["--mixture", "exact"])
    assert "top 3 (exact M): 0" in capsys.readouterr().out
