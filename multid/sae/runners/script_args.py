"""Argument parsers of the SAE scripts (the one home of their argparse code): the options every SAE script
shares and the figure scripts' parsers, with the original flags; the defaults are the configs' (multid.sae.
stage_configs), the runs multid.sae.runners'.
"""

from __future__ import annotations

import argparse

from multid.config import add_base_dir_arg, positive_int
from multid.sae.data.cluster_files import CONVENTIONS
from multid.sae.figures.figure_context import CONVENTION_HELP
from multid.sae.stage_configs import (DaysMonthsYearsConfig, ExploreConfig, FigureRunConfig, InteractiveConfig,
                                      MistralDaysMonthsConfig)


# ----------------------------------------------------------------------------------------- shared arguments


def add_model_layer_args(parser: argparse.ArgumentParser, model: str = "gpt2", layer: int = 7) -> None:
    """--base_dir, --model_name and --layer: which SAE run a script works on (every SAE script has them)."""
    add_base_dir_arg(parser)
    parser.add_argument("--model_name", default=model,
                        help="model of the SAE run: gpt2 (or gpt-2), mistral, smollm2, ... (default: %(default)s)")
    parser.add_argument("--layer", type=int, default=layer, help="SAE layer (default: %(default)s)")


def add_run_args(parser: argparse.ArgumentParser, defaults: FigureRunConfig) -> None:
    """The options of FigureRunConfig: which run, decoder and cluster file, and how many points."""
    add_model_layer_args(parser, defaults.model_name, defaults.layer)
    parser.add_argument("--run_dir", default=None,
                        help="the SAE run folder (default: the one <base_dir>/sae/<model>_layer<L>_* folder)")
    parser.add_argument("--decoder_file", default=None,
                        help="decoder W_dec [F, d] as .npy or .npz (key W_dec) (default: <run_dir>/decoder.npy)")
    parser.add_argument("--clusters_file", default=None,
                        help="cluster file, our JSON or the paper's pickle (default: the paper's file name for the "
                             "model, looked up in the current folder and then in <run_dir>/clusters/)")
    parser.add_argument("--cluster_convention", choices=CONVENTIONS, default=defaults.cluster_convention,
                        help="how --cluster numbers clusters: " + "; ".join(f"{k}: {v}" for k, v in
                                                                              CONVENTION_HELP.items())
                             + " (default: %(default)s; the GPT-2 file has no singletons, so both agree there)")
    parser.add_argument("--tokenizer_path", default=None,
                        help="local tokenizer folder (default: the model's hub tokenizer, or the registry's)")
    parser.add_argument("--size_limit", type=positive_int, default=defaults.size_limit,
                        help="refuse clusters with more features than this (default: %(default)s)")
    parser.add_argument("--sample_limit", type=positive_int, default=defaults.sample_limit,
                        help="use the first N reconstructions in corpus order (default: %(default)s)")
    parser.add_argument("--save_dir", default=None,
                        help="folder for the figures (default: <run_dir>/figs); when given, the cluster's "
                             "reconstructions and PCA are cached in <save_dir>/reconstructions instead of the run's")


# ----------------------------------------------------------------------------------------- figure scripts


def interactive_parser(defaults: InteractiveConfig, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, defaults)
    parser.add_argument("--cluster", type=int, default=defaults.cluster,
                        help="cluster index, numbered by --cluster_convention (default: %(default)s)")
    return parser


def add_calendar_figure_args(parser: argparse.ArgumentParser, defaults: DaysMonthsYearsConfig | MistralDaysMonthsConfig,
                             classes: tuple[str, ...]) -> None:
    """--days / --months / --years (each class's cluster index) and --formats of a calendar figure script."""
    for name in classes:
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name),
                            help=f"{name} cluster index (default: %(default)s)")
    parser.add_argument("--formats", nargs="+", choices=["pdf", "png"], default=list(defaults.formats),
                        help=f"figure formats (default: {' '.join(defaults.formats)}, as the paper)")


def dmy_parser(description: str) -> argparse.ArgumentParser:
    """gpt2_days_months_years.py (Figures 1 and 12)."""
    d = DaysMonthsYearsConfig()
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, d)
    add_calendar_figure_args(parser, d, ("days", "months", "years"))
    parser.add_argument("--stale_year_colours", action="store_true",
                        help="colour a non-digit token in the years panel like the point before it, as the original "
                             "figure script did (a bug the published Figures 1 and 12 carry); default: grey")
    return parser


def mistral_dm_parser(description: str) -> argparse.ArgumentParser:
    """mistral_days_months.py (Figure 13)."""
    d = MistralDaysMonthsConfig()
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, d)
    add_calendar_figure_args(parser, d, ("days", "months"))
    return parser


def explore_parser(description: str) -> argparse.ArgumentParser:
    """explore_features.py (the rebuttal grid of the top clusters)."""
    d = ExploreConfig()
    parser = argparse.ArgumentParser(description=description)
    add_run_args(parser, d)
    parser.add_argument("--clusters", type=int, nargs="+", default=d.clusters,
                        help="cluster indices in rank order (default: the paper's top 20, or --ranking)")
    parser.add_argument("--ranking", default=d.ranking,
                        help="JSON ranking from analyze_reducibilities.py: a list of cluster ids, or of objects with "
                             "'cluster' (or 'cluster_id'), or an object with such a list under 'ranking'")
    parser.add_argument("--top", type=positive_int, default=d.top, help="clusters taken from --ranking (default: 20)")
    parser.add_argument("--panels", type=positive_int, default=d.panels,
                        help="clusters drawn: the first N with at least 4 PCs (default: %(default)s)")
    parser.add_argument("--dpi", type=positive_int, default=d.dpi, help="png resolution (default: %(default)s)")
    return parser
