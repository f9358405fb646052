"""Shared test setup: offline, deterministic, small.

- The hub is never contacted (HF_HUB_OFFLINE=1).
- `tiny_model`: random 3-layer Llama-style model with a word-level tokenizer (built in ~0.1 s).
- `smollm2_model`: the real embedded SmolLM2-135M (converted once into .cache/models at the repo
  root, reused across runs); tests using it carry the `smollm2` marker.
- `tiny_caches` / `smollm2_caches`: both task caches built into a per-session base dir.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from multid.config import MODELS_DIR_ENV, REPO_ROOT  # noqa: E402

os.environ.setdefault(MODELS_DIR_ENV, str(REPO_ROOT / ".cache" / "models"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TASKS = ("days_of_week", "months_of_year")


@pytest.fixture(scope="session")
def tiny_model():
    from multid.models import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory):
    from multid.models import load_model

    return load_model("smollm2", base_dir=tmp_path_factory.mktemp("smollm2_base"))


def build_caches(model_name: str, model, base_dir: Path) -> dict:
    from multid.tasks.cache import build_task_cache
    from multid.tasks.registry import get_task_spec

    return {task: build_task_cache(get_task_spec(task), model_name, base_dir, lambda: model) for task in TASKS}


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_base")


@pytest.fixture(scope="session")
def tiny_caches(tiny_model, tiny_base_dir) -> dict:
    """{task: TaskCache} for the tiny model (read-only: copy before modifying)."""
    return build_caches("tiny", tiny_model, tiny_base_dir)


@pytest.fixture(scope="session")
def smollm2_base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smollm2_caches")


@pytest.fixture(scope="session")
def smollm2_caches(smollm2_model, smollm2_base_dir) -> dict:
    """{task: TaskCache} for SmolLM2 (read-only)."""
    return build_caches("smollm2", smollm2_model, smollm2_base_dir)
