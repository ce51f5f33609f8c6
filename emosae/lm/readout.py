"""Reading emotions out of a model: projections of the residual stream at the token
before the assistant's reply onto unit emotion vectors, and next-token A/B log-odds
(for the preference and pressure experiments)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emosae.lm.chat import render_chat
from emosae.lm.hooks import pad_id, right_pad, stop_layer


@dataclass
class Readout:
    """Probe readout: projections of the residual at one layer onto unit emotion vectors."""

    model: Any
    hook: str
    vecs_ED: torch.Tensor
    emotions: list[str]

    def __post_init__(self):
        self.unit = self.vecs_ED / self.vecs_ED.norm(dim=1, keepdim=True)

    @torch.no_grad()
    def at_reply(self, prompts: Sequence[str], batch: int = 8) -> torch.Tensor:
        """[n_prompts, E] projections at the last token before the assistant's reply."""
        seqs = [render_chat(self.model, p).tokens for p in prompts]
        acts = last_position(
            self.model, seqs, self.hook, stop_at_layer=stop_layer([self.hook]), batch=batch
        )
        return acts @ self.unit.T


@torch.no_grad()
def last_position(
    model: Any,
    seqs: Sequence[torch.Tensor],
    hook: str | None,
    *,
    stop_at_layer: int | None = None,
    batch: int = 8,
) -> torch.Tensor:
    """Activation at `hook` (or, with hook None, log-probs of the next token) at each
    sequence's last position. Right padding needs no mask in a causal model."""
    pad = pad_id(model.tokenizer)
    dev = torch.device(model.cfg.device)
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
            _, cache = model.run_with_cache(toks, names_filter=[hook], stop_at_layer=stop_at_layer)
            out.append(cache[hook][rows, last].float().cpu())
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
