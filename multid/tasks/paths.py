"""Where the intervention artifacts live under the base dir, and readers for the files others consume.

Layout of one task cache (model M, task T in {days_of_week, months_of_year}):

    <base_dir>/<M>_<T>/meta.json                        what produced the cache (fingerprint, positions)
    <base_dir>/<M>_<T>/results.csv                      a,b,c,ground_truth,model_out,model_correct,best_token
    <base_dir>/<M>_<T>/acts/layer<L>.pt                 residual stream [n_problems, seq_len, d_model]
    <base_dir>/<M>_<T>/pca/layer<L>_token<P>_pca<k>.pt  PCA-k of the (L, P) slice: coords, mean, components

Cache layer L: 0 = residual entering block 0 (embeddings), L = output of block L-1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from multid.errors import UserError
from multid.tasks.registry import TASK_NAMES, TASKS, check_task_name


def task_dir(base_dir: str | os.PathLike, model: str, task: str) -> Path:
    return Path(base_dir) / f"{model}_{check_task_name(task)}"


def models_with(base_dir: str | os.PathLike, task: str, filename: str) -> list[str]:
    """Models that have `<base_dir>/<model>_<task>/<filename>` (e.g. "meta.json", "results.csv"), sorted."""
    suffix = f"_{check_task_name(task)}"
    return sorted(path.parent.name[: -len(suffix)] for path in Path(base_dir).glob(f"*{suffix}/{filename}"))


def meta_path(folder: Path) -> Path:
    return folder / "meta.json"


def results_csv_path(folder: Path) -> Path:
    return folder / "results.csv"


def layer_acts_path(folder: Path, layer: int) -> Path:
    return folder / "acts" / f"layer{layer}.pt"


def pca_path(folder: Path, layer: int, token: int, k: int) -> Path:
    return folder / "pca" / f"layer{layer}_token{token}_pca{k}.pt"


def build_cache_command(model: str, task: str, pca_k: int | None = None, base_dir: str | os.PathLike | None = None) -> str:
    """The command that makes a task cache (results.csv, activations and PCA files)."""
    parts = [f"python3 {TASKS[check_task_name(task)].script} --model {model}"]
    if pca_k is not None:
        parts.append(f"--pca_k {pca_k}")
    if base_dir is not None:
        parts.append(f"--base_dir {base_dir}")
    return " ".join(parts)


# ------------------------------------------------------------------------------------ readers


def load_results_csv(path: str | os.PathLike):
    """Read a results.csv: ours or upstream's (", "-separated, 6 or 7 columns). Returns a DataFrame."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        frame = pd.read_csv(path, skipinitialspace=True, keep_default_na=False, dtype={"model_out": str})
    except Exception as err:
        raise UserError(f"cannot read {path} as a results.csv ({type(err).__name__}: {err})") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    required = ["a", "b", "c", "ground_truth", "model_out", "model_correct"]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise UserError(f"{path} lacks the results.csv column(s) {', '.join(missing)}; found {list(frame.columns)}")
    for column in ("a", "b", "c"):
        frame[column] = frame[column].astype(int)
    frame["model_correct"] = frame["model_correct"].map(lambda value: str(value).strip() == "True")
    return frame


def load_pca_scores(path: str | os.PathLike):
    """PCA scores [n, k] as a float numpy array from our PCA file or an upstream one.

    Ours is a dict of tensors (key "coords"); upstream's is a numpy array written with torch.save,
    which we read with torch's weights-only unpickler plus the few numpy globals an array needs.
    """
    import numpy as np

    obj = load_pca_file(path)
    coords = obj["coords"] if isinstance(obj, dict) else obj
    return np.asarray(coords.numpy() if hasattr(coords, "numpy") else coords, dtype=np.float64)


def load_pca_file(path: str | os.PathLike) -> Any:
    """Load a PCA file (ours: dict; upstream: numpy array) without executing arbitrary pickled code."""
    import torch

    from multid.io import corrupted

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise corrupted(path, err) from None


def _numpy_array_globals() -> list:
    """The numpy globals a pickled ndarray names, under both numpy 1.x and 2.x module paths.

    numpy 1.x pickles name `numpy.core.multiarray._reconstruct`; numpy 2 renamed the package to
    `numpy._core` (the old path is a deprecated shim), so we register the one function under both
    names via (object, "qualified.name") pairs instead of touching the deprecated `numpy.core`.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [
        np.ndarray,
        np.dtype,
        type(np.dtype(np.float32)),
        type(np.dtype(np.float64)),
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
    ]
