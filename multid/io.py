"""Artifact IO: atomic writes, loaders that never execute pickled code, and clear errors for bad files.

Every file we write goes to a temporary name in the same folder and is renamed into place, so a crash
or Ctrl-C never leaves a half-written artifact that a later run would trust.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from multid.errors import MissingArtifactError, UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    final = Path(path)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as err:  # read-only or full disk, a file where a folder should be: nothing was written
        raise UserError(
            f"cannot write {final}: {err.strerror or err} ({err.filename or final.parent}); pass --base_dir to a "
            f"writable folder (copy the artifacts there first if they live here)"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~current_umask())  # mkstemp makes 0600 files; artifacts get the usual permissions
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def save_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise corrupted(path, err) from None


def save_pt(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save of tensors / plain containers only (loadable with weights_only=True)."""
    import torch

    buffer = io.BytesIO()  # saving to a path would store the temporary file's name inside the archive
    torch.save(obj, buffer)
    return write_bytes_atomic(path, buffer.getvalue())


def load_pt(path: str | os.PathLike, map_location: str = "cpu") -> Any:
    """torch.load with weights_only=True; a damaged file becomes a one-line UserError."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise corrupted(path, err) from None


NPZ_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # fixed zip member time: equal arrays give byte-identical files


def save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """np.savez-compatible archive (uncompressed, no pickled objects) with fixed member timestamps.

    np.savez stamps each member with the current time, so two runs that compute the same arrays
    write different bytes; a fixed time makes "the resumed run ends with the same file" checkable.
    """
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, value in arrays.items():
                info = zipfile.ZipInfo(f"{key}.npy", date_time=NPZ_DATE_TIME)
                with archive.open(info, "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
    return Path(path)


def load_npz(path: str | os.PathLike) -> dict[str, Any]:
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except FileNotFoundError:
        raise
    except Exception as err:
        raise corrupted(path, err) from None


def save_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


FIXED_FIGURE_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}  # same figure -> same bytes


class NamedBuffer(io.BytesIO):
    """An in-memory file that knows the path its bytes are for (figure checks in the tests key on it)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name


def save_figure(fig: Any, path: str | os.PathLike, close: bool = False, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically in the format of the final suffix (then close it if asked).

    PDF and SVG files carry no creation date, so drawing the same figure again writes the same bytes.
    """
    final = Path(path)
    fmt = kwargs.setdefault("format", final.suffix.lstrip(".") or "png")
    if fmt in FIXED_FIGURE_METADATA:
        kwargs.setdefault("metadata", FIXED_FIGURE_METADATA[fmt])
    # render in memory, then write the bytes: a full disk is then an OSError naming the file, not an error
    # from inside a matplotlib backend (the PDF backend hides ENOSPC behind an AttributeError)
    buffer = NamedBuffer(str(final))
    fig.savefig(buffer, **kwargs)
    with atomic_path(final) as tmp:
        try:
            with open(tmp, "wb") as handle:
                handle.write(buffer.getvalue())
        except OSError as err:  # name the artifact, not the temporary file (the temporary is removed)
            raise OSError(err.errno, err.strerror, str(final)) from None
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return final


def corrupted(path: Path, err: BaseException) -> UserError:
    return UserError(
        f"cannot read {path}: the file is damaged or not in the expected format ({type(err).__name__}); "
        f"delete it and rerun the command that made it"
    )


def require_file(path: str | os.PathLike, what: str, command: str) -> Path:
    """Return `path` if it exists, else raise MissingArtifactError naming the command that makes it."""
    path = Path(path)
    if not path.exists():
        raise MissingArtifactError(what, path, command)
    return path


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler for third-party files that allows plain containers and numbers, nothing executable."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain lists/dicts/numbers are allowed")


def load_plain_pickle(path: str | os.PathLike) -> Any:
    """Load a third-party pickle that should hold only builtins (lists, dicts, ints, floats, strings)."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return _PlainDataUnpickler(handle).load()
    except FileNotFoundError:
        raise
    except Exception as err:
        raise UserError(f"cannot load {path} as plain data ({err})") from None
