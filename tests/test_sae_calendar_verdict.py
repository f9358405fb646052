"""Issue 33: the calendar order's chance level, the layer profile of the corpus's calendar tokens and its
criterion, and the verdict of the named weekday and month clusters on planted data (it passes when the planted
features go round in calendar order and fails when that order is scrambled)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from multid.sae.analysis import calendar_metrics as CC
from multid.sae.analysis import layer_profile as LP
from multid.sae.data.token_labels import OTHER


def ring(labels: np.ndarray, period: int, order: np.ndarray | None = None, noise: float = 0.05, seed: int = 0
         ) -> np.ndarray:
    """2-D points of each class at angle 2 pi position / period, position = order[class] (identity: in order)."""
    position = labels if order is None else order[labels]
    angle = 2 * np.pi * position / period
    return np.c_[np.cos(angle), np.sin(angle)] + noise * np.random.default_rng(seed).normal(size=(len(labels), 2))


# ----------------------------------------------------------------------------------------- chance of the order


@pytest.mark.unit
def test_adjacent_chance_is_two_over_m_minus_one_and_three_classes_say_nothing():
    assert CC.adjacent_chance(7) == pytest.approx(1 / 3)
    assert CC.adjacent_chance(12) == pytest.approx(2 / 11)
    assert CC.adjacent_chance(3) == 1.0
    labels = np.repeat(np.arange(7), 10)
    # the Monte Carlo mean of the share over random orders matches the formula
    rng = np.random.default_rng(1)
    shares = [CC.circle_order(ring(labels, 7, rng.permutation(7)), labels, 7).adjacent_fraction for _ in range(300)]
    assert np.mean(shares) == pytest.approx(1 / 3, abs=0.03)


@pytest.mark.unit
def test_adjacent_p_is_small_for_a_calendar_cycle_and_one_for_three_classes():
    labels = np.repeat(np.arange(7), 10)
    good = CC.circle_order(ring(labels, 7), labels, 7)
    # one cycle of the 360 undirected cycles of 7 classes: p = 1/360 up to the draws
    assert good.adjacent_fraction == 1.0 and good.adjacent_p < 0.006
    three = CC.circle_order(ring(labels[labels < 3], 7), labels[labels < 3], 7)
    assert three.adjacent_fraction == 1.0 and three.adjacent_chance == 1.0 and three.adjacent_p == 1.0
    scrambled = CC.circle_order(ring(labels, 7, np.array([0, 3, 6, 2, 5, 1, 4])), labels, 7)
    assert scrambled.adjacent_fraction == 0.0 and scrambled.adjacent_p == 1.0


# ----------------------------------------------------------------------------------------- the layer profile


def planted_layers(labels: dict[str, np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Four layers of 32-d residuals: 0 and 1 with no class structure, 2 with both circles in calendar order
    (radius 2), 3 with both circles scrambled (radius 3: more variance, wrong order)."""
    rng = np.random.default_rng(seed)
    n = len(labels["weekday"])
    layers = []
    for layer in range(4):
        x = rng.normal(size=(n, 32))
        for kind, (a, b), period in (("weekday", (0, 1), 7), ("month", (2, 3), 12)):
            lab = labels[kind]
            on = lab != OTHER
            if layer >= 2:
                order = None if layer == 2 else rng.permutation(period)
                radius = 2.0 if layer == 2 else 3.0
                x[np.ix_(on, [a, b])] += radius * ring(lab[on], period, order, noise=0.0)
        layers.append(x)
    return layers


@pytest.mark.unit
def test_layer_profile_measures_the_circle_and_the_criterion_skips_a_scrambled_layer():
    day = np.r_[np.repeat(np.arange(7), 30), np.full(360, OTHER)]
    month = np.r_[np.full(210, OTHER), np.repeat(np.arange(12), 30)]
    sample = LP.Sample(np.arange(len(day)), {"weekday": day, "month": month})
    rows = LP.profile(planted_layers(sample.labels), sample)
    weekday = [row["weekday"] for row in rows]
    # noise only: the class explains about (classes - 1) / points of the variance
    assert weekday[0]["circle_share"] < 0.05 and weekday[1]["circle_share"] < 0.05
    # radius 2 in a plane of 32 unit dimensions: 2 * 2^2 / 2 / (32 + 4) of the variance, about 0.11
    assert weekday[2]["circle_share"] == pytest.approx(4 / 36, abs=0.02)
    assert weekday[2]["adjacent_fraction"] == 1.0 and rows[2]["month"]["adjacent_fraction"] == 1.0
    assert weekday[3]["circle_share"] > weekday[2]["circle_share"]  # more variance, but out of order
    assert weekday[3]["adjacent_fraction"] < 0.8
    assert LP.choose_layer(rows) == 2
    rows[2]["month"]["adjacent_fraction"] = 0.5  # both kinds must be in order
    assert LP.choose_layer(rows) is None


@pytest.mark.unit
def test_layer_zero_is_scored_but_never_chosen():
    day = np.repeat(np.arange(7), 30)
    month = np.full(len(day), OTHER)
    month[:120] = np.repeat(np.arange(12), 10)
    sample = LP.Sample(np.arange(len(day)), {"weekday": day, "month": month})
    layers = planted_layers(sample.labels)
    rows = LP.profile([layers[2], layers[0], layers[1]], sample)
    assert rows[0]["weekday"]["adjacent_fraction"] == 1.0
    assert LP.choose_layer(rows) is None


@pytest.mark.unit
def test_residuals_are_read_from_contexts_cut_after_their_last_wanted_token():
    ctx_len = 8
    token_ids = np.arange(5 * ctx_len).reshape(5, ctx_len)
    positions = np.array([0 * 8 + 2, 0 * 8 + 5, 3 * 8 + 1, 4 * 8 + 7])
    lengths = []

    def run_model(tokens):
        lengths.append(tokens.shape[1])
        return [tokens[..., None].astype(np.float32) * [1, 1], tokens[..., None].astype(np.float32) * [2, -1]]

    out = LP.residuals_at(run_model, token_ids, positions, batch_size=2)
    assert out[0][:, 0].tolist() == positions.tolist()  # the token id is its flat position here
    assert out[1][:, 1].tolist() == (-positions).tolist()
    assert sorted(lengths) == [6, 8]  # contexts 3 and 0 cut at 2 and 6 tokens, batched; context 4 whole


@pytest.mark.unit
def test_draw_sample_takes_both_forms_of_every_class():
    from multid.sae.data.calendar_tokens import TokenClasses

    n = 400
    day = np.full(n, OTHER)
    day_abbr = np.full(n, OTHER)
    day[:140] = np.repeat(np.arange(7), 20)
    day_abbr[200:270] = np.repeat(np.arange(7), 10)
    none = np.full(n, OTHER)
    classes = TokenClasses(day, none.copy(), none.copy(), day_abbr, none.copy())
    sample = LP.draw_sample(classes, per_class_form=5, seed=0)
    kept = sample.labels["weekday"]
    assert len(sample.positions) == 70 and (kept != OTHER).all()
    assert np.bincount(kept, minlength=7).tolist() == [10] * 7
    assert ((sample.positions >= 200) & (sample.positions < 270)).sum() == 35
    assert (sample.labels["month"] == OTHER).all()
    assert math.isclose(len(np.unique(sample.positions)), len(sample.positions))


# ----------------------------------------------------------------------------------------- the verdict, planted


def planted_verdict(root, day_order: tuple[int, ...]):
    """The named weekday cluster of the planted calendar run (tests/sae_calendar.py) and its verdict, with a scan
    result for each of its clusters that ranks the days first."""
    from multid.sae.data.cluster_files import load_clusters
    from multid.sae.runners.calendar_analysis import CalendarAnalysis, Clustering
    from tests import sae_calendar as SC

    names = tuple(SC.DAY_NAMES[k] for k in day_order)  # the name written where day feature i fires
    cal = SC.make_calendar_run(root, n_ctx=30, day_names=names)
    clusters = load_clusters(cal.clusters_file)
    metrics = {index: {"0-1": {"mixture_index": 0.2, "mixture_index_exact": 0.25,
                               "separability_index": 1.0 if members == SC.DAYS else 0.1}}
               for index, members in enumerate(clusters) if len(members) > 1}
    clustering = Clustering("planted", cal.clusters_file, clusters, root / "scan", metrics=metrics)
    analysis = CalendarAnalysis(cal.run, model="tiny", layer=1, base_dir=root, sample_limit=500, mixture="exact",
                                tokenizer_path=cal.tokenizer_path)
    result = analysis.find_named([clustering])
    return result["found"]["planted"]["weekday"], result["class_features"]["weekday"]


@pytest.mark.integration
def test_the_verdict_finds_a_planted_weekday_circle_and_rejects_it_when_its_order_is_scrambled(tmp_path):
    from tests import sae_calendar as SC

    good, features = planted_verdict(tmp_path / "good", tuple(range(7)))
    # one feature per weekday, the planted ones, their decoder rows on a circle in calendar order
    assert [r["feature"] for r in features["per_class"]] == SC.DAYS and features["distinct_features"] == 7
    assert features["neighbour_cosine"] == pytest.approx(math.cos(2 * math.pi / 7), abs=0.02)
    assert features["other_cosine"] < 0 and features["decoder_order"]["adjacent_fraction"] == 1.0
    assert good["cluster"] == 1 and good["purity"] == 1.0 and good["coverage"] == 1.0
    v = good["verdict"]
    assert v["checks"]["order"] and v["adjacent_fraction"] == 1.0 and v["classes_present"] == 7
    assert v["adjacent_p_corrected"] < 0.05 and v["checks"]["purity"] and v["checks"]["coverage"]
    assert good["rank"] == 1 and good["calibration"]["null_draws"] > 0 and math.isfinite(good["calibration"]["s_z"])
    scanned = [json.loads(f.read_text()) for f in (tmp_path / "good").rglob("calendar_scan/**/*metrics.json")]
    assert scanned and all("mixture_index_exact" in plane and "mixture_index" not in plane  # exact M alone
                           for planes in scanned for plane in planes.values())
    # the same features, the names written on them out of calendar order (day feature i fires on day 3i mod 7)
    bad, features = planted_verdict(tmp_path / "bad", (0, 3, 6, 2, 5, 1, 4))
    assert features["decoder_order"]["adjacent_fraction"] == 0.0  # the names' features go round 0, 5, 3, 1, 6, 4, 2
    assert bad["cluster"] == 1 and bad["purity"] == 1.0  # the same cluster, as pure
    assert not bad["verdict"]["checks"]["order"] and not bad["verdict"]["found"]
    assert bad["verdict"]["adjacent_fraction"] < 0.5


# ----------------------------------------------------------------------------------------- the scaling prefixes


@pytest.mark.unit
def test_scaling_prefixes_are_the_fewest_leading_contexts_that_hold_the_target():
    from multid.discover_scaling import prefix_contexts
    from multid.errors import UserError

    per_context = np.array([0, 2, 0, 1, 3, 0, 4])  # cumulative 0 2 2 3 6 6 10
    assert prefix_contexts(per_context, "2") == 2
    assert prefix_contexts(per_context, "3") == 4
    assert prefix_contexts(per_context, "4") == 5
    assert prefix_contexts(per_context, "10") == 7
    assert prefix_contexts(per_context, "all") is None
    with pytest.raises(UserError, match="holds 10 weekday tokens"):
        prefix_contexts(per_context, "11")


@pytest.mark.unit
def test_a_later_scaling_invocation_adds_its_points_and_replaces_a_point_run_again(tmp_path, capsys):
    from multid.discover_scaling import add_point, earlier_points
    from multid.io import save_json

    def point(contexts: int, expansion: int, purity: float) -> tuple[dict, list[dict]]:
        rows = [{"clustering": "graph", "class": kind, "purity": purity} for kind in ("weekday", "month")]
        return {"target": str(contexts), "contexts": contexts, "expansion": expansion, "run": f"r{contexts}"}, rows

    path, settings = tmp_path / "sweep.json", {"layer": 8, "seed": 0, "training_tokens": 100}
    first = earlier_points(path, settings)
    for contexts, expansion in ((300, 8), (100, 8), (100, 4)):
        add_point(first, *point(contexts, expansion, 0.1))
    save_json(path, first)

    second = earlier_points(path, settings)  # a second invocation: one point again, one new
    add_point(second, *point(100, 8, 0.9))
    add_point(second, *point(200, 8, 0.5))
    assert [(p["expansion"], p["contexts"]) for p in second["points"]] == [(4, 100), (8, 100), (8, 200), (8, 300)]
    assert [(r["expansion"], r["contexts"], r["purity"]) for r in second["rows"][::2]] == [
        (4, 100, 0.1), (8, 100, 0.9), (8, 200, 0.5), (8, 300, 0.1)]
    assert len(second["rows"]) == 8

    other = earlier_points(path, {**settings, "training_tokens": 200})  # other training: nothing kept
    assert other["points"] == [] and "other settings" in capsys.readouterr().out
