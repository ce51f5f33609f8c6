"""A cache cannot hold what its dtype cannot represent (issue 31): overflow is refused as
the shard is written, the default dtype is measured, and a tampered shard is refused by
its readers. Tiny random models of Gemma 3's architecture whose residual stream is
scaled to a chosen magnitude (Gemma's own exceeds float16 at layer 15)."""

import json

import pytest
import torch

from emosae.core import io
from emosae.core.errors import EmosaeError
from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
from emosae.sae.contexts import CorpusConfig
from emosae.sae.reader import ActivationCache, batch_stream

CORPUS = CorpusConfig(
    sources=("moby_dick",), max_tokens=32 * 12, context_len=32, include_emotion_data=False
)
HOOKS = ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post")


class CharTokenizer:
    """Characters to ids below the tiny model's vocabulary (id 0 ends a document)."""

    eos_token_id = 0
    padding_side = "right"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + ord(c) % 100 for c in text]}


def tiny_gemma(scale: float):
    """Gemma 3's architecture at d_model 32 (local and global attention, q/k norms,
    norms before and after each sublayer), with embeddings of magnitude about `scale`:
    the residual stream carries them, as Gemma's carries its massive activations."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=3,
        d_model=32,
        d_head=8,
        n_heads=4,
        n_key_value_heads=1,
        d_mlp=64,
        n_ctx=64,
        d_vocab=101,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_base=1_000_000,
        rotary_base_local=10_000,
        use_attn_scale=True,
        gated_mlp=True,
        final_rms=True,
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        use_local_attn=True,
        window_size=16,
        attn_types=["local", "local", "global"],
        original_architecture="Gemma3ForCausalLM",
        seed=0,
        device="cpu",
    )
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        model.embed.W_E.copy_(
            torch.randn(model.embed.W_E.shape, generator=torch.Generator().manual_seed(0)) * scale
        )
    model.tokenizer = CharTokenizer()
    return model


def job(out, dtype="auto"):
    cache = CacheConfig(corpus=CORPUS, batch_size=4, contexts_per_shard=5, dtype=dtype)
    return CacheJob(out=str(out), hook_names=HOOKS, cache=cache)


def first_batch_peak(model):
    """Largest |activation| over the cached hooks on the writer's first batch, by hand."""
    from emosae.sae.contexts import iter_contexts

    ctxs = list(iter_contexts(CORPUS, model.tokenizer))[:4]
    _, acts = model.run_with_cache(torch.stack([c.tokens for c in ctxs]), names_filter=list(HOOKS))
    return max(float(acts[h][:, 1:].abs().max()) for h in HOOKS)


@pytest.fixture(scope="module")
def massive():
    return tiny_gemma(1e5)


@pytest.fixture(scope="module")
def tame():
    return tiny_gemma(1.0)


def test_float16_overflow_is_one_line_before_anything_is_sealed(tmp_path, massive):
    peak = first_batch_peak(massive)
    assert peak > 65504  # the model really exceeds float16
    with pytest.raises(EmosaeError) as e:
        cache_activations(job(tmp_path / "c", "float16"), massive)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("shard_00000.safetensors: blocks.0.hook_resid_post has ")
    assert "non-finite values (largest magnitude seen " in msg
    assert "float16 holds at most 65504; cache with --dtype bfloat16 or float32" in msg
    seen = float(msg.split("largest magnitude seen ")[1].split(")")[0])
    assert seen >= peak * (1 - 1e-5)  # the shard's peak, measured before storing
    out = tmp_path / "c"
    assert not list(out.glob("shard_*")) and not (out / "manifest.json").exists()
    with pytest.raises(EmosaeError, match="not a finished activation cache"):
        ActivationCache.open(out)


@pytest.mark.parametrize(
    "scale, want", [(1.0, "float16"), (1e5, "bfloat16"), (1e37, "bfloat16"), (3e37, "float32")]
)
def test_auto_dtype_from_the_first_batch(tmp_path, scale, want):
    model = tiny_gemma(scale)
    peak = first_batch_peak(model)
    c = ActivationCache.open(cache_activations(job(tmp_path / "c"), model))
    choice = c.manifest["dtype_choice"]
    assert c.manifest["dtype"] == want and choice["asked"] == "auto"
    assert choice["first_batch_max_abs"] == pytest.approx(peak, rel=1e-6)
    assert choice["headroom"] == 8 and choice["first_batch_contexts"] == 4
    limit = {"float16": 65504.0, "bfloat16": torch.finfo(torch.bfloat16).max}
    assert want == "float32" or peak * 8 < limit[want]  # fits with the headroom
    rows = c.rows(HOOKS[1])
    assert rows.dtype == torch.float32 and torch.isfinite(rows).all()
    peaks = [s["max_abs"][h] for s in c.manifest["shards"] for h in HOOKS]
    assert max(peaks) == pytest.approx(
        float(c.rows(HOOKS[0]).abs().max().clamp_min(rows.abs().max())), rel=1e-2
    )


def test_a_model_that_makes_non_finite_values_is_refused_before_writing(tmp_path):
    with pytest.raises(
        EmosaeError,
        match=r"^the first batch's blocks.0.hook_resid_post has \d+ "
        r"non-finite values .*; the model itself makes them$",
    ):
        cache_activations(job(tmp_path / "c"), tiny_gemma(1e38))  # its embeddings overflow
    out = tmp_path / "c"
    assert not (out / "config.json").exists() and not list(out.glob("shard_*"))


def test_rerun_keeps_the_recorded_dtype(tmp_path, massive):
    out = cache_activations(job(tmp_path / "c"), massive)
    first = (out / "manifest.json").read_text()
    cache_activations(job(out), massive)  # auto again: resumes with bfloat16, no remeasuring
    assert json.loads((out / "manifest.json").read_text())["dtype"] == "bfloat16"
    assert json.loads(first)["shards"] == json.loads((out / "manifest.json").read_text())["shards"]
    with pytest.raises(EmosaeError, match=r"different config \(dtype\)"):
        cache_activations(job(out, "float32"), massive)


def tamper(folder, shard=1, hook=HOOKS[1]):
    """Write inf into one value of `shard` and fix the manifest's sha256 to match, as an
    older writer (no check) would have sealed it."""
    from safetensors.torch import load_file, save_file

    p = folder / f"shard_{shard:05d}.safetensors"
    t = load_file(str(p))
    t[hook][3, 5] = float("inf")
    t[hook][7, 1] = float("-inf")
    save_file(t, str(p))
    man = io.read_json(folder / "manifest.json")
    man["shards"][shard]["sha256"] = io.sha256_file(p)
    io.write_json(folder / "manifest.json", man)
    return float(t[hook][torch.isfinite(t[hook])].abs().max())


def test_tampered_shard_is_refused_by_its_readers(tmp_path, tame):
    out = cache_activations(job(tmp_path / "c"), tame)
    ActivationCache.open(out)  # clean
    largest = tamper(out)
    want = (
        "shard_00001.safetensors: blocks.2.hook_resid_post has 2 non-finite values "
        f"(largest finite magnitude {largest:.6g}); this cache holds values its dtype "
        "(float16) could not; recache it (the default dtype, auto, picks one wide enough)"
    )
    with pytest.raises(EmosaeError) as e:
        ActivationCache.open(out)
    assert str(e.value) == want
    c = ActivationCache.open(out, verify=False)  # readers that skip verification refuse too
    for read in (
        lambda: c.rows(HOOKS[1]),
        lambda: c.shard_rows(1, HOOKS[1]),
        lambda: [next(batch_stream(c, HOOKS[1], 8, split="all")) for _ in range(12)],
    ):
        with pytest.raises(EmosaeError) as e:
            read()
        assert str(e.value) == want
    # the other hook of the same shard, and other shards, still read
    assert (
        torch.isfinite(c.rows(HOOKS[0])).all() and torch.isfinite(c.shard_rows(0, HOOKS[1])).all()
    )
