"""Scripts: --help everywhere, and one clear line plus a non-zero exit for each user mistake."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys

import pytest
import torch

from multid.tasks import paths
from multid.tasks.build import main as build_cache_main
from multid.config import REPO_ROOT
from multid.errors import UserError

SCRIPT_FOLDERS = ("intervention", "reducibility_demos", "feature_deconstruction", "sae_multid_feature_discovery", "multid")


def script_paths() -> list[str]:
    """Every file with a `__main__` block: the user-facing scripts."""
    found = []
    for folder in SCRIPT_FOLDERS:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if 'if __name__ == "__main__":' in path.read_text():
                found.append(str(path.relative_to(REPO_ROOT)))
    return found


@pytest.mark.parametrize("script", script_paths())
def test_every_script_has_help(script, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("script", ["intervention/days_of_week_task.py",
                                    "feature_deconstruction/days_of_the_week/days_of_the_week_deconstruction.py"])
def test_script_runs_from_inside_its_folder_as_upstream(script):
    path = REPO_ROOT / script
    done = subprocess.run(
        [sys.executable, path.name, "--help"], cwd=path.parent,
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0 and "--base_dir" in done.stdout


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        build_cache_main("days_of_week", argv)
    return exit_info.value.code, capsys.readouterr().err.strip()


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_model(capsys, tmp_path):
    code, err = run_main(["--model", "gpt5", "--base_dir", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "unknown model 'gpt5'", "smollm2")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_device_without_gpu(capsys, tmp_path):
    code, err = run_main(["--model", "tiny", "--device", "0", "--base_dir", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "cuda:0", "--device cpu")


def test_unwritable_base_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = run_main(["--model", "tiny", "--base_dir", str(blocker / "sub")], capsys)
    assert_one_line_error(code, err, "not writable", "--base_dir")


def test_missing_model_path(capsys, tmp_path):
    code, err = run_main(["--model", "mistral", "--model_path", str(tmp_path / "nope"), "--device", "cpu", "--base_dir", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "does not exist")
    assert not (tmp_path / "mistral_days_of_week" / "meta.json").exists()


def test_corrupted_cache_file(capsys, tmp_path):
    assert build_cache_main("days_of_week", ["--model", "tiny", "--device", "cpu", "--base_dir", str(tmp_path), "--pca_k", "3"])
    capsys.readouterr()
    folder = paths.task_dir(tmp_path, "tiny", "days_of_week")
    paths.pca_path(folder, 1, 12, 3).write_bytes(b"\x00garbage")
    code, err = run_main(["--model", "tiny", "--device", "cpu", "--base_dir", str(tmp_path), "--pca_k", "3"], capsys)
    assert_one_line_error(code, err, "pca", "damaged", "delete it")


def test_batch_size_must_be_positive(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        build_cache_main("days_of_week", ["--model", "tiny", "--device", "cpu", "--base_dir", str(tmp_path), "--batch_size", "0"])
    assert exit_info.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "tiny_days_of_week" / "meta.json").exists()


def test_incomplete_cache_names_the_rebuild_command(capsys, tmp_path):
    from multid.tasks.cache import TaskCache

    assert build_cache_main("days_of_week", ["--model", "tiny", "--device", "cpu", "--base_dir", str(tmp_path), "--pca_k", "3"])
    paths.layer_acts_path(paths.task_dir(tmp_path, "tiny", "days_of_week"), 2).unlink()
    with pytest.raises(UserError, match=r"days_of_week_task.py --model tiny .*--force"):
        TaskCache.open(tmp_path, "tiny", "days_of_week").get_acts(2, 3)
