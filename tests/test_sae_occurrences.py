"""Occurrence datasets (multid.sae.data.occurrence_store, multid.sae.data.text_sources, generate_feature_occurence_data.py) on the
tiny random model with a random SAELens SAE and local text files: exact triples, sharding, resuming, caps,
the reader, and the errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multid.config import REPO_ROOT
from multid.errors import MissingArtifactError, UserError
from multid.sae.analysis import occurrence_generator as occ_mod
from multid.sae.data.text_sources import first_tokens, first_tokens_many, iter_contexts, make_text_source, shard_contexts, tl_tokenizer
from multid.sae.data.sae_loading import load_sae
from multid.sae.analysis.occurrence_generator import GenerateOptions, generate_occurrences
from multid.sae.data.occurrence_store import contexts_within_budget, open_occurrences, write_occurrence_run
from multid.sae.data.run_layout import run_dir, shard_dir
from tests.sae_helpers import TINY_HOOK, make_tiny_sae, write_corpus

CTX = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("occ")
    sae_folder = make_tiny_sae(root / "sae", d_sae=48, seed=1, bias=-0.35)
    files = write_corpus(root / "text", n_docs=14, words=30, seed=4)
    return {"root": root, "sae": load_sae("tiny", 1, sae_path=sae_folder), "files": files}


def generate(setup, tiny_model, base: Path, **options):
    source = make_text_source(text_files=setup["files"])
    fail = options.pop("fail_after_parts", None)
    opts = GenerateOptions(ctx_len=CTX, batch_size=options.pop("batch_size", 3),
                           contexts_per_part=options.pop("contexts_per_part", 4), progress=False, **options)
    run = run_dir(base, "tiny", 1, setup["sae"].tag)
    result = generate_occurrences(run=run, model_name="tiny", layer=1, sae=setup["sae"], source=source,
                                  get_model=lambda: tiny_model, model_info={"model": "tiny"}, options=opts,
                                  fail_after_parts=fail)
    return run, result


def reference_contexts(setup, tiny_model) -> np.ndarray:
    """Token ids of every context, from the documents tokenized whole with BOS (as upstream)."""
    out = []
    for path in setup["files"]:
        ids = tiny_model.to_tokens(path.read_text(), prepend_bos=True)[0].tolist()
        if len(ids) >= CTX:
            out.append(ids[:CTX])
    return np.array(out)


def dense_reference(setup, tiny_model, ids: np.ndarray, batch: int = 3):
    """Full forward pass with run_with_cache, SAELens' own encode, every activation > 1e-6 (slow, dense)."""
    toks, feats, vals = [], [], []
    module = setup["sae"].module
    for start in range(0, len(ids), batch):
        chunk = torch.as_tensor(ids[start:start + batch])
        _, cache = tiny_model.run_with_cache(chunk, names_filter=TINY_HOOK)
        acts = module.encode(cache[TINY_HOOK].reshape(-1, 64)).detach().numpy()
        for r in range(acts.shape[0]):
            for f in range(acts.shape[1]):
                if acts[r, f] > 1e-6:
                    toks.append(start * CTX + r)
                    feats.append(f)
                    vals.append(acts[r, f])
    return np.array(toks, np.int64), np.array(feats, np.int32), np.array(vals, np.float32)


@pytest.fixture(scope="module")
def unsharded(setup, tiny_model):
    return generate(setup, tiny_model, setup["root"] / "base1")[0]


# ----------------------------------------------------------------------------------------- generation


@pytest.mark.integration
def test_triples_equal_dense_encode(setup, tiny_model, unsharded):
    occ = open_occurrences(unsharded)
    ids = reference_contexts(setup, tiny_model)
    assert len(ids) == 11  # 14 documents, every fourth too short
    assert occ.num_tokens == ids.size
    np.testing.assert_array_equal(occ.token_ids(np.arange(ids.size)), ids.reshape(-1))
    assert (ids[:, 0] == tiny_model.tokenizer.bos_token_id).all()
    token, feature, value = occ.triples()
    ref = dense_reference(setup, tiny_model, ids)
    assert 5 * ids.size < len(token) < 0.8 * ids.size * 48  # sparse, but many pairs
    np.testing.assert_array_equal(token, ref[0])
    np.testing.assert_array_equal(feature, ref[1])
    np.testing.assert_allclose(value, ref[2], rtol=1e-5, atol=1e-6)
    meta = occ.meta
    assert (meta["model"], meta["layer"], meta["hook"], meta["ctx_len"], meta["sae_tag"]) == (
        "tiny", 1, TINY_HOOK, CTX, "sae")
    np.testing.assert_array_equal(occ.decoder(), setup["sae"].decoder_numpy())


@pytest.mark.integration
def test_two_shards_read_as_one_equal_unsharded(setup, tiny_model, tmp_path):
    base = tmp_path / "base"
    single, _ = generate(setup, tiny_model, base / "one", batch_size=1)
    for i in (1, 0):  # any order
        run, result = generate(setup, tiny_model, base / "two", num_shards=2, shard_index=i, batch_size=1)
        assert result.num_contexts == (6, 5)[i]
    folders = sorted(p.name for p in (run / "occurrences").iterdir() if p.is_dir())
    assert folders == ["shard-00000-of-00002", "shard-00001-of-00002"]
    a, b = open_occurrences(single), open_occurrences(run)
    for x, y in zip(a.triples(), b.triples()):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.triples([3, 7, 40]), b.triples([3, 7, 40])):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.token_ids(np.arange(a.num_tokens)), b.token_ids(np.arange(b.num_tokens)))
    # shard 1 holds exactly the odd contexts
    import pyarrow.parquet as pq

    shard1 = shard_dir(run, 1, 2)
    contexts = np.concatenate([pq.read_table(p).column("context").to_numpy() for p in sorted(shard1.glob("tokens-*"))])
    assert set(contexts.tolist()) == {1, 3, 5, 7, 9}  # of 0..10


@pytest.mark.integration
def test_resume_after_interruption_gives_identical_files(setup, tiny_model, tmp_path, unsharded, monkeypatch):
    with pytest.raises(RuntimeError, match="simulated interruption after 1 part"):
        generate(setup, tiny_model, tmp_path, fail_after_parts=1)
    run = run_dir(tmp_path, "tiny", 1, "sae")
    shard = shard_dir(run, 0, 1)
    assert sorted(p.name for p in shard.glob("*.parquet")) == ["tokens-00000.parquet", "triples-00000.parquet"]
    with pytest.raises(MissingArtifactError, match="unfinished"):
        open_occurrences(run)
    batches = []
    real = occ_mod.activations_at_hook
    monkeypatch.setattr(occ_mod, "activations_at_hook", lambda m, t, h: batches.append(len(t)) or real(m, t, h))
    _, result = generate(setup, tiny_model, tmp_path)
    assert batches == [3, 1, 3]  # parts 1 and 2 only (contexts 4..10): part 0 was not recomputed
    assert (result.num_contexts, result.reused) == (11, False)
    reference = shard_dir(unsharded, 0, 1)
    names = sorted(p.name for p in reference.iterdir())
    assert names == sorted(p.name for p in shard.iterdir())
    for name in names:
        if name != "stage.json":
            assert (shard / name).read_bytes() == (reference / name).read_bytes(), name
    batches.clear()
    _, again = generate(setup, tiny_model, tmp_path)
    assert again.reused and batches == []


@pytest.mark.integration
def test_caps(setup, tiny_model, tmp_path, unsharded):
    full = open_occurrences(unsharded)
    token, feature, value = full.triples()
    # --max_tokens: whole contexts, over all shards together
    run, _ = generate(setup, tiny_model, tmp_path / "tok", max_tokens=5 * CTX + 7)
    capped = open_occurrences(run)
    assert capped.num_tokens == 5 * CTX
    keep = token < 5 * CTX
    for x, y in zip(capped.triples(), (token[keep], feature[keep], value[keep])):
        np.testing.assert_array_equal(x, y)
    for i in (0, 1):
        run2, _ = generate(setup, tiny_model, tmp_path / "tok2", max_tokens=5 * CTX, num_shards=2, shard_index=i)
    assert open_occurrences(run2).num_tokens == 5 * CTX
    # --max_pairs: stop before the first context that would exceed it
    per_context = np.bincount(token // CTX, minlength=10)
    cap = int(per_context[:6].sum()) - 1  # context 5 does not fit completely
    run3, result = generate(setup, tiny_model, tmp_path / "pairs", max_pairs=cap)
    capped = open_occurrences(run3)
    assert capped.num_triples == per_context[:5].sum() <= cap and capped.num_tokens == 5 * CTX
    assert result.stop_reason == "max_pairs"
    np.testing.assert_array_equal(capped.triples()[0], token[token < 5 * CTX])


@pytest.mark.integration
def test_changed_settings_rebuild_and_stale_shardings_go(setup, tiny_model, tmp_path):
    run, _ = generate(setup, tiny_model, tmp_path, num_shards=3, shard_index=0, max_tokens=6 * CTX)
    run, first = generate(setup, tiny_model, tmp_path, max_tokens=4 * CTX)
    assert sorted(p.name for p in (run / "occurrences").iterdir() if p.is_dir()) == ["shard-00000-of-00001"]
    assert first.num_contexts == 4
    _, second = generate(setup, tiny_model, tmp_path, max_tokens=3 * CTX)
    assert (second.reused, second.num_contexts) == (False, 3)
    assert open_occurrences(run).num_tokens == 3 * CTX


def all_triples(run: Path) -> tuple[np.ndarray, ...]:
    return open_occurrences(run).triples()


def generate_from(setup, tiny_model, base: Path, files, ctx_len: int, **options):
    opts = GenerateOptions(ctx_len=ctx_len, batch_size=3, contexts_per_part=2, progress=False, **options)
    run = run_dir(base, "tiny", 1, setup["sae"].tag)
    return run, generate_occurrences(run=run, model_name="tiny", layer=1, sae=setup["sae"],
                                     source=make_text_source(text_files=files), get_model=lambda: tiny_model,
                                     model_info={"model": "tiny"}, options=opts)


@pytest.mark.integration
def test_a_failed_rerun_with_other_settings_keeps_the_finished_dataset(setup, tiny_model, tmp_path):
    """Two shards at ctx_len 16 finish; the same command at ctx_len 12 over a .jsonl whose second line is not JSON
    stops with an error. The finished dataset is still there, readable and unchanged, until a rerun finishes."""
    for i in (0, 1):
        run, _ = generate_from(setup, tiny_model, tmp_path, setup["files"], 16, num_shards=2, shard_index=i)
    before = all_triples(run)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": setup["files"][0].read_text()}) + "\n{not json\n")
    with pytest.raises(UserError, match="bad.jsonl"):
        generate_from(setup, tiny_model, tmp_path, [*setup["files"][:3], bad], 12, num_shards=2, shard_index=0)
    assert open_occurrences(run).ctx_len == 16
    for x, y in zip(all_triples(run), before):
        np.testing.assert_array_equal(x, y)
    # the new settings finish: the new dataset replaces the old one, and nothing of the build is left beside it
    _, first = generate_from(setup, tiny_model, tmp_path, setup["files"], 12, num_shards=2, shard_index=0)
    assert first.path == run / "occurrences.next" / "shard-00000-of-00002"  # beside, until the last shard
    assert open_occurrences(run).ctx_len == 16
    _, last = generate_from(setup, tiny_model, tmp_path, setup["files"], 12, num_shards=2, shard_index=1)
    assert last.path == run / "occurrences" / "shard-00001-of-00002" and last.path.is_dir()
    assert open_occurrences(run).ctx_len == 12
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("occurrences")) == ["occurrences"]
    assert json.loads((run / "run.json").read_text())["ctx_len"] == 12


@pytest.mark.integration
def test_another_sharding_is_built_beside_the_finished_one(setup, tiny_model, tmp_path):
    """After --num_shards 2 (both shards), a --num_shards 3 --shard_index 2 run does not delete them."""
    for i in (0, 1):
        run, _ = generate(setup, tiny_model, tmp_path, num_shards=2, shard_index=i)
    before = all_triples(run)
    _, result = generate(setup, tiny_model, tmp_path, num_shards=3, shard_index=2)
    assert result.path == run / "occurrences.next" / "shard-00002-of-00003"
    assert sorted(p.name for p in (run / "occurrences").iterdir() if p.is_dir()) == [
        "shard-00000-of-00002", "shard-00001-of-00002"]
    for x, y in zip(all_triples(run), before):
        np.testing.assert_array_equal(x, y)
    # a third sharding while the second is half built: refused, naming both builds' settings
    with pytest.raises(UserError, match=r"occurrences.next holds an unfinished .*num_shards: 3 vs 4"):
        generate(setup, tiny_model, tmp_path, num_shards=4, shard_index=0)
    for i in (1, 0):
        _, result = generate(setup, tiny_model, tmp_path, num_shards=3, shard_index=i)
    assert result.path == run / "occurrences" / "shard-00000-of-00003"
    assert sorted(p.name for p in (run / "occurrences").iterdir() if p.is_dir()) == [
        f"shard-0000{i}-of-00003" for i in range(3)]
    for x, y in zip(all_triples(run), before):  # the same dataset, sharded three ways
        np.testing.assert_array_equal(x, y)
    assert not (run / "occurrences.next").exists()


@pytest.mark.unit
def test_a_swap_cut_short_is_finished_by_the_next_run(tmp_path):
    """Crash points of the swap: after occurrences -> replaced, and after occurrences.next -> occurrences."""
    from multid.sae.data.occurrence_store import finish_swap

    old, *_ = random_run(tmp_path, seed=1)
    new_run, *_ = random_run(tmp_path, seed=2)
    expected = all_triples(new_run)
    # crash 1: the old dataset moved aside, the new one complete in occurrences.next
    run = tmp_path / "crash1"
    shutil.copytree(old, run)
    (run / "occurrences").rename(run / "occurrences.replaced-123")
    shutil.copytree(new_run / "occurrences", run / "occurrences.next")
    shutil.copy(new_run / "run.json", run / "occurrences.next" / "run.json")
    finish_swap(run)
    for x, y in zip(all_triples(run), expected):
        np.testing.assert_array_equal(x, y)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("occurrences")) == ["occurrences"]
    # crash 2: the new dataset in place, its run.json still inside it
    run = tmp_path / "crash2"
    shutil.copytree(old, run)
    shutil.rmtree(run / "occurrences")
    shutil.copytree(new_run / "occurrences", run / "occurrences")
    shutil.copy(new_run / "run.json", run / "occurrences" / "run.json")
    finish_swap(run)
    for x, y in zip(all_triples(run), expected):
        np.testing.assert_array_equal(x, y)
    assert not (run / "occurrences" / "run.json").exists()


# ----------------------------------------------------------------------------------------- reader


def random_run(tmp_path, seed=0, n_ctx=9, ctx_len=7, F=25, num_shards=1, per_part=2):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 100, size=(n_ctx, ctx_len))
    dense = rng.random((n_ctx * ctx_len, F)) * (rng.random((n_ctx * ctx_len, F)) < 0.3)
    dense[dense < 0.05] = 0.0
    tok, feat = np.nonzero(dense)
    perm = rng.permutation(len(tok))  # the writer sorts
    run = write_occurrence_run(tmp_path / f"run{seed}_{num_shards}", ids, tok[perm], feat[perm],
                               dense[tok, feat][perm], num_shards=num_shards, contexts_per_part=per_part,
                               meta={"model": "tiny", "layer": 1})
    return run, ids, tok, feat, dense[tok, feat].astype(np.float32)


@pytest.mark.unit
@pytest.mark.parametrize("num_shards", [1, 2, 4])
def test_reader_round_trip_and_filter(tmp_path, num_shards):
    run, ids, tok, feat, val = random_run(tmp_path, num_shards=num_shards)
    occ = open_occurrences(run)
    t, f, v = occ.triples()
    assert (t.dtype, f.dtype, v.dtype) == (np.int64, np.int32, np.float32)
    np.testing.assert_array_equal(t, tok)
    np.testing.assert_array_equal(f, feat)
    np.testing.assert_array_equal(v, val)
    sel = np.isin(feat, [2, 11, 24])
    for x, y in zip(occ.triples(np.array([24, 2, 11, 2])), (tok[sel], feat[sel], val[sel])):
        np.testing.assert_array_equal(x, y)
    assert [len(a) for a in occ.triples([])] == [0, 0, 0]
    assert occ.num_triples == len(tok) and occ.num_tokens == ids.size


@pytest.mark.unit
def test_reader_token_ids_and_contexts(tmp_path):
    run, ids, *_ = random_run(tmp_path, ctx_len=7)
    occ = open_occurrences(run)
    np.testing.assert_array_equal(occ.token_ids([0, 8, 62]), [ids[0, 0], ids[1, 1], ids[8, 6]])
    # positions j-before..j of the same context only
    assert occ.contexts([7 + 3], before=10) == [ids[1, :4].tolist()]
    assert occ.contexts([7 * 5 + 6, 2], before=2) == [ids[5, 4:7].tolist(), ids[0, 0:3].tolist()]
    with pytest.raises(UserError, match="token index 63 is not in the occurrence dataset"):
        occ.token_ids([5, 63])


@pytest.mark.unit
def test_missing_dataset_names_the_command(tmp_path):
    run = run_dir(tmp_path, "gpt-2", 7, "gpt2-small-res-jb")
    with pytest.raises(MissingArtifactError) as err:
        open_occurrences(run)
    message = str(err.value)
    assert "SAE occurrence dataset not found at" in message
    assert "generate_feature_occurence_data.py --model_name gpt2 --layers 7 --base_dir" in message
    assert "--sae_path" not in message
    with pytest.raises(MissingArtifactError, match=r"--model_name smollm2 --layers 9 --sae_path '<the SAE folder or "
                                                   r"\.pt named my_sae>'"):
        open_occurrences(run_dir(tmp_path, "smollm2", 9, "my_sae"))
    # one shard of two missing: the message names the shard flags
    run2, *_ = random_run(tmp_path, num_shards=2)
    import shutil

    shutil.rmtree(shard_dir(run2, 1, 2))
    with pytest.raises(MissingArtifactError, match=r"shard\(s\) 1 of 2: not written.*--num_shards 2 --shard_index <i>"):
        open_occurrences(run2)


@pytest.mark.unit
def test_damaged_part_is_not_trusted(tmp_path):
    run, *_ = random_run(tmp_path)
    part = shard_dir(run, 0, 1) / "triples-00001.parquet"
    data = part.read_bytes()
    part.write_bytes(data[:-10])
    with pytest.raises(UserError, match=r"is damaged: .*shard-00000-of-00001/triples-00001.parquet has \d+ bytes, "
                                        r"\d+ were written; rebuild it with"):
        open_occurrences(run)


# ----------------------------------------------------------------------------------------- helpers


@pytest.mark.unit
def test_contexts_within_budget():
    ctx_len = 4
    contexts = np.array([2, 5, 6])
    token = np.array([8, 9, 9, 20, 21, 22, 23, 24, 25])  # 3 triples in context 2, 4 in 5, 2 in 6
    assert [contexts_within_budget(token, contexts, ctx_len, b) for b in (0, 2, 3, 6, 7, 8, 9, 100)] == [
        0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.unit
def test_first_tokens_prefix_equals_whole_document():
    def tokenize(text):
        return [1] + [len(w) for w in text.split()]

    rng = np.random.default_rng(0)
    words = ["a", "bb", "ccc", "dddddddddddddddddddddddd" * 5]
    text = " ".join(rng.choice(words, size=4000))
    for n in (1, 5, 64, 300):
        assert first_tokens(tokenize, text, n) == tokenize(text)[:n]
    texts = [text, "a bb", text[:500], "ccc " * 1000]
    batches, longest = [], []

    def many(batch):
        batches.append(len(batch))
        longest.append(max(map(len, batch)))
        return [tokenize(t) for t in batch]

    assert first_tokens_many(many, texts, 64) == [tokenize(t)[:64] for t in texts]
    assert max(batches) > 1 and max(longest) < len(text) // 4  # batched, and only prefixes were tokenized
    assert first_tokens(tokenize, "a bb", 10) == [1, 1, 2]


@pytest.mark.unit
def test_first_tokens_when_the_cut_changes_earlier_tokens():
    """Tokens of a word depend on its whole length here, so a prefix cutting a long word is wrong on every one of
    its tokens: the doubling check must catch it."""

    def tokenize(text):
        return [0] + [len(w) for w in text.split() for _ in range(-(-len(w) // 3))]

    texts = [" ".join(["x" * 600] * 3), "ab " + "y" * 2000, "z" * 100]
    for n in (10, 64, 250):
        assert first_tokens_many(lambda b: [tokenize(t) for t in b], texts, n) == [tokenize(t)[:n] for t in texts]


@pytest.mark.unit
def test_iter_contexts_skips_short_documents_and_shards():
    def tokenize(text):
        return [0] + [int(w) for w in text.split()]

    docs = ["1 2 3", "4", "5 6 7 8", "9 10", "11 12 13"]
    stats: dict = {}
    contexts = list(iter_contexts(iter(docs), tokenize, 3, stats=stats))
    assert contexts == [(0, [0, 1, 2]), (1, [0, 5, 6]), (2, [0, 9, 10]), (3, [0, 11, 12])]
    assert stats == {"documents": 5, "skipped_short": 1}
    assert list(iter_contexts(iter(docs), tokenize, 3, max_contexts=2)) == contexts[:2]
    assert [c for c, _ in shard_contexts(iter(contexts), 3, 1)] == [1]
    assert [c for c, _ in shard_contexts(iter(contexts), 3, 0)] == [0, 3]


@pytest.mark.unit
def test_text_sources(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\nthree\nfour\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x y"}\n\n{"text": "z", "id": 2}\n')
    both = [tmp_path / "a.txt", tmp_path / "b.jsonl"]
    assert list(make_text_source(text_files=both).documents()) == ["one two\n\nthree\nfour\n", "x y", "z"]
    assert list(make_text_source(text_files=[tmp_path], text_split="paragraph").documents()) == [
        "one two", "three\nfour", "x y", "z"]
    assert list(make_text_source(text_files=both[:1], text_split="line").documents()) == ["one two", "three", "four"]
    import datasets

    datasets.Dataset.from_dict({"text": ["p q", "r"]}).save_to_disk(str(tmp_path / "ds"))
    assert list(make_text_source(dataset_path=tmp_path / "ds").documents()) == ["p q", "r"]
    fp = make_text_source(text_files=both).fingerprint()
    (tmp_path / "a.txt").write_text("changed")
    assert make_text_source(text_files=both).fingerprint() != fp
    with pytest.raises(UserError, match="does not exist"):
        make_text_source(text_files=[tmp_path / "nope.txt"])
    with pytest.raises(UserError, match="only one text source"):
        make_text_source(text_files=both, dataset="x/y")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(UserError, match=r"latin.jsonl line 2 is not UTF-8 \(byte 0xe9 at column 14\)"):
        list(make_text_source(text_files=[latin]).documents())


@pytest.mark.unit
def test_hub_dataset_offline_is_one_clear_error():
    source = make_text_source()
    assert source.dataset == "monology/pile-uncopyrighted"
    with pytest.raises(UserError, match=r"could not stream the dataset 'monology/pile-uncopyrighted'.*--text_files"):
        next(source.documents())


@pytest.mark.integration
def test_tl_tokenizer_prepends_bos_single_and_batched(tiny_model):
    tokenize = tl_tokenizer(tiny_model)
    ids = tokenize("Monday Tuesday")
    assert ids[0] == tiny_model.tokenizer.bos_token_id and len(ids) == 3
    texts = ["Monday Tuesday", "one", "", "the day , is from May . " * 40]
    assert tokenize.many(texts) == [tiny_model.to_tokens(t, prepend_bos=True, truncate=False)[0].tolist()
                                    for t in texts]
    assert first_tokens_many(tokenize.many, texts, 5) == [tokenize(t)[:5] for t in texts]
    # a tokenizer that does not add BOS itself (GPT-2's): the BOS string is prepended, as to_tokens does
    from multid.models import build_tiny_model, build_tiny_tokenizer

    model = build_tiny_model(n_layers=1)
    plain = build_tiny_tokenizer()
    plain.add_bos_token = False
    model.set_tokenizer(plain)
    assert model.cfg.tokenizer_prepends_bos is False
    assert tl_tokenizer(model).many(texts) == [model.to_tokens(t, prepend_bos=True, truncate=False)[0].tolist()
                                               for t in texts]


# ----------------------------------------------------------------------------------------- the script


def run_script(*args, cwd=None):
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "generate_feature_occurence_data.py", *map(str, args)],
                          cwd=cwd or REPO_ROOT / "sae_multid_feature_discovery", env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.acceptance
def test_script_end_to_end_and_bad_input(setup, tmp_path, unsharded):
    common = ["--model_name", "tiny", "--sae_path", setup["sae"].source, "--ctx_len", CTX, "--device", "cpu",
              "--contexts_per_part", 4, "--batch_size", 3, "--no_progress", "--base_dir", tmp_path]
    done = run_script(*common, "--text_files", *setup["files"])
    assert done.returncode == 0, done.stderr
    run = run_dir(tmp_path, "tiny", 1, "sae")
    assert str(run / "decoder.npy") in done.stdout and "dataset complete" in done.stdout
    for x, y in zip(open_occurrences(run).triples(), open_occurrences(unsharded).triples()):
        np.testing.assert_array_equal(x, y)
    offline = run_script("--model_name", "gpt-2", "--layers", 7, "--text_files", setup["files"][0], "--device",
                         "cpu", "--base_dir", tmp_path)
    assert offline.returncode == 2
    assert "could not download the SAE gpt2-small-res-jb / blocks.7.hook_resid_pre" in offline.stderr
    assert "pass --sae_path" in offline.stderr and len(offline.stderr.strip().splitlines()) == 1


@pytest.mark.unit
def test_script_bad_shard_and_help(setup, capsys):
    from sae_multid_feature_discovery.generate_feature_occurence_data import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name", "tiny", "--layers", "1", "--num_shards", "2", "--shard_index", "2",
              "--text_files", str(setup["files"][0])])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --shard_index must be in [0, 2) for --num_shards 2, got 2"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--model_name", "smollm2", "--text_files", str(setup["files"][0])])
    assert "pass --layers for model 'smollm2'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model_name", "tiny", "--layers", "1", "2", "--sae_path", setup["sae"].source,
              "--text_files", str(setup["files"][0])])
    assert "is one SAE (one layer) but --layers gives 2; put {layer} in the path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--num_shards" in out and "--max_pairs" in out and "--text_files" in out


@pytest.mark.smollm2
@pytest.mark.acceptance
def test_smollm2_with_an_sae_on_disk(smollm2_model, tmp_path):
    """--model_name smollm2 with any SAELens SAE saved for it: the triples equal a dense reference."""
    hook = "blocks.3.hook_resid_pre"
    sae = load_sae("smollm2", 3, sae_path=make_tiny_sae(tmp_path / "sae", d_in=576, d_sae=40, hook=hook, bias=-0.3))
    files = write_corpus(tmp_path / "text", n_docs=5, words=30, seed=1)
    run = run_dir(tmp_path, "smollm2", 3, sae.tag)
    generate_occurrences(run=run, model_name="smollm2", layer=3, sae=sae, source=make_text_source(text_files=files),
                         get_model=lambda: smollm2_model, model_info={"model": "smollm2"},
                         options=GenerateOptions(ctx_len=16, batch_size=2, contexts_per_part=2, progress=False))
    occ = open_occurrences(run)
    ids = occ.token_ids(np.arange(occ.num_tokens)).reshape(-1, 16)
    assert len(ids) == 4 and (ids[:, 0] == smollm2_model.tokenizer.bos_token_id).all()
    whole = [smollm2_model.to_tokens(p.read_text(), prepend_bos=True)[0].tolist() for p in files]
    np.testing.assert_array_equal(ids, [w[:16] for w in whole if len(w) >= 16])
    _, cache = smollm2_model.run_with_cache(torch.as_tensor(ids, dtype=torch.long), names_filter=hook)
    acts = sae.module.encode(cache[hook].reshape(-1, 576)).detach().numpy()
    tok, feat = np.nonzero(acts > 1e-6)
    token, feature, value = occ.triples()
    np.testing.assert_array_equal(token, tok)
    np.testing.assert_array_equal(feature, feat)
    np.testing.assert_allclose(value, acts[tok, feat], rtol=1e-4, atol=1e-5)


@pytest.mark.unit
def test_sorted_order_matches_lexsort():
    from multid.sae.data.occurrence_store import sorted_order

    rng = np.random.default_rng(3)
    ctx_len = 5
    runs = []
    for c in rng.permutation(40):  # contexts in shard order: runs of one context, sorted inside
        tok = np.sort(rng.integers(c * ctx_len, (c + 1) * ctx_len, size=rng.integers(1, 9)))
        feat = rng.permutation(50)[:len(tok)]
        order = np.lexsort((feat, tok))
        runs.append((tok[order], feat[order]))
    token = np.concatenate([r[0] for r in runs]).astype(np.int64)
    feature = np.concatenate([r[1] for r in runs]).astype(np.int32)
    np.testing.assert_array_equal(sorted_order(token, feature, ctx_len), np.lexsort((feature, token)))
    ref = np.lexsort((feature, token))
    assert sorted_order(token[ref], feature[ref], ctx_len) is None
    shuffled = rng.permutation(len(token))  # not our layout: falls back to a full sort
    np.testing.assert_array_equal(token[shuffled][sorted_order(token[shuffled], feature[shuffled], ctx_len)],
                                  token[ref])


@pytest.mark.integration
def test_text_without_a_whole_context_is_an_error_not_an_empty_dataset(setup, tiny_model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Monday.")
    with pytest.raises(UserError, match="gives no context of --ctx_len 12 tokens"):
        generate_from(setup, tiny_model, tmp_path, [short], CTX)
    run = run_dir(tmp_path, "tiny", 1, setup["sae"].tag)
    with pytest.raises(MissingArtifactError):
        open_occurrences(run)


@pytest.mark.unit
def test_a_same_size_byte_flip_in_a_parquet_part_is_caught_on_read(tmp_path):
    """Sizes alone miss it (the record still matches); the pages' CRC checksums do not."""
    run, *_ = random_run(tmp_path, n_ctx=30, F=60)
    part = shard_dir(run, 0, 1) / "triples-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0x01
    part.write_bytes(bytes(data))
    occ = open_occurrences(run)  # sizes match: the dataset opens
    with pytest.raises(UserError, match=r"is damaged: a Parquet page failed its checksum"):
        occ.triples()


@pytest.mark.integration
def test_the_generator_rebuilds_a_shard_whose_pages_fail_their_checksum(setup, tiny_model, tmp_path, unsharded):
    run, _ = generate(setup, tiny_model, tmp_path)
    expected = all_triples(unsharded)
    part = shard_dir(run, 0, 1) / "triples-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 3] ^= 0x01  # same size: the stage record still matches
    part.write_bytes(bytes(data))
    _, result = generate(setup, tiny_model, tmp_path)
    assert not result.reused  # not "reused": the damaged shard was rebuilt
    for x, y in zip(all_triples(run), expected):
        np.testing.assert_array_equal(x, y)
