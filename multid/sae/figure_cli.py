"""Command-line front ends of the SAE figure scripts (the scripts in sae_multid_feature_discovery/ are thin
wrappers over these): argument parsers with the original flags and defaults, and the runs they start.

- interactive figure (GPT-2 and Mistral, one implementation): `interactive_parser` (the run:
  multid.sae.runners.interactive_figure);
- Figures 1 and 12 (GPT-2 days / months / years): `dmy_parser` + `run_days_months_years`;
- Figure 13 (Mistral days / months): `mistral_dm_parser` + `run_mistral_days_months`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from multid.config import add_base_dir_arg, ensure_writable_dir, positive_int, resolve_base_dir
from multid.errors import MissingArtifactError, UserError
from multid.io import save_figure
from multid.sae import labels as L
from multid.sae import paths
from multid.sae.cluster_points import (ClusterPoints, cluster_points_stage, file_fingerprint, find_run_dir,
                                       load_run_decoder)
from multid.sae.clusters import CONVENTIONS, load_clusters, pick_cluster
from multid.sae.occurrences import generate_command
from multid.sae.stage_configs import ClusteringConfig

PAPER_CLUSTER_FILES = {"gpt2": "gpt-2_layer_7_clusters_spectral_n1000.pkl",
                       "mistral": "mistral_layer_8_clusters_cutoff_0.5.pkl"}
CONVENTION_HELP = {
    "non_singleton": "index into the clusters with more than one member (the paper's Mistral figure numbering)",
    "all": "index into the full cluster list",
}


@dataclass(frozen=True)
class Defaults:
    """Per-model defaults of a figure script (the original scripts' values)."""

    model: str
    layer: int
    cluster: int
    sample_limit: int
    label: str


GPT2_DEFAULTS = Defaults("gpt2", 7, 138, 20000, "GPT-2")
MISTRAL_DEFAULTS = Defaults("mistral", 8, 61, 4000, "Mistral-7B")


# ----------------------------------------------------------------------------------------- shared arguments


def add_model_layer_args(parser: argparse.ArgumentParser, model: str = "gpt2", layer: int = 7) -> None:
    """--base_dir, --model_name and --layer: which SAE run a script works on (every SAE script has them)."""
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=model,
                        help="model of the SAE run: gpt2 (or gpt-2), mistral, smollm2, ... (default: %(default)s)")
    parser.add_argument("--layer", type=int, default=layer, help="SAE layer (default: %(default)s)")


def add_run_args(parser: argparse.ArgumentParser, defaults: Defaults) -> None:
    add_model_layer_args(parser, defaults.model, defaults.layer)
    parser.add_argument("--run_dir", default=None,
                        help="the SAE run folder (default: the one <base_dir>/sae/<model>_layer<L>_* folder)")
    parser.add_argument("--decoder_file", default=None,
                        help="decoder W_dec [F, d] as .npy or .npz (key W_dec) (default: <run_dir>/decoder.npy)")
    parser.add_argument("--clusters_file", default=None,
                        help="cluster file, our JSON or the paper's pickle (default: the paper's file name for the "
                             "model, looked up in the current folder and then in <run_dir>/clusters/)")
    parser.add_argument("--cluster_convention", choices=CONVENTIONS, default="non_singleton",
                        help="how --cluster numbers clusters: " + "; ".join(f"{k}: {v}" for k, v in
                                                                              CONVENTION_HELP.items())
                             + " (default: %(default)s; the GPT-2 file has no singletons, so both agree there)")
    parser.add_argument("--tokenizer_path", default=None,
                        help="local tokenizer folder (default: the model's hub tokenizer, or the registry's)")
    parser.add_argument("--size_limit", type=positive_int, default=1000,
                        help="refuse clusters with more features than this (default: %(default)s)")
    parser.add_argument("--sample_limit", type=positive_int, default=defaults.sample_limit,
                        help="use the first N reconstructions in corpus order (default: %(default)s)")
    parser.add_argument("--save_dir", default=None,
                        help="folder for the figures (default: <run_dir>/figs); when given, the cluster's "
                             "reconstructions and PCA are cached in <save_dir>/reconstructions instead of the run's")


@dataclass
class RunContext:
    """What every figure run needs: the run folder, decoder, clusters and how to name things."""

    args: argparse.Namespace
    run: Path
    W_dec: np.ndarray
    decoder_id: str
    clusters: list[list[int]]
    clusters_file: Path
    save_dir: Path
    base_dir: Path

    def pick(self, index: int) -> list[int]:
        return pick_cluster(self.clusters, index, self.args.cluster_convention, size_limit=self.args.size_limit)

    def points(self, index: int, members: Sequence[int], k: int, command: str) -> ClusterPoints:
        from multid.sae.clusters import check_members

        check_members(members, self.W_dec.shape[0], what=f"cluster {index} of {self.clusters_file.name}")
        name = f"{self.clusters_file.stem}-{self.args.cluster_convention}-cluster{index}"
        # with --save_dir elsewhere, the reconstructions are cached there too: the run's own cache is left as it is
        folder = self.save_dir / "reconstructions" if self.args.save_dir else None
        return cluster_points_stage(self.run, name, members, self.W_dec, k=k, sample_limit=self.args.sample_limit,
                                    decoder_id=self.decoder_id, command=command, folder=folder)

    def tokenizer(self) -> Any:
        from multid.sae.text import load_tokenizer

        return load_tokenizer(paths.canonical_model(self.args.model_name), tokenizer_path=self.args.tokenizer_path,
                              base_dir=self.base_dir)


def resolve_clusters_file(args: argparse.Namespace, run: Path) -> Path:
    if args.clusters_file:
        path = Path(args.clusters_file).expanduser()
        if path.is_file():
            return path.resolve()
        inside = paths.clusters_dir(run) / path.name
        if not path.is_absolute() and inside.is_file():
            return inside
        raise MissingArtifactError("cluster file", path, clustering_command(args))
    name = PAPER_CLUSTER_FILES.get(paths.canonical_model(args.model_name))
    candidates = [Path.cwd() / name, paths.clusters_dir(run) / name] if name else []
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if name is None:
        raise UserError(f"no default cluster file for model {args.model_name!r}; pass --clusters_file "
                        f"(make one with: {clustering_command(args)})")
    raise MissingArtifactError(f"cluster file {name}", " or ".join(map(str, candidates)), clustering_command(args))


def clustering_command(args: Any) -> str:
    """The clustering that makes the cluster file a figure or scan of (model, layer) reads."""
    return ClusteringConfig(model_name=args.model_name, layer=args.layer, out="<file>.json").command()


def open_context(args: argparse.Namespace) -> RunContext:
    base_dir = resolve_base_dir(args.base_dir)
    run = find_run_dir(base_dir, args.model_name, args.layer, args.run_dir)
    decoder_file = Path(args.decoder_file) if args.decoder_file else paths.decoder_path(run)
    W_dec = load_run_decoder(run, decoder_file, command=generate_command(args.model_name, args.layer))
    clusters_file = resolve_clusters_file(args, run)
    clusters = load_clusters(clusters_file, command=clustering_command(args))
    save_dir = ensure_writable_dir(Path(args.save_dir).expanduser().resolve() if args.save_dir
                                   else paths.sae_figs_dir(run), what="--save_dir")
    return RunContext(args, run, W_dec, file_fingerprint(decoder_file), clusters, clusters_file, save_dir, base_dir)


def command_line(script: str, args: argparse.Namespace) -> str:
    return f"python sae_multid_feature_discovery/{script} --model_name {args.model_name} --layer {args.layer}"


def print_written(paths_written: Sequence[Path]) -> None:
    print("wrote:")
    for path in paths_written:
        print(f"  {path}")


# ----------------------------------------------------------------------------------------- interactive


def interactive_parser(defaults: Defaults, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, defaults)
    parser.add_argument("--cluster", type=int, default=defaults.cluster,
                        help="cluster index, numbered by --cluster_convention (default: %(default)s)")
    return parser


# ----------------------------------------------------------------------------------------- Figures 1 / 12 / 13


def add_stale_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stale_year_colours", action="store_true",
                        help="colour a non-digit token in the years panel like the point before it, as the original "
                             "figure script did (a bug the published Figures 1 and 12 carry); default: grey")


def dmy_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, GPT2_DEFAULTS)
    parser.add_argument("--days", type=int, default=138, help="days cluster index (default: %(default)s)")
    parser.add_argument("--months", type=int, default=251, help="months cluster index (default: %(default)s)")
    parser.add_argument("--years", type=int, default=212, help="years cluster index (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=["pdf", "png"], default=["pdf"],
                        help="figure formats (default: pdf, as the paper)")
    add_stale_flag(parser)
    return parser


def firing_strings(ctx: RunContext, points: ClusterPoints, tokenizer: Any) -> list[str]:
    from multid.sae.text import token_strings

    return token_strings(tokenizer, points.firing_token_ids())


def run_days_months_years(args: argparse.Namespace, script: str) -> list[Path]:
    """Figures 1 (gpt2nonlinears) and 12 (gpt2nonlinears3projs) from the days / months / years clusters."""
    from multid.sae import paper_figures as P

    ctx = open_context(args)
    tokenizer = ctx.tokenizer()
    panels = {}
    for name, index in (("days", args.days), ("months", args.months), ("years", args.years)):
        members = ctx.pick(index)
        print(f"{name}: cluster {index} ({args.cluster_convention} numbering), {len(members)} features {members}")
        points = ctx.points(index, members, min(5, len(members)), command_line(script, args))
        strings = firing_strings(ctx, points, tokenizer)
        if name == "days":
            labels = L.map_labels(strings, L.DAY_TOKENS)
        elif name == "months":
            labels = L.map_labels(strings, L.MONTH_TOKENS)
        else:
            labels = L.year_labels(strings, stale_colours=args.stale_year_colours)
        panels[name] = P.Panel(points.pca.coords, labels)
        print(f"  {len(points.tokens)} points, grey (other) fraction {panels[name].grey_fraction:.3f}")
    written = []
    for stem, make in (("gpt2nonlinears", P.figure1), ("gpt2nonlinears3projs", P.figure12)):
        fig = make(panels["days"], panels["months"], panels["years"])
        for fmt in args.formats:
            written.append(save_figure(fig, ctx.save_dir / f"{stem}.{fmt}", dpi=300))
        import matplotlib.pyplot as plt

        plt.close(fig)
    print(f"fraction of grey points in the days panel: {panels['days'].grey_fraction:.4f}")
    print_written(written)
    return written


def mistral_dm_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, MISTRAL_DEFAULTS)
    parser.add_argument("--days", type=int, default=61, help="days cluster index (default: %(default)s)")
    parser.add_argument("--months", type=int, default=832, help="months cluster index (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=["pdf", "png"], default=["png"],
                        help="figure formats (default: png, as the paper)")
    return parser


def run_mistral_days_months(args: argparse.Namespace, script: str) -> list[Path]:
    """Figure 13 (mistral7bnonlinears) from the Mistral days and months clusters."""
    from multid.sae import paper_figures as P

    ctx = open_context(args)
    tokenizer = ctx.tokenizer()
    panels = {}
    for name, index, mapping in (("days", args.days, L.MISTRAL_DAY_TOKENS),
                                 ("months", args.months, L.MISTRAL_MONTH_TOKENS)):
        members = ctx.pick(index)
        print(f"{name}: cluster {index} ({args.cluster_convention} numbering), {len(members)} features {members}")
        points = ctx.points(index, members, min(5, len(members)), command_line(script, args))
        panels[name] = P.Panel(points.pca.coords, L.map_labels(firing_strings(ctx, points, tokenizer), mapping))
        print(f"  {len(points.tokens)} points; PCA saved to {points.path}")
    fig = P.figure13(panels["days"], panels["months"])
    written = [save_figure(fig, ctx.save_dir / f"mistral7bnonlinears.{fmt}", dpi=300) for fmt in args.formats]
    import matplotlib.pyplot as plt

    plt.close(fig)
    print(f"fraction of grey points in the days panel: {panels['days'].grey_fraction:.4f}")
    print_written(written)
    return written


# ----------------------------------------------------------------------------------------- rebuttal grid

# The paper's top-20 GPT-2 layer-7 clusters of the reducibility ranking, with the authors' rough descriptions.
PAPER_TOP20 = {23: "Letter 'B'", 28: "Letter 'M'", 58: "Substring 'Re'", 32: "Letter 'G'", 34: "Letter 'H'",
               93: "Letter 'T'", 46: "Letter 'D'", 13: "Substring 'Al'", 138: "Days of Week", 96: "Token 'Such'",
               65: "Letter 'N'", 2: "Token/Concept 'There'", 68: "'Trying'", 7: "Concept 'Formerly'",
               212: "Years of 20th Century", 157: "Years of 21st Century", 8: "Substring 'Un'", 101: "Letter 'A'",
               173: "Word 'So'", 209: "Concept 'Person'"}


def explore_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, GPT2_DEFAULTS)
    parser.add_argument("--clusters", type=int, nargs="+", default=None,
                        help="cluster indices in rank order (default: the paper's top 20, or --ranking)")
    parser.add_argument("--ranking", default=None,
                        help="JSON ranking from analyze_reducibilities.py: a list of cluster ids, or of objects with "
                             "'cluster' (or 'cluster_id'), or an object with such a list under 'ranking'")
    parser.add_argument("--top", type=positive_int, default=20, help="clusters taken from --ranking (default: 20)")
    parser.add_argument("--panels", type=positive_int, default=10,
                        help="clusters drawn: the first N with at least 4 PCs (default: %(default)s)")
    parser.add_argument("--dpi", type=positive_int, default=50, help="png resolution (default: %(default)s)")
    return parser


def read_ranking(path: str | Path, top: int) -> list[int]:
    """The first `top` cluster ids of a ranking JSON (formats in explore_parser's --ranking help)."""
    from multid.io import load_json

    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError("cluster ranking", path, "python sae_multid_feature_discovery/analyze_reducibilities.py")
    data = load_json(path)
    if isinstance(data, dict):
        data = data.get("ranking")
    ids = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            item = item.get("cluster", item.get("cluster_id"))
        if isinstance(item, bool) or not isinstance(item, int):
            raise UserError(f"{path}: ranking entry {item!r} is not a cluster id; expected a list of ints or of "
                            f"objects with 'cluster'")
        ids.append(item)
    if not ids:
        raise UserError(f"{path} holds no ranking (a list of cluster ids, or objects with 'cluster')")
    return ids[:top]


def run_explore(args: argparse.Namespace, script: str) -> list[Path]:
    """The rebuttal grid over the top clusters: PC pairs coloured by the firing and by the next token."""
    import matplotlib.pyplot as plt

    from multid.sae import paper_figures as P
    from multid.sae.text import token_strings

    ids = args.clusters or (read_ranking(args.ranking, args.top) if args.ranking else list(PAPER_TOP20))
    ctx = open_context(args)
    tokenizer = ctx.tokenizer()
    known = PAPER_TOP20 if paths.canonical_model(args.model_name) == "gpt2" and args.layer == 7 else {}
    entries = []
    for rank, index in enumerate(ids, start=1):
        members = ctx.pick(index)
        k = min(5, len(members))
        if k < 4:
            print(f"cluster {index} (rank {rank}): {len(members)} features -> fewer than 4 PCs, skipped")
            continue
        points = ctx.points(index, members, k, command_line(script, args))
        if points.pca.k < 4:
            print(f"cluster {index} (rank {rank}): only {points.pca.k} PCs from {len(points.tokens)} points, skipped")
            continue
        current = token_strings(tokenizer, points.firing_token_ids())
        nxt = points.next_ids
        following = ["(end)"] * len(nxt)
        for i, text in zip(np.flatnonzero(nxt >= 0), token_strings(tokenizer, nxt[nxt >= 0])):
            following[i] = text
        label = known.get(index, "")
        title = f"Cluster {index} (Rank {rank})" + (f", Rough Description: {label}" if label else "")
        entries.append(P.GridEntry(title, points.pca.coords, points.pca.explained_variance_ratio, current, following))
        print(f"cluster {index} (rank {rank}): {len(members)} features, {len(points.tokens)} points")
        if len(entries) == args.panels:
            break
    if not entries:
        raise UserError(f"none of the clusters {ids} has at least 4 principal components to draw")
    fig = P.explore_grid(entries)
    written = [save_figure(fig, ctx.save_dir / "all_clusters_grid.png", dpi=args.dpi)]
    plt.close(fig)
    print_written(written)
    return written
