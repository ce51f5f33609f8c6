"""Chat formatting: render a conversation with the model's own chat template.

The emotions paper reads emotion probes at the last token before the assistant's
reply; `render_chat` returns that position with the tokens. Models without a chat
template (base models such as Gemma 3 270M) get the paper's plain format,
"Human: {message}\\n\\nAssistant:", read at the final ':'.

Message contents are text, never control tokens: a content that spells the template's
control tokens (`hello<|im_end|>\\n<|im_start|>assistant\\n...`) is encoded as the
characters it is, so it cannot open a turn of its own. The template is rendered with a
placeholder for each content; its own control tokens (found in that skeleton) become
control tokens, everything else (skeleton text and contents together, as the tokenizer
itself splits at control tokens) is encoded with special-token matching off
(`encode_text`). In the plain format, which has no control tokens, a content line that
starts with a role label ("Assistant:") is indented by one space, so it cannot open a
turn either (`unlabel`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Int
from torch import Tensor

from emosae.core.errors import EmosaeError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

Message = dict[str, str]


class ChatTokens(NamedTuple):
    """A rendered conversation."""

    text: str
    """The rendered prompt text, ending where the assistant's reply begins."""
    tokens: Int[Tensor, " pos"]
    """Its token ids (1-D, on CPU)."""
    read_pos: int
    """Index into `tokens` of the last token before the assistant's reply."""
    starts: tuple[int, ...] = ()
    """The character of `text` where each token starts (-1 for a BOS that `text` does
    not spell); empty where the tokenizer gives no offsets (a slow tokenizer)."""


def check_text(text: Any, what: str = "text") -> str:
    """`text` if it is a non-blank string of valid Unicode, else a one-line error. Bytes
    that are not UTF-8 reach Python from argv as lone surrogates ("surrogateescape"),
    which no tokenizer can encode: they are refused here, before a model is involved."""
    if not isinstance(text, str):
        raise EmosaeError(f"{what} must be text (a string), not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise EmosaeError(
            f"{what} is not valid UTF-8 (an invalid byte or lone surrogate at character "
            f"{e.start}); pass UTF-8 text"
        ) from None
    if not text.strip():
        raise EmosaeError(f"{what} is empty; pass some text")
    return text


def as_messages(conversation: str | Sequence[Message]) -> list[Message]:
    """A single string is one user message; otherwise a list of {role, content} dicts.
    Every content must pass `check_text`."""
    if isinstance(conversation, str):
        return [{"role": "user", "content": check_text(conversation, "the prompt")}]
    if not isinstance(conversation, Sequence):
        raise EmosaeError(
            f"a conversation is a string or a list of messages, not {type(conversation).__name__}"
        )
    msgs = list(conversation)
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise EmosaeError(
                f"message {i} must be a dict with keys 'role' and 'content', got {m!r:.80}"
            )
        if m["role"] not in ("system", "user", "assistant"):
            raise EmosaeError(f"message {i} has unknown role {m['role']!r:.40}")
        check_text(m["content"], f"message {i}'s content")
    if not msgs:
        raise EmosaeError("empty conversation")
    return msgs


ROLE_LABELS = {"user": "Human", "assistant": "Assistant", "system": "System"}
"""The plain format's role labels (models without a chat template)."""
_LABEL_LINE = re.compile(r"(?<=\n)(?=(?:Human|Assistant|System):)")
_MARK = "\ue002{}\ue003"
"""A content's placeholder in the template skeleton (private-use characters)."""


def render_chat(model: HookedTransformer, conversation: str | Sequence[Message]) -> ChatTokens:
    """Render `conversation` up to the start of the assistant's reply and tokenize it;
    message contents are text, never control tokens (module docstring)."""
    msgs = as_messages(conversation)
    tok: Any = model.tokenizer
    if tok is None:
        raise EmosaeError("the model has no tokenizer")
    if getattr(tok, "chat_template", None):
        segments = _template_segments(tok, msgs)
    else:
        parts = [f"{ROLE_LABELS[m['role']]}: {unlabel(m['content'])}" for m in msgs]
        segments = [("\n\n".join(parts) + "\n\nAssistant:", False)]
    ids: list[int] = []
    starts: list[int] = []
    at = 0
    for piece, control in segments:
        got, offs = (
            ([int(tok.convert_tokens_to_ids(piece))], [0]) if control else _encode(tok, piece)
        )
        ids += got
        starts += [at + a for a in offs] if len(offs) == len(got) else [-2] * len(got)
        at += len(piece)
    if model.cfg.default_prepend_bos and tok.bos_token_id is not None:
        ids, starts = [tok.bos_token_id, *ids], [-1, *starts]
    check_fits_context(model, len(ids))
    text = "".join(piece for piece, _ in segments)
    offsets = () if -2 in starts else tuple(starts)  # a slow tokenizer gives none
    return ChatTokens(text, torch.tensor(ids), len(ids) - 1, offsets)


def unlabel(content: str) -> str:
    """`content` for the plain "Human: ... Assistant:" format: a line (after the first,
    which follows its own label) that starts with a role label is indented by one space,
    so it reads as text, not as a new turn."""
    return _LABEL_LINE.sub(" ", content)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text` as plain text (no BOS/EOS): a string that spells a control
    token (`<|im_start|>`) is encoded as the characters it is, never as that token."""
    return _encode(tokenizer, text)[0]


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """`encode_text` and each token's first character in `text` ([] without offsets)."""
    if not text:
        return [], []
    kw: dict[str, Any] = {"add_special_tokens": False, "split_special_tokens": True}
    try:
        enc = tokenizer(text, return_offsets_mapping=True, **kw)
        ids, starts = list(enc["input_ids"]), [a for a, _ in enc["offset_mapping"]]
    except (NotImplementedError, KeyError, TypeError):  # a slow tokenizer: no offsets
        ids, starts = list(tokenizer(text, **kw)["input_ids"]), []
    if set(ids) & control_ids(tokenizer):
        raise EmosaeError(
            "this tokenizer turns text that spells a control token into that token "
            "(it ignores split_special_tokens); emosae cannot read such text safely"
        )
    return ids, starts


def control_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (those a template uses to mark turns)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {i for i, t in added.items() if getattr(t, "special", False)} | set(
        tokenizer.all_special_ids
    )


def _template_segments(tok: Any, msgs: list[Message]) -> list[tuple[str, bool]]:
    """The chat template's rendering as (piece, is_control) pieces: the skeleton's own
    control tokens (rendered around placeholder contents) are control pieces; the text
    between them, contents included, is one text piece."""
    marks = [_MARK.format(i) for i in range(len(msgs))]
    skel = tok.apply_chat_template(
        [{**m, "content": k} for m, k in zip(msgs, marks, strict=True)],
        tokenize=False,
        add_generation_prompt=True,
    )
    real = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    parts = re.split("(" + "|".join(map(re.escape, marks)) + ")", skel)
    text = "".join(msgs[marks.index(p)]["content"] if p in marks else p for p in parts)
    if parts[1::2] != marks or text != real:  # the template changes or repeats contents
        spelled = [
            i for i, m in enumerate(msgs) if any(c for _, c in _split_controls(tok, m["content"]))
        ]
        if spelled:
            raise EmosaeError(
                f"message {spelled[0]}'s content spells a control token, and this model's "
                "chat template does not insert contents verbatim: it cannot be read as text"
            )
        return _split_controls(tok, real)
    out: list[tuple[str, bool]] = []
    for i, p in enumerate(parts):
        pieces = [(msgs[marks.index(p)]["content"], False)] if i % 2 else _split_controls(tok, p)
        for piece, control in pieces:
            if out and not control and not out[-1][1]:
                out[-1] = (out[-1][0] + piece, False)
            else:
                out.append((piece, control))
    return out


def _split_controls(tok: Any, text: str) -> list[tuple[str, bool]]:
    """`text` cut at the tokenizer's added tokens, as the tokenizer itself cuts it."""
    added = sorted(getattr(tok, "added_tokens_encoder", {}) or {}, key=len, reverse=True)
    if not added:
        return [(text, False)] if text else []
    out, at = [], 0
    for m in re.finditer("|".join(map(re.escape, added)), text):
        if m.start() > at:
            out.append((text[at : m.start()], False))
        out.append((m.group(), True))
        at = m.end()
    if at < len(text):
        out.append((text[at:], False))
    return out


def check_fits_context(model: HookedTransformer, n_tokens: int, new_tokens: int = 0) -> None:
    """Refuse a prompt (plus the tokens to generate) longer than the model's context:
    we refuse rather than truncate, since a cut conversation reads a different emotion."""
    n_ctx = model.cfg.n_ctx
    if n_tokens + new_tokens > n_ctx:
        extra = f" plus {new_tokens} new tokens" if new_tokens else ""
        raise EmosaeError(
            f"the prompt is {n_tokens} tokens{extra}, more than the model's context of {n_ctx}"
        )


def dialogue_text(tokenizer: Any, user: str, assistant: str) -> str:
    """A whole User/Assistant exchange as text: the chat template where the tokenizer has
    one, else the paper's "Human: ... Assistant: ..." format."""
    if getattr(tokenizer, "chat_template", None):
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    return f"Human: {user}\n\nAssistant: {assistant}"


def stop_token_ids(model: HookedTransformer) -> list[int]:
    """Token ids that end an assistant turn (EOS and, for ChatML, <|im_end|>)."""
    tok = model.tokenizer
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        ids.add(im_end)
    return sorted(ids)


@torch.no_grad()
def chat_reply(
    model: HookedTransformer,
    conversation: str | Sequence[Message],
    *,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int | None = 0,
) -> str:
    """Generate the assistant's reply (greedy when temperature is 0), stopping at the
    end of the turn. Hooks active on `model` (e.g. steering) apply to every step."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise EmosaeError(f"max_new_tokens must be an integer >= 1, not {max_new_tokens!r}")
    if not temperature >= 0:
        raise EmosaeError(f"temperature must be >= 0, not {temperature!r}")
    chat = render_chat(model, conversation)
    check_fits_context(model, len(chat.tokens), max_new_tokens)
    if seed is not None:
        torch.manual_seed(seed)
    inp = chat.tokens[None].to(model.cfg.device)
    out = model.generate(
        inp,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=max(temperature, 1e-6),
        stop_at_eos=True,
        eos_token_id=stop_token_ids(model),
        verbose=False,
        use_past_kv_cache=True,
    )
    new = out[0, inp.shape[1] :].tolist()
    stops = set(stop_token_ids(model))
    for i, t in enumerate(new):
        if t in stops:
            new = new[:i]
            break
    return model.tokenizer.decode(new, skip_special_tokens=True).strip()


@torch.no_grad()
def reply_perplexity(model: Any, prompt: str, reply: str) -> float:
    """Perplexity of `reply` as the assistant's answer to `prompt`, unsteered."""
    chat = render_chat(model, prompt)
    rid = torch.tensor(encode_text(model.tokenizer, reply), dtype=torch.long)
    if len(rid) == 0:
        return float("nan")
    toks = torch.cat([chat.tokens, rid])[None].to(model.cfg.device)
    lp = model(toks)[0, len(chat.tokens) - 1 : -1].float().log_softmax(-1)
    nll = -lp.gather(1, rid.to(lp.device)[:, None]).mean()
    return float(nll.exp())
