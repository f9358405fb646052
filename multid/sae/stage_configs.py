"""The SAE pipeline's stage configurations: one frozen dataclass per upstream-named script, its fields the
script's options (multid.commands renders each as the command line that runs the stage by hand).

The runners that take them are in multid.sae.runners; the scripts in sae_multid_feature_discovery/ parse their
arguments into them. Lower modules name a stage's command through these configs (for "run this to make it"
messages), so the defaults of every SAE option live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from multid.commands import option, render_command
from multid.errors import UserError
from multid.models import canonical_model

DEFAULT_MODEL = "mistral"  # clustering.py without --model_name, as upstream
DEFAULT_LAYER = {"gpt2": 7, "mistral": 8}
GPT2_NAMED = {138: "Weekdays cluster", 251: "Months cluster", 212: "Years cluster"}


class StageConfig:
    """What every stage config has: its script (`SCRIPT`, a path from the repo root) and the command line that
    runs the stage by hand with these settings."""

    SCRIPT: ClassVar[str]

    def command(self) -> str:
        return render_command(self.SCRIPT, self)


class SaeStageConfig(StageConfig):
    """A stage config of an SAE run, named by its `model_name` option."""

    model_name: str | None

    @property
    def model(self) -> str:
        """The registry's name of `model_name` (None: mistral, the upstream scripts' default)."""
        return canonical_model(self.model_name or DEFAULT_MODEL)


# ----------------------------------------------------------------------------------------- SAE and its data


@dataclass(frozen=True)
class TrainConfig(SaeStageConfig):
    """What train_sae.py's options say (its --help explains each); `get_model` is for library callers that
    already hold a loader (make discover shares one between stages)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/train_sae.py"

    base_dir: str | None = option()
    model_name: str = option("smollm2", always=True)
    model_path: str | None = option()
    layer: int = option(8, always=True)
    hook: str | None = option()
    dataset: str | None = option()
    dataset_path: str | None = option()
    text_files: tuple[str, ...] | None = option()
    text_split: str = option("file")
    ctx_len: int = option(128)
    max_tokens: int | None = option()
    architecture: str = option("topk")  # see docs/discover.md: the L1 SAE needs more steps than a CPU run gives it
    expansion: int = option(8)  # d_sae = expansion * d_in
    l1_coefficient: float = option(5.0)  # standard: on activations normalised to mean norm sqrt(d)
    k: int = option(32)  # topk, batchtopk, matryoshka
    matryoshka_levels: int = option(4)  # matryoshka: nested widths d_sae/8, d_sae/4, d_sae/2, d_sae
    aux_loss_coefficient: float = option(1.0)  # topk family: AuxK (SAELens' default)
    # the chosen attempt of docs/discover.md's table (issue 31): dead features 8 % held out, 0.1 % on training data
    dead_feature_window: int = option(50)  # steps without firing before AuxK counts a feature dead
    normalisation: str = option("fixed")  # fixed: our training-set scale; trainer: SAELens' estimate
    b_dec_init: str = option("mean")  # mean: the decoder bias starts at the training positions' mean
    training_tokens: int = option(1_500_000)
    batch_size: int = option(1024)
    lr: float = option(3e-4)
    eval_contexts: int = option(64)
    seed: int = option(0)
    out: str | None = option()
    device: str = option("cpu")
    get_model: Callable[[], Any] | None = option(cli=False)

    @property
    def max_contexts(self) -> int | None:
        return None if self.max_tokens is None else max(1, self.max_tokens // self.ctx_len)


@dataclass(frozen=True)
class OccurrencesConfig(SaeStageConfig):
    """What generate_feature_occurence_data.py's options say (its --help explains each).

    Library callers may pass `get_model` (a loader they already hold) and `residual_cache` (residuals of the
    same contexts at the SAE's hook, cached by SAE training: the model is then not run again)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/generate_feature_occurence_data.py"

    model_name: str = option("mistral", always=True)
    layers: tuple[int, ...] | None = option()
    sae_path: str | None = option()
    sae_input_scaling: str = option("auto")
    release: str | None = option()
    model_path: str | None = option()
    n_devices: int = option(1)
    device: str = option("auto")
    dtype: str = option("float32")
    base_dir: str | None = option()
    seed: int = option(0)
    dataset: str | None = option()
    text_files: tuple[str, ...] | None = option()
    dataset_path: str | None = option()
    text_field: str = option("text")
    split: str = option("train")
    text_split: str = option("file")
    ctx_len: int = option(256)
    batch_size: int | None = option()
    max_tokens: int | None = option()
    max_pairs: int = option(10**9)  # upstream's per-layer capacity
    contexts_per_part: int = option(512)
    num_shards: int = option(1)
    shard_index: int = option(0)
    no_progress: bool = option(False)
    get_model: Callable[[], Any] | None = option(cli=False)
    residual_cache: Any = option(cli=False)


# ----------------------------------------------------------------------------------------- clusters and scan


@dataclass(frozen=True)
class ClusteringConfig(SaeStageConfig):
    """What clustering.py's options say (its --help explains each)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/clustering.py"

    base_dir: str | None = option()
    model_name: str | None = option(always=True)
    layer: int | None = option(always=True)
    method: str = option("graph")
    decoder_file: str | None = option()
    sae_path: str | None = option()
    include_only_first_k_sae_features: int | None = option()
    sim_cutoff: float = option(0.5)
    top_k: int = option(2)
    diagonal: str = option("kept")
    drop_singletons: bool = option(False)
    max_cluster_size: int | None = option()
    n_clusters: int = option(1000)
    eigen_solver: str | None = option()
    assign_labels: str = option("kmeans")
    seed: int = option(0)
    out: str | None = option()
    force: bool = option(False)

    @property
    def resolved_layer(self) -> int:
        return self.layer if self.layer is not None else DEFAULT_LAYER.get(self.model, 0)

    def method_options(self) -> dict:
        """The keyword arguments of multid.sae.analysis.clustering_methods.cluster_decoder for the method."""
        if self.method == "graph":
            return {"top_k": self.top_k, "sim_cutoff": self.sim_cutoff, "diagonal": self.diagonal,
                    "drop_singletons": self.drop_singletons, "max_size": self.max_cluster_size}
        return {"n_clusters": self.n_clusters, "seed": self.seed, "diagonal": self.diagonal,
                "eigen_solver": self.eigen_solver, "assign_labels": self.assign_labels}

    def file_name(self) -> str:
        """The cluster file's default name: every setting that changes the clusters is in it."""
        k = self.include_only_first_k_sae_features
        first = f"_first{k}" if k else ""
        if self.method == "graph":
            drop = ("_nosingletons" if self.drop_singletons else "") + \
                (f"_max{self.max_cluster_size}" if self.max_cluster_size else "")
            return f"graph_topk{self.top_k}_cutoff{self.sim_cutoff}_diag{self.diagonal}{drop}{first}.json"
        extra = "".join(f"_{v}" for v in (self.eigen_solver,
                                          None if self.assign_labels == "kmeans" else self.assign_labels) if v)
        return f"spectral_n{self.n_clusters}_seed{self.seed}_diag{self.diagonal}{extra}{first}.json"


@dataclass(frozen=True)
class ScanConfig(SaeStageConfig):
    """What gpt2_compute_reducibility.py's options say (its --help explains each)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/gpt2_compute_reducibility.py"

    base_dir: str | None = option()
    model_name: str = option("gpt2", always=True)
    layer: int = option(7, always=True)
    run_dir: str | None = option()
    clusters_file: str | None = option()
    cluster: int = option(138)
    clusters: str | None = option()
    cluster_convention: str = option("all")
    decoder_file: str | None = option()
    size_limit: int = option(1000)
    sample_limit: int = option(20000)
    threshold: float = option(0.0)
    radius: float = option(0.0)
    epsilon: float = option(0.1)
    seed: int = option(0)
    steps: int | None = option()
    mixture: str = option("both")
    device: str = option("cpu")
    no_figures: bool = option(False)
    calibrate: bool = option(False)
    null_draws: int = option(200)
    group_size: int = option(64)
    save_dir: str | None = option()
    force: bool = option(False)


def parse_named(text: str) -> tuple[int, str]:
    """CLUSTER:LABEL -> (cluster, label); a bare CLUSTER is labelled "cluster CLUSTER"."""
    cluster, sep, label = text.partition(":")
    try:
        return int(cluster), (label if sep else f"cluster {cluster}")
    except ValueError:
        raise UserError(f"expected CLUSTER:LABEL (e.g. 138:Weekdays), got {text!r}") from None


@dataclass(frozen=True)
class RankingConfig(SaeStageConfig):
    """What analyze_reducibilities.py's options say (its --help explains each)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/analyze_reducibilities.py"

    base_dir: str | None = option()
    model_name: str = option("gpt2", always=True)
    layer: int = option(7, always=True)
    run_dir: str | None = option()
    threshold: float = option(0.0)
    radius: float = option(0.0)
    clusters_file: str | None = option()
    scan_dir: str | None = option()
    min_mixture: float = option(0.01)  # multid.sae.analysis.cluster_reducibility.MIN_MIXTURE, the original's cut (a test holds them equal)
    mixture: str = option("gradient")
    score: str = option("paper")
    plain_mean: bool = option(False)
    named: tuple[str, ...] | None = option()  # CLUSTER:LABEL each
    top: int = option(20)
    out_dir: str | None = option()

    def named_clusters(self) -> dict[int, str]:
        if self.named is not None:
            return dict(parse_named(text) for text in self.named)
        return GPT2_NAMED if self.model == "gpt2" else {}

    def scan_command(self) -> str:
        """The scan that makes what this ranks."""
        return ScanConfig(model_name=self.model_name, layer=self.layer, clusters="all", threshold=self.threshold,
                          radius=self.radius, clusters_file=self.clusters_file).command()


@dataclass(frozen=True)
class StabilityConfig(SaeStageConfig):
    """What cluster_stability.py's options say: the best Jaccard of ground-truth clusters across graph settings."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/cluster_stability.py"

    base_dir: str | None = option()
    model_name: str | None = option(always=True)
    layer: int = option(8, always=True)
    sae_path: str | None = option()
    decoder_file: str | None = option()
    clusters_file: str = option("mistral_layer_8_clusters_cutoff_0.5.pkl")  # the paper's Mistral file
    truth: tuple[int, ...] = option((61, 832))  # days, months of the paper's Mistral file
    truth_names: tuple[str, ...] | None = option()
    cluster_convention: str = option("non_singleton")
    top_k: tuple[int, ...] = option((2, 3, 4))  # the rebuttal's sweep
    cutoffs: tuple[float, ...] | None = option()
    diagonal: str = option("zeroed")
    hand_cluster: tuple[int, ...] | None = option()
    save_dir: str | None = option()


# ----------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class FigureRunConfig(SaeStageConfig):
    """The options every SAE figure script shares: which run, decoder and cluster file, and how many points."""

    base_dir: str | None = option()
    model_name: str = option("gpt2", always=True)
    layer: int = option(7, always=True)
    run_dir: str | None = option()
    decoder_file: str | None = option()
    clusters_file: str | None = option()
    cluster_convention: str = option("non_singleton")
    tokenizer_path: str | None = option()
    size_limit: int = option(1000)
    sample_limit: int = option(20000)
    save_dir: str | None = option()


@dataclass(frozen=True)
class InteractiveConfig(FigureRunConfig):
    """What gpt2_interactive_figure.py's options say (its --help explains each)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/gpt2_interactive_figure.py"

    cluster: int = option(138)


@dataclass(frozen=True)
class MistralInteractiveConfig(InteractiveConfig):
    """mistral_interactive_figure.py: the same figure with the Mistral script's defaults."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/mistral_interactive_figure.py"

    model_name: str = option("mistral", always=True)  # the Mistral scripts' defaults: layer 8, 4,000 points
    layer: int = option(8, always=True)
    sample_limit: int = option(4000)
    cluster: int = option(61)


@dataclass(frozen=True)
class DaysMonthsYearsConfig(FigureRunConfig):
    """What gpt2_days_months_years.py's options say (Figures 1 and 12)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/gpt2_days_months_years.py"

    days: int = option(138)
    months: int = option(251)
    years: int = option(212)
    formats: tuple[str, ...] = option(("pdf",))
    stale_year_colours: bool = option(False)


@dataclass(frozen=True)
class DaysWeeksYearsConfig(DaysMonthsYearsConfig):
    """gpt2_days_weeks_years.py: the same figures under the name the original README gives."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/gpt2_days_weeks_years.py"


@dataclass(frozen=True)
class MistralDaysMonthsConfig(FigureRunConfig):
    """What mistral_days_months.py's options say (Figure 13)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/mistral_days_months.py"

    model_name: str = option("mistral", always=True)  # the Mistral scripts' defaults: layer 8, 4,000 points
    layer: int = option(8, always=True)
    sample_limit: int = option(4000)
    days: int = option(61)
    months: int = option(832)
    formats: tuple[str, ...] = option(("png",))


@dataclass(frozen=True)
class ExploreConfig(FigureRunConfig):
    """What explore_features.py's options say (the rebuttal grid of the top clusters)."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/explore_features.py"

    clusters: tuple[int, ...] | None = option()
    ranking: str | None = option()
    top: int = option(20)
    panels: int = option(10)
    dpi: int = option(50)


@dataclass(frozen=True)
class OtherCirclePointsConfig(StageConfig):
    """What other_circle_points.py's options say: day and month phrases in the plane of the day-name circle."""

    SCRIPT: ClassVar[str] = "sae_multid_feature_discovery/other_circle_points.py"

    model: str = option("mistral", always=True)
    model_path: str | None = option()
    base_dir: str | None = option()
    device: str = option("auto")
    dtype: str = option("float32")
    layer: int | None = option()
    months_layer: int | None = option()
    paper_limits: str = option("auto")
    out_dir: str | None = option()

