"""Table 1: how many problems each model answers correctly, per task.

Scoring as in the paper: a problem is correct when the ground-truth word has the highest logit among
the p allowable words (results.csv `best_token == ground_truth`). Every model with a results.csv
under the base dir gets a row; the CSV also keeps the greedy full-vocabulary exact-match count.
"""

from __future__ import annotations

from pathlib import Path

from multid.tasks.paths import (
    build_cache_command,
    load_results_csv,
    models_with,
    results_csv_path,
    task_dir,
)
from multid.tasks.registry import TASK_NAMES, TASK_TITLES
from multid.config import paper_plots_dir
from multid.errors import UserError
from multid.io import save_csv, write_text_atomic

COLUMNS = ("model", "task", "correct", "total", "greedy_exact_match")


def accuracy_rows(base_dir: Path, models: list[str] | None = None) -> list[tuple]:
    """(model, task, correct, total, greedy_exact) for every `<model>_<task>/results.csv` found."""
    rows = []
    for task in TASK_NAMES:
        for model in models_with(base_dir, task, "results.csv"):
            if models and model not in models:
                continue
            path = results_csv_path(task_dir(base_dir, model, task))
            frame = load_results_csv(path)
            if "best_token" not in frame.columns:
                raise UserError(f"{path} has no best_token column (written with save_best_logit=False); rebuild it")
            correct = int((frame["best_token"] == frame["ground_truth"]).sum())
            rows.append((model, task, correct, len(frame), int(frame["model_correct"].sum())))
    return rows


def format_table(rows: list[tuple]) -> str:
    """Plain-text table: one line per model, one column per task ("correct / total")."""
    models = sorted({row[0] for row in rows})
    cells = {(row[0], row[1]): f"{row[2]} / {row[3]}" for row in rows}
    header = f"{'model':<12}" + "".join(f"{TASK_TITLES[task]:>14}" for task in TASK_NAMES)
    lines = [header] + [
        f"{model:<12}" + "".join(f"{cells.get((model, task), '-'):>14}" for task in TASK_NAMES) for model in models
    ]
    return "\n".join(lines)


def latex_table(rows: list[tuple]) -> str:
    models = sorted({row[0] for row in rows})
    cells = {(row[0], row[1]): f"{row[2]} / {row[3]}" for row in rows}
    body = "\n".join(
        f"{model} & " + " & ".join(cells.get((model, task), "-") for task in TASK_NAMES) + r" \\" for model in models
    )
    return (
        "\\begin{tabular}{lcc}\n\\toprule\nModel & " + " & ".join(TASK_TITLES[task] for task in TASK_NAMES) + " \\\\\n\\midrule\n"
        f"{body}\n\\bottomrule\n\\end{{tabular}}\n"
    )


def write_table1(base_dir: Path, models: list[str] | None = None) -> tuple[str, list[Path]]:
    """Compute Table 1, save it as CSV and LaTeX under figs/paper_plots, return (text, paths)."""
    rows = accuracy_rows(base_dir, models)
    if not rows:
        raise UserError(
            f"no results.csv under {base_dir}; build one with: {build_cache_command('smollm2', 'days_of_week', base_dir=base_dir)}"
        )
    out = paper_plots_dir(base_dir)
    csv_path = save_csv(out / "table1.csv", COLUMNS, rows)
    tex_path = write_text_atomic(out / "table1.tex", latex_table(rows))
    return format_table(rows), [csv_path, tex_path]
