"""The offline discovery pipeline: local corpus cleaning, calendar-cluster checks, SAE training with
SAELens' trainer, and the whole pipeline on a tiny model whose weekday tokens lie on a planted circle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from multid.sae.analysis import calendar_metrics as CC
from multid.sae.data import local_corpus as C
from multid.sae.data.token_labels import DAY_NAMES, OTHER

# ----------------------------------------------------------------------------------------- corpus cleaning


@pytest.mark.unit
def test_clean_wikitext_keeps_running_text_and_link_labels():
    markup = ("{{Infobox person|name=X|born={{birth date|1900|1|1}}}}\n"
              "'''Ada''' was born on 10 [[December]] 1815 in [[London|the capital]].<ref>A source</ref> "
              "She worked with [[Charles Babbage]] on the engine, which was never finished in her lifetime.\n"
              "== Works ==\n* a list item that is not prose at all and should be dropped entirely here\n"
              "{| class=wikitable\n| cell || cell\n|}\n[[Category:Mathematicians]]\n")
    paragraphs = C.clean_wikitext(markup)
    assert paragraphs == ["Ada was born on 10 December 1815 in the capital. She worked with Charles Babbage on the "
                          "engine, which was never finished in her lifetime."]


@pytest.mark.unit
def test_passages_end_at_sentences_and_reach_the_word_count():
    text = " ".join(f"Sentence number {i} has exactly six words." for i in range(1, 30))
    out = C.passages(text, 20)
    assert all(p.endswith(".") for p in out)
    assert all(len(p.split()) >= 20 for p in out[:-1])
    assert " ".join(out) == " ".join(text.split())


@pytest.mark.unit
def test_untag_oanc_restores_plain_spacing():
    line = "( posted/-LRB- Tuesday/NNP ,/, May/NNP 5/CD ,/, 1998/CD )/-RRB- Clinton/NNP 's/POS aides/NNS do/VBP n't/RB"
    assert C.untag_oanc(line) == "(posted Tuesday, May 5, 1998) Clinton's aides don't"


@pytest.mark.unit
def test_word_counts_count_capitalised_names_and_years():
    counts = C.word_counts(["On Monday, 3 March 1999, and Sunday in May 2004 (may not count lowercase).",
                            "Mondays are not Monday; the year 1200 is out of range."])
    assert counts["days"]["Monday"] == 2 and counts["days"]["Sunday"] == 1
    assert counts["months"]["March"] == 1 and counts["months"]["May"] == 1
    assert counts["year_like_numbers"]["1500-2099"] == 2


@pytest.mark.integration
def test_gensim_data_missing_is_a_clear_error(tmp_path):
    from multid.errors import UserError

    with pytest.raises(UserError, match="gensim"):
        C.gensim_test_data(tmp_path)


# ----------------------------------------------------------------------------------------- calendar checks


@pytest.mark.unit
def test_years_are_found_in_digit_split_numbers():
    vocab = ["<s>", "1", "9", "5", " ", "x", " 1995", "0"]
    digit, number = CC.vocabulary_tables(vocab)
    ids = np.array([0, 4, 1, 2, 2, 3, 5, 6,    # " 1995 x 1995(one token)"
                    0, 1, 2, 2, 3, 1, 5, 7])   # five digits in a row: not a year
    year = CC.year_of_tokens(ids, 8, digit, number)
    assert year.tolist() == [-1, -1, 1995, 1995, 1995, 1995, -1, 1995] + [-1] * 8


@pytest.mark.unit
def test_abbreviations_are_classes_of_their_own():
    from multid.sae.data.calendar_tokens import abbreviation_classes

    day, month = abbreviation_classes([" Thu", "Mon", "\u2581Sun", " May", "Jan", " jan", "Thursday", "Sept"])
    assert day.tolist() == [3, 0, 6, OTHER, OTHER, OTHER, OTHER, OTHER]
    assert month.tolist() == [OTHER, OTHER, OTHER, OTHER, 0, OTHER, OTHER, OTHER]  # May is a full name


@pytest.mark.unit
def test_strict_classes_need_capitalised_full_names():
    day, month = CC.strict_classes([" Monday", "Ġsunday", "\u2581Sundays", " May", "may", "Mon"])
    assert day.tolist() == [0, OTHER, 6, OTHER, OTHER, OTHER]
    assert month.tolist() == [OTHER, OTHER, OTHER, 4, OTHER, OTHER]


@pytest.mark.unit
def test_circle_order_scores_a_calendar_circle_and_a_scrambled_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(12), 20)
    angles = 2 * math.pi * labels / 12
    points = np.stack([np.cos(angles), np.sin(angles)], 1) + 0.05 * rng.normal(size=(240, 2))
    good = CC.circle_order(points, labels, 12)
    assert good.adjacent_fraction == 1.0 and good.cyclic_order and good.radius_cv < 0.05
    reversed_order = CC.circle_order(points * np.array([1, -1]), labels, 12)
    assert reversed_order.adjacent_fraction == 1.0 and reversed_order.cyclic_order
    scramble = np.array([0, 5, 10, 3, 8, 1, 6, 11, 4, 9, 2, 7])
    bad = CC.circle_order(points, scramble[labels], 12)
    assert bad.adjacent_fraction <= 0.2 and not bad.cyclic_order
    assert CC.circle_order(points[:40], labels[:40], 12) is None  # two classes only


@pytest.mark.unit
def test_cluster_counts_count_each_token_once_per_cluster():
    classes = CC.TokenClasses(day=np.array([0, 1, OTHER, OTHER]), month=np.full(4, OTHER),
                              year=np.full(4, OTHER), day_abbr=np.array([OTHER, OTHER, 3, OTHER]),
                              month_abbr=np.full(4, OTHER))
    token = np.array([0, 0, 1, 2, 3, 3])
    feature = np.array([0, 1, 0, 2, 1, 2])
    counts = CC.cluster_counts(token, feature, [[0, 1], [2]], 3, classes)
    assert (counts[0].points, counts[0].counts["days"]) == (3, 2)
    assert (counts[1].points, counts[1].counts["days"]) == (2, 0)
    assert (counts[0].counts["day_abbr"], counts[1].counts["day_abbr"]) == (0, 1)  # token 2 ("Thu"): feature 2
    assert CC.best_cluster(counts, "days", 2).cluster == 0
    # a cluster firing everywhere loses to a smaller, purer one that holds most of the class
    big = CC.ClusterCounts(0, 50, 10_000, {"days": 100, "months": 0, "years": 0})
    small = CC.ClusterCounts(1, 3, 80, {"days": 70, "months": 0, "years": 0})
    assert CC.best_cluster([big, small], "days", 100).cluster == 1


# ----------------------------------------------------------------------------------------- planted pipeline

DAY_SHARED, DAY_RADIUS = 0.9, 0.45  # weekday k: 0.9 e0 + 0.45 (cos, sin)(2 pi k / 7) in (e1, e2), times 2


def planted_model():
    """The tiny model with its weekday embeddings on a circle around a shared direction, every other token
    random in the other 61 dimensions (resid_pre of block 0 is the embedding: rotary, no position term)."""
    import torch

    from multid.models import build_tiny_model

    model = build_tiny_model()
    tokenizer = model.tokenizer
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        W = torch.zeros_like(model.W_E)
        W[:, 3:] = torch.randn(W.shape[0], W.shape[1] - 3, generator=gen)
        W = 2 * W / W.norm(dim=1, keepdim=True).clamp_min(1e-6)
        for k, name in enumerate(DAY_NAMES):
            theta = 2 * math.pi * k / 7
            row = torch.zeros(W.shape[1])
            row[0], row[1], row[2] = DAY_SHARED, DAY_RADIUS * math.cos(theta), DAY_RADIUS * math.sin(theta)
            W[tokenizer.convert_tokens_to_ids(name)] = 2 * row
        model.W_E.copy_(W)
    return model


def planted_corpus(folder: Path, n_docs: int = 48, words: int = 40, seed: int = 0) -> list[Path]:
    """Documents of the tiny vocabulary where about one word in seven is a weekday name."""
    from multid.models import TINY_WORDS

    rng = np.random.default_rng(seed)
    others = sorted(set(TINY_WORDS) - set(DAY_NAMES))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n_docs):
        doc = [str(rng.choice(DAY_NAMES)) if rng.random() < 0.15 else str(rng.choice(others)) for _ in range(words)]
        path = folder / f"doc{i:03d}.txt"
        path.write_text(" ".join(doc) + "\n", encoding="utf-8")
        out.append(path)
    return out


# The L1 SAE's circle order here depends on the order of its batches: with the fixed scale (no batches spent on
# SAELens' estimate, so a different order) it came out 0.71 adjacent, not 1.0. It keeps the settings it was
# written with; TopK runs with today's defaults.
PLANTED_INIT = {"standard": {"normalisation": "trainer", "b_dec_init": "zeros"}, "topk": {}}


@pytest.mark.integration
@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_pipeline_puts_planted_weekday_features_in_one_cyclic_cluster(tmp_path, architecture):
    """Train an SAE with SAELens on the planted model, write occurrences from the cached residuals, cluster the
    decoder: the features that fire on weekdays form one cluster, and its reconstructions go round in
    calendar order."""
    import torch

    from multid.sae.analysis import clustering_methods
    from multid.sae.analysis import sae_trainer as T
    from multid.sae.data.text_sources import make_text_source
    from multid.sae.data.sae_loading import load_sae
    from multid.sae.analysis.occurrence_generator import GenerateOptions, generate_occurrences
    from multid.sae.data.occurrence_store import open_occurrences
    from multid.sae.analysis.reconstructions import cluster_reconstructions, reconstruction_pca

    torch.manual_seed(0)
    model = planted_model()
    source = make_text_source(text_files=planted_corpus(tmp_path / "text"))
    settings = T.TrainSettings(architecture=architecture, expansion=1, k=2, training_tokens=120_000, batch_size=256,
                               lr=3e-3, eval_contexts=6, l1_coefficient=2.0, l1_warm_up_steps=20,
                               lr_warm_up_steps=10, dead_feature_window=117, **PLANTED_INIT[architecture])
    hook = "blocks.0.hook_resid_pre"
    sae_path, cache = T.train_sae_for_model(base_dir=tmp_path, model_name="tiny", layer=0, hook=hook, source=source,
                                            ctx_len=24, settings=settings, get_model=lambda: model,
                                            model_info={"model": "planted tiny"}, progress=False)
    metrics = T.read_metrics(sae_path)
    assert metrics["explained_variance"] > 0.8, metrics
    assert metrics["l0"] < 10, metrics
    assert metrics["ce_eval_contexts"] == 6 and math.isfinite(metrics["ce_loss_recovered"])

    sae = load_sae("tiny", 0, sae_path=sae_path)
    run = tmp_path / "run"
    result = generate_occurrences(run=run, model_name="tiny", layer=0, sae=sae, source=source,
                                  get_model=lambda: model, model_info={"model": "planted tiny"},
                                  options=GenerateOptions(ctx_len=24, batch_size=8, progress=False),
                                  encoder=T.cached_encoder(cache, sae, 1e-6))
    assert result.num_contexts == cache.num_contexts
    occ = open_occurrences(run)
    token, feature, _value = occ.triples()
    ids = occ.token_ids(np.arange(occ.num_tokens)).astype(np.int64)
    day_of_id = {model.tokenizer.convert_tokens_to_ids(name): k for k, name in enumerate(DAY_NAMES)}
    day = np.array([day_of_id.get(int(i), OTHER) for i in ids])
    fires = np.bincount(feature, minlength=sae.d_sae)
    on_days = np.bincount(feature[day[token] != OTHER], minlength=sae.d_sae)
    day_features = set(np.flatnonzero((fires >= 20) & (on_days >= 0.5 * fires)).tolist())  # mostly on weekdays
    assert len(day_features) >= 3

    W_dec = occ.decoder()
    in_plane = np.linalg.norm(W_dec[sorted(day_features), :3], axis=1)  # rows are unit vectors
    assert in_plane.min() > 0.8, in_plane  # every weekday feature writes into the planted 3-D subspace (random: ~0.2)
    clusters = clustering_methods.graph_clusters(W_dec, top_k=3, sim_cutoff=0.5)
    holding = [c for c in clusters if day_features & set(c)]
    if architecture == "standard":
        assert len(holding) == 1, [sorted(day_features & set(c)) for c in holding]
        cluster = holding[0]
        assert day_features <= set(cluster)
        assert all(on_days[f] >= 0.25 * fires[f] for f in cluster if fires[f] >= 20)  # no other word's feature
    else:
        # TopK (k = 2) spreads the circle over a few features that fire in pairs; at this size the graph
        # method splits them into a few components (seen with AuxK and the mean-started bias: one large
        # component and two single features; before: [[23, 48, 58], [28, 37]]), so check their union
        assert len(holding) <= 3
        cluster = sorted(day_features)

    rec = cluster_reconstructions(occ, cluster, W_dec)
    pca = reconstruction_pca(rec.points, 2)
    order = CC.circle_order(pca.coords, day[rec.tokens], 7)
    assert order.classes_present == 7 and order.cyclic_order and order.adjacent_fraction == 1.0, order


@pytest.mark.integration
def test_training_reuses_the_saved_sae_and_rejects_bad_settings(tmp_path):
    from multid.errors import UserError
    from multid.sae.analysis import sae_trainer as T

    with pytest.raises(UserError, match="architecture"):
        T.TrainSettings(architecture="gated").check()
    with pytest.raises(UserError, match="less than one batch"):
        T.TrainSettings(training_tokens=100, batch_size=4096).check()
    with pytest.raises(UserError, match="--lr must be a positive number, got nan"):
        T.TrainSettings(lr=float("nan")).check()
    with pytest.raises(UserError, match="--k 1000 is more than the SAE's 128 features"):
        T.TrainSettings(k=1000, expansion=2).check_width(64)
    T.TrainSettings(k=128, expansion=2).check_width(64)


@pytest.mark.unit
def test_sae_folder_names_every_setting_that_changes_the_weights(tmp_path):
    from multid.sae.analysis import sae_trainer as T

    default = T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings())
    assert default.name == "x8_topk32_1500k_seed0"  # make discover's folder keeps its name
    variants = [T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(lr=1e-3)),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(batch_size=2048)),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(eval_contexts=32)),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(lr_warm_up_steps=5)),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(), hook="blocks.8.hook_resid_post"),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(), ctx_len=64),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(), text_tag="oanc"),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(aux_loss_coefficient=0.03125)),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(dead_feature_window=7)),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(normalisation="trainer", b_dec_init="zeros")),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(architecture="batchtopk")),
                T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(architecture="matryoshka"))]
    assert [v.name for v in variants] == [
        "x8_topk32_1500k_seed0_lr0.001", "x8_topk32_1500k_seed0_bs2048", "x8_topk32_1500k_seed0_eval32",
        "x8_topk32_1500k_seed0_warmup5", "x8_topk32_1500k_seed0_8-hook_resid_post", "x8_topk32_1500k_seed0_ctx64",
        "x8_topk32_1500k_seed0_oanc", "x8_topk32_1500k_seed0_aux0.03125", "x8_topk32_1500k_seed0_window7",
        "x8_topk32_1500k_seed0_norm-trainer_bdec-zeros",
        "x8_batchtopk32_1500k_seed0", "x8_matryoshka32-levels4_1500k_seed0"]
    assert T.sae_folder(tmp_path, "smollm2", 8, T.TrainSettings(), hook="blocks.8.hook_resid_pre") == default


@pytest.mark.unit
def test_train_sae_script_refuses_a_budget_below_one_batch(capsys, tmp_path):
    from sae_multid_feature_discovery import train_sae

    with pytest.raises(SystemExit) as exit_info:
        train_sae.main(["--base_dir", str(tmp_path), "--model_name", "tiny", "--training_tokens", "100"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and "less than one batch" in lines[0], err
    assert not list(tmp_path.iterdir())


@pytest.mark.unit
def test_circle_report_finds_the_circle_in_a_later_plane_and_in_the_class_points():
    rng = np.random.default_rng(1)
    labels = np.concatenate([np.repeat(np.arange(7), 10), np.full(100, OTHER)])
    angles = 2 * math.pi * labels[:70] / 7
    coords = np.zeros((170, 4))
    coords[:70, 1], coords[:70, 2] = np.cos(angles), np.sin(angles)  # the weekdays: a circle in PCs 1-2
    coords[:70, 1:3] += 0.05 * rng.normal(size=(70, 2))
    coords[70:, 0] = 10 * rng.normal(size=100)  # other tokens spread along PC 0
    coords[:70, 0] = 0.02 * rng.normal(size=70)
    report = CC.circle_report(coords, labels, 7)
    assert report["circle_by_plane"]["1-2"]["adjacent_fraction"] == 1.0
    assert report["circle"]["adjacent_fraction"] < 1.0  # PCs 0-1 see the circle edge-on
    assert report["circle_class_pca"]["adjacent_fraction"] == 1.0 and report["circle_class_pca"]["cyclic_order"]


@pytest.mark.integration
def test_training_hooks_are_checked_against_the_model(tiny_model):
    from multid.errors import UserError
    from multid.sae.analysis import sae_trainer as T

    assert T.residual_hook_width(tiny_model, "blocks.1.hook_resid_pre") == tiny_model.cfg.d_model
    with pytest.raises(UserError, match=r"no hook 'blocks.99.hook_resid_pre' \(it has 3 layers"):
        T.residual_hook_width(tiny_model, "blocks.99.hook_resid_pre")
    with pytest.raises(UserError, match="is not one of those"):
        T.residual_hook_width(tiny_model, "blocks.0.attn.hook_z")


@pytest.mark.unit
def test_a_full_disk_is_one_line_not_a_traceback_or_a_sigbus(tmp_path, monkeypatch, capsys):
    import errno
    import os

    from multid.errors import UserError, cli_entry
    from multid.sae.analysis import sae_trainer as T

    path = tmp_path / "activations.npy"
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(1000, 64))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(UserError, match=r"not enough disk space for the residual cache .*activations.npy: it needs"):
        T.reserve_space(path)

    @cli_entry
    def writer():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "triples-00003.parquet"))

    with pytest.raises(SystemExit) as exit_info:
        writer()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert err.startswith("error: no space left on the device while writing") and "triples-00003.parquet" in err

    @cli_entry
    def other():
        raise OSError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError):  # other OS errors are not disguised
        other()


@pytest.mark.integration
def test_a_prefix_of_a_cached_corpus_is_copied_from_the_whole_cache_not_recomputed(tmp_path):
    """--max_tokens runs (the scaling curve's nested subsets) get their own cache folder, copied from the whole
    corpus's cache where that is current: same residuals, no model run, and the whole cache is left as it was."""
    from multid.sae.analysis import sae_trainer as T
    from multid.sae.data.text_sources import make_text_source

    model = planted_model()
    source = make_text_source(text_files=planted_corpus(tmp_path / "text", n_docs=12))
    common = {"model_info": {"model": "planted tiny"}, "hook": "blocks.0.hook_resid_pre", "source": source,
              "ctx_len": 24, "progress": False}
    whole_folder = T.cache_folder(tmp_path, "tiny", common["hook"], 24, source)
    whole = T.activation_cache_stage(whole_folder, get_model=lambda: model, **common)

    def no_model():
        raise AssertionError("the prefix must be copied, not recomputed")

    prefix_folder = T.cache_folder(tmp_path, "tiny", common["hook"], 24, source, max_contexts=5)
    assert prefix_folder != whole_folder and prefix_folder.name.endswith("_first5")
    prefix = T.activation_cache_stage(prefix_folder, get_model=no_model, max_contexts=5, whole_folder=whole_folder,
                                      **common)
    assert prefix.num_contexts == 5 and whole.num_contexts == 12
    np.testing.assert_array_equal(prefix.acts, whole.acts[:5])
    np.testing.assert_array_equal(prefix.token_ids, whole.token_ids[:5])
    # computed by the model, the prefix holds the same residuals (to float rounding of other batch shapes)
    direct = T.activation_cache_stage(tmp_path / "direct", get_model=lambda: model, max_contexts=5, **common)
    np.testing.assert_allclose(direct.acts, prefix.acts, atol=1e-5)
    assert T.open_activation_cache(whole_folder).num_contexts == 12


@pytest.mark.unit
def test_calendar_words_are_whole_words_labelled_at_their_last_token():
    """SmolLM2 spells " Tue" as " T" + "ue": the weekday is labelled at "ue"; a name that another word goes on
    from (" March" + "ing") or that starts inside one ("x" + "Mon") is not a calendar word."""
    from multid.sae.data.calendar_tokens import token_classes

    vocab = [" T", "ue", ",", " March", "ing", " Th", "u", " Mon", "x", "Mon", " Sat", "urday", " 5", " Wed", "mb"]
    v = {t: i for i, t in enumerate(vocab)}
    words = [" T", "ue", ",", " March", "ing", " Th", "u", " 5",  # two contexts of 8 tokens
             " Mon", "x", "x", "Mon", " Sat", "urday", " T", "ue"]
    ids = np.array([v[w] for w in words])
    classes = token_classes(ids, 8, vocab)
    weekday, month = classes.of("weekday"), classes.of("month")
    #                 T  ue  ,  March ing  Th  u  5 | Mon  x  x  Mon  Sat urday  T  ue
    assert weekday.tolist() == [-1, 1, -1, -1, -1, -1, 3, -1, -1, -1, -1, -1, -1, 5, -1, 1]
    assert month.tolist() == [-1] * 16
    assert classes.day_abbr.tolist()[:8] == [-1, 1, -1, -1, -1, -1, 3, -1]  # " T" + "ue" is the abbreviation
    assert classes.day.tolist()[13] == 5  # " Sat" + "urday": the full name, at "urday"
    # a split word is not looked for across a context's start: " T" ends context 0, "ue" starts context 1
    # and " Th" + "u" + "mb" is no Thursday
    cut = token_classes(np.array([v[" Wed"]] * 7 + [v[" T"], v["ue"]] + [v[" Th"], v["u"], v["mb"]] + [v[","]] * 4),
                        8, vocab)
    assert cut.of("weekday").tolist() == [2] * 7 + [-1] * 9
