"""Configuration shared by every script: artifact base directory, device, dtype and common CLI flags."""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

from multid.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_DIR_ENV = "MULTID_BASE_DIR"
MODELS_DIR_ENV = "MULTID_MODELS_DIR"
DTYPES = ("float32", "bfloat16", "float16")


def default_base_dir() -> Path:
    """`$MULTID_BASE_DIR` if set, else `./artifacts` at the repo root."""
    env = os.environ.get(BASE_DIR_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "artifacts"


def resolve_base_dir(base_dir: str | os.PathLike | None = None, create: bool = True) -> Path:
    """The artifact base directory (`--base_dir`, else env, else default), checked to be writable."""
    path = Path(base_dir).expanduser() if base_dir else default_base_dir()
    path = path.resolve()
    if create:
        ensure_writable_dir(path, what="base dir")
    return path


def ensure_writable_dir(path: Path, what: str = "folder") -> Path:
    """Create `path` if needed and prove it is writable; raise a one-line UserError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(
            f"{what} {path} is not writable ({err.strerror or err}); pass --base_dir to a writable folder "
            f"or set {BASE_DIR_ENV}"
        ) from None
    return path


def models_dir(base_dir: Path) -> Path:
    """Where converted model weights live: `$MULTID_MODELS_DIR`, else `<base_dir>/models`."""
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser().resolve() if env else base_dir / "models"


def figs_dir(base_dir: Path) -> Path:
    return Path(base_dir) / "figs"


def figure_dir(base_dir: str | os.PathLike, kind: str, model: str | None = None, task: str | None = None) -> Path:
    """The one rule for figure folders: `<base_dir>/figs/<model>_<task>/<kind>` for one model's task,
    `<base_dir>/figs/<kind>` otherwise (paper_plots, reducibility_demos, feature_deconstruction, demo)."""
    root = figs_dir(Path(base_dir))
    if model is not None and task is not None:
        return root / f"{model}_{task}" / kind
    return root / kind


def paper_plots_dir(base_dir: str | os.PathLike) -> Path:
    return figure_dir(base_dir, "paper_plots")


def resolve_device(device: str | int | None) -> str:
    """Map a --device value to a torch device string, failing clearly if it is not available.

    An int N means `cuda:N` (the upstream habit); also accepted: cpu, cuda, cuda:N, mps, auto.
    """
    import torch

    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if text.isdigit():
        text = f"cuda:{text}"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UserError("--device mps was given but MPS is not available here; use --device cpu")
        return "mps"
    if text == "cuda" or text.startswith("cuda:"):
        index_text = text.partition(":")[2] or "0"
        if not index_text.isdigit():
            raise UserError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N, N, mps or auto")
        index = int(index_text)
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA GPU"
            raise UserError(f"--device {device} asks for cuda:{index} but this machine has {found}; use --device cpu")
        return f"cuda:{index}"
    raise UserError(f"--device {device!r} is not a device; use cpu, cuda, cuda:N, N, mps or auto")


def resolve_dtype(name: str):
    """Map a --dtype name to a torch dtype."""
    import torch

    if name not in DTYPES:
        raise UserError(f"--dtype {name!r} is not supported; choose one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_base_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base_dir",
        default=None,
        help=f"folder for all artifacts (default: ${BASE_DIR_ENV} or ./artifacts at the repo root)",
    )


def add_device_arg(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument(
        "--device",
        default=default,
        help="cpu, cuda, cuda:N, an int N (= cuda:N, as upstream), mps or auto (default: %(default)s)",
    )


def add_dtype_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="model dtype (default: %(default)s)")


def add_seed_arg(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help="random seed (default: %(default)s)")
