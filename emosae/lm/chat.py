"""Chat formatting: render a conversation with the model's own chat template.

The emotions paper reads emotion probes at the last token before the assistant's
reply; `render_chat` returns that position with the tokens. Models without a chat
template (base models such as Gemma 3 270M) get the paper's plain format,
"Human: {message}\\n\\nAssistant:", read at the final ':'.
"""

from __future__ import annotations

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


def render_chat(model: HookedTransformer, conversation: str | Sequence[Message]) -> ChatTokens:
    """Render `conversation` up to the start of the assistant's reply and tokenize it."""
    msgs = as_messages(conversation)
    tok = model.tokenizer
    if tok is None:
        raise EmosaeError("the model has no tokenizer")
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    else:
        parts = []
        for m in msgs:
            who = {"user": "Human", "assistant": "Assistant", "system": "System"}[m["role"]]
            parts.append(f"{who}: {m['content']}")
        text = "\n\n".join(parts) + "\n\nAssistant:"
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    if model.cfg.default_prepend_bos and tok.bos_token_id is not None:
        ids = torch.cat([torch.tensor([tok.bos_token_id]), ids])
    check_fits_context(model, len(ids))
    return ChatTokens(text=text, tokens=ids, read_pos=len(ids) - 1)


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
    rid = torch.tensor(model.tokenizer(reply, add_special_tokens=False)["input_ids"])
    if len(rid) == 0:
        return float("nan")
    toks = torch.cat([chat.tokens, rid])[None].to(model.cfg.device)
    lp = model(toks)[0, len(chat.tokens) - 1 : -1].float().log_softmax(-1)
    nll = -lp.gather(1, rid.to(lp.device)[:, None]).mean()
    return float(nll.exp())
