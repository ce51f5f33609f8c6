import json
import os

import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
from emosae.sae.contexts import CorpusConfig, iter_contexts
from emosae.sae.reader import ActivationCache, batch_stream

pytestmark = pytest.mark.real

CORPUS = CorpusConfig(sources=("moby_dick",), max_tokens=64 * 20, context_len=64, emotion_every=3)


def cfg(out, **kw):
    """A CacheJob; job-level keys (layers, hook_names) and cache knobs in one call."""
    base = dict(layers=(1, 3), corpus=CORPUS, contexts_per_shard=6, batch_size=4, dtype="float32")
    base.update(kw)
    job = {k: base.pop(k) for k in ("layers", "hook_names") if k in base}
    return CacheJob(out=str(out), cache=CacheConfig(**base), **job)


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory, real_model):
    out = tmp_path_factory.mktemp("cache")
    cache_activations(cfg(out), real_model)
    return out


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard_*.safetensors"))}


def test_manifest_and_rows_trace_to_text(small_cache, real_model):
    c = ActivationCache.open(small_cache)
    m = c.manifest
    assert m["hooks"] == ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
    assert m["d_model"] == 576 and m["context_len"] == 64 and m["n_contexts"] == 20
    assert m["n_rows"] == 20 * 63 and len(m["shards"]) == 4  # 6+6+6+2 contexts
    assert (
        all(len(s["sha256"]) == 64 for s in m["shards"])
        and m["corpus_sha256"]
        and m["code_version"]
    )
    # rows equal a direct forward of the same context, and token ids are stored beside them
    ctxs = list(iter_contexts(CORPUS, real_model.tokenizer))
    k = 7
    _, cache = real_model.run_with_cache(
        ctxs[k].tokens[None], names_filter=["blocks.3.hook_resid_post"]
    )
    rows = c.rows("blocks.3.hook_resid_post")[k * 63 : (k + 1) * 63]
    assert torch.allclose(rows, cache["blocks.3.hook_resid_post"][0, 1:], atol=1e-3)
    assert torch.equal(c.meta("tokens")[k * 63 : (k + 1) * 63], ctxs[k].tokens[1:])
    docs = c.documents()
    sources = {docs[i]["source"] for i in c.meta("doc_ids").tolist()}
    assert "moby_dick" in sources and any(s.startswith("story:") for s in sources)
    # no held-out topic ever enters the cache
    from emosae import data

    held = set(data.load_topics().heldout)
    assert not any(s.startswith("story:") and s.split("/")[1] in held for s in sources)


def test_resume_after_kill_is_identical(tmp_path, small_cache, real_model, monkeypatch):
    out = tmp_path / "c"
    calls = {"n": 0}
    import safetensors.torch as st

    orig = st.save_file

    def dying_save(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            orig(tensors, path)  # a partial shard is on disk under the temp name ...
            raise KeyboardInterrupt  # ... when the process is killed
        return orig(tensors, path, *a, **k)

    monkeypatch.setattr(st, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(cfg(out), real_model)
    monkeypatch.setattr(st, "save_file", orig)
    assert not (out / "manifest.json").exists()
    assert len(list(out.glob("shard_*.json"))) == 2
    cache_activations(cfg(out), real_model)
    assert shard_bytes(out) == shard_bytes(small_cache)
    assert not list(out.glob("*.tmp"))


def test_full_disk_mid_shard(tmp_path, real_model, monkeypatch):
    import safetensors.torch as st

    orig = st.save_file

    def full(tensors, path, *a, **k):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(EmosaeError, match="No space left on device"):
        cache_activations(cfg(tmp_path / "d"), real_model)
    monkeypatch.setattr(st, "save_file", orig)
    assert not list((tmp_path / "d").glob("shard_*"))
    cache_activations(cfg(tmp_path / "d"), real_model)
    assert ActivationCache.open(tmp_path / "d").n_rows == 20 * 63


def test_corrupt_shard_named(tmp_path, small_cache):
    import shutil

    dst = tmp_path / "x"
    shutil.copytree(small_cache, dst)
    p = dst / "shard_00001.safetensors"
    b = bytearray(p.read_bytes())
    b[-10] ^= 0xFF
    p.write_bytes(bytes(b))
    with pytest.raises(EmosaeError, match="shard_00001.safetensors does not match its sha256"):
        ActivationCache.open(dst)


def test_bad_inputs(tmp_path, real_model):
    with pytest.raises(EmosaeError, match=r"valid layers are 0\.\.29"):
        cache_activations(cfg(tmp_path / "a", layers=(30,)), real_model)
    with pytest.raises(EmosaeError, match="unknown hook"):
        cache_activations(cfg(tmp_path / "b", hook_names=("blocks.2.hook_nope",)), real_model)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(EmosaeError, match="corpus is empty"):
        cache_activations(
            cfg(
                tmp_path / "c",
                corpus=CorpusConfig(
                    sources=(str(empty),),
                    include_emotion_data=False,
                    max_tokens=640,
                    context_len=64,
                ),
            ),
            real_model,
        )
    assert not list((tmp_path / "c").glob("shard_*"))
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    if os.geteuid() != 0:  # root ignores permissions
        with pytest.raises(EmosaeError, match="cannot write"):
            cache_activations(cfg(ro / "sub"), real_model)
    (tmp_path / "f").write_text("a file")
    with pytest.raises(EmosaeError, match="cannot write"):
        cache_activations(cfg(tmp_path / "f" / "sub"), real_model)


def test_changed_config_refuses_to_mix(tmp_path, small_cache, real_model):
    import shutil

    dst = tmp_path / "y"
    shutil.copytree(small_cache, dst)
    with pytest.raises(EmosaeError, match="different config"):
        cache_activations(cfg(dst, layers=(2,)), real_model)


def test_batch_stream_epoch_has_no_duplicates(small_cache):
    c = ActivationCache.open(small_cache)
    hook = "blocks.1.hook_resid_post"
    n_train = len(c.rows(hook, "train", eval_every=5))
    it = batch_stream(c, hook, 50, split="train", eval_every=5, buffer_rows=300)
    got = torch.cat([next(it) for _ in range(n_train // 50)])
    assert got.shape == (n_train // 50 * 50, 576) and got.dtype == torch.float32
    assert len(torch.unique(got, dim=0)) == len(got)
    allrows = c.rows(hook, "train", eval_every=5)
    # every served row is a training row (none from held-out contexts)
    eval_rows = c.rows(hook, "eval", eval_every=5)

    def member(rows, pool):
        return (rows[:, None] == pool[None]).all(-1).any(1)

    assert not member(got[:100], eval_rows).any()
    assert member(got[:100], allrows).all()


def test_data_parallel_slices_are_disjoint(small_cache):
    c = ActivationCache.open(small_cache)
    hook = "blocks.1.hook_resid_post"
    a = next(batch_stream(c, hook, 16, rank=0, world_size=2, seed=3))
    b = next(batch_stream(c, hook, 16, rank=1, world_size=2, seed=3))
    whole = next(batch_stream(c, hook, 32, seed=3))
    assert torch.equal(torch.cat([a, b]), whole)


def test_manifest_is_json_with_shards(small_cache):
    m = json.loads((small_cache / "manifest.json").read_text())
    assert [s["shard"] for s in m["shards"]] == [f"shard_{i:05d}.safetensors" for i in range(4)]
