"""Reading concepts out of a model, token by token: `read(model, text_or_messages,
directions)`.

Units (both centred, so a constant bias never ranks concepts):

  plain text     score_c = (x - center) . unit(v_c) / read_scale
                 `center` is the point the probe vectors were fitted against (the mean
                 over concepts of each concept's mean training-story activation) and
                 `read_scale` one number per layer, the within-concept standard deviation
                 of training-story readings. 0 is "as much as the average concept", and
                 since the scale is shared the ranking of concepts is the probe's own.
  conversation   score_c = (x - chat_center) . unit(v_c) / chat_scale_c
                 a z-score against neutral prompts (the probe stage reads them at the
                 token before the assistant's reply): +2 means two standard deviations
                 above an emotionally flat request, for that concept.

Read position (the paper's): for a conversation, the last token before the assistant's
reply (every token is scored in conversation units); for plain text, the mean over
tokens from the probe's skip on (as stories were read when the probes were fitted).
A text too short for that (fewer than `skip + min_span` tokens, min_span = skip: the
read span would be shorter than the opening it skips) is read as the mean over every
token after the first, the attention sink (`text_read_start`, the one rule for `read`
and `read_many`). The bundled stories are all longer, so they read as before. A text
whose read span holds no readable token (one token, the sink alone, or only control,
format and space characters after it) has nothing to read: it is a one-line error
(`check_readable`), not the sink's or a control character's outsized score.

Shape letters: T tokens, C concepts, D d_model, N prompts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from emosae.core import compat
from emosae.core.errors import EmosaeError
from emosae.lm.chat import Message, check_fits_context, check_text, encode_text, render_chat
from emosae.lm.hooks import stop_layer
from emosae.lm.readout import last_position
from emosae.steering.vector import SteeringVector


def read_hook(vec: SteeringVector) -> str:
    """Where `vec`'s concept is read: its readout's own hook (a vector calibrated to
    steer at another layer), else the hook it steers."""
    return vec.readout.hook if vec.readout and vec.readout.hook else vec.hook_name


def read_unit(vec: SteeringVector) -> Tensor:
    """The unit direction read at `read_hook(vec)`."""
    if vec.readout is not None and vec.readout.unit is not None:
        return vec.readout.unit
    d = vec.direction
    return d / d.norm().clamp_min(1e-12)


@dataclass(frozen=True)
class Basis:
    """Unit directions of several concepts on one hook, with their readout reference:
    for text, a shared centre and scale; for conversations, the neutral-prompt centre and
    each concept's neutral-prompt spread (falling back to the text reference)."""

    hook: str
    concepts: list[str]
    unit: Float[Tensor, "C D"]
    center: Float[Tensor, " D"]
    scale: float
    skip: int
    chat_center: Float[Tensor, " D"]
    chat_scale: Float[Tensor, " C"]

    @classmethod
    def of(cls, directions: Mapping[str, SteeringVector] | Sequence[SteeringVector]) -> Basis:
        vecs = list(directions.values()) if isinstance(directions, Mapping) else list(directions)
        if not vecs:
            raise EmosaeError("no directions to read")
        hooks = {read_hook(v) for v in vecs}
        if len(hooks) > 1:
            raise EmosaeError(f"directions on several hooks ({', '.join(sorted(hooks))}); read one")
        ref = vecs[0].readout
        if ref is None:
            raise EmosaeError(
                f"{vecs[0].concept} ({vecs[0].source}) carries no readout centre; load "
                "directions from a probe folder made by emosae >= 0.2 (emosae.load_directions)"
            )
        for v in vecs[1:]:
            r = v.readout
            if r is None or not torch.equal(r.center, ref.center) or r.scale != ref.scale:
                raise EmosaeError(f"{v.concept} was not fitted against the same centre")
        chat = ref.chat_center if ref.chat_center is not None else ref.center
        return cls(
            hooks.pop(),
            [v.concept for v in vecs],
            torch.stack([read_unit(v) for v in vecs]),
            ref.center,
            float(ref.scale),
            int(ref.skip),
            chat,
            torch.tensor([v.readout.chat_scale or ref.scale for v in vecs]),
        )

    @classmethod
    def single(cls, vec: SteeringVector) -> Basis:
        """One vector's basis; a vector without a readout reference reads uncentred, in
        raw units (fine for differences, such as steered minus unsteered)."""
        if vec.readout is not None:
            return cls.of([vec])
        d = vec.direction
        zero = torch.zeros_like(d)
        unit = (d / d.norm().clamp_min(1e-12))[None]
        return cls(vec.hook_name, [vec.concept], unit, zero, 1.0, 0, zero, torch.ones(1))

    def score(self, acts: Float[Tensor, "T D"], chat: bool = False) -> Float[Tensor, "T C"]:
        """Readings of activations taken from plain text (`chat` False) or from a
        conversation (z-scores against neutral prompts at the reply position)."""
        if chat:
            return (acts.float() - self.chat_center) @ self.unit.T / self.chat_scale
        return (acts.float() - self.center) @ self.unit.T / self.scale


@dataclass(frozen=True)
class Reading:
    """Per-token readings of a text or conversation."""

    tokens: list[str]
    """Each token as text."""
    token_ids: Tensor
    concepts: list[str]
    scores: Float[Tensor, "T C"]
    """Readout units (see the module docstring)."""
    kind: Literal["text", "conversation"]
    read_from: int
    """Conversation: the read position. Text: the first token of the read mean."""
    hook: str

    @property
    def at_read(self) -> Float[Tensor, " C"]:
        """The scores at the paper's read position (text: the mean from `read_from` on,
        the skip, or token 1 for a short text: `text_read_start`)."""
        return at_read_position(self.scores, self.kind, self.read_from)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The k highest concepts at the read position."""
        s = self.at_read
        idx = s.topk(min(k, len(self.concepts))).indices.tolist()
        return [(self.concepts[i], float(s[i])) for i in idx]

    def to_json(self, concepts: Sequence[str] | None = None, digits: int = 3) -> dict[str, Any]:
        """Tokens, scores (of `concepts`, default all; rounded) and read position, as
        json-able data (what the trace page and the report store)."""
        idx = [self.concepts.index(c) for c in concepts] if concepts else range(len(self.concepts))
        idx = list(idx)
        sc = self.scores[:, idx]
        return {
            "tokens": self.tokens,
            "concepts": [self.concepts[j] for j in idx],
            "scores": [[round(float(v), digits) for v in row] for row in sc],
            "at_read": [round(float(v), digits) for v in self.at_read[idx]],
            "kind": self.kind,
            "read_from": self.read_from,
            "hook": self.hook,
        }

    def trace(self, concept: str) -> Float[Tensor, " T"]:
        if concept not in self.concepts:
            raise EmosaeError(f"unknown concept {concept!r}; read: {', '.join(self.concepts)}")
        return self.scores[:, self.concepts.index(concept)]


@torch.no_grad()
def _hook_acts(model: Any, ids: Tensor, hook: str) -> Tensor:
    dev = torch.device(model.cfg.device)
    _, cache = model.run_with_cache(
        ids[None].to(dev), names_filter=[hook], stop_at_layer=stop_layer([hook])
    )
    return cache[hook][0].float().cpu()


def at_read_position(
    scores: Float[Tensor, "T C"], kind: Literal["text", "conversation"], read_from: int
) -> Float[Tensor, " C"]:
    """A conversation's scores at its read position; a text's mean from `read_from` on."""
    return scores[read_from] if kind == "conversation" else scores[read_from:].mean(0)


def text_read_start(n_tokens: int, skip: int, min_span: int | None = None) -> int:
    """First token of a plain text's read mean (the mean runs to its last token): the
    probe's `skip` when at least `min_span` tokens (default: `skip`) follow it, as the
    stories were read; else 1, leaving out only token 0, the attention sink, whose
    outsized activation would swamp a short mean (0 for a one-token text)."""
    span = skip if min_span is None else min_span
    if n_tokens >= skip + max(span, 1):
        return skip
    return min(1, n_tokens - 1)


def _readable(c: str) -> bool:
    """A character that shows something: not a space, nor a control, format or
    unassigned one, nor U+FFFD (what a token holding part of a character decodes to)."""
    return not c.isspace() and c != "\ufffd" and unicodedata.category(c)[0] != "C"


def check_readable(model: Any, ids: Tensor, read_from: int) -> None:
    """One-line error unless the read span of a plain text (from `read_from` on, token 0
    never counted) holds a readable character: otherwise the mean would be the attention
    sink's or a control character's activation, far outside what the probes saw."""
    if any(map(_readable, model.tokenizer.decode(ids[max(read_from, 1) :].tolist()))):
        return
    raise EmosaeError(
        f"nothing to read: after its first token, the text's {len(ids)} token(s) hold no "
        "readable character (only spaces or control characters); a text needs at least one"
    )


def tokens_to_read(
    model: Any, text_or_messages: str | Sequence[Message], skip: int
) -> tuple[Tensor, Literal["text", "conversation"], int]:
    """Token ids of a text (no special tokens, as the probe stage reads stories) or a
    rendered conversation, its kind, and its read position (`Reading.read_from`)."""
    tok = model.tokenizer
    if isinstance(text_or_messages, str):
        check_text(text_or_messages)
        # tokenized as the probe stage reads stories: no special tokens
        ids = torch.tensor(encode_text(tok, text_or_messages), dtype=torch.long)
        if len(ids) == 0:
            raise EmosaeError("empty text")
        check_fits_context(model, len(ids))
        kind, pos = "text", text_read_start(len(ids), skip)
        check_readable(model, ids, pos)
    else:
        chat = render_chat(model, text_or_messages)
        ids, kind, pos = chat.tokens, "conversation", chat.read_pos
    return ids, kind, pos


def read(
    model: Any,
    text_or_messages: str | Sequence[Message],
    directions: Mapping[str, SteeringVector] | Sequence[SteeringVector],
) -> Reading:
    """Read every concept of `directions` at every token of a plain text (a string) or
    a conversation (a list of {role, content} messages; read up to where the assistant's
    reply begins)."""
    basis = Basis.of(directions)
    ids, kind, pos = tokens_to_read(model, text_or_messages, basis.skip)
    scores = basis.score(_hook_acts(model, ids, basis.hook), chat=kind == "conversation")
    return Reading(
        [model.tokenizer.decode([int(i)]) for i in ids],
        ids,
        basis.concepts,
        scores,
        kind,
        pos,
        basis.hook,
    )


@dataclass
class Readout:
    """Batched readings at the reply position of many prompts (the experiments' probe)."""

    model: Any
    basis: Basis

    @property
    def concepts(self) -> list[str]:
        return self.basis.concepts

    @property
    def emotions(self) -> list[str]:
        """Deprecated name of `concepts`."""
        compat.deprecated("Readout.emotions", "Readout.concepts")
        return self.basis.concepts

    @classmethod
    def of(cls, model: Any, directions: Mapping[str, SteeringVector]) -> Readout:
        return cls(model, Basis.of(directions))

    @torch.no_grad()
    def at_reply(self, prompts: Sequence[str], batch: int = 8) -> Float[Tensor, "N C"]:
        """Scores at the last token before the assistant's reply, per prompt."""
        seqs = [render_chat(self.model, p).tokens for p in prompts]
        hook = self.basis.hook
        acts = last_position(self.model, seqs, hook, stop_at_layer=stop_layer([hook]), batch=batch)
        return self.basis.score(acts, chat=True)
