"""How make discover's weekday and month clusters grow with the calendar text (issue 33, item 3; docs/discover.md,
"How the result grows with the text").

The pipeline of `make discover` (multid.discover: SAE, occurrences, both clusterings, the named clusters) on nested
prefixes of its corpus: the gensim text comes first and the mail after it, so the first N contexts hold a growing
share of the mail's calendar text over the same gensim text. A prefix is cut where it holds a target number of
weekday tokens (names and abbreviations); each prefix is run at every dictionary size. The reducibility scan is left
out (its rank is not what grows here): per point, the named weekday and month clusters' purity, coverage and
calendar order in their best view, against the weekday and month tokens per class in the SAE's text. Each run is
make discover's own stages, so a point already run is reused; the residual cache of a prefix is copied from the
whole corpus's cache where that exists.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from multid import discover as D
from multid.config import add_base_dir_arg, positive_int
from multid.errors import UserError, cli_entry
from multid.io import load_json, save_figure, save_json
from multid.sae.analysis import calendar_metrics as CC
from multid.sae.data.text_sources import make_text_source
from multid.sae.runners.calendar_analysis import ORDER_HEADER, CalendarAnalysis, order_cells
from multid.sae.runners.layer_choice import corpus_classes
from multid.sae.runners.sae_training import TRAINING_OPTIONS, add_training_args

TARGETS = ("150", "1000", "2000", "all")  # weekday tokens in the SAE's text
EXPANSIONS = (4, 8)


def prefix_contexts(per_context: np.ndarray, target: str) -> int | None:
    """The fewest leading contexts that hold `target` weekday tokens (None for "all": every context)."""
    if target == "all":
        return None
    cumulative = np.cumsum(per_context)
    if int(target) > cumulative[-1]:
        raise UserError(f"the corpus holds {int(cumulative[-1])} weekday tokens, fewer than the target {target}")
    return int(np.searchsorted(cumulative, int(target))) + 1


def calendar_counts(classes: CC.TokenClasses, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per kind, the [contexts, classes] count of its tokens in each context."""
    out = {}
    for kind in CC.VERDICT_CATEGORIES:
        labels = classes.of(kind).reshape(shape)
        out[kind] = np.stack([(labels == k).sum(1) for k in range(CC.PERIODS[kind])], axis=1)
    return out


def point_row(found: dict[str, dict[str, dict]], counts: dict[str, np.ndarray], contexts: int) -> list[dict]:
    """One row per clustering and kind: the tokens per class in the text, and the named cluster's numbers."""
    rows = []
    for method, entries in found.items():
        for kind in CC.VERDICT_CATEGORIES:
            per_class = counts[kind][:contexts].sum(0)
            row: dict[str, Any] = {"clustering": method, "class": kind, "tokens": int(per_class.sum()),
                                   "tokens_per_class_min": int(per_class.min()),
                                   "tokens_per_class_mean": float(per_class.mean())}
            e = entries.get(kind)
            if e is not None:
                v = e["verdict"]  # its best view of the calendar order
                row.update({"cluster": e["cluster"], "size": e["size"], "purity": e["purity"],
                            "coverage": e["coverage"], "view": v["best_view"], "adjacent": v["adjacent_fraction"],
                            "chance": v["adjacent_chance"], "classes": v["classes_present"],
                            "p": v["adjacent_p_corrected"]})
            rows.append(row)
    return rows


def run_point(args: argparse.Namespace, corpus: D.Corpus, contexts: int | None, expansion: int, get_model: Any
              ) -> dict[str, Any]:
    """make discover's stages up to the named clusters (no scan) on the first `contexts` contexts."""
    argv = ["--base_dir", str(args.base_dir), "--calendar_text", args.calendar_text]
    if contexts is not None:
        argv += ["--max_tokens", str(contexts * D.CTX_LEN)]
    point_args = D.build_parser().parse_args(argv)
    for name in TRAINING_OPTIONS:  # the sweep's training flags, then this point's dictionary size
        setattr(point_args, name, getattr(args, name))
    point_args.expansion = expansion
    d = D.Discovery(point_args, args.seed, args.layer, get_model=get_model)
    sae = d.train(corpus)
    run = d.occurrences(sae)
    clusterings = d.cluster(run, sae.path)
    calendar = CalendarAnalysis(run, model=D.MODEL, layer=args.layer, base_dir=d.base_dir,
                                sample_limit=D.SCAN_SAMPLE_LIMIT, mixture=D.MIXTURE)
    found = calendar.find_named(clusterings)["found"]
    metrics = d.report["sae"]
    return {"run": str(run), "found": found,
            "sae": {k: metrics.get(k) for k in ("d_sae", "explained_variance", "ce_loss_recovered", "dead_fraction",
                                                "dead_fraction_train", "train_contexts")}}


def sweep_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What every point of one sweep file shares: the layer, the seed, the corpus and the training options but the
    dictionary size (a point of its own)."""
    return {"layer": args.layer, "seed": args.seed, "calendar_text": args.calendar_text,
            **{name: getattr(args, name) for name in TRAINING_OPTIONS if name != "expansion"}}


def earlier_points(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The sweep file's points when they were run with these settings (a later invocation adds to them), else an
    empty sweep (the old file is replaced; said on screen)."""
    empty = {"settings": settings, "rows": [], "points": []}
    if not path.exists():
        return empty
    old = load_json(path)
    if old.get("settings") != settings:
        print(f"{path} holds a sweep with other settings ({old.get('settings')}); it is replaced")
        return empty
    print(f"{path}: {len(old['points'])} earlier points kept (a point run again replaces its own)")
    return {**empty, "rows": old["rows"], "points": old["points"]}


def add_point(result: dict[str, Any], point: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Put a point and its rows into the sweep, in place of an earlier run of the same prefix and dictionary size;
    points in order of dictionary size, then text."""
    key = (point["contexts"], point["expansion"])
    result["points"] = [p for p in result["points"] if (p["contexts"], p["expansion"]) != key] + [point]
    result["rows"] = [r for r in result["rows"] if (r["contexts"], r["expansion"]) != key] + [
        {"target": point["target"], "contexts": point["contexts"], "expansion": point["expansion"], **row}
        for row in rows]
    result["points"].sort(key=lambda p: (p["expansion"], p["contexts"]))
    result["rows"].sort(key=lambda r: (r["expansion"], r["contexts"]))


def scaling_figure(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.5), sharex="col")
    for r, kind in enumerate(CC.VERDICT_CATEGORIES):
        panels = (("adjacent", f"calendar order (>= {CC.TARGETS.min_classes} classes)"), ("purity", "purity"),
                  ("coverage", "coverage"))
        for c, (key, label) in enumerate(panels):
            ax = axes[r, c]
            for index, expansion in enumerate(sorted({row["expansion"] for row in rows})):
                for method, style in (("graph", "-o"), ("spectral", "--s")):
                    pts = sorted((row["tokens_per_class_mean"], row.get(key)) for row in rows
                                 if row["class"] == kind and row["clustering"] == method
                                 and row["expansion"] == expansion and row.get(key) is not None
                                 and (key != "adjacent" or row["classes"] >= CC.TARGETS.min_classes))
                    if pts:
                        ax.plot(*zip(*pts), style, ms=4, color=f"C{index}", alpha=1.0 if method == "graph" else 0.7,
                                label=f"x{expansion} {method}")
            if key == "adjacent":
                ax.axhline(CC.TARGETS.adjacent, color="grey", lw=0.8, ls=":")
            else:
                ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{kind}s: {label}", fontsize=9)
            if r == 1:
                ax.set_xlabel("tokens per class in the SAE's text")
    if axes[0, 1].get_legend_handles_labels()[0]:
        axes[0, 1].legend(fontsize=7)  # purity: every curve is drawn there
    fig.tight_layout()
    out = save_figure(fig, path, dpi=150)
    plt.close(fig)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_base_dir_arg(parser)
    parser.add_argument("--targets", nargs="+", default=list(TARGETS),
                        help="weekday tokens in each prefix, or all (default: %(default)s)")
    parser.add_argument("--expansions", nargs="+", type=positive_int, default=list(EXPANSIONS),
                        help="dictionary sizes, as multiples of d_model (default: %(default)s; --expansion is not "
                             "used)")
    add_training_args(parser)
    parser.add_argument("--layer", type=int, default=D.LAYER, help="SmolLM2 layer (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the SAEs and the spectral clustering")
    parser.add_argument("--calendar_text", choices=("mail", "none"), default="mail",
                        help="the corpus's calendar text, as make discover (default: %(default)s)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    for target in args.targets:
        if target != "all" and not target.isdigit():
            raise UserError(f"--targets takes numbers of weekday tokens or all, got {target!r}")
    started = time.time()
    argv = ["--calendar_text", args.calendar_text] + (["--base_dir", str(args.base_dir)] if args.base_dir else [])
    first = D.Discovery(D.build_parser().parse_args(argv), args.seed, args.layer)
    args.base_dir = first.base_dir
    corpus = first.corpus()
    token_ids, classes = corpus_classes(make_text_source(dataset_path=corpus.folder / "dataset"), first.get_model(),
                                        model_name=D.MODEL, base_dir=first.base_dir, ctx_len=D.CTX_LEN)
    counts = calendar_counts(classes, token_ids.shape)
    stem = first.base_dir / "sae" / f"{D.MODEL}_layer{args.layer}_scaling_seed{args.seed}"
    result = earlier_points(stem.with_suffix(".json"), sweep_settings(args))
    for expansion in args.expansions:
        for target in args.targets:
            contexts = prefix_contexts(counts["weekday"].sum(1), target)
            used = contexts or len(token_ids)
            print(f"\n=== x{expansion}, {target} weekday tokens ({used} contexts) ({time.time() - started:.0f} s) ===",
                  flush=True)
            point = run_point(args, corpus, contexts, expansion, first.get_model)
            add_point(result, {"target": target, "contexts": used, "expansion": expansion, "run": point["run"],
                               "sae": point["sae"]}, point_row(point["found"], counts, used))
            result["figure"] = str(scaling_figure(result["rows"], stem.with_suffix(".png")))
            save_json(stem.with_suffix(".json"), result)  # after every point: a long sweep keeps what it did
    print(format_rows(result["rows"]))
    print(f"saved {stem.with_suffix('.json')} and {result['figure']} ({time.time() - started:.0f} s)")
    return result


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'target':>7}{'ctx':>6}{'x':>3} {'clustering':<11}{'class':<8}{'per class':>10}{'cluster':>8}"
             f"{'purity':>7}{'cover':>6}{ORDER_HEADER}"]
    for r in rows:
        head = (f"{r['target']:>7}{r['contexts']:>6}{r['expansion']:>3} {r['clustering']:<11}{r['class']:<8}"
                f"{r['tokens_per_class_mean']:>10.0f}")
        if "purity" not in r:
            lines.append(head + f"{'none':>8}")
            continue
        lines.append(head + f"{r['cluster']:>8}{r['purity']:>7.2f}{r['coverage']:>6.2f}" + order_cells(r))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
