"""Text sources for the occurrence datasets (paper section 4.1) and their cutting into fixed-length contexts.

As upstream: documents are streamed in order (no shuffling) from a Hugging Face dataset (default the Pile,
`monology/pile-uncopyrighted`, `datasets.load_dataset(id, split="train", streaming=True)`, field "text"); each
document is tokenized with BOS prepended and its first ctx_len tokens form one context; shorter documents are
skipped. Offline, the same text can come from local files (`--text_files`: plain text, one document per file,
paragraph or line; `.jsonl` files give one document per record's "text") or a `datasets` folder written by
`save_to_disk` (`--dataset_path`).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from multid.errors import UserError
from multid.stage import file_checksum

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
            info["files"] = [[Path(f).name, file_checksum(Path(f))] for f in self.files]
            info["text_split"] = self.text_split
        else:
            folder = Path(self.dataset_path or "")
            info["dataset_path"] = folder.name
            info["state"] = [[p.relative_to(folder).as_posix(), file_checksum(p)]
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
            with open(path, "rb") as handle:
                for number, raw in enumerate(handle, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise UserError(f"{path} line {number} is not UTF-8 (byte {raw[err.start]:#04x} at column "
                                        f"{err.start + 1}); JSON lines must be UTF-8: re-encode the file") from None
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
    """The first n tokens of tokenize(text) (fewer if the document is shorter); see `first_tokens_many`."""
    return first_tokens_many(lambda texts: [tokenize(t) for t in texts], [text], n, chars_per_token)[0]


def first_tokens_many(tokenize_many: Callable[[list[str]], list[list[int]]], texts: Sequence[str], n: int,
                      chars_per_token: int = 8) -> list[list[int]]:
    """The first n tokens of each text, without tokenizing whole long documents.

    A prefix of each text is tokenized and trusted only when it has more than n tokens and doubling the
    prefix gives the same first n tokens (cutting the text can only change the tokens near the cut);
    otherwise the prefix doubles, up to the whole text. Texts go to the tokenizer in batches.
    """
    result: list[list[int] | None] = [None] * len(texts)
    pending = list(range(len(texts)))
    size = max(64, n * chars_per_token)
    while pending:
        whole = [i for i in pending if len(texts[i]) <= size]
        cut = [i for i in pending if len(texts[i]) > size]
        if whole:
            for i, tokens in zip(whole, tokenize_many([texts[i] for i in whole])):
                result[i] = tokens[:n]
        pending = []
        if cut:
            heads = tokenize_many([texts[i][:size] for i in cut])
            long_enough = [(i, h) for i, h in zip(cut, heads) if len(h) > n]
            pending = [i for i, h in zip(cut, heads) if len(h) <= n]
            if long_enough:
                longer = tokenize_many([texts[i][:2 * size] for i, _ in long_enough])
                for (i, head), check in zip(long_enough, longer):
                    if check[:n] == head[:n]:
                        result[i] = head[:n]
                    else:
                        pending.append(i)
            pending.sort()
        size *= 2
    return [r if r is not None else [] for r in result]


class TLTokenizer:
    """TransformerLens' `model.to_tokens(text, prepend_bos=True)` (as upstream), one text or a batch.

    The batch form reproduces to_tokens' BOS handling (the BOS string is prepended when the tokenizer does not
    add it itself) and calls the fast tokenizer once for the whole batch, unpadded.
    """

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, text: str) -> list[int]:
        return self.model.to_tokens(text, prepend_bos=True, truncate=False)[0].tolist()

    def many(self, texts: list[str]) -> list[list[int]]:
        tokenizer, cfg = self.model.tokenizer, self.model.cfg
        if cfg.tokenizer_prepends_bos:
            inputs = list(texts)
        else:
            inputs = [tokenizer.bos_token + text for text in texts]
        return [list(ids) for ids in tokenizer(inputs, padding=False, truncation=False)["input_ids"]]


def tl_tokenizer(model: Any) -> TLTokenizer:
    return TLTokenizer(model)


def iter_contexts(documents: Iterator[str], tokenize: Callable[[str], list[int]], ctx_len: int,
                  max_contexts: int | None = None, stats: dict[str, int] | None = None, doc_batch: int = 64
                  ) -> Iterator[tuple[int, list[int]]]:
    """(global context index c, first ctx_len tokens) of every document with at least ctx_len tokens.

    Documents are tokenized doc_batch at a time (through `tokenize.many` when the tokenizer has it).
    """
    if max_contexts is not None and max_contexts <= 0:
        return
    many = getattr(tokenize, "many", None) or (lambda texts: [tokenize(t) for t in texts])
    c = 0
    documents = iter(documents)
    while True:
        chunk = list(itertools.islice(documents, doc_batch))
        if not chunk:
            return
        for tokens in first_tokens_many(many, chunk, ctx_len):
            if stats is not None:
                stats["documents"] = stats.get("documents", 0) + 1
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
