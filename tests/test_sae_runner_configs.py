"""The SAE stages' configs and their scripts agree: a script's parsed arguments are the config the library
builds, and a config's rendered command parses back into the same config (multid.commands)."""

from __future__ import annotations

import shlex

import pytest

from multid.commands import cli_fields, command_args, render_command
from multid.sae.stage_configs import (ClusteringConfig, DaysMonthsYearsConfig, DaysWeeksYearsConfig, ExploreConfig,
                                     InteractiveConfig, MistralDaysMonthsConfig, MistralInteractiveConfig,
                                     OccurrencesConfig, OtherCirclePointsConfig, RankingConfig, ScanConfig,
                                     StabilityConfig, TrainConfig)
from sae_multid_feature_discovery import (analyze_reducibilities, cluster_stability, clustering, explore_features,
                                          generate_feature_occurence_data, gpt2_compute_reducibility,
                                          gpt2_days_months_years, gpt2_days_weeks_years, gpt2_interactive_figure,
                                          mistral_days_months, mistral_interactive_figure, other_circle_points,
                                          train_sae)

pytestmark = pytest.mark.unit


# every option away from its default, in values the parsers accept
RUN = {"base_dir": "/b", "model_name": "smollm2", "layer": 9, "run_dir": "/r", "decoder_file": "W.npy",
       "clusters_file": "c.json", "cluster_convention": "all", "tokenizer_path": "/t", "size_limit": 50,
       "sample_limit": 500, "save_dir": "/s"}
EXAMPLES = [
    (train_sae, TrainConfig(
        base_dir="/b", model_name="gpt2", model_path="/m", layer=7, hook="blocks.7.hook_resid_post", dataset="d/s",
        dataset_path="/dp", text_files=("a.txt", "b dir"), text_split="line", ctx_len=64, max_tokens=30000,
        architecture="standard", expansion=4, l1_coefficient=3.5, k=16, training_tokens=60000, batch_size=512,
        lr=1e-3, eval_contexts=8, seed=3, out="/o", device="cuda", matryoshka_levels=3, aux_loss_coefficient=0.5,
        dead_feature_window=7, normalisation="trainer", b_dec_init="zeros")),
    (generate_feature_occurence_data, OccurrencesConfig(
        model_name="smollm2", layers=(8, 9), sae_path="/s/{layer}", sae_input_scaling="none", release="r",
        model_path="/m", n_devices=2, device="cpu", dtype="bfloat16", base_dir="/b", seed=1, dataset="d/s",
        text_files=("a.txt",), dataset_path="/dp", text_field="body", split="validation", text_split="paragraph",
        ctx_len=128, batch_size=8, max_tokens=30000, max_pairs=1000, contexts_per_part=16, num_shards=4,
        shard_index=2, no_progress=True)),
    (clustering, ClusteringConfig(
        base_dir="/data/art ifacts", model_name="smollm2", layer=9, method="spectral", decoder_file="W.npz",
        sae_path="/s/sae", include_only_first_k_sae_features=100, sim_cutoff=0.25, top_k=3, diagonal="zeroed",
        drop_singletons=True, max_cluster_size=999, n_clusters=20, eigen_solver="lobpcg", assign_labels="cluster_qr",
        seed=4, out="c.json", force=True)),
    (gpt2_compute_reducibility, ScanConfig(
        base_dir="/b", model_name="smollm2", layer=8, run_dir="/r", clusters_file="/c.json", cluster=3,
        clusters="all", cluster_convention="non_singleton", decoder_file="W.npy", size_limit=50, sample_limit=500,
        threshold=0.5, radius=0.1, epsilon=0.05, seed=2, steps=400, mixture="exact", device="cuda:1", no_figures=True, calibrate=True,
        null_draws=50, group_size=8,
        save_dir="/s", force=True)),
    (analyze_reducibilities, RankingConfig(
        base_dir="/b", model_name="mistral", layer=16, run_dir="/r", threshold=0.5, radius=0.1, clusters_file="c.json",
        scan_dir="/s", min_mixture=0.05, mixture="exact", score="calibrated", plain_mean=True, named=("3:Days", "7"), top=10,
        out_dir="/o")),
    (gpt2_interactive_figure, InteractiveConfig(
        base_dir="/b", model_name="smollm2", layer=8, run_dir="/r", decoder_file="W.npy", clusters_file="c.json",
        cluster_convention="all", tokenizer_path="/t", size_limit=50, sample_limit=500, save_dir="/s", cluster=4)),
    (mistral_interactive_figure, MistralInteractiveConfig(
        base_dir="/b", model_name="gpt2", layer=7, run_dir="/r", decoder_file="W.npy", clusters_file="c.json",
        cluster_convention="all", tokenizer_path="/t", size_limit=50, sample_limit=500, save_dir="/s", cluster=4)),
    (gpt2_days_months_years, DaysMonthsYearsConfig(**RUN, days=1, months=2, years=3, formats=("pdf", "png"),
                                                   stale_year_colours=True)),
    (gpt2_days_weeks_years, DaysWeeksYearsConfig(**RUN, days=1, months=2, years=3, formats=("png",),
                                                 stale_year_colours=True)),
    (mistral_days_months, MistralDaysMonthsConfig(**RUN, days=1, months=2, formats=("pdf",))),
    (cluster_stability, StabilityConfig(
        base_dir="/b", model_name="smollm2", layer=9, sae_path="/s", decoder_file="W.npz", clusters_file="c.json",
        truth=(1, 2), truth_names=("a b", "c"), cluster_convention="all", top_k=(2, 5), cutoffs=(0.25, 0.5),
        diagonal="kept", hand_cluster=(3, 4), save_dir="/o")),
    (other_circle_points, OtherCirclePointsConfig(
        model="smollm2", model_path="/m", base_dir="/b", device="cpu", dtype="bfloat16", layer=5, months_layer=3,
        paper_limits="off", out_dir="/o")),
    (explore_features, ExploreConfig(**RUN, clusters=(5, 3), ranking="r.json", top=5, panels=4, dpi=80)),
]
IDS = [script.__name__.rsplit(".", 1)[1] for script, _ in EXAMPLES]


@pytest.mark.parametrize("script, example", EXAMPLES, ids=IDS)
def test_script_defaults_are_the_configs(script, example):
    assert script.config_from_argv([]) == type(example)()


@pytest.mark.parametrize("script, example", EXAMPLES, ids=IDS)
def test_rendered_command_parses_back_to_the_same_config(script, example):
    options = {f.name for f in cli_fields(type(example))}
    changed = {f.name for f in cli_fields(type(example)) if getattr(example, f.name) != f.default}
    assert changed == options, "the example leaves an option at its default"
    assert script.config_from_argv(command_args(example)) == example
    assert script.config_from_argv(command_args(type(example)())) == type(example)()


@pytest.mark.parametrize("script, example", EXAMPLES, ids=IDS)
def test_command_names_the_script_and_its_model(script, example):
    words = shlex.split(example.command())
    assert words[:2] == ["python", f"sae_multid_feature_discovery/{script.__name__.rsplit('.', 1)[1]}.py"]
    default = type(example)()
    if getattr(default, "model_name", getattr(default, "model", None)) is not None:  # clustering.py's None means "mistral, the upstream default"
        default_words = shlex.split(default.command())
        assert "--model_name" in default_words or "--model" in default_words  # named even at the default
        if getattr(default, "layer", None) is not None:  # None: the script picks the layer from the model
            assert "--layer" in default_words


def test_render_leaves_out_defaults_and_quotes_values():
    config = ClusteringConfig(base_dir="/a b", model_name="gpt2", layer=7, method="graph", drop_singletons=True)
    assert render_command("s.py", config) == \
        "python s.py --base_dir '/a b' --model_name gpt2 --layer 7 --drop_singletons"


def test_cluster_file_name_names_every_setting_that_changes_the_clusters():
    assert ClusteringConfig(method="graph").file_name() == "graph_topk2_cutoff0.5_diagkept.json"
    assert ClusteringConfig(method="spectral", n_clusters=20, seed=0).file_name() == \
        "spectral_n20_seed0_diagkept.json"
    assert ClusteringConfig(method="graph", drop_singletons=True, max_cluster_size=999,
                            include_only_first_k_sae_features=10).file_name() == \
        "graph_topk2_cutoff0.5_diagkept_nosingletons_max999_first10.json"
    assert ClusteringConfig(method="spectral", eigen_solver="amg", assign_labels="discretize").file_name() == \
        "spectral_n1000_seed0_diagkept_amg_discretize.json"


def test_ranking_default_cut_is_the_scans():
    from multid.sae.analysis import cluster_reducibility

    assert RankingConfig().min_mixture == cluster_reducibility.MIN_MIXTURE


def test_one_word_placeholders_are_shown_unquoted():
    assert ClusteringConfig(model_name="<model>", layer="<L>", out="<file>").command() == \
        "python sae_multid_feature_discovery/clustering.py --model_name <model> --layer <L> --out <file>"
    assert "'<an SAE folder>'" in ClusteringConfig(sae_path="<an SAE folder>").command()


def test_stability_default_sweep_is_the_rebuttals():
    from multid.sae.analysis import clustering_stability

    assert StabilityConfig().top_k == clustering_stability.UPSTREAM_TOP_KS
