"""Shared test setup: offline, deterministic, small; every test in exactly one tier.

- Tiers (markers in pyproject.toml): `unit` (formulas and indices on hand-built or synthetic data, no
  model), `integration` (tiny random models, small end-to-end runs), `acceptance` (the real SmolLM2,
  notebooks, subprocess CLIs). Collection fails if a test has no tier or more than one; `smollm2`
  tests must be `acceptance`. `make test-fast` runs `-m "unit or integration"`.
- The hub is never contacted (HF_HUB_OFFLINE=1).
- `tiny_model`: random 3-layer Llama-style model with a word-level tokenizer (built in ~0.1 s).
- `smollm2_model`: the real embedded SmolLM2-135M (converted once into .cache/models at the repo
  root, under a file lock so that parallel workers never convert into the same folder at once).
- `tiny_caches` / `smollm2_caches`: both task caches, built once per run into a folder the xdist
  workers share (under a file lock: the first worker builds, the others reuse). Read-only.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from filelock import FileLock  # noqa: E402

from multid.config import MODELS_DIR_ENV, REPO_ROOT  # noqa: E402

os.environ.setdefault(MODELS_DIR_ENV, str(REPO_ROOT / ".cache" / "models"))
# one torch thread per xdist worker (two workers already fill two cores; oversubscribed OpenMP threads spin
# and run many times slower), both cores for a plain serial run
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))

TASKS = ("days_of_week", "months_of_year")
TIERS = ("unit", "integration", "acceptance")


# ----------------------------------------------------------------------------------------- tiers


def tier_problem(item) -> str | None:
    tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
    if len(tiers) != 1:
        return f"{item.name}: {'tiers ' + ', '.join(tiers) if tiers else 'no tier'}"
    if item.get_closest_marker("smollm2") and tiers != ["acceptance"]:
        return f"{item.name}: smollm2 tests are acceptance, not {tiers[0]}"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module with an untiered test fails to collect (also under xdist, and whatever `-m` selects)."""
    report = yield
    if report.outcome == "passed":
        problems = [problem for item in report.result if isinstance(item, pytest.Function) and (problem := tier_problem(item))]
        if problems:
            report.outcome, report.result = "failed", []
            report.longrepr = ("every test needs exactly one tier marker: @pytest.mark.unit / integration / acceptance "
                               "(or a module `pytestmark`), see tests/conftest.py\n  " + "\n  ".join(problems))
    return report


# ----------------------------------------------------------------------------------------- shared folders


def run_shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder shared by every xdist worker of this run (this run's own temp dir without xdist)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_caches(model_name: str, model, base_dir: Path) -> dict:
    from multid.tasks.cache import build_task_cache
    from multid.tasks.registry import get_task_spec

    return {task: build_task_cache(get_task_spec(task), model_name, base_dir, lambda: model) for task in TASKS}


def shared_caches(tmp_path_factory, model_name: str, model) -> dict:
    """Both task caches in the run's shared folder: the first worker builds them, the others wait and reuse."""
    base = run_shared_dir(tmp_path_factory, f"{model_name}_base")
    with FileLock(str(base.parent / f".{model_name}_base.lock")):
        return build_caches(model_name, model, base)


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_model():
    from multid.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory):
    from multid.config import models_dir
    from multid.models import ensure_smollm2_converted, load_model

    base = tmp_path_factory.mktemp("smollm2_base")
    root = models_dir(base)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".smollm2-conversion.lock")):  # one conversion at a time into the shared folder
        ensure_smollm2_converted(root)
    return load_model("smollm2", base_dir=base)


@pytest.fixture(scope="session")
def tiny_caches(tiny_model, tmp_path_factory) -> dict:
    """{task: TaskCache} for the tiny model (read-only: copy before modifying)."""
    return shared_caches(tmp_path_factory, "tiny", tiny_model)


@pytest.fixture(scope="session")
def tiny_base_dir(tiny_caches) -> Path:
    """The base dir holding `tiny_caches` (read-only)."""
    return next(iter(tiny_caches.values())).folder.parent


@pytest.fixture(scope="session")
def smollm2_caches(smollm2_model, tmp_path_factory) -> dict:
    """{task: TaskCache} for SmolLM2 (read-only)."""
    return shared_caches(tmp_path_factory, "smollm2", smollm2_model)


@pytest.fixture(scope="session")
def smollm2_base_dir(smollm2_caches) -> Path:
    return next(iter(smollm2_caches.values())).folder.parent


def final_name(name: str) -> str:
    """The name a temporary file will be renamed to: `.<name>.<random>.tmp` (multid.io.atomic_path) or
    `.<name>.building-<pid>` (multid.stage)."""
    if name.startswith(".") and name.endswith(".tmp"):
        name = name[1:-4].rsplit(".", 1)[0]
    if name.startswith(".") and ".building-" in name:
        name = name[1:].rsplit(".building-", 1)[0]
    return name


@pytest.fixture()
def drawn_figures(monkeypatch) -> dict:
    """{file name or path: matplotlib Figure} of every figure saved during the test (still saved as usual), to check
    figures by their content (series, points, colours, labels) rather than by file size."""
    from matplotlib.figure import Figure

    figures: dict = {}
    real_savefig = Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        target = fname if isinstance(fname, (str, os.PathLike)) else getattr(fname, "name", None)  # NamedBuffer
        if isinstance(target, (str, os.PathLike)):
            final = Path(target).with_name(final_name(Path(target).name))
            figures[final.name] = figures[str(final)] = self  # by name, and by full path where names repeat
        return real_savefig(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


@pytest.fixture()
def tiny_base(tmp_path, tiny_caches) -> Path:
    """A private base dir holding copies of the tiny task caches (the session caches stay untouched)."""
    for cache in tiny_caches.values():
        shutil.copytree(cache.folder, tmp_path / cache.folder.name)
    return tmp_path
