"""What the studio page draws for a conversation: every message's content tokens with
their concept scores, the scores at each assistant turn's read position, and (with a
run) the top SAE features at each token.

The whole conversation, the last reply included, is read once by the unsteered model
with `emosae.read`, in conversation z-units (a z-score against neutral prompts at the
reply position; see `emosae.reading.trace`). The read position of assistant turn i is
the token before that reply: the last token of the conversation up to turn i rendered
with the generation prompt (`render_chat(messages[:i])`). Template tokens (role
markers, the default system prompt) are read but not drawn: a token belongs to the
message whose content its first character falls in.

Shape letters: T tokens, C concepts, D d_model, F SAE features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from emosae.core.errors import EmosaeError
from emosae.core.layout import DashboardFiles, RunLayout
from emosae.core.log import logger
from emosae.features.labels import load_labels
from emosae.lm.chat import Message, render_chat
from emosae.lm.hooks import stop_layer
from emosae.reading.trace import read
from emosae.steering.vector import SteeringVector

TOP_FEATURES = 5
"""SAE features listed per token (those active, largest first)."""
DIGITS = 2


@dataclass(frozen=True)
class Features:
    """A run's SAE, its feature labels and its dashboard pages (read-only)."""

    sae: Any
    hook: str
    labels: Mapping[int, str]
    pages: DashboardFiles

    @classmethod
    def of_run(cls, run: str | Path) -> Features:
        from emosae.sae.training import load_sae

        layout = RunLayout(Path(run))
        if not layout.sae.cfg.exists():
            raise EmosaeError(f"{run} has no SAE ({layout.sae.cfg} is missing); --run takes a run")
        sae = load_sae(layout.sae.dir)
        lab = layout.labels.labels
        feats = load_labels(lab).get("features", {}) if lab.exists() else {}
        labels = {int(f): str(d.get("label", "")) for f, d in feats.items()}
        if not layout.dashboard.index.exists():
            logger.warning("no dashboard in %s: features are listed without pages", run)
        return cls(sae, sae.cfg.metadata.hook_name, labels, layout.dashboard)

    def page(self, feature: int) -> Path | None:
        """The dashboard page of `feature`, if the run has one (paths built here from the
        integer, never taken from a client)."""
        p = self.pages.feature(int(feature))
        return p if p.is_file() else None

    def index(self) -> Path | None:
        return self.pages.index if self.pages.index.is_file() else None

    @torch.no_grad()
    def top(self, model: Any, ids: Tensor, rows: Sequence[int]) -> list[list[list]]:
        """Per token of `rows`: [[feature, activation, label, has page], ...], the top
        active features of the run's SAE at its hook."""
        if not rows:
            return []
        dev = torch.device(model.cfg.device)
        _, cache = model.run_with_cache(
            ids[None].to(dev), names_filter=[self.hook], stop_at_layer=stop_layer([self.hook])
        )
        acts_TD = cache[self.hook][0, list(rows)].float()
        sae_dev = next(self.sae.parameters()).device
        codes_TF = self.sae.encode(acts_TD.to(sae_dev)).float().cpu()
        val, idx = codes_TF.topk(min(TOP_FEATURES, codes_TF.shape[1]), dim=1)
        out = []
        for vs, fs in zip(val.tolist(), idx.tolist(), strict=True):
            out.append(
                [
                    [f, round(v, DIGITS), self.labels.get(f, ""), self.page(f) is not None]
                    for v, f in zip(vs, fs, strict=True)
                    if v > 0
                ]
            )
        return out


def char_offsets(tokenizer: Any, text: str, ids: Tensor) -> list[int]:
    """The character where each token of `ids` (the tokens of `text`, perhaps after a
    BOS) starts in `text`."""
    n_bos = 0
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in enc["offset_mapping"]]
        n_bos = len(ids) - len(enc["input_ids"])
    except (NotImplementedError, KeyError, TypeError):  # a slow tokenizer: decode lengths
        starts, pos = [], 0
        for t in ids.tolist():
            starts.append(pos)
            pos += len(tokenizer.decode([t]))
    return [-1] * n_bos + starts


def content_spans(model: Any, text: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
    """Each message's content as a character span of the rendered `text`: the
    conversation is rendered again with a unique marker for each content, and the
    markers' places shifted by the lengths of the contents before them. A template that
    does not insert contents verbatim falls back to searching each content in order
    (an empty or missing content gets an empty span)."""
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    marked = render_chat(
        model, [{**m, "content": k} for m, k in zip(messages, marks, strict=True)]
    ).text
    spans, shift = [], 0
    for m, k in zip(messages, marks, strict=True):
        at = marked.find(k) + shift
        spans.append((at, at + len(m["content"])))
        shift += len(m["content"]) - len(k)
    if all(text[a:b] == m["content"] for (a, b), m in zip(spans, messages, strict=True)):
        return spans
    spans, cursor = [], 0
    for m in messages:
        at = text.find(m["content"], cursor) if m["content"] else -1
        spans.append((at, at + len(m["content"])) if at >= 0 else (cursor, cursor))
        cursor = max(cursor, spans[-1][1])
    return spans


def _pieces(text: str, starts: list[int], rows: list[int], end: int) -> list[str]:
    """Each token's text, cut from `text` at the tokens' first characters: a character
    split over several tokens shows whole on the last of them (the others are empty)
    rather than as replacement characters on each."""
    cuts = [starts[t] for t in rows] + [end]
    return [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def _rounded(row: Tensor) -> list[float]:
    return [round(float(v), DIGITS) for v in row]


def read_conversation(
    model: Any,
    messages: Sequence[Message],
    vecs: Mapping[str, SteeringVector],
    features: Features | None = None,
) -> dict[str, Any]:
    """The page's data for `messages` (see the module docstring): {"messages": [{role,
    tokens, scores, features}], "reads": [{message, scores}]}, scores in the order of
    `vecs`."""
    reading = read(model, messages, vecs)
    chat = render_chat(model, messages)  # contents as text: not re-tokenized from `text`
    text = chat.text
    starts = list(chat.starts) or char_offsets(model.tokenizer, text, reading.token_ids)
    if len(starts) != len(reading.tokens):
        raise EmosaeError("could not align the conversation's tokens with its text")
    spans = content_spans(model, text, messages)
    rows_of: list[list[int]] = [[] for _ in messages]
    for t, c in enumerate(starts):
        for i, (a, b) in enumerate(spans):
            if a <= c < b:
                rows_of[i].append(t)
                break
    flat = [t for rows in rows_of for t in rows]
    feats = features.top(model, reading.token_ids, flat) if features else [[] for _ in flat]
    feat_of = dict(zip(flat, feats, strict=True))
    out = []
    for m, rows, span in zip(messages, rows_of, spans, strict=True):
        out.append(
            {
                "role": m["role"],
                "tokens": _pieces(text, starts, rows, span[1]),
                "scores": [_rounded(reading.scores[t]) for t in rows],
                "features": [feat_of[t] for t in rows],
            }
        )
    reads = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and i > 0:
            pos = len(render_chat(model, messages[:i]).tokens) - 1
            reads.append({"message": i, "scores": _rounded(reading.scores[pos])})
    return {"messages": out, "reads": reads}
