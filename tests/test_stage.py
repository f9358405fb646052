"""The stage helper: reuse on equal settings, rebuild on change or damage, never lose a complete artifact."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from multid.errors import UserError
from multid.io import save_pt
from multid.stage import Stage, artifact_id, describe, is_current, old_sibling, run_stage

pytestmark = pytest.mark.unit


def file_stage(tmp_path: Path, **settings) -> Stage:
    return Stage("numbers", tmp_path / "out" / "numbers.txt", settings or {"n": 3}, command="make numbers")


def writer(text: str, calls: list[str]):
    def build(tmp: Path) -> None:
        calls.append(text)
        tmp.write_text(text)

    return build


def test_reuses_when_settings_match_and_rebuilds_when_they_change(tmp_path):
    calls: list[str] = []
    stage = file_stage(tmp_path, n=3)
    run_stage(stage, writer("a", calls))
    run_stage(stage, writer("b", calls))
    assert calls == ["a"] and stage.path.read_text() == "a"
    changed = file_stage(tmp_path, n=4)
    assert describe(changed) == "settings changed"
    run_stage(changed, writer("c", calls))
    assert calls == ["a", "c"] and stage.path.read_text() == "c"
    record = json.loads(stage.record_path.read_text())
    assert record["settings"] == {"n": 4} and record["files"] == {"numbers.txt": 1} and record["command"] == "make numbers"


def test_a_truncated_file_is_rebuilt_not_trusted(tmp_path):
    calls: list[str] = []
    stage = file_stage(tmp_path)
    run_stage(stage, writer("complete", calls))
    stage.path.write_text("compl")  # truncated behind the helper's back
    assert not is_current(stage)
    assert "has 5 bytes, 8 were written" in describe(stage)
    run_stage(stage, writer("complete", calls))
    assert calls == ["complete", "complete"] and stage.path.read_text() == "complete"


def test_a_failed_build_keeps_the_complete_artifact_and_leaves_no_temporary(tmp_path):
    stage = file_stage(tmp_path, n=1)
    run_stage(stage, writer("good", []))

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("model folder has no weights")

    with pytest.raises(RuntimeError):
        run_stage(file_stage(tmp_path, n=2), broken)
    assert stage.path.read_text() == "good" and is_current(stage)
    assert sorted(p.name for p in stage.path.parent.iterdir() if not p.name.endswith(".lock")) == [
        "numbers.txt", "numbers.txt.stage.json"]


def test_folder_stage_swaps_in_whole_and_records_every_file(tmp_path):
    stage = Stage("cache", tmp_path / "cache", {"v": 1}, is_dir=True)

    def build(tmp: Path) -> None:
        (tmp / "acts").mkdir()
        (tmp / "acts" / "layer0.pt").write_bytes(b"x" * 10)
        (tmp / "meta.json").write_text("{}")

    run_stage(stage, build)
    record = json.loads((stage.path / "stage.json").read_text())
    assert record["files"] == {"acts/layer0.pt": 10, "meta.json": 2}
    (stage.path / "acts" / "layer0.pt").unlink()
    assert describe(stage) == "acts/layer0.pt is missing"

    def fails(tmp: Path) -> None:
        raise KeyboardInterrupt

    (stage.path / "acts" / "layer0.pt").write_bytes(b"x" * 10)
    with pytest.raises(KeyboardInterrupt):
        run_stage(Stage("cache", stage.path, {"v": 2}, is_dir=True), fails)
    assert is_current(stage)  # the old complete folder is untouched


def test_an_interrupted_folder_swap_is_recovered(tmp_path):
    stage = Stage("cache", tmp_path / "cache", {"v": 1}, is_dir=True)
    run_stage(stage, lambda tmp: (tmp / "a.txt").write_text("a"))
    stage.path.rename(old_sibling(stage.path))  # crash between the two renames of a swap
    calls: list[str] = []
    run_stage(stage, lambda tmp: calls.append("rebuilt"))
    assert calls == [] and (stage.path / "a.txt").read_text() == "a"


def test_artifact_id_follows_the_input(tmp_path):
    stage = file_stage(tmp_path, n=1)
    run_stage(stage, writer("one", []))
    first = artifact_id(stage.path)
    run_stage(file_stage(tmp_path, n=2), writer("two!", []))
    assert artifact_id(stage.path) != first
    with pytest.raises(UserError, match="no stage record"):
        artifact_id(tmp_path / "nothing.txt")


def _slow_build_in_child(path: str, log: str) -> None:
    def build(tmp: Path) -> None:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(0.5)
        tmp.write_text("done")

    run_stage(Stage("slow", Path(path), {"k": 1}), build)


def test_a_second_process_waits_for_the_lock_and_reuses(tmp_path):
    path, log = tmp_path / "slow.txt", tmp_path / "log.txt"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_slow_build_in_child, args=(str(path), str(log))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert all(worker.exitcode == 0 for worker in workers)
    assert log.read_text() == "built\n" and path.read_text() == "done"


def test_save_pt_gives_the_same_bytes_for_the_same_tensors(tmp_path):
    import torch

    save_pt(tmp_path / "a.pt", {"x": torch.arange(5.0)})
    save_pt(tmp_path / "b.pt", {"x": torch.arange(5.0)})
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.unit
def test_temporary_outputs_of_dead_builds_are_swept(tmp_path):
    """A build killed hard (SIGKILL, power loss) leaves .<name>.building-<pid>; the next build of it removes it."""
    target = tmp_path / "folder"
    orphan_dir = tmp_path / ".folder.building-999999"
    orphan_dir.mkdir()
    (orphan_dir / "part.bin").write_bytes(b"x" * 100)
    other = tmp_path / ".other.building-999999"  # another stage's temporary: not ours to touch
    other.mkdir()
    run_stage(Stage("folder", target, {"a": 1}, is_dir=True), lambda tmp: (tmp / "f.txt").write_text("ok"))
    assert not orphan_dir.exists() and other.exists() and (target / "f.txt").read_text() == "ok"
    file_target = tmp_path / "x.json"
    orphan_file = tmp_path / ".x.json.building-999998"
    orphan_file.write_text("{")
    run_stage(Stage("file", file_target, {"a": 1}), lambda tmp: tmp.write_text("{}"))
    assert not orphan_file.exists()


@pytest.mark.unit
def test_a_same_size_edit_is_caught_by_the_checksum(tmp_path):
    target = tmp_path / "numbers.txt"
    stage = Stage("numbers", target, {"n": 1})
    run_stage(stage, lambda tmp: tmp.write_text("0123456789"))
    assert is_current(stage)
    target.write_text("0123456780")  # same size, one byte changed
    assert not is_current(stage) and "checksum mismatch" in describe(stage)
    run_stage(stage, lambda tmp: tmp.write_text("0123456789"))
    assert target.read_text() == "0123456789" and is_current(stage)
    folder = tmp_path / "folder"
    folder_stage = Stage("folder", folder, {"n": 1}, is_dir=True)
    run_stage(folder_stage, lambda tmp: (tmp / "a.json").write_text('{"m": 0.25}'))
    (folder / "a.json").write_text('{"m": 0.75}')
    assert not is_current(folder_stage)


@pytest.mark.unit
def test_an_output_under_a_regular_file_is_one_clear_error(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(UserError, match=r"cannot write .*taken/sub/out.json: .*taken is a file, not a folder"):
        run_stage(Stage("x", tmp_path / "taken" / "sub" / "out.json", {}), lambda tmp: tmp.write_text("{}"))


def test_a_folder_built_in_place_counts_as_done_only_once_recorded(tmp_path):
    from multid.stage import damage, write_record

    folder = tmp_path / "shard"
    folder.mkdir()
    (folder / "part-0.bin").write_bytes(b"abcd")
    stage = Stage("parts", folder, {"n": 1}, is_dir=True, extra={"rows": 4})
    assert not is_current(stage)  # parts on disk but no record: unfinished
    write_record(stage, checksums=False)
    record = json.loads((folder / "stage.json").read_text())
    assert record["files"] == {"part-0.bin": 4} and "checksums" not in record and record["extra"] == {"rows": 4}
    assert is_current(stage)
    assert not is_current(Stage("parts", folder, {"n": 2}, is_dir=True))
    (folder / "part-0.bin").write_bytes(b"abcx")  # same size: sizes alone cannot see it
    assert is_current(stage)
    write_record(stage)  # with checksums, the same edit is seen
    (folder / "part-0.bin").write_bytes(b"abcy")
    assert "checksum" in damage(folder, True) and not is_current(stage)
    (folder / "part-0.bin").write_bytes(b"abc")
    assert "has 3 bytes" in damage(folder, True)
