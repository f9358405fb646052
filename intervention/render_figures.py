"""Render every paper figure and table whose artifacts exist, without Jupyter (the notebooks call the same steps).

    python3 intervention/render_figures.py [--base_dir DIR] [--model auto|mistral|llama|smollm2|...]
                                           [--part main|appendix|all | --only STEP [STEP ...]]

Model choice ("auto"): the paper's models where their artifacts exist (Mistral for weekdays, Llama for
months, as in the paper's single-model figures; both for Figure 5 and the tables), else the first model with
artifacts for both tasks (SmolLM2 after `make demo`). A model named with --model is used for every
figure and table that shows one model per task (the paper models are not preferred then). Nothing is
computed with a model here.

A step whose artifacts are missing, or were made from an older cache, is skipped with the command that
makes them, and any older file of that step is moved into figs/paper_plots/stale/ so that nothing left in
figs/paper_plots looks current when it is not. The run ends with a table of drawn and skipped steps.

Exit status: with neither --part nor --only ("draw what exists", as after a partial run) the status is 0
when at least one step was drawn; with --part or --only every step asked for must be drawn, else 1.
Bad arguments or an unusable base dir: 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.config import add_base_dir_arg, ensure_writable_dir, paper_plots_dir  # noqa: E402
from multid.errors import cli_entry  # noqa: E402
from multid.figures.render import (  # noqa: E402
    NOTEBOOKS,
    STEP_KEYS,
    choose_models,
    execute_notebook,
    outcome_table,
    run_steps,
    steps_of,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--model", default="auto", help="model whose artifacts to draw (default: auto, see above)")
    asked = parser.add_mutually_exclusive_group()
    asked.add_argument("--part", default=None, choices=("main", "appendix", "all"),
                       help="draw these steps and fail (exit 1) if one cannot be drawn (default: all, never failing)")
    asked.add_argument("--only", nargs="+", metavar="STEP", choices=STEP_KEYS,
                       help=f"draw only these steps and fail (exit 1) if one cannot be drawn: {', '.join(STEP_KEYS)}")
    parser.add_argument("--notebooks", action="store_true",
                        help="also execute both notebooks headless into <base_dir>/notebooks (ipynb + html)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    selection = choose_models(args.base_dir, args.model)
    ensure_writable_dir(paper_plots_dir(selection.base_dir), what="figure folder")
    print(f"drawing from {selection.base_dir}: {selection.models}")
    outcomes = run_steps(steps_of(args.part or "all", args.only), selection)
    written = [path for outcome in outcomes for path in outcome.drawn]
    if args.notebooks:
        for name in NOTEBOOKS:
            for path in execute_notebook(name, selection.base_dir, selection.base_dir / "notebooks", args.model):
                print(f"notebook: {path}")
                written.append(path)
    print()
    print(outcome_table(outcomes, selection.base_dir))
    failed = [outcome.step.key for outcome in outcomes if outcome.missing]
    strict = args.part is not None or args.only is not None
    if failed and (strict or len(failed) == len(outcomes)):
        why = f"asked for with {'--only' if args.only else '--part'}" if strict else "nothing could be drawn"
        print(f"error: not drawn: {', '.join(failed)} ({why}); make what is missing with the commands in the table",
              file=sys.stderr)
        raise SystemExit(1)
    return written


if __name__ == "__main__":
    main()
