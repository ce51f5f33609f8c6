import json

import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.core.tracking import WandbConfig
from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
from emosae.sae.config import SAEConfig, TrainConfig, TrainJob
from emosae.sae.contexts import CorpusConfig
from emosae.sae.metrics import reconstruction_metrics
from emosae.sae.reader import ActivationCache
from emosae.sae.training import load_sae, train_sae

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, real_model):
    out = tmp_path_factory.mktemp("tcache")
    cache_activations(
        CacheJob(
            out=str(out),
            layers=(2,),
            cache=CacheConfig(
                corpus=CorpusConfig(max_tokens=64 * 48, context_len=64), contexts_per_shard=16
            ),
        ),
        real_model,
    )
    return out


def tcfg(cache_dir, out, **kw):
    base = dict(
        cache=str(cache_dir),
        out=str(out),
        sae=SAEConfig(d_sae=256, k=16),
        epochs=2,
        batch_size=128,
        eval_contexts=2,
        eval_every=8,
        wandb=WandbConfig(mode="offline", dir=str(out.parent)),
    )
    base.update(kw)
    job = {k: base.pop(k) for k in list(base) if k in TrainJob.__dataclass_fields__}
    return TrainJob(train=TrainConfig(**base), **job)


def test_train_saves_sae_lens_checkpoint_with_provenance(tmp_path, cache_dir, real_model):
    from sae_lens import SAE

    res = train_sae(tcfg(cache_dir, tmp_path / "sae", epochs=8, lr=1e-3), model=real_model)
    folder = res["batchtopk_256_k16"]
    sae = SAE.load_from_disk(str(folder))
    assert sae.cfg.d_in == 576 and sae.cfg.d_sae == 256
    prov = json.loads((folder / "emosae.json").read_text())
    assert prov["hook"] == "blocks.2.hook_resid_post" and prov["model"] == "smollm2-135m-instruct"
    assert len(prov["cache_manifest_sha256"]) == 64 and prov["train"]["sae"]["k"] == 16
    m = json.loads((folder / "metrics.json").read_text())
    for k in ("explained_variance", "fvu", "l0", "dead_fraction", "ce_loss_recovered", "kl_div"):
        assert k in m
    assert abs(m["explained_variance"] + m["fvu"] - 1) < 1e-9
    # metrics recomputed by hand on the held-out rows
    x = ActivationCache.open(cache_dir).rows("blocks.2.hook_resid_post", "eval", 8)
    again = reconstruction_metrics(load_sae(folder), x)
    assert again["fvu"] == pytest.approx(m["fvu"], rel=1e-6)
    f = sae.encode(x)
    assert again["l0"] == pytest.approx((f != 0).float().sum(1).mean().item(), rel=1e-6)
    assert m["ce_clean"] < m["ce_sae"] <= m["ce_zero_ablation"] + 1e-6
    assert m["explained_variance"] > 0.3  # it learned something


def test_decode_encode_equals_forward(tmp_path, cache_dir, real_model):
    folder = train_sae(tcfg(cache_dir, tmp_path / "s2", epochs=0.5, eval_contexts=0))[
        "batchtopk_256_k16"
    ]
    sae = load_sae(folder)
    x = ActivationCache.open(cache_dir).rows("blocks.2.hook_resid_post")[:64]
    assert torch.allclose(sae.decode(sae.encode(x)), sae(x), atol=1e-5)


def test_sweep_trains_one_sae_per_k(tmp_path, cache_dir):
    res = train_sae(
        tcfg(cache_dir, tmp_path / "sweep", sweep_k=(8, 32), epochs=0.5, eval_contexts=0)
    )
    assert set(res) == {"batchtopk_256_k8", "batchtopk_256_k32"}
    l0 = {k: json.loads((v / "metrics.json").read_text())["l0"] for k, v in res.items()}
    assert l0["batchtopk_256_k8"] < l0["batchtopk_256_k32"]


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "standard"])
def test_other_architectures_train(tmp_path, cache_dir, arch):
    res = train_sae(
        tcfg(
            cache_dir,
            tmp_path / arch,
            sae=SAEConfig(architecture=arch, d_sae=128, k=8),
            epochs=0.5,
            eval_contexts=0,
        )
    )
    (folder,) = res.values()
    assert load_sae(folder).cfg.d_sae == 128


def test_bad_inputs(tmp_path, cache_dir):
    with pytest.raises(EmosaeError, match="not in the cache"):
        train_sae(tcfg(cache_dir, tmp_path / "a", hook="blocks.9.hook_resid_post"))
    with pytest.raises(EmosaeError, match="not a finished activation cache"):
        train_sae(tcfg(tmp_path / "nowhere", tmp_path / "b"))
    with pytest.raises(EmosaeError, match="not an SAE checkpoint"):
        load_sae(tmp_path)


def test_wandb_never_fails_training(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "")
    res = train_sae(
        tcfg(
            cache_dir,
            tmp_path / "w",
            epochs=0.25,
            eval_contexts=0,
            wandb=WandbConfig(mode="online", dir=str(tmp_path)),
        )
    )
    assert (next(iter(res.values())) / "cfg.json").exists()
