"""The days / months / years clusters of a run's clusterings (make discover's step 6): for each clustering and
class, the cluster that holds the class best (multid.sae.analysis.calendar_metrics), its size, decoder cosine, M, S and
rank in the scan, and whether its PCA puts the class in calendar order; and a Figure 1 style figure of the three.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from multid.io import load_json, save_figure, save_json
from multid.sae.analysis import calendar_metrics as CC
from multid.sae.figures import cluster_panels as P
from multid.sae.data import run_layout
from multid.sae.analysis.cluster_points import ClusterPoints, cluster_points_stage, file_fingerprint, occurrences_fingerprint
from multid.sae.data.cluster_files import mean_pairwise_cosine
from multid.sae.data.token_labels import OTHER
from multid.sae.data.occurrence_store import open_occurrences
from multid.sae.analysis.cluster_reducibility import ranking, summarise
from multid.sae.data.tokenizers import load_tokenizer
from multid.stage import Stage, run_stage, settings_id


@dataclass
class Clustering:
    """One clustering of the decoder, and its scan results once scanned."""

    method: str
    path: Path
    clusters: list[list[int]]
    scan_dir: Path
    metrics: dict[int, dict] = field(default_factory=dict)  # cluster -> plane -> M, S
    ranked: list[int] = field(default_factory=list)  # cluster ids, best first (the scan's ranking)


@dataclass(frozen=True)
class RunClasses:
    """The run's occurrences and decoder, and the day / month / year class of every token (read once)."""

    occ: Any
    W_dec: np.ndarray
    classes: CC.TokenClasses


class CalendarAnalysis:
    """The calendar clusters of one run (its occurrences, decoder and token classes are read once)."""

    def __init__(self, run: Path, *, model: str, layer: int, base_dir: Path, sample_limit: int, mixture: str):
        self.run = run
        self.model = model
        self.layer = layer
        self.base_dir = base_dir
        self.sample_limit = sample_limit
        self.mixture = mixture  # which M ranks the clusters (multid.sae.analysis.cluster_reducibility.MIXTURE_KEYS)
        self._classes: RunClasses | None = None

    def named_clusters(self, clusterings: list[Clustering]) -> dict[str, Any]:
        """The days / months / years clusters of each clustering with their numbers (a stage:
        <run>/calendar_clusters.json, rebuilt when the occurrences, clusters or scan results change)."""
        settings = {"occurrences": occurrences_fingerprint(self.run), "sample_limit": self.sample_limit,
                    "clusterings": [[c.method, c.path.name, settings_id({"clusters": c.clusters}),
                                     settings_id({"metrics": {str(k): v for k, v in c.metrics.items()}})]
                                    for c in clusterings], "version": 4}  # 4: abbreviation classes
        path = self.run / "calendar_clusters.json"
        run_stage(Stage("days / months / years clusters", path, settings, command="make discover"),
                  lambda tmp: save_json(tmp, self.find_named(clusterings)))
        saved = load_json(path)
        print_named(saved["found"])
        return saved

    def run_classes(self) -> RunClasses:
        """The run's occurrences, decoder and token classes (read once per run)."""
        if self._classes is None:
            self._classes = self.read_classes()
        return self._classes

    def read_classes(self) -> RunClasses:
        occ = open_occurrences(self.run)
        tokenizer = load_tokenizer(self.model, base_dir=self.base_dir)
        strings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        ids = occ.token_ids(np.arange(occ.num_tokens, dtype=np.int64)).astype(np.int64)
        return RunClasses(occ, occ.decoder(), CC.token_classes(ids, occ.ctx_len, strings))

    def find_named(self, clusterings: list[Clustering]) -> dict[str, Any]:
        data = self.run_classes()
        W_dec, classes = data.W_dec, data.classes
        token, feature, _value = data.occ.triples()
        found: dict[str, dict[str, dict]] = {}
        for c in clusterings:
            counts = CC.cluster_counts(token, feature, c.clusters, W_dec.shape[0], classes)
            summaries = summarise(c.metrics, mixture=self.mixture)
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

    def cluster_points(self, c: Clustering, index: int, W_dec: np.ndarray) -> ClusterPoints:
        name = f"{c.path.stem}-all-cluster{index}-everypoint"  # the figure scripts' stage is sample-limited
        return cluster_points_stage(self.run, name, c.clusters[index], W_dec, k=min(5, len(c.clusters[index])),
                                    sample_limit=None, decoder_id=file_fingerprint(run_layout.decoder_path(self.run)))

    def calendar_figure(self, c: Clustering, entries: dict[str, dict], figs: Path) -> Path:
        """Figure 1 style: the days, months and years clusters' reconstructions (all of them), coloured by class,
        in the paper's PC planes where the cluster has that many PCs, else in PCs 1-2."""
        data = self.run_classes()
        panels, planes, titles = {}, [], []
        for category, paper_plane in zip(CC.FIGURE_CATEGORIES, P.FIGURE1_PLANES):
            entry = entries[category]
            points = self.cluster_points(c, entry["cluster"], data.W_dec)
            labels = data.classes.of(category)[points.tokens].copy()
            if category == "years":
                labels = np.where((labels >= 1900) & (labels <= 1999), labels - 1900, OTHER)
            panels[category] = P.Panel(points.pca.coords, labels)
            plane = paper_plane if max(paper_plane) < points.pca.coords.shape[1] else (0, 1)
            planes.append(plane)
            titles.append(f"{category.capitalize()}: cluster {entry['cluster']}, PCs {plane[0] + 1}-{plane[1] + 1}")
        fig = P.figure1(panels["days"], panels["months"], panels["years"], planes=planes, titles=titles)
        path = save_figure(fig, figs / f"{self.model}_layer{self.layer}_{c.path.stem}_days_months_years.png", dpi=200)
        plt.close(fig)
        return path


def print_named(found: dict[str, dict[str, dict]]) -> None:
    print(f"{'clustering':<11}{'class':<11}{'cluster':>8}{'size':>6}{'cos':>7}{'points':>8}{'purity':>8}"
          f"{'cover':>7}{'M':>7}{'S':>7}{'rank':>10}{'adj PC1-2':>10}{'best plane':>11}{'own PCA':>9}")
    for method, entries in found.items():
        for category, e in entries.items():
            circle = e.get("circle", {})
            planes = e.get("circle_by_plane", {})
            best = max(planes.items(), key=lambda kv: kv[1]["adjacent_fraction"], default=None)
            best_text = f"{best[1]['adjacent_fraction']:.2f} ({best[0]})" if best else "-"
            own = e.get("circle_class_pca", {}).get("adjacent_fraction", float("nan"))
            rank = f"{e['rank']}/{e['ranked_clusters']}" if "rank" in e else "-"
            print(f"{method:<11}{category:<11}{e['cluster']:>8}{e['size']:>6}{e['mean_decoder_cosine']:>7.3f}"
                  f"{e['points']:>8}{e['purity']:>8.3f}{e['coverage']:>7.3f}{e.get('mean_M', float('nan')):>7.3f}"
                  f"{e.get('mean_S', float('nan')):>7.3f}{rank:>10}"
                  f"{circle.get('adjacent_fraction', float('nan')):>10.2f}{best_text:>11}{own:>9.2f}")
    print("adj = share of calendar neighbours that are neighbours in angle (1 = calendar order; random order: "
          "about 0.33 for 7 days, 0.18 for 12 months); own PCA = top-2 PCs of the class's points alone")
