"""Render every paper figure and table whose artifacts exist, without Jupyter (the notebooks call the same steps).

    python3 intervention/render_figures.py [--base_dir DIR] [--model auto|mistral|llama|smollm2|...] [--part main|appendix|all]

Model choice ("auto"): the paper's models where their artifacts exist (Mistral for weekdays, Llama for
months, as in the paper's single-model figures; both for Figure 5 and the tables), else the first model with
artifacts for both tasks (SmolLM2 after `make demo`). A model named with --model is used for every
figure and table that shows one model per task (the paper models are not preferred then). A step whose
artifacts are missing, or were made from an older cache, is skipped with the command that makes them;
nothing is computed with a model here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from its folder: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multid.config import add_base_dir_arg  # noqa: E402
from multid.errors import cli_entry  # noqa: E402
from multid.figures.render import APPENDIX_STEPS, MAIN_TEXT_STEPS, NOTEBOOKS, choose_models, execute_notebook, run_steps  # noqa: E402


@cli_entry
def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_base_dir_arg(parser)
    parser.add_argument("--model", default="auto", help="model whose artifacts to draw (default: auto, see above)")
    parser.add_argument("--part", default="all", choices=("main", "appendix", "all"))
    parser.add_argument("--notebooks", action="store_true",
                        help="also execute both notebooks headless into <base_dir>/notebooks (ipynb + html)")
    args = parser.parse_args(argv)
    selection = choose_models(args.base_dir, args.model)
    print(f"drawing from {selection.base_dir}: {selection.models}")
    steps = {"main": MAIN_TEXT_STEPS, "appendix": APPENDIX_STEPS, "all": {**MAIN_TEXT_STEPS, **APPENDIX_STEPS}}[args.part]
    written = run_steps(steps, selection)
    if args.notebooks:
        for name in NOTEBOOKS:
            for path in execute_notebook(name, selection.base_dir, selection.base_dir / "notebooks", args.model):
                print(f"notebook: {path}")
                written.append(path)
    return written


if __name__ == "__main__":
    main()
