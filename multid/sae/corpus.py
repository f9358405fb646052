"""Text sources for the occurrence datasets (paper section 4.1) and their cutting into fixed-length contexts.

As upstream: documents are streamed in order (no shuffling) from a Hugging Face dataset (default the Pile,
`monology/pile-uncopyrighted`, `datasets.load_dataset(id, split="train", streaming=True)`, field "text"); each
document is tokenized with BOS prepended and its first ctx_len tokens form one context; shorter documents are
skipped. Offline, the same text can come from local files (`--text_files`: plain text, one document per file,
paragraph or line; `.jsonl` files give one document per record's "text") or a `datasets` folder written by
`save_to_disk` (`--dataset_path`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from multid.errors import UserError

DEFAULT_DATASET = "monology/pile-uncopyrighted"
TEXT_SPLITS = ("file", "paragraph", "line")
JSON_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class TextSource:
    """Where documents come from: kind "hub" (a dataset id, streamed), "files", or "disk" (save_to_disk folder)."""

    kind: str
    dataset: str | None = None
    files: tuple[str, ...] = ()
    dataset_path: str | None = None
    text_field: str = "text"
    split: str = "train"
    text_split: str = "file"
    _fingerprint: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the text (recorded in the dataset settings; local files by content hash)."""
        info: dict[str, Any] = {"kind": self.kind, "text_field": self.text_field, "split": self.split}
        if self.kind == "hub":
            info["dataset"] = self.dataset
        elif self.kind == "files":
            info["files"] = [[Path(f).name, file_sha1(Path(f))] for f in self.files]
            info["text_split"] = self.text_split
        else:
            folder = Path(self.dataset_path or "")
            info["dataset_path"] = folder.name
            info["state"] = [[p.relative_to(folder).as_posix(), file_sha1(p)]
                             for p in sorted(folder.rglob("*.json"))]
        return info

    def describe(self) -> str:
        if self.kind == "hub":
            return f"hub dataset {self.dataset} ({self.split}, streamed)"
        if self.kind == "files":
            return f"{len(self.files)} local text file(s)"
        return f"local dataset {self.dataset_path}"

    def documents(self) -> Iterator[str]:
        """The documents in stream order."""
        if self.kind == "files":
            return iter_file_documents(self.files, self.text_split, self.text_field)
        if self.kind == "disk":
            return iter_disk_documents(Path(self.dataset_path or ""), self.split, self.text_field)
        return iter_hub_documents(self.dataset or DEFAULT_DATASET, self.split, self.text_field)


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_text_source(*, dataset: str | None = None, text_files: Sequence[str | os.PathLike] | None = None,
                     dataset_path: str | os.PathLike | None = None, text_field: str = "text",
                     split: str = "train", text_split: str = "file") -> TextSource:
    """Check the text options and build the source (at most one of dataset / text_files / dataset_path)."""
    given = [name for name, value in (("--dataset", dataset), ("--text_files", text_files),
                                      ("--dataset_path", dataset_path)) if value]
    if len(given) > 1:
        raise UserError(f"give only one text source, got {' and '.join(given)}")
    if text_split not in TEXT_SPLITS:
        raise UserError(f"--text_split {text_split!r} is not one of {', '.join(TEXT_SPLITS)}")
    if text_files:
        files = expand_text_files(text_files)
        return TextSource("files", files=tuple(str(f) for f in files), text_field=text_field, split=split,
                          text_split=text_split)
    if dataset_path:
        folder = Path(dataset_path).expanduser().resolve()
        if not folder.is_dir():
            raise UserError(f"--dataset_path {folder} is not a folder; give a folder written by "
                            f"datasets' save_to_disk")
        return TextSource("disk", dataset_path=str(folder), text_field=text_field, split=split)
    return TextSource("hub", dataset=dataset or DEFAULT_DATASET, text_field=text_field, split=split)


def expand_text_files(items: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder stands for its *.txt / *.jsonl files (sorted, so the order is reproducible)."""
    files: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".txt", *JSON_SUFFIXES))
            if not inside:
                raise UserError(f"--text_files folder {path} has no .txt or .jsonl files")
            files += inside
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--text_files: {path} does not exist")
    return [f.resolve() for f in files]


def iter_file_documents(files: Sequence[str], text_split: str, text_field: str) -> Iterator[str]:
    for name in files:
        path = Path(name)
        if path.suffix.lower() in JSON_SUFFIXES:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise UserError(f"{path} line {number} is not JSON; .jsonl files need one JSON "
                                        f"object per line with a {text_field!r} field") from None
                    text = record.get(text_field) if isinstance(record, dict) else None
                    if isinstance(text, str):
                        yield text
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text_split == "file":
            yield text
        elif text_split == "line":
            yield from (line for line in text.splitlines() if line.strip())
        else:
            yield from (part.strip() for part in text.split("\n\n") if part.strip())


def iter_disk_documents(folder: Path, split: str, text_field: str) -> Iterator[str]:
    import datasets

    try:
        data = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"--dataset_path {folder} is not a datasets folder ({err})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise UserError(f"--dataset_path {folder} has splits {', '.join(data)}, not {split!r}")
        data = data[split]
    if text_field not in data.column_names:
        raise UserError(f"--dataset_path {folder} has columns {', '.join(data.column_names)}, no {text_field!r}")
    for record in data:
        yield record[text_field]


def iter_hub_documents(dataset: str, split: str, text_field: str) -> Iterator[str]:
    """Stream the dataset as upstream does; an unreachable hub becomes one clear UserError."""
    import datasets

    def offline(err: BaseException) -> UserError:
        return UserError(f"could not stream the dataset {dataset!r} from the Hugging Face hub ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''}); without internet pass --text_files "
                         f"FILE... or --dataset_path DIR (a datasets save_to_disk folder)")

    try:
        stream = iter(datasets.load_dataset(dataset, split=split, streaming=True))
        first = next(stream, None)
    except (OSError, ConnectionError) as err:
        raise offline(err) from None
    except Exception as err:  # noqa: BLE001
        if type(err).__module__.split(".")[0] in ("huggingface_hub", "requests", "httpx", "datasets"):
            raise offline(err) from None
        raise
    for record in itertools.chain([first] if first is not None else [], stream):
        text = record.get(text_field)
        if isinstance(text, str):
            yield text


# ----------------------------------------------------------------------------------------- contexts


def first_tokens(tokenize: Callable[[str], list[int]], text: str, n: int, chars_per_token: int = 8) -> list[int]:
    """The first n tokens of tokenize(text) (fewer if the document is shorter), without tokenizing a whole
    long document: a prefix is tokenized, and trusted only when doubling it gives the same first n tokens
    (the cut can change only the tokens near the cut)."""
    size = max(64, n * chars_per_token)
    while size < len(text):
        head = tokenize(text[:size])
        if len(head) > n:
            longer = tokenize(text[:2 * size])
            if longer[:n] == head[:n]:
                return head[:n]
        size *= 2
    return tokenize(text)[:n]


def tl_tokenizer(model: Any) -> Callable[[str], list[int]]:
    """TransformerLens' own tokenization with BOS prepended (`model.to_tokens`), as upstream, no truncation."""

    def tokenize(text: str) -> list[int]:
        return model.to_tokens(text, prepend_bos=True, truncate=False)[0].tolist()

    return tokenize


def iter_contexts(documents: Iterator[str], tokenize: Callable[[str], list[int]], ctx_len: int,
                  max_contexts: int | None = None, stats: dict[str, int] | None = None
                  ) -> Iterator[tuple[int, list[int]]]:
    """(global context index c, first ctx_len tokens) of every document with at least ctx_len tokens."""
    c = 0
    if max_contexts is not None and max_contexts <= 0:
        return
    for text in documents:
        if stats is not None:
            stats["documents"] = stats.get("documents", 0) + 1
        tokens = first_tokens(tokenize, text, ctx_len)
        if len(tokens) < ctx_len:
            if stats is not None:
                stats["skipped_short"] = stats.get("skipped_short", 0) + 1
            continue
        yield c, tokens
        c += 1
        if max_contexts is not None and c >= max_contexts:
            return


def shard_contexts(contexts: Iterator[tuple[int, list[int]]], num_shards: int, shard_index: int
                   ) -> Iterator[tuple[int, list[int]]]:
    """The contexts of one shard: context c goes to shard c % num_shards."""
    for c, tokens in contexts:
        if c % num_shards == shard_index:
            yield c, tokens
