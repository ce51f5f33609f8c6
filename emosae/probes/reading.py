"""Residual activations of the emotion stories and neutral dialogues, for probes and
feature labels.

Each story is read as plain text; its activation at a layer is the mean over tokens
from `skip` on (the emotions paper averages from about the 50th token of longer
stories; ours are ~170 tokens, so the default skips 20: the opening sets the scene
before the emotion shows, and position 0 is an attention sink). Sequences are batched
with right padding, which needs no attention mask in a causal model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from emosae.core.errors import EmosaeError
from emosae.lm.hooks import pad_id, right_pad, stop_layer


class TextActs(NamedTuple):
    means: Float[Tensor, "n h d"]
    """Mean activation per text and hook over tokens from `skip` on."""
    tokens_acts: list[Tensor] | None
    """Per-token activations [len - skip, d] of `keep_tokens_of`, per text."""
    token_ids: list[Tensor]
    """Token ids of every text."""
    samples: Tensor | None
    """Sampled token activations [m, h, d] (with `sample_per_text`)."""


@dataclass(frozen=True)
class ReadConfig:
    """How texts are read for probing."""

    skip: int = 20
    """Leading tokens of each story left out of its mean."""
    batch_size: int = 8
    max_tokens: int = 256
    """Texts are truncated to this many tokens."""

    def __post_init__(self):
        if self.skip < 0 or self.batch_size < 1 or self.max_tokens < 2:
            raise EmosaeError("read: skip >= 0, batch_size >= 1 and max_tokens >= 2 needed")


def _tokenize(model: Any, texts: Sequence[str], max_tokens: int) -> list[Tensor]:
    tok = model.tokenizer
    return [torch.tensor(tok(t, add_special_tokens=False)["input_ids"][:max_tokens]) for t in texts]


@torch.no_grad()
def read_texts(
    model: Any,
    texts: Sequence[str],
    hooks: Sequence[str],
    cfg: ReadConfig,
    *,
    keep_tokens_of: str | None = None,
    sample_per_text: int = 0,
    desc: str = "reading",
) -> TextActs:
    """Mean activation per text and hook over tokens >= skip.

    `keep_tokens_of`: also keep that hook's per-token activations (from skip on).
    `sample_per_text`: also keep up to this many evenly spaced token activations of
    every hook per text (for token-level PCA of neutral text).
    """
    seqs = _tokenize(model, texts, cfg.max_tokens)
    pad = pad_id(model.tokenizer)
    stop = stop_layer(hooks)
    dev = torch.device(model.cfg.device)
    means = torch.zeros(len(texts), len(hooks), model.cfg.d_model)
    per_tok: list[Tensor] | None = [torch.empty(0)] * len(texts) if keep_tokens_of else None
    samples: list[Tensor] = []
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    store: dict[str, Tensor] = {}

    def grab(x: Tensor, hook: Any) -> None:
        store[hook.name] = x.detach().float().cpu()

    for b in tqdm(range(0, len(order), cfg.batch_size), desc=desc, leave=False):
        idx = order[b : b + cfg.batch_size]
        toks = right_pad([seqs[i] for i in idx], pad)
        with model.hooks(fwd_hooks=[(h, grab) for h in hooks]):
            model(toks.to(dev), stop_at_layer=stop)
        for r, i in enumerate(idx):
            L = len(seqs[i])
            s = min(cfg.skip, max(L - 1, 0))
            for j, h in enumerate(hooks):
                means[i, j] = store[h][r, s:L].mean(0)
            if per_tok is not None:
                per_tok[i] = store[keep_tokens_of][r, s:L].clone()
            if sample_per_text:
                pos = torch.linspace(s, L - 1, min(sample_per_text, L - s)).long()
                samples.append(torch.stack([store[h][r, pos] for h in hooks], 1))
    return TextActs(means, per_tok, seqs, torch.cat(samples) if samples else None)
