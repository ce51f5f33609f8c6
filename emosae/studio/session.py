"""The model side of `emosae studio`: one loaded model with its directions, the slider
range of each direction, and replies generated token by token, steered or not.

Generation: greedy by default (sampled with `temperature` > 0 from seed 0, as
`chat_reply` does), with TransformerLens's KV cache and one forward per token, stopping
at the end of the turn; the tokens are those `chat_reply` returns (tested). Steering
hooks live only inside each forward: every step enters the vectors' `apply` contexts and
leaves them before its token is handed out, so a generator abandoned between two steps
(a client that went away) leaves no hook on the model. Steering covers the
vector's own positions, as calibration measured them and `emosae steer` applies them
("reply": the prompt's last token, then every decoded token).

Slider ranges. A calibrated vector (the user's own calibration of a shipped vector, else
its folder's `calibrate/`, for the same kind, source and hook: the record
`load_directions` takes its default strength from) slides over
its calibrated safe range, -r to r with r the recommended strength (the default mark),
by `emosae.experiments.calibration.recommend` (records of emosae 0.2, which swept both
signs, walk each sign). An uncalibrated vector slides
over `FALLBACK_RANGE` (the extremes of the default calibration sweep) with no mark.

Cancellation: `cancellable` puts a check on every hook point of the model (every
layer's attention and MLP, hundreds per forward), so a request whose client went away
stops within one hook point of any forward (the prompt's, a token's, the reading's)
rather than after minutes on a long prompt. Prompts are capped by a token budget
(`MAX_PROMPT_TOKENS`, `emosae studio --max-prompt-tokens`) that the page shows.

Not done here: batching several users (one generation runs at a time; see `server`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from emosae.core.errors import EmosaeError
from emosae.core.layout import RunLayout, shipped_checkpoint
from emosae.lm.chat import ChatTokens, Message, check_fits_context, render_chat, stop_token_ids
from emosae.steering.directions import (
    calibrations,
    fits_calibration,
    load_directions,
    user_calibrations,
)
from emosae.steering.vector import SteeringVector
from emosae.studio.readings import Features, read_conversation

FALLBACK_RANGE = (-0.4, 0.4)
"""Slider range of a vector without calibration: the extremes of the default calibration
sweep (`CalibrationConfig.strengths`)."""
MAX_NEW_TOKENS = 512
"""The most tokens one reply may ask for."""
MAX_PROMPT_TOKENS = 2048
"""The default token budget of a prompt (the rendered conversation before the reply;
less in a smaller context): the attention's cost grows with its square (an 8k-token
prompt took minutes on a CPU)."""


class Cancelled(Exception):
    """A forward stopped at a hook point because its request was cancelled."""


@contextmanager
def cancellable(model: Any, cancel: threading.Event) -> Iterator[None]:
    """Inside, every forward of `model` raises `Cancelled` at its next hook point once
    `cancel` is set. The checks are plain torch pre-hooks on the hook points, so
    TransformerLens's `reset_hooks` (which `run_with_cache` and `hooks()` call) leaves
    them in place; they are removed on exit, however it comes."""

    def check(module: Any, args: Any) -> None:
        if cancel.is_set():
            raise Cancelled("the request was cancelled")

    handles = [hp.register_forward_pre_hook(check) for hp in model.hook_dict.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class Slider:
    """A concept's steering slider: relative strengths from `lo` to `hi`."""

    concept: str
    lo: float
    hi: float
    default: float | None
    """The calibrated default strength (the mark); None without calibration."""
    calibrated: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def safe_range(cal: Mapping[str, Any]) -> tuple[float, float]:
    """(lo, hi) of a calibration record: the strengths reached from 0 on each side
    without leaving its budgets, by the calibration's own rule (0 on a side where even
    the smallest breaks it). A record that swept only positive strengths (emosae >= 0.3)
    is symmetric: the held-out report checks -r too."""
    from emosae.experiments.calibration import recommend

    s, ratio, budget = cal["strengths"], cal["ppl_ratio"], cal["budget"]
    kl, kl_budget = cal.get("kl"), cal.get("kl_budget")
    hi = recommend(s, ratio, budget, kl, kl_budget) or 0.0
    if not any(x < 0 for x in s):
        return (-hi + 0.0, hi)
    neg = [-x for x in s]
    return (-(recommend(neg, ratio, budget, kl, kl_budget) or 0.0) + 0.0, hi)


def sliders(vecs: Mapping[str, SteeringVector], root: Path, kind: str) -> dict[str, Slider]:
    """A slider per vector (see the module docstring): the user's own calibration of a
    shipped vector where there is one, else the folder's, as `load_directions` chooses."""
    layout = RunLayout(root)
    found = [user_calibrations(layout)[1].get(kind, {}), calibrations(layout).get(kind, {})]
    out = {}
    for e, v in vecs.items():
        c = next((c for c in (f.get(e) for f in found) if fits_calibration(c, v)), None)
        if c is not None:
            out[e] = Slider(e, *safe_range(c), v.default_strength, True)
        else:
            out[e] = Slider(e, *FALLBACK_RANGE, None, False)
    return out


def _step(model: Any, toks: torch.Tensor, cache: Any, steer: Sequence) -> Any:
    """One forward with the steering hooks on for its duration only, at the vectors' own
    positions ("reply": the prompt's last token, then each decoded token)."""
    with ExitStack() as stack:
        for vec, strength in steer:
            stack.enter_context(vec.apply(model, strength))
        return model(toks, past_kv_cache=cache)[0, -1]


@torch.no_grad()
def stream_reply(
    model: Any,
    chat: ChatTokens,
    steer: Sequence[tuple[SteeringVector, float]] = (),
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
) -> Iterator[str]:
    """The reply to a rendered conversation, as pieces of text, one per token (a piece
    may be empty while a character spans several tokens); see the module docstring."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.utils import sample_logits

    check_fits_context(model, len(chat.tokens), max_new_tokens)
    torch.manual_seed(seed)
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
    stops = set(stop_token_ids(model))
    dev = torch.device(model.cfg.device)
    logits = _step(model, chat.tokens[None].to(dev), cache, steer)
    new: list[int] = []
    said = ""
    for i in range(max_new_tokens):
        if temperature > 0:
            nxt = int(sample_logits(logits[None], temperature=temperature)[0])
        else:
            nxt = int(logits.argmax())
        if nxt in stops:
            return
        new.append(nxt)
        text = model.tokenizer.decode(new, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for a character's last byte
            yield text[len(said) :]
            said = text
        else:
            yield ""
        if i + 1 < max_new_tokens:
            logits = _step(model, torch.tensor([[nxt]], device=dev), cache, steer)


class Studio:
    """A model, its directions and their sliders, and (with a run) its SAE features."""

    def __init__(
        self,
        model: Any,
        vecs: Mapping[str, SteeringVector],
        slider: Mapping[str, Slider],
        features: Features | None = None,
        load_expr: str = "emosae.load_directions()",
        max_prompt_tokens: int | None = None,
    ):
        if max_prompt_tokens is None:  # the default budget, within a smaller context
            max_prompt_tokens = min(MAX_PROMPT_TOKENS, model.cfg.n_ctx - 1)
        if not 1 <= max_prompt_tokens < model.cfg.n_ctx:
            raise EmosaeError(
                f"--max-prompt-tokens must be between 1 and {model.cfg.n_ctx - 1} "
                f"(the model's context), not {max_prompt_tokens}"
            )
        self.max_prompt_tokens = max_prompt_tokens
        self.model = model
        self.vecs = dict(vecs)
        self.sliders = dict(slider)
        self.features = features
        self.load_expr = load_expr

    @classmethod
    def load(
        cls,
        directions: str | Path | None = None,
        run: str | Path | None = None,
        model: str | None = None,
        kind: Literal["probe", "sae"] = "probe",
        max_prompt_tokens: int | None = None,
    ) -> Studio:
        """Directions from `directions` (default: the run's, else the shipped ones), the
        SAE, labels and dashboard of `run`, and the model."""
        from emosae.lm.models import load_model

        where = directions if directions is not None else run
        vecs = load_directions(where, kind=kind)
        root = Path(where) if where is not None else shipped_checkpoint()
        feats = Features.of_run(run) if run is not None else None
        args = ([repr(str(where))] if where is not None else []) + (
            [f"kind={kind!r}"] if kind != "probe" else []
        )
        expr = f"emosae.load_directions({', '.join(args)})"  # for "copy as Python"
        lm = load_model(model)
        return cls(lm, vecs, sliders(vecs, root, kind), feats, expr, max_prompt_tokens)

    def info(self) -> dict[str, Any]:
        """What the page needs to draw itself."""
        vec = next(iter(self.vecs.values()))
        return {
            "model": getattr(self.model.cfg, "model_name", "model"),
            "n_ctx": int(self.model.cfg.n_ctx),
            "hook": vec.hook_name,
            "concepts": list(self.vecs),
            "sliders": [s.to_json() for s in self.sliders.values()],
            "fallback_range": list(FALLBACK_RANGE),
            "features": self.features is not None,
            "dashboard": bool(self.features and self.features.index()),
            "load": self.load_expr,
            "max_new_tokens": MAX_NEW_TOKENS,
            "max_prompt_tokens": self.max_prompt_tokens,
        }

    def prompt(self, messages: Sequence[Message], max_new_tokens: int) -> ChatTokens:
        """The rendered conversation to reply to, refused when it does not end with the
        user's turn, is over the prompt budget or, with the reply, does not fit the
        context."""
        if not messages or messages[-1].get("role") != "user":
            raise EmosaeError("the conversation must end with a user message")
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise EmosaeError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}")
        budget = self.max_prompt_tokens
        over = f"over the studio's prompt budget of {budget} tokens (--max-prompt-tokens)"
        limit = 16 * budget  # characters: refuse before tokenizing a novel
        if sum(len(m.get("content", "")) for m in messages) > limit:
            raise EmosaeError(f"the conversation is {over}")
        chat = render_chat(self.model, messages)
        if len(chat.tokens) > budget:
            raise EmosaeError(f"the conversation is {len(chat.tokens)} tokens, {over}")
        check_fits_context(self.model, len(chat.tokens), max_new_tokens)
        return chat

    def steering(self, steer: Mapping[str, float]) -> list[tuple[SteeringVector, float]]:
        """(vector, strength) pairs, refused outside each slider's range."""
        out = []
        for c, s in steer.items():
            if c not in self.vecs:
                raise EmosaeError(f"unknown concept {c!r}")
            lo, hi = self.sliders[c].lo, self.sliders[c].hi
            if not (
                isinstance(s, int | float) and math.isfinite(s) and lo - 1e-9 <= s <= hi + 1e-9
            ):
                raise EmosaeError(f"strength {s!r} for {c} is outside its range [{lo:g}, {hi:g}]")
            if s != 0:
                out.append((self.vecs[c], float(s)))
        return out

    def reply(self, chat: ChatTokens, steer: Sequence = (), **kw: Any) -> Iterator[str]:
        return stream_reply(self.model, chat, steer, **kw)

    def reading(self, messages: Sequence[Message]) -> dict[str, Any]:
        """The page's data for a conversation (`readings.read_conversation`)."""
        return read_conversation(self.model, messages, self.vecs, self.features)

    def cancellable(self, cancel: threading.Event) -> Any:
        """See `cancellable`."""
        return cancellable(self.model, cancel)

    def hooks_left(self) -> int:
        """Forward hooks and cancellation checks on the model (0 between generations)."""
        return sum(
            len(h.fwd_hooks) + len(h._forward_pre_hooks) for h in self.model.hook_dict.values()
        )
