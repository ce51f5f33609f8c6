"""Last-position reads of a batch of sequences: the activation at a hook, or next-token
log-probs, and A/B log-odds from them (for the preference and pressure experiments).
Concept readings built on these live in `emosae.reading`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from emosae.lm.hooks import pad_id, right_pad


@torch.no_grad()
def last_position(
    model: Any,
    seqs: Sequence[torch.Tensor],
    hook: str | Sequence[str] | None,
    *,
    stop_at_layer: int | None = None,
    batch: int = 8,
) -> torch.Tensor:
    """Activation at `hook` [N, D] (several hooks: [N, H, D]; None: log-probs of the
    next token [N, vocab]) at each sequence's last position. Right padding needs no
    mask in a causal model."""
    pad = pad_id(model.tokenizer)
    dev = torch.device(model.cfg.device)
    names = [hook] if isinstance(hook, str) else list(hook or [])
    out = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i : i + batch]
        toks = right_pad(chunk, pad).to(dev)
        last = torch.tensor([len(s) - 1 for s in chunk], device=dev)
        rows = torch.arange(len(chunk), device=dev)
        if hook is None:
            logits = model(toks)
            out.append(logits[rows, last].float().log_softmax(-1).cpu())
        else:
            _, cache = model.run_with_cache(toks, names_filter=names, stop_at_layer=stop_at_layer)
            acts = torch.stack([cache[h][rows, last].float().cpu() for h in names], 1)
            out.append(acts[:, 0] if isinstance(hook, str) else acts)
    return torch.cat(out)


def _letter_ids(model: Any, letter: str) -> list[int]:
    tok = model.tokenizer
    ids = {tok.convert_tokens_to_ids(t) for t in (letter, f"Ġ{letter}", f"▁{letter}")}
    return [i for i in ids if isinstance(i, int) and i != tok.unk_token_id]


def ab_logodds(model: Any, seqs: Sequence[torch.Tensor], batch: int = 8) -> torch.Tensor:
    """log P(A) - log P(B) for the next token after each sequence (space variants summed)."""
    lp = last_position(model, seqs, None, batch=batch)
    a, b = _letter_ids(model, "A"), _letter_ids(model, "B")
    return torch.logsumexp(lp[:, a], 1) - torch.logsumexp(lp[:, b], 1)


def ab_logit_tokens(model: Any, tokens: torch.Tensor) -> float:
    return float(ab_logodds(model, [tokens])[0])
