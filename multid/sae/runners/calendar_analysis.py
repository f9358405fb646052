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
from multid.sae.runners.reducibility_scan import run_scan
from multid.sae.stage_configs import ScanConfig
from multid.sae.data.tokenizers import load_tokenizer
from multid.stage import Stage, run_stage, settings_id


NULL_DRAWS = 200  # Gaussian null draws per plane of a named cluster (the scan's --null_draws default)


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

    def __init__(self, run: Path, *, model: str, layer: int, base_dir: Path, sample_limit: int, mixture: str,
                 tokenizer_path: Path | None = None):
        self.run = run
        self.tokenizer_path = tokenizer_path  # the model's own tokenizer where None
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
                                    for c in clusterings],
                    "version": 6,  # 4: abbreviation classes; 5: verdict; 6: class features
                    "labels": CC.LABELS_VERSION}
        path = self.run / "calendar_clusters.json"
        run_stage(Stage("days / months / years clusters", path, settings, command="make discover"),
                  lambda tmp: save_json(tmp, self.find_named(clusterings)))
        saved = load_json(path)
        print_named(saved["found"])
        print(format_verdict(saved["found"]))
        print(format_class_features(saved["class_features"]))
        return saved

    def run_classes(self) -> RunClasses:
        """The run's occurrences, decoder and token classes (read once per run)."""
        if self._classes is None:
            self._classes = self.read_classes()
        return self._classes

    def read_classes(self) -> RunClasses:
        occ = open_occurrences(self.run)
        tokenizer = load_tokenizer(self.model, tokenizer_path=self.tokenizer_path, base_dir=self.base_dir)
        strings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        ids = occ.token_ids(np.arange(occ.num_tokens, dtype=np.int64)).astype(np.int64)
        return RunClasses(occ, occ.decoder(), CC.token_classes(ids, occ.ctx_len, strings))

    def find_named(self, clusterings: list[Clustering]) -> dict[str, Any]:
        data = self.run_classes()
        W_dec, classes = data.W_dec, data.classes
        token, feature, value = data.occ.triples()
        found: dict[str, dict[str, dict]] = {}
        for c in clusterings:
            counts = CC.cluster_counts(token, feature, c.clusters, W_dec.shape[0], classes)
            summaries = summarise(c.metrics, mixture=self.mixture)
            ranked = [s.cluster for s in ranking(summaries)]
            by_id = {s.cluster: s for s in summaries}
            gradient = {s.cluster: s for s in summarise(c.metrics, mixture="gradient")} if has_gradient(c) else {}
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
                    if best.cluster in gradient:
                        entry["mean_M_gradient"] = gradient[best.cluster].mean_m
                entry.update(self.circle_check(c, best.cluster, category, classes, W_dec))
                if category in CC.VERDICT_CATEGORIES:
                    if best.cluster in by_id:
                        entry["calibration"] = self.calibration(c, best.cluster)
                    entry["verdict"] = CC.verdict(entry)
                found[c.method][category] = entry
        features = {kind: CC.class_features(token, feature, value, classes.of(kind), CC.PERIODS[kind], W_dec)
                    for kind in CC.VERDICT_CATEGORIES}
        return {"class_tokens": classes.totals(), "found": found, "class_features": features}

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

    def calibration(self, c: Clustering, index: int) -> dict[str, Any]:
        """M and S of the cluster's planes against their Gaussian nulls: the scan of this one cluster with
        --calibrate (a stage of its own, under <run>/calendar_scan/<clustering>/), summed up as its plane with
        the largest z-score of S."""
        config = ScanConfig(base_dir=str(self.base_dir), model_name=self.model, layer=self.layer,
                            run_dir=str(self.run), clusters_file=str(c.path), cluster=index,
                            cluster_convention="all", sample_limit=self.sample_limit, calibrate=True,
                            null_draws=NULL_DRAWS, no_figures=True, mixture="exact",  # the null is of exact M
                            save_dir=str(self.run / "calendar_scan" / c.path.stem))
        planes = run_scan(config).metrics()[index]
        key, best = max(planes.items(), key=lambda kv: kv[1]["s_z"])
        keep = ("mixture_index_exact", "separability_index", "s_p", "s_z", "m_p", "m_z",
                "s_null_p95", "m_null_p95", "sample_n")
        return {"null_draws": NULL_DRAWS, "best_plane": key, **{k: best[k] for k in keep if k in best}}

    def cluster_points(self, c: Clustering, index: int, W_dec: np.ndarray) -> ClusterPoints:
        name = f"{c.path.stem}-all-cluster{index}-everypoint"  # the figure scripts' stage is sample-limited
        return cluster_points_stage(self.run, name, c.clusters[index], W_dec, k=min(5, len(c.clusters[index])),
                                    sample_limit=None, decoder_id=file_fingerprint(run_layout.decoder_path(self.run)))

    def calendar_figure(self, c: Clustering, entries: dict[str, dict], figs: Path) -> Path:
        """Figure 1 style: the weekday, month and years clusters' reconstructions (all of them), coloured by class
        (weekdays and months in either form), each in its best PC plane for the calendar order (years: the
        paper's PCs 3-4 where the cluster has them, else PCs 1-2)."""
        data = self.run_classes()
        panels, planes, titles = {}, [], []
        for category, paper_plane in zip(CC.FIGURE_CATEGORIES, P.FIGURE1_PLANES):
            entry = entries[category]
            points = self.cluster_points(c, entry["cluster"], data.W_dec)
            labels = data.classes.of(category)[points.tokens].copy()
            if category == "years":
                labels = np.where((labels >= 1900) & (labels <= 1999), labels - 1900, OTHER)
            panels[category] = P.Panel(points.pca.coords, labels)
            plane = best_plane(entry) or (paper_plane if max(paper_plane) < points.pca.coords.shape[1] else (0, 1))
            planes.append(plane)
            name = {"weekday": "Weekdays", "month": "Months", "years": "Years"}[category]
            titles.append(f"{name}: cluster {entry['cluster']}, PCs {plane[0] + 1}-{plane[1] + 1}")
        fig = P.figure1(panels["weekday"], panels["month"], panels["years"], planes=planes, titles=titles)
        path = save_figure(fig, figs / f"{self.model}_layer{self.layer}_{c.path.stem}_weekdays_months_years.png",
                           dpi=200)
        plt.close(fig)
        return path


def best_plane(entry: dict[str, Any]) -> tuple[int, int] | None:
    """The PC plane (0-based) where the class means are most in calendar order (None for years)."""
    best = CC.best_of(entry.get("circle_by_plane", {}))
    if best is None:
        return None
    first, second = best[0].split("-")
    return int(first), int(second)


def has_gradient(c: Clustering) -> bool:
    """Whether the scan recorded the gradient M beside the exact one (a scan with --mixture exact has not)."""
    return all("mixture_index" in plane for planes in c.metrics.values() for plane in planes.values())


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


def verdict_rows(found: dict[str, dict[str, dict]]) -> list[dict[str, Any]]:
    """One row per clustering and verdict class (weekday, month): the numbers issue 33 asks for."""
    rows = []
    for method, entries in found.items():
        for category in CC.VERDICT_CATEGORIES:
            e = entries.get(category)
            if e is None:
                rows.append({"clustering": method, "class": category, "cluster": None})
                continue
            v, cal = e["verdict"], e.get("calibration", {})
            rows.append({"clustering": method, "class": category, "cluster": e["cluster"], "size": e["size"],
                         "purity": e["purity"], "coverage": e["coverage"], "cos": e["mean_decoder_cosine"],
                         "view": v["best_view"], "adjacent": v["adjacent_fraction"], "chance": v["adjacent_chance"],
                         "classes": v["classes_present"], "p": v["adjacent_p_corrected"],
                         "M_exact": e.get("mean_M"), "M_gradient": e.get("mean_M_gradient"), "S": e.get("mean_S"),
                         "S_z": cal.get("s_z"), "S_p": cal.get("s_p"), "M_z": cal.get("m_z"),
                         "rank": e.get("rank"), "ranked": e.get("ranked_clusters"), "found": v["found"],
                         "missed": [k for k, ok in v["checks"].items() if not ok]})
    return rows


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


ORDER_HEADER = f"{'order':>6}{'chance':>7}{'classes':>8}{'p':>7}"


def order_cells(row: dict[str, Any]) -> str:
    """A verdict row's calendar order, its chance level, the classes present and the order's p-value (corrected
    for the views tried), under ORDER_HEADER."""
    if row.get("adjacent") is None:
        return f"{'-':>6}{'-':>7}{'-':>8}{'-':>7}"
    return f"{row['adjacent']:>6.2f}{row['chance']:>7.2f}{row['classes']:>8}{fmt(row.get('p'), '.3f'):>7}"


def format_verdict(found: dict[str, dict[str, dict]]) -> str:
    t = CC.TARGETS
    lines = [f"verdict (targets: purity and coverage >= {t.purity}, calendar order >= {t.adjacent} with >= "
             f"{t.min_classes} classes in the best view, rank in the top {t.top_share:.0%}):",
             f"{'clustering':<11}{'class':<8}{'cluster':>8}{'size':>5}{'purity':>7}{'cover':>6}{'cos':>6}"
             f"{'order (chance, classes, p)':>30}{'view':>10}{'M ex':>6}{'M gr':>6}{'S':>6}{'S z':>7}{'rank':>9}"
             f"  found"]
    for r in verdict_rows(found):
        if r["cluster"] is None:
            lines.append(f"{r['clustering']:<11}{r['class']:<8}{'none':>8}")
            continue
        order = f"{fmt(r['adjacent'], '.2f')} ({fmt(r['chance'], '.2f')}, {fmt(r['classes'], 'd')}, {fmt(r['p'], '.3f')})"
        rank = f"{r['rank']}/{r['ranked']}" if r["rank"] else "-"
        found_text = "yes" if r["found"] else "no: " + ", ".join(r["missed"])
        lines.append(f"{r['clustering']:<11}{r['class']:<8}{r['cluster']:>8}{r['size']:>5}{r['purity']:>7.2f}"
                     f"{r['coverage']:>6.2f}{r['cos']:>6.2f}{order:>30}{fmt(r['view'], 's'):>10}"
                     f"{fmt(r['M_exact'], '.2f'):>6}{fmt(r['M_gradient'], '.2f'):>6}{fmt(r['S'], '.2f'):>6}"
                     f"{fmt(r['S_z'], '.1f'):>7}{rank:>9}  {found_text}")
    lines.append("order = share of calendar neighbours that are neighbours in angle (chance 2 / (classes - 1); p: "
                 "random orders, Bonferroni over the views tried); M ex / M gr: exact and gradient M; S z: S against "
                 "its Gaussian null (z-score, best plane)")
    return "\n".join(lines)


def format_class_features(features: dict[str, dict[str, Any]]) -> str:
    """The best feature of each weekday and month, and whether their decoder rows could cluster into a circle."""
    lines = ["one feature per class (the feature with the best F1 for the class; activation precision / recall):"]
    for kind, f in features.items():
        cells = [f"{r['class']}: {r['feature']} ({r['precision']:.2f}/{r['recall']:.2f}, {r['tokens']} tokens)"
                 if "feature" in r else f"{r['class']}: no tokens" for r in f["per_class"]]
        lines.append(f"  {kind}: " + "; ".join(cells))
        if "mean_cosine" in f:
            order = f.get("decoder_order") or {}
            lines.append(f"  {kind}: {f['distinct_features']} distinct features; decoder cosine mean "
                         f"{f['mean_cosine']:.2f}, calendar neighbours {fmt(f['neighbour_cosine'], '.2f')}, others "
                         f"{fmt(f['other_cosine'], '.2f')}; rows in their top-2 PCs: order "
                         f"{fmt(order.get('adjacent_fraction'), '.2f')} (chance {fmt(order.get('adjacent_chance'), '.2f')})")
    return "\n".join(lines)
