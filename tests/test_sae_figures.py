"""SAE figures: the interactive plotly figure, Figures 1 / 12 / 13, the exploration grid, the figure scripts,
and other_circle_points (multid.sae.figures, multid.sae.runners, multid.sae.analysis.day_prompts)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multid.sae.figures import interactive_html as I
from multid.sae.data import token_labels as L
from multid.sae.figures import cluster_panels as P
from multid.sae.analysis.reconstructions import reconstruction_pca
from tests import sae_calendar as cal_mod

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MISTRAL_FILE = SHARED_DATA / "mistral_layer_8_clusters_cutoff_0.5.pkl"
MISTRAL_DAYS = [398, 20629, 23936, 31484, 35234, 52464, 54166]
GPT2_DAYS = [2592, 4445, 4663, 4733, 6531, 8179, 9566, 20927, 24185]
GPT2_MONTHS = [3977, 4140, 5993, 7299, 9104, 9401, 10449, 11196, 12661, 14715, 17068, 17528, 19589, 21033, 22043,
               23304]
GPT2_YEARS = [1052, 2753, 4427, 6382, 8314, 9576, 9606, 13551, 19734, 20349]


# ----------------------------------------------------------------------------------------- interactive figure


def interactive_inputs(n_features: int = 7, n_points: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(n_features, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[1] *= 3.0  # a non-unit row: the heat map shows cosines, not dot products
    pca = reconstruction_pca(rng.normal(size=(n_points, 16)), I.num_pcs(n_features))
    hover = [f"ctx {i} <b> Tok{i}</b>" for i in range(n_points)]
    return rows, pca, hover


@pytest.mark.unit
def test_interactive_figure_content():
    rows, pca, hover = interactive_inputs()
    fig = I.build_interactive_figure(rows, pca, hover, "title")
    types = [t.type for t in fig.data]
    assert types == ["heatmap", "scatter", "scatter"] + ["scatter"] * 4  # m = 5 PCs -> 4 pairs
    heat = fig.data[0]
    z = np.array(heat.z, dtype=float)
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    expected = unit.astype(np.float64) @ unit.T.astype(np.float64)
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(z[off], expected[off], atol=1e-6)
    assert np.isnan(np.diag(z)).all()
    assert (heat.zmin, heat.zmax) == (-1, 1)
    assert heat.colorscale[0][1] == "rgb(5,10,172)" or "RdBu" in str(fig.data[0].colorscale) or len(heat.colorscale) > 2
    np.testing.assert_allclose(fig.data[1].y, np.linalg.svd(rows.astype(np.float64), compute_uv=False))
    centred = rows.astype(np.float64) - rows.astype(np.float64).mean(axis=1, keepdims=True)
    np.testing.assert_allclose(fig.data[2].y, np.linalg.svd(centred, compute_uv=False))
    assert not np.allclose(fig.data[1].y, fig.data[2].y)
    for i, trace in enumerate(fig.data[3:]):
        np.testing.assert_array_equal(trace.x, pca.coords[:, i])
        np.testing.assert_array_equal(trace.y, pca.coords[:, i + 1])
        assert list(trace.text) == hover
        assert all("<b>" in t and "</b>" in t for t in trace.text)
    assert fig.layout.width == 1200 and fig.layout.height == 800


@pytest.mark.unit
def test_interactive_small_cluster_has_fewer_pairs():
    rows, pca, hover = interactive_inputs(n_features=3)
    fig = I.build_interactive_figure(rows, pca, hover, "t")
    assert [t.type for t in fig.data].count("scatter") == 2 + 2  # m = 3 -> pairs (0,1), (1,2)


@pytest.mark.unit
def test_hover_text_bolds_the_firing_token_and_escapes():
    from multid.sae.data.tokenizers import hover_text

    assert hover_text([" the", " <x>", "\n", " Monday"]) == " the &lt;x&gt;\u21b5<b> Monday</b>"


def unescape(html_text: str) -> str:
    """plotly writes <, > and / inside its JSON as \\u003c, \\u003e, \\u002f."""
    return html_text.replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u002f", "/")


@pytest.mark.unit
def test_html_is_offline(tmp_path):
    rows, pca, hover = interactive_inputs()
    path = I.write_html(I.build_interactive_figure(rows, pca, hover, "t"), tmp_path / "f.html")
    text = path.read_text()
    assert "<script src=" not in text and 'src="http' not in text  # no CDN or other remote script
    assert len(text) > 3_000_000  # plotly.js itself is inlined
    assert "&lt;b&gt;" not in text and "<b> Tok0</b>" in unescape(text)


# ----------------------------------------------------------------------------------------- label maps


@pytest.mark.unit
def test_label_maps():
    assert L.map_labels([" Monday", "Tues", " sundays", "\u2581Friday", " x"], L.DAY_TOKENS).tolist() == [0, 1, 6, 4, -1]
    assert L.map_labels([" May", "Sept", " december", " Dec"], L.MONTH_TOKENS).tolist() == [4, -1, 11, 11]
    assert L.map_labels(["\u2581uesday", " weekend", " autumn"], L.MISTRAL_DAY_TOKENS).tolist() == [1, 7, -1]
    assert L.map_labels([" autumn", " fall"], L.MISTRAL_MONTH_TOKENS).tolist() == [15, 15]
    tokens = ["1950", " s", "2005", " in", "1901"]
    assert L.year_labels(tokens).tolist() == [50, -1, -1, -1, 1]  # fixed: non-digit tokens are grey
    assert L.year_labels(tokens, stale_colours=True).tolist() == [50, 50, -1, -1, 1]  # the original's colouring


# ----------------------------------------------------------------------------------------- paper figures


def panel(n: int, labels, seed: int) -> P.Panel:
    return P.Panel(np.random.default_rng(seed).normal(size=(n, 5)), np.asarray(labels))


def scatter_offsets(ax) -> int:
    from matplotlib.collections import PathCollection

    return sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))


@pytest.mark.unit
def test_figure1_content():
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    days = panel(70, np.arange(70) % 8 - 1, 0)  # includes OTHER
    months = panel(48, np.arange(48) % 12, 1)
    years = panel(30, np.r_[np.arange(25) * 4, [-1] * 5], 2)
    fig = P.figure1(days, months, years)
    try:
        assert len(fig.axes) == 4  # three panels + the colour bar
        axes = fig.axes[:3]
        assert [scatter_offsets(ax) for ax in axes] == [70, 48, 30]
        assert [ax.get_title() for ax in axes] == [P.DAYS_TITLE, P.MONTHS_TITLE, P.YEARS_TITLE]
        assert P.legend_texts(axes[0]) == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Other"]
        assert P.legend_texts(axes[1]) == list(L.MONTH_SHORT) + ["Other"]
        # the plotted coordinates are PC 2 vs 3 (days) and PC 3 vs 4 (years)
        np.testing.assert_array_equal(axes[0].collections[0].get_offsets(), days.coords[:, [1, 2]])
        np.testing.assert_array_equal(axes[2].collections[0].get_offsets(), years.coords[:, [2, 3]])
        colours = axes[0].collections[0].get_facecolors()
        np.testing.assert_allclose(colours[1], to_rgba(plt.get_cmap("tab10")(0), 0.6))  # label 0 = Monday, tab10[0]
        np.testing.assert_allclose(colours[0][:3], to_rgba(P.GREY)[:3])  # OTHER grey
        bar = fig.axes[3]
        assert bar.get_xlim() == (1900.0, 1999.0)
        assert [float(t) for t in bar.get_xticks()] == [1900.0, 1950.0, 1999.0]
    finally:
        plt.close(fig)


@pytest.mark.unit
def test_figure12_and_13_content():
    import matplotlib.pyplot as plt

    fig = P.figure12(panel(40, np.arange(40) % 7, 0), panel(36, np.arange(36) % 12, 1), panel(20, np.arange(20), 2))
    try:
        assert len(fig.axes) == 10
        assert [scatter_offsets(ax) for ax in fig.axes[:9]] == [40] * 3 + [36] * 3 + [20] * 3
        assert P.legend_texts(fig.axes[1])[:4] == ["Mon", "Tue", "Wed", "Thu"]
        assert fig.axes[3].get_title() == "Months of the Year: PC 1 vs 2"
    finally:
        plt.close(fig)
    month_labels = np.r_[np.arange(12), [12, 13, 14, 15, 15, -1]]
    fig = P.figure13(panel(16, np.r_[np.arange(8), np.arange(8) - 1], 3), panel(18, month_labels, 4))
    try:
        assert len(fig.axes) == 2
        assert [scatter_offsets(ax) for ax in fig.axes] == [16, 18]
        tri = [c for c in fig.axes[1].collections if len(c.get_offsets()) == 5]
        assert len(tri) == 1  # the 5 season points drawn as triangles
        assert "Weekend" in P.legend_texts(fig.axes[0])
        assert {"Winter", "Spring", "Summer", "Autumn", "Other"} <= set(P.legend_texts(fig.axes[1]))
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------- scripts


@pytest.fixture(scope="module")
def calendar(tmp_path_factory):
    return cal_mod.make_calendar_run(tmp_path_factory.mktemp("calendar_fig"), n_ctx=30)


@pytest.mark.integration
def test_mistral_interactive_script_numbering(calendar, tmp_path, capsys):
    from sae_multid_feature_discovery import mistral_interactive_figure as script

    written = script.main(cal_mod.cli_args(calendar, "--cluster", "0", "--save_dir", str(tmp_path)))
    out = capsys.readouterr().out
    assert "numbered 'non_singleton'" in out and str(cal_mod.DAYS) in out
    html, pca_file = written
    assert html.name == "tiny-layer1-cluster0.html" and html.stat().st_size > 3_000_000
    # with --save_dir elsewhere the reconstruction cache goes there too, never over the run's own
    assert pca_file.parent == tmp_path / "reconstructions"
    text = html.read_text()
    assert "<b> Monday</b>" in unescape(text) and " the" in unescape(text)
    # the same cluster under the full numbering is index 1; index 0 there is a singleton
    script.main(cal_mod.cli_args(calendar, "--cluster", "1", "--cluster_convention", "all", "--save_dir", str(tmp_path)))
    assert str(cal_mod.DAYS) in capsys.readouterr().out
    from multid.circles.compare import read_sae_components

    comps = read_sae_components(pca_file, [0, 1])
    assert np.linalg.norm(comps[:, :2], axis=1).min() > 0.99  # the planted days plane


@pytest.mark.unit
def test_mistral_defaults_pick_the_days_cluster():
    from multid.sae.data.cluster_files import load_clusters, pick_cluster
    from multid.sae.runners.script_args import interactive_parser
    from multid.sae.stage_configs import MistralInteractiveConfig

    args = interactive_parser(MistralInteractiveConfig(), "").parse_args([])
    assert (args.cluster, args.cluster_convention, args.layer, args.sample_limit) == (61, "non_singleton", 8, 4000)
    if not MISTRAL_FILE.is_file():
        pytest.skip(f"the paper's Mistral cluster file is not at {MISTRAL_FILE}")
    clusters = load_clusters(MISTRAL_FILE)
    assert sorted(pick_cluster(clusters, args.cluster, args.cluster_convention)) == MISTRAL_DAYS


@pytest.mark.unit
def test_gpt2_defaults_pick_days_months_years():
    from multid.sae.data.cluster_files import load_clusters, pick_cluster
    from multid.sae.runners.script_args import dmy_parser

    args = dmy_parser("").parse_args([])
    assert (args.days, args.months, args.years, args.layer, args.sample_limit) == (138, 251, 212, 7, 20000)
    path = SHARED_DATA / "gpt-2_layer_7_clusters_spectral_n1000.pkl"
    if not path.is_file():
        pytest.skip(f"the paper's GPT-2 cluster file is not at {path}")
    clusters = load_clusters(path)
    assert sorted(pick_cluster(clusters, args.days, args.cluster_convention)) == GPT2_DAYS
    assert sorted(pick_cluster(clusters, args.months, args.cluster_convention)) == GPT2_MONTHS
    assert sorted(pick_cluster(clusters, args.years, args.cluster_convention)) == GPT2_YEARS


@pytest.mark.integration
@pytest.mark.parametrize("flags, message", [
    (["--cluster", "3"], "out of range: there are 3 clusters numbered 'non_singleton' (allowed 0..2)"),
    (["--cluster", "1", "--size_limit", "5"], "has 12 features, more than --size_limit 5"),
])
def test_interactive_bad_cluster(calendar, tmp_path, capsys, flags, message):
    from sae_multid_feature_discovery import gpt2_interactive_figure as script

    with pytest.raises(SystemExit) as exit_info:
        script.main(cal_mod.cli_args(calendar, *flags, "--save_dir", str(tmp_path)))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.integration
def test_empty_cluster_and_missing_data(calendar, tmp_path, capsys):
    from sae_multid_feature_discovery import gpt2_interactive_figure as script

    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([[1, 2], []]))
    args = cal_mod.cli_args(calendar, "--cluster", "1", "--cluster_convention", "all", "--save_dir", str(tmp_path))
    args[args.index("--clusters_file") + 1] = str(empty)
    with pytest.raises(SystemExit):
        script.main(args)
    assert "is empty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--base_dir", str(tmp_path / "nobase"), "--model_name", "gpt2", "--layer", "7"])
    err = capsys.readouterr().err
    assert "generate_feature_occurence_data.py --model_name gpt2 --layers 7" in err


@pytest.mark.integration
def test_days_months_years_script(calendar, tmp_path, capsys):
    from sae_multid_feature_discovery import gpt2_days_weeks_years as script

    written = script.main(cal_mod.cli_args(calendar, "--days", "0", "--months", "1", "--years", "2",
                                           "--save_dir", str(tmp_path), "--formats", "pdf", "png"))
    assert sorted(p.name for p in written) == sorted(["gpt2nonlinears.pdf", "gpt2nonlinears.png",
                                                      "gpt2nonlinears3projs.pdf", "gpt2nonlinears3projs.png"])
    out = capsys.readouterr().out
    assert "fraction of grey points in the days panel: 0.0000" in out
    assert all(p.stat().st_size > 10_000 for p in written)


@pytest.mark.integration
def test_mistral_days_months_and_explore_scripts(calendar, tmp_path, capsys):
    from sae_multid_feature_discovery import explore_features, mistral_days_months

    written = mistral_days_months.main(cal_mod.cli_args(calendar, "--days", "0", "--months", "1",
                                                        "--save_dir", str(tmp_path)))
    assert [p.name for p in written] == ["mistral7bnonlinears.png"]
    ranking = tmp_path / "ranking.json"
    ranking.write_text(json.dumps([{"cluster": 2}, {"cluster": 0}, {"cluster": 1}]))
    written = explore_features.main(cal_mod.cli_args(calendar, "--ranking", str(ranking), "--top", "2",
                                                     "--save_dir", str(tmp_path)))
    out = capsys.readouterr().out
    assert "cluster 2 (rank 1)" in out and "cluster 0 (rank 2)" in out and "rank 3" not in out
    assert written[0].name == "all_clusters_grid.png"


@pytest.mark.unit
def test_explore_grid_content():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    words = [f"w{i % 12}" for i in range(50)]
    entry = P.GridEntry("Cluster 5 (Rank 1)", rng.normal(size=(50, 5)), np.full(5, 0.2), words, words[::-1])
    fig = P.explore_grid([entry, entry, entry])
    try:
        axes = [ax for ax in fig.get_axes()]
        assert len(axes) == 3 * 6  # 3 clusters x (2 rows x 3 pairs)
        assert all(scatter_offsets(ax) == 50 for ax in axes)
        colours, top = P.top_token_colours(words)
        assert len(top) == 10 and sum(np.allclose(c, colours[-1]) for c in colours) >= 1
        grey = np.array([np.allclose(c[:3], [0xDD / 255] * 3) for c in colours])
        assert grey.sum() == sum(1 for w in words if w not in top)
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------- other circle points


@pytest.mark.integration
def test_other_circle_points_tiny(tmp_path, tiny_model):
    from multid.sae.analysis import day_prompts as dp
    from sae_multid_feature_discovery import other_circle_points as script

    written = script.main(["--model", "tiny", "--device", "cpu", "--base_dir", str(tmp_path / "base"),
                           "--out_dir", str(tmp_path)])
    assert [p.name for p in written] == ["tiny_weekdays_experiment_1.pdf", "tiny_weekdays_experiment_2.pdf",
                                         "tiny_months_from_experiment.pdf", "tiny_other_circle_points.json"]
    record = json.loads(written[-1].read_text())
    exp1 = record["experiments"]["weekdays_1"]
    assert exp1["prompts"][7] == "morning on Monday" and exp1["groups"][7] == "morning"
    assert record["experiments"]["weekdays_2"]["prompts"][14] == "very late on Monday"
    # the projection: PCA fit on the 7 day names, the hidden state after `layer` blocks at the last position
    prompts = dp.weekday_prompts(1)
    states = dp.last_position_states(tiny_model, prompts.prompts, record["layer"])
    _, cache = tiny_model.run_with_cache(tiny_model.to_tokens("morning on Monday"))
    np.testing.assert_allclose(states[7], cache[f"blocks.{record['layer'] - 1}.hook_resid_post"][0, -1].numpy(),
                               rtol=1e-5, atol=1e-5)
    fit = states[:7]
    centred = fit - fit.mean(0)
    top2 = np.linalg.svd(centred, full_matrices=False)[2][:2]
    got = np.array(exp1["coords"])
    np.testing.assert_allclose(np.abs(got), np.abs((states - fit.mean(0)) @ top2.T), atol=1e-4)
    np.testing.assert_allclose(got[:7].mean(0), 0, atol=1e-4)  # the day names are centred


@pytest.mark.unit
def test_other_circle_points_figure_labels():
    import matplotlib.pyplot as plt

    for experiment, expected in ((1, ["Day name", "Morning on day", "Evening on day"]),
                                 (2, ["Day name", "Very early on day", "Very late on day"])):
        prompts = __import__("multid.sae.analysis.day_prompts", fromlist=["x"]).weekday_prompts(experiment)
        from multid.sae.analysis.day_prompts import Projection

        proj = Projection(prompts, np.random.default_rng(0).normal(size=(21, 2)), np.ones(5) / 5, 30)
        fig = __import__("multid.sae.analysis.day_prompts", fromlist=["x"]).weekday_figure(proj, paper_limits=True)
        try:
            ax = fig.axes[0]
            assert [t.get_text() for t in ax.get_legend().get_texts()] == expected
            assert scatter_offsets(ax) == 21
            assert ax.get_xlim() == (-8, 13) and ax.get_ylim() == (10, -10)  # y inverted
        finally:
            plt.close(fig)


# ----------------------------------------------------------------------------------------- whole pipeline


@pytest.mark.acceptance
def test_generate_then_interactive_cli(tmp_path):
    """Occurrences from the tiny model and a SAELens SAE on disk (the generate script), then the interactive
    figure script run as upstream runs it (from inside its folder, as a subprocess)."""
    import subprocess
    import sys

    from multid.config import REPO_ROOT
    from multid.sae.data.occurrence_store import open_occurrences
    from sae_multid_feature_discovery import generate_feature_occurence_data as generate
    from tests.sae_helpers import make_tiny_sae, write_corpus

    sae = make_tiny_sae(tmp_path / "sae")
    texts = write_corpus(tmp_path / "text", n_docs=12)
    base = tmp_path / "base"
    generate.main(["--model_name", "tiny", "--layers", "1", "--sae_path", str(sae), "--text_files",
                   *map(str, texts), "--ctx_len", "16", "--base_dir", str(base), "--no_progress"])
    run = next((base / "sae").glob("tiny_layer1_*"))
    _, feature, _ = open_occurrences(run).triples()
    busiest = np.argsort(-np.bincount(feature), kind="stable")[:4].tolist()
    clusters = tmp_path / "clusters.json"
    clusters.write_text(json.dumps([[busiest[3]], busiest[:3]]))
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "gpt2_interactive_figure.py", "--model_name", "tiny", "--layer", "1",
                           "--base_dir", str(base), "--clusters_file", str(clusters), "--cluster", "0"],
                          cwd=REPO_ROOT / "sae_multid_feature_discovery", env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"3 features {busiest[:3]}" in proc.stdout
    html = run / "figs" / "tiny-layer1-cluster0.html"
    pca_file = next((run / "reconstructions").glob("clusters-non_singleton-cluster0-pca.npz"))
    assert str(html) in proc.stdout and str(pca_file) in proc.stdout
    from multid.circles.compare import read_sae_components

    assert read_sae_components(pca_file, [0, 1]).shape == (2, 64)
