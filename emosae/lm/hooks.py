"""Hook names and batching for TransformerLens models: the one place that builds or
parses a hook name, and the one right-padding helper.

emosae reads and steers the residual stream after a block, `blocks.{L}.hook_resid_post`.
Other TransformerLens hook names are accepted where a model has them (e.g.
`blocks.3.hook_resid_mid`, `hook_embed`); a name that cannot be parsed gives the same
one-line error everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from emosae.core.errors import EmosaeError

_BLOCK = re.compile(r"^blocks\.(\d+)\.[A-Za-z_][\w.]*$")
_TOP = re.compile(r"^hook_[A-Za-z_]\w*$")


def resid_hook(layer: int) -> str:
    """The residual stream after block `layer`."""
    return f"blocks.{int(layer)}.hook_resid_post"


def hook_layer(hook: str) -> int:
    """Block index of a `blocks.{L}.…` hook; hooks before the first block (`hook_embed`,
    `hook_pos_embed`) count as layer 0. A malformed name is a one-line error."""
    if m := _BLOCK.match(hook):
        return int(m.group(1))
    if _TOP.match(hook):
        return 0
    raise EmosaeError(
        f"malformed hook name {hook!r}; expected e.g. {resid_hook(15)!r} or 'hook_embed'"
    )


def block_layer(hook: str) -> int | None:
    """Block index of a `blocks.{L}.…` hook, None for a hook outside the blocks."""
    hook_layer(hook)  # one-line error for a malformed name
    m = _BLOCK.match(hook)
    return int(m.group(1)) if m else None


def check_hooks(model: Any, hooks: Sequence[str]) -> list[str]:
    """Hook names the model has, else a one-line error naming the valid layers."""
    n = model.cfg.n_layers
    for h in hooks:
        hook_layer(h)
        if h not in model.hook_dict:
            raise EmosaeError(f"unknown hook {h!r}; e.g. {resid_hook(0)} .. {resid_hook(n - 1)}")
    return list(hooks)


def check_layers(n_layers: int, layers: Sequence[int]) -> list[int]:
    """`layers` sorted and unique; one-line error for a layer out of range (or none)."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise EmosaeError(
            f"layer {bad or list(layers)} out of range: valid layers are 0..{n_layers - 1}"
        )
    return sorted(set(layers))


def resid_hooks(model: Any, layers: Sequence[int]) -> list[str]:
    """Residual hooks of `layers` (sorted, unique); one-line error for a layer out of range."""
    return [resid_hook(layer) for layer in check_layers(model.cfg.n_layers, layers)]


def stop_layer(hooks: Sequence[str]) -> int:
    """`stop_at_layer` for a forward that only needs `hooks`."""
    return max(hook_layer(h) for h in hooks) + 1


def pad_id(tokenizer: Any) -> int:
    """The id used for right padding: EOS (never attended to in a causal model); 0 for a
    model without a tokenizer."""
    return getattr(tokenizer, "eos_token_id", None) or 0


def right_pad(seqs: Sequence[Tensor], pad: int) -> Int[Tensor, "batch pos"]:
    """Stack 1-D token tensors, right-padded with `pad`. Right padding needs no
    attention mask in a causal model: real tokens never see the padding."""
    toks = torch.full((len(seqs), max(len(s) for s in seqs)), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        toks[i, : len(s)] = s
    return toks


def left_pad(seqs: Sequence[Tensor], pad: int) -> tuple[Tensor, Tensor]:
    """Stack 1-D token tensors left-padded with `pad`, so that all end at the same
    position (a batch of prompts whose next token is the reply's first), and the
    attention mask (0 on padding). TransformerLens's `generate(..., padding_side="left")`
    masks the leading pads itself; a forward needs the mask passed."""
    width = max(len(s) for s in seqs)
    toks = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        toks[i, width - len(s) :], mask[i, width - len(s) :] = s, 1
    return toks, mask


def right_pad_mask(seqs: Sequence[Tensor]) -> Int[Tensor, "batch pos"]:
    """The attention mask of `right_pad(seqs, ...)`: 1 on real tokens, 0 on padding.
    Passing it explicitly keeps a pad id that is also a real token (EOS is `<|im_end|>`
    in ChatML models) from being taken for padding."""
    lens = torch.tensor([len(s) for s in seqs])
    return (torch.arange(int(lens.max()))[None] < lens[:, None]).long()


@torch.no_grad()
def padded_hook_acts(
    model: Any, seqs: Sequence[Tensor], hooks: Sequence[str], batch_size: int = 16
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """(index, {hook: [T, d] activations}) of every 1-D token sequence, run in
    length-sorted right-padded batches with their explicit mask, one forward per batch
    for all `hooks` (stopping after the last one needed). Batched = alone within 1e-4."""
    dev = torch.device(model.cfg.device)
    pad = pad_id(getattr(model, "tokenizer", None))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        chunk = [seqs[i] for i in idx]
        _, cache = model.run_with_cache(
            right_pad(chunk, pad).to(dev),
            attention_mask=right_pad_mask(chunk).to(dev),
            names_filter=list(hooks),
            stop_at_layer=stop_layer(hooks),
        )
        for r, i in enumerate(idx):
            yield i, {h: cache[h][r, : len(seqs[i])] for h in hooks}
