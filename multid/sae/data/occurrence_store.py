"""SAE feature occurrence datasets (paper section 4.1): write them shard by shard, read every shard as one.

The format is fixed in docs/sae_occurrences.md (its names and schemas: multid.sae.data.occurrence_format; the
generator that runs the model: multid.sae.analysis.occurrence_generator). In short, a run folder holds `run.json` (the dataset's
settings: model, layer, hook, SAE tag, ctx_len, source, caps, num_shards), and `occurrences/` with one folder
per shard; a shard holds numbered parts, each `triples-KKKKK.parquet` (token int64, feature int32, value
float32, sorted by token then feature) and `tokens-KKKKK.parquet` (token int64, token_id int32, context int64,
position int32). Global context c goes to shard c % num_shards; token index = c * ctx_len + position.

Writing (`write_shard`) is resumable: every part is a fixed number of contexts and is written atomically, so an
interrupted run skips the finished parts and continues with the next one; the finished shard gets a
`stage.json` record in the `multid.stage` format (settings + file sizes), which is what makes it "done".
Nothing is preallocated: triples are flushed in row groups of `ROW_GROUP_ROWS` as they are produced.

Reading (`open_occurrences`) takes every shard of a run as one pyarrow dataset, filters on feature ids with a
pyarrow filter, and returns numpy arrays sorted by (token, feature). The same files can be queried by DuckDB
(`SELECT ... FROM 'occurrences/**/triples-*.parquet'`) or Spark.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from multid.errors import MissingArtifactError, UserError
from multid.io import load_json, save_json
from multid.sae.data.run_layout import next_occurrences_dir, occurrences_dir, shard_dir, shard_name
from multid.sae.data.occurrence_format import (DEFAULT_CONTEXTS_PER_PART, FORMAT_VERSION, PROGRESS_NAME, ROW_GROUP_ROWS,
                                               RUN_META, THRESHOLD, TRIPLE_COLUMNS, EncodeFn, generate_command,
                                               part_names, tokens_schema, triples_schema)
from multid.stage import RECORD_NAME, Stage, canonical_json, is_current, lock_for, read_record, write_record

# ----------------------------------------------------------------------------------------- writing


class _PartWriter:
    """Writes one part (tokens + triples) to temporary files; `commit` renames them into place, tokens first.

    A part counts as finished only when its triples file exists, and that file is renamed last, so a crash
    at any point leaves either a finished part or nothing that a resumed run would trust.
    """

    def __init__(self, folder: Path, k: int, row_group_rows: int = ROW_GROUP_ROWS):
        import pyarrow.parquet as pq

        self.folder = folder
        self.k = k
        self.row_group_rows = row_group_rows
        names = part_names(k)
        self.final = [folder / names[0], folder / names[1]]
        self.tmp = [folder / f".{name}.writing-{os.getpid()}" for name in names]
        self._triples = pq.ParquetWriter(self.tmp[0], triples_schema(), compression="zstd", write_page_checksum=True)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._token_rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.num_triples = 0
        self.num_contexts = 0

    def add(self, contexts: np.ndarray, token_ids: np.ndarray, ctx_len: int,
            token: np.ndarray, feature: np.ndarray, value: np.ndarray) -> None:
        """Append whole contexts (ids [b, ctx_len]) and their triples (already sorted by token, feature)."""
        b = len(contexts)
        position = np.tile(np.arange(ctx_len, dtype=np.int32), b)
        ctx = np.repeat(np.asarray(contexts, dtype=np.int64), ctx_len)
        self._token_rows.append((ctx * ctx_len + position, np.asarray(token_ids, np.int32).reshape(-1), ctx,
                                 position))
        self.num_contexts += b
        if len(token):
            self._pending.append((np.asarray(token, np.int64), np.asarray(feature, np.int32),
                                  np.asarray(value, np.float32)))
            self._pending_rows += len(token)
            self.num_triples += len(token)
        while self._pending_rows >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def _flush(self, rows: int) -> None:
        import pyarrow as pa

        cols = [np.concatenate([p[i] for p in self._pending]) for i in range(3)]
        head = [c[:rows] for c in cols]
        rest = [c[rows:] for c in cols]
        self._triples.write_table(pa.Table.from_arrays([pa.array(c) for c in head], schema=triples_schema()),
                                  row_group_size=rows)
        self._pending = [tuple(rest)] if len(rest[0]) else []
        self._pending_rows = len(rest[0])

    def commit(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._pending_rows:
            self._flush(self._pending_rows)
        self._triples.close()
        cols = [np.concatenate([r[i] for r in self._token_rows]) if self._token_rows else np.zeros(0)
                for i in range(4)]
        table = pa.Table.from_arrays(
            [pa.array(c.astype(t)) for c, t in zip(cols, (np.int64, np.int32, np.int64, np.int32))],
            schema=tokens_schema(),
        )
        pq.write_table(table, self.tmp[1], compression="zstd", row_group_size=ROW_GROUP_ROWS, write_page_checksum=True)
        os.replace(self.tmp[1], self.final[1])
        os.replace(self.tmp[0], self.final[0])

    def abort(self) -> None:
        try:
            self._triples.close()
        except Exception:  # noqa: BLE001 - best effort cleanup of a failed part
            pass
        for path in self.tmp:
            if path.exists():
                path.unlink()


@dataclass
class ShardResult:
    path: Path
    num_contexts: int
    num_triples: int
    reused: bool
    stop_reason: str


def verified_parquet() -> Any:
    """The Parquet format of the reader: every page with a CRC (all pages we write) is verified on read."""
    import pyarrow.dataset as pads

    return pads.ParquetFileFormat(
        default_fragment_scan_options=pads.ParquetFragmentScanOptions(page_checksum_verification=True))


def finished_parts(folder: Path) -> list[int]:
    """Indices 0..k-1 of the consecutive finished parts (triples file present and tokens file present)."""
    done = []
    for k in itertools.count():
        triples, tokens = part_names(k)
        if (folder / triples).is_file() and (folder / tokens).is_file():
            done.append(k)
        else:
            return done


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def parquet_pages_intact(folder: Path) -> bool:
    """Every page of the shard's Parquet parts passes its CRC check (read one row group at a time). Only the
    generator asks this before reusing a shard; readers verify pages as they read them."""
    import pyarrow.parquet as pq

    for path in sorted(Path(folder).glob("*.parquet")):
        try:
            handle = pq.ParquetFile(path, page_checksum_verification=True)
            for group in range(handle.num_row_groups):
                handle.read_row_group(group)
        except OSError:
            return False
    return True


def shard_is_current(folder: Path, settings: dict[str, Any]) -> bool:
    """The shard is finished, made with these settings, and every file has its recorded size."""
    return is_current(Stage("occurrence shard", folder, settings, is_dir=True))


def write_shard(
    folder: Path,
    settings: dict[str, Any],
    contexts: Iterable[tuple[int, np.ndarray]],
    encode: EncodeFn,
    *,
    ctx_len: int,
    contexts_per_part: int = DEFAULT_CONTEXTS_PER_PART,
    batch_size: int = 64,
    max_pairs: int | None = None,
    command: str | None = None,
    name: str = "occurrence shard",
    progress: Any = None,
    fail_after_parts: int | None = None,
) -> ShardResult:
    """Write (or resume, or reuse) one shard folder of an occurrence dataset.

    contexts: this shard's contexts in stream order, (global context index, token ids [ctx_len]); it is
    consumed lazily and the finished parts' contexts are skipped on resume (no model run for them).
    encode: turns a batch of contexts into its triples (see EncodeFn).
    max_pairs: the shard stops before the first context that would take its triple count over this cap
    (whole contexts only, so every stored token has all its triples).
    fail_after_parts: testing aid, raise after that many new parts (simulates an interrupted run).
    """
    folder = Path(folder)
    canonical = json.loads(canonical_json(settings))
    with lock_for(folder):
        if shard_is_current(folder, settings) and parquet_pages_intact(folder):
            rec = read_record(folder, True) or {}
            extra = rec.get("extra", {})
            return ShardResult(folder, int(extra.get("num_contexts", 0)), int(extra.get("num_triples", 0)), True,
                               str(extra.get("stop_reason", "")))
        progress_file = folder / PROGRESS_NAME
        started = load_json(progress_file) if progress_file.is_file() else None
        if folder.exists() and (started is None or started.get("settings") != canonical
                                or (folder / RECORD_NAME).exists()):
            shutil.rmtree(folder)  # made with other settings, or a damaged finished shard: start over
        folder.mkdir(parents=True, exist_ok=True)
        if not progress_file.is_file():
            save_json(progress_file, {"settings": canonical})
        for stale in folder.glob(".*.writing-*"):
            stale.unlink()

        done = finished_parts(folder)
        done_contexts = sum(parquet_rows(folder / part_names(k)[1]) for k in done) // ctx_len
        done_triples = sum(parquet_rows(folder / part_names(k)[0]) for k in done)
        stream = iter(contexts)
        skipped = sum(1 for _ in itertools.islice(stream, done_contexts))
        if skipped != done_contexts:
            raise UserError(f"{folder} holds {done_contexts} contexts but the text source now gives only "
                            f"{skipped}; the source changed: delete {folder} and rerun")
        if progress is not None:
            progress.update(done_contexts)

        total_contexts, total_triples = done_contexts, done_triples
        k = len(done)
        new_parts = 0
        stop_reason = "end of text"
        while True:
            chunk = list(itertools.islice(stream, contexts_per_part))
            if not chunk:
                break
            writer = _PartWriter(folder, k)
            try:
                hit_cap = False
                for start in range(0, len(chunk), batch_size):
                    batch = chunk[start:start + batch_size]
                    cs = np.array([c for c, _ in batch], dtype=np.int64)
                    ids = np.stack([np.asarray(t) for _, t in batch]).astype(np.int64)
                    token, feature, value = encode(cs, ids)
                    if max_pairs is not None:
                        keep = contexts_within_budget(token, cs, ctx_len, max_pairs - total_triples)
                        if keep < len(cs):
                            hit_cap = True
                            cs, ids = cs[:keep], ids[:keep]
                            cut = np.searchsorted(token, (cs[-1] + 1) * ctx_len) if keep else 0
                            token, feature, value = token[:cut], feature[:cut], value[:cut]
                    if len(cs):
                        writer.add(cs, ids, ctx_len, token, feature, value)
                        total_contexts += len(cs)
                        total_triples += len(token)
                        if progress is not None:
                            progress.update(len(cs))
                    if hit_cap:
                        break
                if writer.num_contexts:
                    writer.commit()
                else:
                    writer.abort()
            except BaseException:
                writer.abort()
                raise
            k += 1
            new_parts += 1
            if hit_cap:
                stop_reason = "max_pairs"
                break
            if fail_after_parts is not None and new_parts >= fail_after_parts:
                raise RuntimeError(f"simulated interruption after {new_parts} part(s)")

        progress_file.unlink()
        write_record(Stage(name, folder, canonical, command=command, is_dir=True,
                           extra={"num_contexts": total_contexts, "num_triples": total_triples,
                                  "stop_reason": stop_reason}), checksums=False)
    return ShardResult(folder, total_contexts, total_triples, False, stop_reason)


def contexts_within_budget(token: np.ndarray, contexts: np.ndarray, ctx_len: int, budget: int) -> int:
    """How many leading contexts of a batch fit in `budget` more triples (token sorted, contexts ascending)."""
    if budget <= 0:
        return 0
    ends = np.searchsorted(token, (np.asarray(contexts, np.int64) + 1) * ctx_len)  # cumulative triples per context
    return int(np.searchsorted(ends, budget, side="right"))


def write_run_meta(run: Path, meta: dict[str, Any]) -> Path:
    """Write run.json (the dataset settings every shard shares) unless it already holds exactly these."""
    path = Path(run) / RUN_META
    canonical = json.loads(canonical_json(meta))
    if path.is_file():
        try:
            if load_json(path) == canonical:
                return path
        except UserError:
            pass
    return save_json(path, canonical)


def remove_other_shardings(root: Path, num_shards: int) -> None:
    """Drop shard folders of another shard count from a dataset folder whose run.json says `num_shards`:
    leftovers of an unfinished build (a finished dataset of another sharding is never in the same folder)."""
    if not root.is_dir():
        return
    suffix = f"-of-{num_shards:05d}"
    for item in root.iterdir():
        if item.is_dir() and item.name.startswith("shard-") and not item.name.endswith(suffix):
            shutil.rmtree(item, ignore_errors=True)


# ----------------------------------------------------------------------------------------- building beside
# A finished dataset is replaced only once its successor is finished: a dataset with other settings (another
# sharding, ctx_len, SAE, text, ...) is built in occurrences.next/ (its run.json and decoder.npy inside) and
# swapped into place when its last shard finishes (docs/sae_occurrences.md, "Replacing a dataset").

REPLACED_PREFIX = "occurrences.replaced-"


def read_meta(path: Path) -> dict[str, Any] | None:
    """A run.json's content, or None when it is missing or unreadable."""
    try:
        return load_json(path) if path.is_file() else None
    except UserError:
        return None


def finished_shards(root: Path) -> list[Path]:
    """Shard folders under a dataset folder that hold a finished shard (a stage record)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("shard-") and (p / RECORD_NAME).is_file())


def dataset_complete(root: Path, meta: dict[str, Any]) -> bool:
    """Every shard of the dataset described by `meta` is finished under `root`, with meta's settings."""
    n = int(meta.get("num_shards", 1))
    return all(shard_is_current(root / shard_name(i, n), shard_settings(meta, i)) for i in range(n))


def settings_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The run.json fields two datasets differ in, for messages."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {json.dumps(old.get(k))} vs {json.dumps(new.get(k))}"[:160] for k in keys) or "none"


def finish_swap(run: Path) -> None:
    """Complete a swap of occurrences.next into place that a crash interrupted; drop replaced datasets.

    Steps of a swap: occurrences -> occurrences.replaced-<pid>; occurrences.next -> occurrences; the new
    dataset's run.json and decoder.npy (which travelled inside it) -> the run folder; the replaced one deleted.
    Each step is a rename, so a crash leaves a state this function recognises and finishes.
    """
    run = Path(run)
    live, pending = occurrences_dir(run), next_occurrences_dir(run)
    if not live.exists() and pending.is_dir():
        meta = read_meta(pending / RUN_META)
        if meta is not None and dataset_complete(pending, meta):
            os.replace(pending, live)
    from multid.sae.data.run_layout import decoder_path

    for name in (decoder_path(run).name, decoder_path(run).name + ".stage.json"):
        if (live / name).is_file():
            os.replace(live / name, run / name)
    if (live / RUN_META).is_file():
        os.replace(live / RUN_META, run / RUN_META)  # last: the dataset is now the run's
    for old in run.glob(REPLACED_PREFIX + "*"):
        shutil.rmtree(old, ignore_errors=True)


def dataset_root(run: Path, meta: dict[str, Any]) -> Path:
    """The folder this dataset's shards are written into; writes its run.json there.

    The run's own occurrences/ when it holds this dataset, or no finished shard of any other (an unfinished
    build of other settings there is dropped); otherwise occurrences.next/, beside the finished dataset,
    which stays readable. A pending build of yet other settings with finished shards is refused, naming both.
    """
    run = Path(run)
    finish_swap(run)
    canonical = json.loads(canonical_json(meta))
    live, pending = occurrences_dir(run), next_occurrences_dir(run)
    live_meta = read_meta(run / RUN_META)
    if live_meta == canonical or not finished_shards(live):
        if live_meta != canonical and live.exists():
            shutil.rmtree(live)  # an unfinished build of other settings: nothing finished is lost
        remove_other_shardings(live, int(canonical.get("num_shards", 1)))
        write_run_meta(run, canonical)
        return live
    pending_meta = read_meta(pending / RUN_META)
    if pending_meta is not None and pending_meta != canonical and pending.exists():
        if finished_shards(pending):
            raise UserError(
                f"{pending} holds an unfinished occurrence dataset with other settings than this run's "
                f"({settings_difference(pending_meta, canonical)}); the finished dataset in {live} stays as it is. "
                f"Finish that build (rerun its command for its remaining shards), or delete {pending} to start "
                f"this one")
        shutil.rmtree(pending)
    pending.mkdir(parents=True, exist_ok=True)
    write_run_meta(pending, canonical)
    return pending


def promote_if_complete(run: Path, meta: dict[str, Any], root: Path) -> Path:
    """Swap a finished occurrences.next into place (once all its shards are done); return the dataset folder
    that now holds this dataset's shards."""
    run, live = Path(run), occurrences_dir(run)
    if Path(root) != next_occurrences_dir(run):
        return live
    with lock_for(next_occurrences_dir(run)):
        pending = next_occurrences_dir(run)
        if not pending.is_dir() or not dataset_complete(pending, meta):
            return pending if pending.is_dir() else live
        if live.exists():
            os.replace(live, run / f"{REPLACED_PREFIX}{os.getpid()}")
        os.replace(pending, live)
        finish_swap(run)
    return live


def shard_settings(meta: dict[str, Any], shard_index: int) -> dict[str, Any]:
    return {**meta, "shard_index": int(shard_index)}


def write_occurrence_run(
    run: str | os.PathLike,
    token_ids: np.ndarray,
    token: np.ndarray,
    feature: np.ndarray,
    value: np.ndarray,
    *,
    meta: dict[str, Any] | None = None,
    num_shards: int = 1,
    contexts_per_part: int = DEFAULT_CONTEXTS_PER_PART,
    W_dec: np.ndarray | None = None,
    threshold: float = THRESHOLD,
) -> Path:
    """Write given arrays as a complete occurrence run in the on-disk format (tests, imports of other data).

    token_ids: int [n_contexts, ctx_len] (context c = row c); token/feature/value: the triples, any order,
    global token indices c * ctx_len + position; values <= threshold are dropped as the generator does.
    meta: extra run.json fields (model, layer, hook, sae_tag, ...); ctx_len and num_shards are filled in.
    W_dec: written as decoder.npy when given.
    """
    run = Path(run)
    ids = np.asarray(token_ids)
    if ids.ndim != 2:
        raise UserError(f"token_ids must be [n_contexts, ctx_len], got shape {ids.shape}")
    n_ctx, ctx_len = ids.shape
    token = np.asarray(token, np.int64)
    feature = np.asarray(feature, np.int32)
    value = np.asarray(value, np.float32)
    keep = value > threshold
    token, feature, value = token[keep], feature[keep], value[keep]
    if len(token) and (token.min() < 0 or token.max() >= n_ctx * ctx_len):
        raise UserError(f"token indices must lie in [0, {n_ctx * ctx_len}), got {token.min()}..{token.max()}")
    order = np.lexsort((feature, token))
    token, feature, value = token[order], feature[order], value[order]
    full_meta = {"format": FORMAT_VERSION, "model": "synthetic", "layer": 0, "hook": None, "sae_tag": "synthetic",
                 "threshold": threshold, **(meta or {}), "ctx_len": int(ctx_len), "num_shards": int(num_shards),
                 "contexts_per_part": int(contexts_per_part)}

    def encode(cs: np.ndarray, _ids: np.ndarray):
        lo = np.searchsorted(token, cs * ctx_len)
        hi = np.searchsorted(token, (cs + 1) * ctx_len)
        sel = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)]) if len(cs) else np.zeros(0, np.int64)
        return token[sel], feature[sel], value[sel]

    root = dataset_root(run, full_meta)
    for i in range(num_shards):
        contexts = ((c, ids[c]) for c in range(i, n_ctx, num_shards))
        write_shard(root / shard_name(i, num_shards), shard_settings(full_meta, i), contexts, encode,
                    ctx_len=ctx_len, contexts_per_part=contexts_per_part)
    promote_if_complete(run, full_meta, root)
    if W_dec is not None:
        save_decoder(run, np.asarray(W_dec, np.float32))
    return run


def save_decoder(run: Path, W_dec: np.ndarray) -> Path:
    """decoder.npy [F, d] float32 through multid.stage (its record keeps the checksum readers verify)."""
    import hashlib

    from multid.sae.data.run_layout import decoder_path
    from multid.stage import Stage, run_stage

    W = np.ascontiguousarray(W_dec, dtype=np.float32)

    def build(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, W, allow_pickle=False)

    return run_stage(Stage("decoder (given)", decoder_path(run), {"decoder_sha1": hashlib.sha1(W.tobytes()).hexdigest()}),
                     build)


# ----------------------------------------------------------------------------------------- reading


@dataclass
class Occurrences:
    """Every shard of one occurrence run, read as one dataset (see `open_occurrences`)."""

    run_dir: Path
    meta: dict[str, Any]
    triple_files: list[Path]
    token_files: list[Path]
    _dense_ids: np.ndarray | None = field(default=None, repr=False)

    @property
    def ctx_len(self) -> int:
        return int(self.meta["ctx_len"])

    @property
    def dataset(self):
        """The triples as a pyarrow.dataset.Dataset (for scans too large for memory); pages are checked against
        their CRC checksums as they are read."""
        import pyarrow.dataset as pads

        return pads.dataset([str(p) for p in self.triple_files], format=verified_parquet(), schema=triples_schema())

    def read_table(self, dataset: Any, **options: Any) -> Any:
        """dataset.to_table(**options), with a page that fails its checksum reported as a damaged dataset."""
        try:
            return dataset.to_table(**options)
        except OSError as err:
            if "checksum" not in str(err).lower():
                raise
            raise UserError(f"the SAE occurrence dataset in {occurrences_dir(self.run_dir)} is damaged: a Parquet "
                            f"page failed its checksum ({err}); rebuild it with: {self.recorded_command()}") from None

    def recorded_command(self) -> str:
        """The command that wrote the dataset, from a shard's stage record (else a generic one)."""
        for path in self.triple_files[:1]:
            record = read_record(path.parent, True) or {}
            if record.get("command"):
                return str(record["command"])
        return self.command()

    @property
    def num_tokens(self) -> int:
        return sum(parquet_rows(p) for p in self.token_files)

    @property
    def num_triples(self) -> int:
        return sum(parquet_rows(p) for p in self.triple_files)

    def triples(self, features: Sequence[int] | np.ndarray | None = None,
                columns: Sequence[str] = TRIPLE_COLUMNS) -> tuple[np.ndarray, ...]:
        """(token int64[n], feature int32[n], value float32[n]) sorted by (token, feature).

        features: keep only these feature ids (a pyarrow filter, evaluated while scanning the files).
        """
        import pyarrow.compute as pc
        import pyarrow.dataset as pads

        flt = None
        if features is not None:
            ids = np.unique(np.asarray(features, dtype=np.int64))
            flt = pc.field("feature").isin(ids.astype(np.int32))
        table = self.read_table(self.dataset, columns=list(TRIPLE_COLUMNS), filter=flt)
        del pads
        token = table.column("token").to_numpy()
        feature = table.column("feature").to_numpy()
        order = sorted_order(token, feature, self.ctx_len)
        out = {}
        for name, array in (("token", token), ("feature", feature), ("value", table.column("value").to_numpy())):
            if name in columns:
                out[name] = array if order is None else array[order]
        return tuple(out[c] for c in columns)

    def _ids(self) -> np.ndarray:
        if self._dense_ids is None:
            import pyarrow.dataset as pads

            table = self.read_table(pads.dataset([str(p) for p in self.token_files], format=verified_parquet(),
                                                 schema=tokens_schema()), columns=["token", "token_id"])
            token = table.column("token").to_numpy()
            size = int(token.max()) + 1 if len(token) else 0
            dense = np.full(size, -1, dtype=np.int32)
            dense[token] = table.column("token_id").to_numpy()
            self._dense_ids = dense
        return self._dense_ids

    def token_ids(self, tokens: Sequence[int] | np.ndarray) -> np.ndarray:
        """The token id at each global token index (int32[m]); an index not in the dataset is a UserError."""
        dense = self._ids()
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.size == 0:
            return np.zeros(0, dtype=np.int32)
        bad = (tokens < 0) | (tokens >= len(dense))
        out = np.full(tokens.shape, -1, dtype=np.int32)
        out[~bad] = dense[tokens[~bad]]
        if (out < 0).any():
            first = int(tokens[np.argmax(out < 0)])
            raise UserError(f"token index {first} is not in the occurrence dataset {self.run_dir} "
                            f"({self.num_tokens} tokens stored)")
        return out

    def contexts(self, tokens: Sequence[int] | np.ndarray, before: int = 10) -> list[list[int]]:
        """For each token index j: the token ids of positions max(0, pos-before)..pos of j's own context."""
        tokens = np.asarray(tokens, dtype=np.int64)
        self.token_ids(tokens)  # validates
        dense = self._ids()
        ctx_len = self.ctx_len
        out = []
        for j in tokens.tolist():
            start = max(j - before, (j // ctx_len) * ctx_len)
            out.append(dense[start:j + 1].tolist())
        return out

    def decoder(self) -> np.ndarray:
        """decoder.npy of the run (W_dec [F, d] float32)."""
        from multid.sae.data.run_layout import decoder_path

        path = decoder_path(self.run_dir)
        if not path.is_file():
            raise MissingArtifactError("SAE decoder", path, self.command())
        return np.load(path, allow_pickle=False)

    def command(self) -> str:
        return generate_command(self.meta.get("model", "<model>"), self.meta.get("layer", "<L>"))


def sorted_order(token: np.ndarray, feature: np.ndarray, ctx_len: int) -> np.ndarray | None:
    """Permutation sorting rows by (token, feature); None when they already are.

    Files hold whole contexts sorted inside, and shards interleave contexts, so the rows are runs of one
    context each: ordering the runs by context is O(n) plus a sort of the runs. Rows that are not sorted
    inside their runs (not written by this module) fall back to a full lexsort.
    """
    n = len(token)
    if n == 0:
        return None
    key_ok = (token[1:] > token[:-1]) | ((token[1:] == token[:-1]) & (feature[1:] > feature[:-1]))
    if key_ok.all():
        return None
    ctx = token // ctx_len
    new_run = np.empty(n, dtype=bool)
    new_run[0] = True
    np.not_equal(ctx[1:], ctx[:-1], out=new_run[1:])
    if not key_ok[~new_run[1:]].all():
        return np.lexsort((feature, token))
    starts = np.flatnonzero(new_run)
    run_ctx = ctx[starts]
    lengths = np.diff(np.append(starts, n))
    by_ctx = np.argsort(run_ctx, kind="stable")
    if len(np.unique(run_ctx)) != len(run_ctx):  # one context split over several runs: not our layout
        return np.lexsort((feature, token))
    lengths_sorted = lengths[by_ctx]
    offsets = np.repeat(starts[by_ctx] - np.concatenate([[0], np.cumsum(lengths_sorted)[:-1]]), lengths_sorted)
    return np.arange(n, dtype=np.int64) + offsets


def command_for_run_dir(run: Path) -> str:
    """Best guess at the generate command from a run folder named <model>_layer<L>_<tag>."""
    name = Path(run).name
    model, sep, rest = name.partition("_layer")
    layer, _, tag = rest.partition("_") if sep else ("<L>", "", "")
    base = Path(run).parent.parent
    defaults = {"gpt2": ("gpt2-small-res-jb",), "mistral": ("mistral-7b-res-wg", "mistral-paper-pt")}
    sae_path = None if tag in defaults.get(model, ()) else f"<the SAE folder or .pt named {tag or '...'}>"
    return generate_command(model if sep else "<model>", layer or "<L>", base_dir=base, sae_path=sae_path)


def open_occurrences(run: str | os.PathLike, command: str | None = None) -> Occurrences:
    """Open every shard of the occurrence dataset in run folder `run` as one dataset.

    Raises MissingArtifactError naming the generate command (`command`, else one built from the folder
    name) when the dataset, or one of its shards, is missing or unfinished, or a shard was made with
    settings other than the run's.
    """
    run = Path(run)
    meta_path = run / RUN_META
    if not meta_path.is_file():
        raise MissingArtifactError("SAE occurrence dataset", occurrences_dir(run), command or command_for_run_dir(run))
    meta = load_json(meta_path)
    cmd = command or command_for_run_dir(run)
    num_shards = int(meta.get("num_shards", 1))
    triple_files: list[Path] = []
    token_files: list[Path] = []
    missing = []
    problems: list[str] = []
    damaged: list[tuple[str, str | None]] = []  # (what is wrong, the command its record holds)
    for i in range(num_shards):
        folder = shard_dir(run, i, num_shards)
        record = read_record(folder, True)
        if not shard_is_current(folder, shard_settings(meta, i)):
            missing.append(i)
            problem = shard_problem(folder, record, shard_settings(meta, i))
            problems.append(problem)
            if problem.startswith(str(folder)):
                damaged.append((problem, (record or {}).get("command")))
            continue
        done = finished_parts(folder)
        triple_files += [folder / part_names(k)[0] for k in done]
        token_files += [folder / part_names(k)[1] for k in done]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        extra = f" --num_shards {num_shards} --shard_index <i>" if num_shards > 1 else ""
        if damaged:
            problem, recorded = damaged[0]
            raise UserError(f"the SAE occurrence dataset in {occurrences_dir(run)} is damaged: {problem}"
                            f"{f' (and {len(damaged) - 1} more shard(s))' if len(damaged) > 1 else ''}; rebuild "
                            f"it with: {recorded or cmd + extra}")
        raise MissingArtifactError(
            f"SAE occurrence dataset (shard(s) {shown} of {num_shards}: {problems[0]})",
            occurrences_dir(run), cmd + extra)
    return Occurrences(run, meta, triple_files, token_files)


def shard_problem(folder: Path, record: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    """Why a shard folder is not usable: missing, unfinished, other settings, or the damage (path first)."""
    from multid.stage import damage

    if not folder.exists():
        return "not written"
    if record is None:
        return "unfinished"
    if record.get("settings") != json.loads(canonical_json(settings)):
        return "made with other settings"
    return f"{folder}/{damage(folder, True)}"


def shards_status(run: Path) -> tuple[int, list[int]]:
    """(num_shards, indices of unfinished shards) of the run in `run` (by its run.json)."""
    meta = load_json(Path(run) / RUN_META)
    n = int(meta.get("num_shards", 1))
    return n, [i for i in range(n) if not shard_is_current(shard_dir(run, i, n), shard_settings(meta, i))]
