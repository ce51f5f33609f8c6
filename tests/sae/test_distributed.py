"""torchrun on CPU (gloo, 2 processes): distributed caching equals a single-process
cache; data-parallel training keeps both ranks' weights identical after every step and
matches one process on the same global batch; a sweep split across ranks trains the
same SAEs as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emosae.core.tracking import WandbConfig
from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
from emosae.sae.config import SAEConfig, TrainConfig, TrainJob
from emosae.sae.contexts import CorpusConfig
from emosae.sae.reader import ActivationCache
from emosae.sae.training import train_sae

pytestmark = pytest.mark.real

HOOK = "blocks.2.hook_resid_post"
CORPUS = dict(max_tokens=64 * 40, context_len=64)
# dtype: the default, auto, so that rank 0's measured choice is what every rank stores
CACHE = dict(contexts_per_shard=6, batch_size=4)
# Flags for the same configs on the command line.
CACHE_FLAGS = "--layers 2 --max_tokens 2560 --context_len 64 --contexts_per_shard 6 --batch_size 4"
TRAIN = dict(
    sae=SAEConfig(architecture="topk", d_sae=256, k=8),
    batch_size=64,
    epochs=1,
    eval_every=8,
    eval_contexts=0,
)
TRAIN_FLAGS = "--architecture topk --d_sae 256 --k 8 --batch_size 64 --epochs 1 --eval_every 8 --eval_contexts 0"


def torchrun(*args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "emosae", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if expect_ok:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def single_cache(tmp_path_factory, real_model):
    out = tmp_path_factory.mktemp("single") / "cache"
    job = CacheJob(
        out=str(out), layers=(2,), cache=CacheConfig(corpus=CorpusConfig(**CORPUS), **CACHE)
    )
    # One thread, as each torchrun worker has: MKL's GEMM rounds differently with another
    # thread count on some CPUs (measured here: 28% of values differ, by up to 3e-4).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cache_activations(job, real_model)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def dist_cache(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "cache"
    torchrun("cache", "--out", str(out), *CACHE_FLAGS.split())
    return out


def sorted_rows(folder):
    c = ActivationCache.open(folder)
    key = np.lexsort(
        [c.meta("positions").numpy(), c.meta("context_ids").numpy(), c.meta("doc_ids").numpy()]
    )
    return {
        "acts": c.rows(HOOK)[key],
        **{n: c.meta(n)[key] for n in ("tokens", "doc_ids", "positions", "context_ids")},
    }


def test_torchrun_cache_equals_single_process(single_cache, dist_cache):
    a, b = sorted_rows(single_cache), sorted_rows(dist_cache)
    assert len(a["acts"]) == 40 * 63
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma = json.loads((single_cache / "manifest.json").read_text())
    mb = json.loads((dist_cache / "manifest.json").read_text())
    # Both ranks did work, and the shards are the same files a single process writes.
    assert {s["rank"] for s in mb["shards"]} == {0, 1}
    assert mb["dtype"] == "float16" and mb["dtype_choice"]["asked"] == "auto"
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    drop = ("shards", "code_version")
    assert {k: v for k, v in ma.items() if k not in drop} == {
        k: v for k, v in mb.items() if k not in drop
    }
    assert (single_cache / "documents.jsonl").read_text() == (
        dist_cache / "documents.jsonl"
    ).read_text()


def one_process(cache, out, **kw):
    base = {**TRAIN, **kw}
    job = {k: base.pop(k) for k in list(base) if k in TrainJob.__dataclass_fields__}
    wandb = WandbConfig(mode="disabled")
    return train_sae(
        TrainJob(cache=str(cache), out=str(out), wandb=wandb, train=TrainConfig(**base), **job)
    )


def test_data_parallel_matches_one_process_and_ranks_stay_identical(tmp_path, single_cache):
    (ref,) = one_process(single_cache, tmp_path / "one").values()
    out = tmp_path / "ddp"
    torchrun(
        "train", "--cache", str(single_cache), "--out", str(out), *TRAIN_FLAGS.split(),
        "--parallel", "data", "--sync_check_every", "1",
    )  # fmt: skip
    prov = json.loads((out / "emosae.json").read_text())
    c = ActivationCache.open(single_cache)
    n_train = c.n_rows - int(c.meta("context_ids", "eval", 8).numel())
    steps = n_train // 64
    # The ranks compared exact weight checksums after every one of the steps.
    assert prov["parallel"] == {
        "parallel": "data",
        "rank": 0,
        "world_size": 2,
        "sync_checks": steps,
    }
    a = load_file(str(ref / "sae_weights.safetensors"))
    b = load_file(str(out / "sae_weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), (k, (a[k] - b[k]).abs().max())


def test_data_parallel_batchtopk_ranks_stay_identical(tmp_path, single_cache):
    # BatchTopK also carries a running threshold (a buffer) that each rank updates from
    # its own slice: the ranks must still agree, buffers included, after every step.
    out = tmp_path / "btk"
    flags = TRAIN_FLAGS.replace("topk", "batchtopk").split()
    torchrun(
        "train", "--cache", str(single_cache), "--out", str(out), *flags,
        "--parallel", "data", "--sync_check_every", "1",
    )  # fmt: skip
    prov = json.loads((out / "emosae.json").read_text())
    assert prov["parallel"]["sync_checks"] > 10 and prov["sae"]["architecture"] == "batchtopk"


def test_sweep_splits_saes_across_ranks(tmp_path, single_cache):
    ref = one_process(single_cache, tmp_path / "one", sweep_k=(4, 8))
    out = tmp_path / "sweep"
    torchrun(
        "train", "--cache", str(single_cache), "--out", str(out), *TRAIN_FLAGS.split(),
        "--sweep_k", "4", "8",
    )  # fmt: skip
    ranks = {}
    for name, folder in ref.items():
        prov = json.loads((out / name / "emosae.json").read_text())
        ranks[name] = prov["parallel"]["rank"]
        a = load_file(str(folder / "sae_weights.safetensors"))
        b = load_file(str(out / name / "sae_weights.safetensors"))
        for k in a:
            # another process, maybe another thread count: the same float tolerance as
            # data parallel above (the README's atol 1e-5, rtol 1e-4)
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5), (name, k)
    assert sorted(ranks.values()) == [0, 1]


def test_bad_data_parallel_batch_is_one_line_on_every_rank(tmp_path, single_cache):
    r = torchrun(
        "train", "--cache", str(single_cache), "--out", str(tmp_path / "x"), "--batch_size", "63",
        "--parallel", "data", expect_ok=False,
    )  # fmt: skip
    assert r.returncode != 0
    assert "must be a multiple of the 2 ranks" in r.stderr
    assert "emosae[rank 0]: error: data-parallel batch_size 63" in r.stderr
    # No traceback from emosae's own processes (torchrun prints its own summary).
    assert "EmosaeError" not in r.stderr and 'emosae/sae/training.py"' not in r.stderr
    assert not (tmp_path / "x").exists()


def test_pipeline_refuses_several_ranks(monkeypatch, capsys):
    from emosae.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["run", "--preset", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emosae[rank 1]: error: emosae run is a single-process pipeline")
    assert len(err.splitlines()) == 1
