"""Reading many records at once: `read_many(model, records, directions)` yields, per
record, the scores at its read position, equal to `emosae.read(...).at_read` of the same
record (to float rounding; tested to 1e-4), and with `per_turn` one score set per
assistant turn of a conversation, read at the token before that turn.

Records are taken in chunks of the input order. Within a chunk the sequences are sorted
by length (so a batch holds similar lengths and little padding) and right-padded with
`lm.hooks.right_pad`, with its explicit mask: in a causal model a real token never
attends to the padding after it, and only real positions are read. Rows come back in
input order. A conversation's assistant turns are read in the same forward as the whole
conversation where its rendering up to the turn is a token prefix of the whole (true of
ChatML templates); otherwise that prefix is read as a sequence of its own.

Shape letters: B batch, T tokens, C concepts, D d_model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from emosae.core.errors import EmosaeError
from emosae.lm.chat import Message, as_messages, render_chat
from emosae.lm.hooks import padded_hook_acts
from emosae.reading.trace import Basis, at_read_position, tokens_to_read
from emosae.steering.vector import SteeringVector

Kind = Literal["text", "conversation"]


@dataclass(frozen=True)
class Record:
    """One thing to read: a plain text or a conversation, with its id."""

    id: str | int
    what: str | list[Message]

    @property
    def kind(self) -> Kind:
        return "text" if isinstance(self.what, str) else "conversation"

    @classmethod
    def of(cls, item: Any, default_id: str | int) -> Record:
        """A Record, a string (a text), a list of messages, or a dict with `text` or
        `messages` and an optional `id`."""
        if isinstance(item, Record):
            return item
        if isinstance(item, str):
            return cls(default_id, item)
        if isinstance(item, Mapping):
            rid = item.get("id", default_id)
            if isinstance(rid, bool) or not isinstance(rid, (str, int)):
                raise EmosaeError(f"'id' must be a string or an integer, not {rid!r}")
            if ("text" in item) == ("messages" in item):
                raise EmosaeError("a record needs exactly one of 'text' and 'messages'")
            if "text" in item:
                if not isinstance(item["text"], str) or not item["text"].strip():
                    raise EmosaeError("'text' must be a non-empty string")
                return cls(rid, item["text"])
            return cls(rid, _messages(item["messages"]))
        if isinstance(item, (list, tuple)):
            return cls(default_id, _messages(item))
        raise EmosaeError(f"a record is a text, a list of messages or a dict, not {item!r:.60}")


def _messages(msgs: Any) -> list[Message]:
    if not isinstance(msgs, (list, tuple)):
        raise EmosaeError(f"'messages' must be a list of {{role, content}} dicts, not {msgs!r:.60}")
    return as_messages(list(msgs))


class Plan(NamedTuple):
    """The token sequences one record needs."""

    tokens: Int[Tensor, " T"]
    kind: Kind
    read_from: int
    """Conversation: the read position; text: the first token of the read mean."""
    turns: list[tuple[int, int]]
    """(message index, position in `tokens`) of each assistant turn read in place."""
    extra: list[tuple[int, Tensor]]
    """(message index, tokens) of turns read as sequences of their own."""


class Trace(NamedTuple):
    """Per-token scores of a record's whole sequence."""

    tokens: Int[Tensor, " T"]
    scores: Float[Tensor, "T C"]
    kind: Kind
    read_from: int


def plan_record(model: Any, rec: Record, skip: int, per_turn: bool = False) -> Plan:
    """Tokenize a record as `emosae.read` does, and place its assistant turns."""
    ids, kind, pos = tokens_to_read(model, rec.what, skip)
    turns: list[tuple[int, int]] = []
    extra: list[tuple[int, Tensor]] = []
    if per_turn and kind == "conversation":
        for i, m in enumerate(rec.what):
            if m["role"] != "assistant" or i == 0:
                continue  # a turn with nothing before it has no token to read
            pre = render_chat(model, rec.what[:i]).tokens
            if len(pre) <= len(ids) and torch.equal(ids[: len(pre)], pre):
                turns.append((i, len(pre) - 1))
            else:
                extra.append((i, pre))
    return Plan(ids, kind, pos, turns, extra)


def _on(basis: Basis, dev: torch.device) -> Basis:
    return dataclasses.replace(
        basis,
        unit=basis.unit.to(dev),
        center=basis.center.to(dev),
        chat_center=basis.chat_center.to(dev),
        chat_scale=basis.chat_scale.to(dev),
    )


@torch.no_grad()
def score_sequences(
    model: Any, basis: Basis, seqs: Sequence[Tensor], chat: Sequence[bool], batch_size: int
) -> list[Float[Tensor, "T C"]]:
    """Per-token scores of every sequence, read in length-sorted right-padded batches."""
    on_dev = _on(basis, torch.device(model.cfg.device))
    out: list[Tensor] = [torch.empty(0)] * len(seqs)
    for i, acts in padded_hook_acts(model, seqs, [basis.hook], batch_size):
        out[i] = on_dev.score(acts[basis.hook], chat=chat[i]).cpu()
    return out


def _named(concepts: list[str], s_C: Tensor) -> dict[str, float]:
    return dict(zip(concepts, s_C.tolist(), strict=True))


def read_plans(
    model: Any,
    basis: Basis,
    recs: Sequence[Record],
    plans: Sequence[Plan],
    batch_size: int,
    per_turn: bool = False,
) -> list[tuple[dict[str, Any], Trace]]:
    """Each record's row ({id, kind, scores[, turns]}) and its per-token trace."""
    seqs: list[Tensor] = []
    for p in plans:
        seqs += [p.tokens, *(t for _, t in p.extra)]
    chat = [p.kind == "conversation" for p in plans for _ in range(1 + len(p.extra))]
    scores = iter(score_sequences(model, basis, seqs, chat, batch_size))
    out = []
    for rec, p, per_tok in zip(recs, plans, scores, strict=False):
        at = at_read_position(per_tok, p.kind, p.read_from)
        row: dict[str, Any] = {"id": rec.id, "kind": p.kind, "scores": _named(basis.concepts, at)}
        turns = {i: per_tok[pos] for i, pos in p.turns}
        turns.update({i: next(scores)[-1] for i, _ in p.extra})
        if per_turn and p.kind == "conversation":
            row["turns"] = [
                {"turn": i, "scores": _named(basis.concepts, turns[i])} for i in sorted(turns)
            ]
        out.append((row, Trace(p.tokens, per_tok, p.kind, p.read_from)))
    return out


def read_many(
    model: Any,
    records: Iterable[Any],
    directions: Mapping[str, SteeringVector] | Sequence[SteeringVector],
    batch_size: int = 16,
    *,
    per_turn: bool = False,
    chunk: int = 256,
) -> Iterator[dict[str, Any]]:
    """Read every record of `records` (texts, lists of messages, or dicts with `text` or
    `messages` and an optional `id`) and yield, in input order, one row per record:
    `{"id", "kind", "scores": {concept: score at the read position}}`, plus with
    `per_turn` a `"turns"` list of `{"turn": message index, "scores"}`, one per assistant
    turn of a conversation. A record without an id gets its 0-based position."""
    if batch_size < 1 or chunk < 1:
        raise EmosaeError(f"batch_size and chunk must be >= 1, not {batch_size} and {chunk}")
    basis = Basis.of(directions)
    batch: list[Record] = []
    for n, item in enumerate(records):
        batch.append(Record.of(item, n))
        if len(batch) == chunk:
            yield from _read_chunk(model, basis, batch, batch_size, per_turn)
            batch = []
    if batch:
        yield from _read_chunk(model, basis, batch, batch_size, per_turn)


def _read_chunk(
    model: Any, basis: Basis, recs: list[Record], batch_size: int, per_turn: bool
) -> Iterator[dict[str, Any]]:
    plans = [plan_record(model, r, basis.skip, per_turn) for r in recs]
    for row, _ in read_plans(model, basis, recs, plans, batch_size, per_turn):
        yield row
