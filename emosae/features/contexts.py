"""Top-activating contexts of SAE features, in the activation cache and in the story
tokens: each row is the activating token with the tokens around it (never across a
context or story boundary), the activation and where it came from.

Shape letters: T tokens (rows), F features, K contexts kept per feature.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from emosae.features.labels import LabelConfig


def context_row(
    tokenizer: Any, ids: list[int], k: int, activation: float, source: str
) -> dict[str, Any]:
    """One context: the tokens `ids` with the activating token at index `k`."""
    return {
        "activation": activation,
        "source": source,
        "before": tokenizer.decode(ids[:k]),
        "token": tokenizer.decode(ids[k : k + 1]),
        "after": tokenizer.decode(ids[k + 1 :]),
    }


def row_window(r: int, lo: int, hi: int, width: int) -> tuple[int, int]:
    """Rows [a, b) within `width` of row `r`, clipped to the segment [lo, hi)."""
    return max(r - width, lo), min(r + width + 1, hi)


@torch.no_grad()
def top_k_rows(
    acts_of: Any, n_rows_batches: Any, feats: list[int], k: int
) -> tuple[Tensor, Tensor]:
    """Running top-k over batches: `acts_of(batch)` gives [rows, F] activations of the
    features `feats`; `n_rows_batches` yields batches in row order. Returns the top
    values and global row indices, both [K, F]."""
    best_v = torch.full((k, len(feats)), -1.0)
    best_i = torch.zeros((k, len(feats)), dtype=torch.long)
    offset = 0
    for batch in n_rows_batches:
        a = acts_of(batch)
        v = torch.cat([best_v, a])
        rows = torch.arange(offset, offset + len(a))
        idx = torch.cat([best_i, rows[:, None].expand(-1, len(feats))])
        top = v.topk(k, dim=0)
        best_v, best_i = top.values, idx.gather(0, top.indices)
        offset += len(a)
    return best_v, best_i


def cache_batches(cache: Any, hook: str, batch: int):
    for shard in range(len(cache.manifest["shards"])):  # one shard in memory at a time
        x = cache.shard_rows(shard, hook)
        for i in range(0, len(x), batch):
            yield x[i : i + batch]


@torch.no_grad()
def top_cache_contexts(
    sae: Any,
    cache: Any,
    hook: str,
    feats: list[int],
    tokenizer: Any,
    cfg: LabelConfig,
    batch: int = 8192,
) -> dict[int, list[dict[str, Any]]]:
    """Top-activating rows of each feature across the whole activation cache, with
    the surrounding tokens of the same context and the activating token marked."""
    if not feats:
        return {}
    dev = next(sae.parameters()).device
    fidx = torch.tensor(feats)
    best_v, best_i = top_k_rows(
        lambda x: sae.encode(x.to(dev)).cpu()[:, fidx],
        cache_batches(cache, hook, batch),
        feats,
        cfg.top_contexts,
    )
    toks, ctx, doc_ids = cache.meta("tokens"), cache.meta("context_ids"), cache.meta("doc_ids")
    docs = cache.documents()
    out = {}
    for j, f in enumerate(feats):
        rows = []
        for v, r in zip(best_v[:, j].tolist(), best_i[:, j].tolist(), strict=True):
            if v <= 0:
                continue
            lo, hi = row_window(r, 0, len(toks), cfg.context_window)
            same = ctx[lo:hi] == ctx[r]
            d = int(doc_ids[r])
            src = docs[d]["source"] if d < len(docs) else "?"
            rows.append(
                context_row(
                    tokenizer, toks[lo:hi][same].tolist(), int(same[: r - lo].sum()), v, src
                )
            )
        out[f] = rows
    return out


@torch.no_grad()
def top_story_contexts(
    sae: Any,
    token_acts_TD: Tensor,
    lens_S: Tensor,
    ids_T: Tensor,
    story_ids: list[str],
    feats: list[int],
    tokenizer: Any,
    cfg: LabelConfig,
) -> dict[int, list[dict[str, Any]]]:
    """Top-activating story tokens of each feature, with the story around them."""
    if not feats:
        return {}
    acts = sae.encode(token_acts_TD.float())[:, feats]
    starts = torch.cumsum(lens_S, 0) - lens_S
    story_of = torch.repeat_interleave(torch.arange(len(starts)), lens_S)
    out = {}
    for j, f in enumerate(feats):
        top = acts[:, j].topk(min(cfg.top_contexts, len(acts)))
        rows = []
        for v, r in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if v <= 0:
                continue
            s = int(story_of[r])
            lo, hi = row_window(r, int(starts[s]), int(starts[s] + lens_S[s]), cfg.context_window)
            ids = ids_T[lo:hi].tolist()
            rows.append(context_row(tokenizer, ids, r - lo, v, f"story:{story_ids[s]}"))
        out[f] = rows
    return out
