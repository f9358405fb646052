"""One way to run a stage that writes an artifact: reuse it when its recorded settings match, else rebuild.

A stage's artifact is a file or a folder. Next to it (a file) or inside it (a folder) lives a record
`stage.json` with the stage's settings, the fingerprints of its inputs, and the size of every file it
wrote and its sha1. The artifact is reused only when the record's settings equal the requested ones and every
file still has its recorded size and checksum (a truncated, edited or deleted file means "rebuild", never
"trust"). A build writes
into a temporary sibling and is swapped in only when complete, so a failure or Ctrl-C never removes a
complete artifact. A file lock makes a second process on the same stage wait and then reuse the result.

Derived artifacts put `artifact_id(input)` into their settings, so they are rebuilt when an input changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from filelock import FileLock

from multid.errors import UserError

RECORD_NAME = "stage.json"
RECORD_SUFFIX = ".stage.json"


@dataclass(frozen=True)
class Stage:
    """What a stage makes and from what.

    name: human name for messages ("activation cache for smollm2 / days_of_week").
    path: the artifact (a file, or a folder when `is_dir`).
    settings: JSON-able settings and input fingerprints; any change means rebuild.
    command: the command a user runs to make it (named in messages about it).
    """

    name: str
    path: Path
    settings: dict[str, Any]
    command: str | None = None
    is_dir: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # stored in the record, not compared

    @property
    def record_path(self) -> Path:
        return record_path(self.path, self.is_dir)


def record_path(path: Path, is_dir: bool) -> Path:
    path = Path(path)
    return path / RECORD_NAME if is_dir else path.with_name(path.name + RECORD_SUFFIX)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def settings_id(settings: dict[str, Any]) -> str:
    """A short stable hash of a settings dict."""
    return hashlib.sha1(canonical_json(settings).encode()).hexdigest()[:16]


def file_sizes(path: Path, is_dir: bool) -> dict[str, int]:
    """Relative path -> size of every file of the artifact (the record itself excluded)."""
    path = Path(path)
    if not is_dir:
        return {path.name: path.stat().st_size}
    sizes = {}
    for item in sorted(path.rglob("*")):
        if item.is_file() and item.name != RECORD_NAME and not item.name.endswith(".lock"):
            sizes[item.relative_to(path).as_posix()] = item.stat().st_size
    return sizes


def file_checksum(path: Path) -> str:
    """sha1 of a file's bytes (read in 8 MiB blocks)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 23), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(path: Path, is_dir: bool) -> dict[str, str]:
    """Relative path -> sha1 of every file of the artifact (the same files as `file_sizes`)."""
    base = Path(path) if is_dir else Path(path).parent
    return {rel: file_checksum(base / rel) for rel in file_sizes(path, is_dir)}


def read_record(path: Path, is_dir: bool) -> dict[str, Any] | None:
    rec = record_path(path, is_dir)
    try:
        return json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def damage(path: Path, is_dir: bool) -> str | None:
    """None when every recorded file exists with its recorded size and checksum, else what is wrong (one phrase).

    Records written before checksums were recorded are checked by size only."""
    record = read_record(path, is_dir)
    if record is None:
        return "no stage record"
    base = Path(path) if is_dir else Path(path).parent
    for rel, size in record.get("files", {}).items():
        item = base / rel
        if not item.is_file():
            return f"{rel} is missing"
        if item.stat().st_size != size:
            return f"{rel} has {item.stat().st_size} bytes, {size} were written"
    for rel, checksum in record.get("checksums", {}).items():
        if file_checksum(base / rel) != checksum:
            return f"{rel} was changed after it was written (checksum mismatch)"
    return None


def is_current(stage: Stage) -> bool:
    """True when the artifact is complete, undamaged and was made with exactly these settings."""
    record = read_record(stage.path, stage.is_dir)
    if record is None or record.get("settings") != json.loads(canonical_json(stage.settings)):
        return False
    return damage(stage.path, stage.is_dir) is None


def artifact_id(path: Path, is_dir: bool = False) -> str:
    """Identity of a finished artifact (hash of its record), for the settings of stages built from it."""
    record = read_record(path, is_dir)
    if record is None:
        raise UserError(f"{path} has no stage record; rebuild it with the command that makes it")
    return settings_id({"settings": record.get("settings"), "files": record.get("files")})


def lock_for(path: Path) -> FileLock:
    path = Path(path)
    make_parent(path)
    return FileLock(str(path.with_name(f".{path.name}.lock")))


def make_parent(path: Path) -> None:
    """Create the folder `path` goes in; a UserError when a regular file stands where a folder must be."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [*reversed(Path(path).parents)] if p.exists() and not p.is_dir()), None)
        raise UserError(f"cannot write {path}: {blocker or Path(path).parent} is a file, not a folder; "
                        f"choose another output path") from None


def run_stage(stage: Stage, build: Callable[[Path], None], *, force: bool = False) -> Path:
    """Return `stage.path`, building it with `build(tmp_path)` unless a current artifact is there.

    `build` writes the artifact to the temporary path it is given (a file path, or an existing empty
    folder when `stage.is_dir`); it must not touch `stage.path`. On success the result is swapped in
    with its record; on any exception the temporary output is removed and the old artifact stays.
    """
    with lock_for(stage.path):
        sweep_orphan_builds(stage.path)
        recover_interrupted_swap(stage.path)
        if not force and is_current(stage):
            return stage.path
        tmp = temp_sibling(stage.path)
        try:
            if stage.is_dir:
                tmp.mkdir(parents=True)
            build(tmp)
            if not tmp.exists():
                raise RuntimeError(f"the build of {stage.name} wrote nothing to {tmp}")
            install(stage, tmp)
        finally:
            remove(tmp)
    return stage.path


def sweep_orphan_builds(path: Path) -> None:
    """Remove temporary outputs of builds of `path` that died (call with its lock held: a live build holds
    the same lock for its whole run, so any temporary sibling found now belongs to a dead process)."""
    path = Path(path)
    if path.parent.is_dir():
        for orphan in path.parent.glob(f".{glob_escape(path.name)}.building-*"):
            remove(orphan)


def glob_escape(name: str) -> str:
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def temp_sibling(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.building-{os.getpid()}")


def old_sibling(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.replaced")


def record_text(stage: Stage, files: dict[str, int], checksums: dict[str, str] | None) -> str:
    """The stage record (JSON text) of an artifact with these files."""
    record = {
        "stage": stage.name,
        "settings": json.loads(canonical_json(stage.settings)),
        "files": files,
        **({"checksums": checksums} if checksums is not None else {}),
        "command": stage.command,
        **({"extra": json.loads(canonical_json(stage.extra))} if stage.extra else {}),
    }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def write_record(stage: Stage, *, checksums: bool = True) -> None:
    """Record a folder artifact that was built in place, part by part (a resumable stage such as an occurrence
    shard): written last and atomically, so the artifact counts as done only once every part is there.

    checksums=False records sizes only, for large data whose files verify themselves on read (Parquet page
    CRCs): hashing them on every currency check would read the whole dataset."""
    sums = file_checksums(stage.path, stage.is_dir) if checksums else None
    path = stage.record_path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(record_text(stage, file_sizes(stage.path, stage.is_dir), sums), encoding="utf-8")
    os.replace(tmp, path)


def install(stage: Stage, tmp: Path) -> None:
    """Write the record for `tmp` and move it onto `stage.path` (the old artifact goes only after)."""
    text = record_text(stage, file_sizes_renamed(tmp, stage), renamed(file_checksums(tmp, stage.is_dir), tmp, stage))
    final = Path(stage.path)
    if stage.is_dir:
        (tmp / RECORD_NAME).write_text(text, encoding="utf-8")
        old = old_sibling(final)
        remove(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        remove(old)
    else:
        rec = stage.record_path
        rec_tmp = rec.with_name(f".{rec.name}.{os.getpid()}.tmp")
        rec_tmp.write_text(text, encoding="utf-8")
        # file first, record second: a crash in between leaves a record whose size or settings no
        # longer match, so the next run rebuilds instead of trusting it
        os.replace(tmp, final)
        os.replace(rec_tmp, rec)


def file_sizes_renamed(tmp: Path, stage: Stage) -> dict[str, int]:
    return renamed(file_sizes(tmp, stage.is_dir), tmp, stage)


def renamed(per_file: dict[str, Any], tmp: Path, stage: Stage) -> dict[str, Any]:
    """A per-file table of the temporary output under the names the artifact will have."""
    if stage.is_dir:
        return per_file
    return {Path(stage.path).name: per_file[tmp.name]}


def recover_interrupted_swap(path: Path) -> None:
    """If a folder swap was interrupted between its two renames, put the complete old folder back."""
    path, old = Path(path), old_sibling(Path(path))
    if old.exists() and not path.exists():
        os.replace(old, path)
    elif old.exists():
        remove(old)


def remove(path: Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def describe(stage: Stage) -> str:
    """Why the artifact would be rebuilt, for logs: 'current', 'missing', 'settings changed', or the damage."""
    if not Path(stage.path).exists():
        return "missing"
    record = read_record(stage.path, stage.is_dir)
    if record is None:
        return "no stage record"
    if record.get("settings") != json.loads(canonical_json(stage.settings)):
        return "settings changed"
    return damage(stage.path, stage.is_dir) or "current"


def iter_records(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every stage record below `root` (for listings of what a base dir holds)."""
    for rec in sorted(Path(root).rglob(f"*{RECORD_SUFFIX}")):
        data = read_record(rec.with_name(rec.name[: -len(RECORD_SUFFIX)]), False)
        if data is not None:
            yield rec, data
    for rec in sorted(Path(root).rglob(RECORD_NAME)):
        data = read_record(rec.parent, True)
        if data is not None:
            yield rec, data
