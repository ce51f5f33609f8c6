"""Choosing a steering strength: sweep it over both signs, measure the effect and what
it costs in coherence, and recommend the largest strength within a coherence budget.

For each strength, the vector steers the reply to each of a few neutral prompts
(from the last prompt token on, greedy decoding), and we measure:

  effect     `readout`: the steered concept's own readout of the reply. The unsteered
             model reads the generated reply (as a user turn, at the token before its
             own answer, where the paper reads), in readout units (`emosae.reading`);
             reported relative to the unsteered replies'.
             `valence`: mean Warriner valence of the reply's words (1-9).
  coherence  `ppl_ratio`: median perplexity of the steered replies under the unsteered
             model, over the unsteered replies' median.
             `kl`: mean KL(unsteered || steered) of the next-token distribution at the
             first reply position (nats).

The recommended strength is the largest positive swept strength s such that every swept
strength in (0, s] keeps `ppl_ratio <= budget` (default 2: steered replies at most twice
as surprising to the unsteered model); None when even the smallest breaks the budget.

`valence_shift` pairs each prompt's reply at +r and -r (r the recommended strength) and
gives the mean valence difference with a bootstrap 95% interval over prompts.

Shape letters: P prompts, S strengths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.core.stats import mean_ci
from emosae.experiments.measures import text_norms
from emosae.steering.vector import MAX_STRENGTH


@dataclass(frozen=True)
class CalibrationConfig:
    """The strength sweep and the coherence budget."""

    strengths: tuple[float, ...] = (-0.4, -0.2, 0.2, 0.4)
    """Relative strengths to try (0 is added when missing: it is the reference)."""
    n_prompts: int = 3
    """Neutral prompts replied to at each strength."""
    max_new_tokens: int = 16
    budget: float = 2.0
    """Largest allowed ratio of steered to unsteered median reply perplexity."""

    def __post_init__(self):
        if not self.strengths or not all(math.isfinite(s) for s in self.strengths):
            raise EmosaeError("calibration strengths must be finite numbers")
        if any(abs(s) > MAX_STRENGTH for s in self.strengths):
            raise EmosaeError(
                f"calibration strengths must lie in [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}]"
            )
        if self.n_prompts < 1 or self.max_new_tokens < 1 or not self.budget > 1:
            raise EmosaeError("n_prompts and max_new_tokens must be >= 1 and budget > 1")


class Calibration(NamedTuple):
    """A strength sweep of one vector (lists are per strength, ascending)."""

    concept: str
    source: str
    hook: str
    strengths: list[float]
    readout: list[float]
    valence: list[float]
    ppl_ratio: list[float]
    kl: list[float]
    recommended: float | None
    budget: float
    replies: dict[str, str]
    """The reply to the first prompt at each strength (str(strength) -> text)."""
    valence_per_prompt: list[list[float]] = []
    """Per strength, the valence of each prompt's reply (nan: no normed words)."""
    valence_shift: dict[str, Any] | None = None
    """At the recommended strength r: mean over prompts of valence(+r) - valence(-r),
    with a bootstrap 95% interval over prompts (None when -r was not swept)."""

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def recommend(strengths: list[float], ppl_ratio: list[float], budget: float) -> float | None:
    """Largest positive strength whose sweep up to it stays within the budget."""
    best = None
    for s, r in sorted(zip(strengths, ppl_ratio, strict=True)):
        if s <= 0:
            continue
        if not r <= budget:  # nan (no words) breaks it too
            break
        best = s
    return best


def _nan(fn: Any, xs: list[float]) -> float:
    """`fn` over the finite values of `xs` (nan when there are none)."""
    xs = [x for x in xs if math.isfinite(x)]
    return float(fn(xs)) if xs else float("nan")


@torch.no_grad()
def _kl_at_reply(model: Any, vec: Any, tokens: torch.Tensor, strength: float) -> float:
    toks = tokens[None].to(model.cfg.device)
    base = model(toks)[0, -1].float().log_softmax(-1)
    with vec.apply(model, strength, from_pos=len(tokens) - 1):
        steered = model(toks)[0, -1].float().log_softmax(-1)
    return float((base.exp() * (base - steered)).sum())


def calibrate(
    vec: Any, model: Any, prompts: list[str] | None = None, cfg: CalibrationConfig | None = None
) -> Calibration:
    """Sweep `vec`'s strength on `model` (see the module docstring)."""
    from emosae.lm.chat import chat_reply, render_chat, reply_perplexity
    from emosae.reading.trace import Basis

    cfg = cfg or CalibrationConfig()
    prompts = prompts or data.load_neutral_prompts()[: cfg.n_prompts]
    hook = vec.hook_name  # one-line error for a multi-hook vector
    strengths = sorted(set(cfg.strengths) | {0.0})
    chats = [render_chat(model, p) for p in prompts]
    basis = Basis.single(vec)
    rows = {}
    for s in strengths:
        replies = []
        for p, chat in zip(prompts, chats, strict=True):
            with vec.apply(model, s, from_pos=len(chat.tokens) - 1):
                replies.append(chat_reply(model, p, max_new_tokens=cfg.max_new_tokens))
        rows[s] = {
            "replies": replies,
            "readout": float(_reply_readout(model, basis, replies).mean()),
            "valence": [text_norms(r)[0] for r in replies],
            "ppl": _nan(
                np.nanmedian,
                [reply_perplexity(model, p, r) for p, r in zip(prompts, replies, strict=True)],
            ),
            "kl": float(np.mean([_kl_at_reply(model, vec, c.tokens, s) for c in chats])),
        }
    ref = rows[0.0]
    ratio = [rows[s]["ppl"] / ref["ppl"] for s in strengths]
    rec = recommend(strengths, ratio, cfg.budget)
    per_prompt = [rows[s]["valence"] for s in strengths]
    return Calibration(
        concept=vec.concept,
        source=vec.source,
        hook=hook,
        strengths=strengths,
        readout=[rows[s]["readout"] - ref["readout"] for s in strengths],
        valence=[_nan(np.mean, v) for v in per_prompt],
        ppl_ratio=ratio,
        kl=[rows[s]["kl"] for s in strengths],
        recommended=rec,
        budget=cfg.budget,
        replies={str(s): rows[s]["replies"][0] for s in strengths},
        valence_per_prompt=per_prompt,
        valence_shift=valence_shift(strengths, per_prompt, rec),
    )


def _reply_readout(model: Any, basis: Any, replies: list[str]) -> np.ndarray:
    """The concept's reading of each reply by the unsteered model (the reply as a user
    turn, read at the token before the model's answer)."""
    from emosae.lm.chat import render_chat
    from emosae.lm.hooks import stop_layer
    from emosae.lm.readout import last_position

    seqs = [render_chat(model, r or ".").tokens for r in replies]
    acts = last_position(model, seqs, basis.hook, stop_at_layer=stop_layer([basis.hook]))
    return basis.score(acts, chat=True)[:, 0].numpy()


def valence_shift(
    strengths: list[float], per_prompt: list[list[float]], r: float | None, seed: int = 0
) -> dict[str, Any] | None:
    """Paired (per prompt) valence difference between +r and -r, with a percentile
    bootstrap 95% interval over prompts; None without both strengths or two prompts."""
    if r is None or -r not in strengths:
        return None
    plus, minus = (np.array(per_prompt[strengths.index(x)]) for x in (r, -r))
    d = (plus - minus)[np.isfinite(plus - minus)]
    if len(d) < 2:
        return None
    lo, hi = mean_ci(d, seed=seed)
    return {"strength": r, "mean": float(d.mean()), "ci95": [float(lo), float(hi)], "n": len(d)}


def save_calibrations(
    layout: Any,
    by_kind: dict[str, list[Calibration]],
    cfg: CalibrationConfig,
    *,
    merge: bool = True,
) -> Any:
    """Write `by_kind` ({"probe": [...], "sae": [...]}) into the run's or checkpoint's
    calibration file and seal it; with `merge`, calibrations already there for other
    vectors are kept. A checkpoint's manifest of all its files is sealed again."""
    from dataclasses import asdict

    from emosae.core import folders, io

    f = layout.calibrate
    old = io.read_json(f.calibration) if merge and f.calibration.exists() else {}
    folders.claim(f.dir, "calibrate")
    new = {
        k: {**old.get(k, {}), **{c.concept: c.to_json() for c in cals}}
        for k, cals in by_kind.items()
    }
    io.write_json(f.calibration, {**old, **new, "config": asdict(cfg)})
    folders.seal(f.dir, "calibrate")
    mark = folders.read_marker(layout.root) or {}
    if mark.get("kind") == "checkpoint":
        folders.seal(layout.root, "checkpoint")
    return f.calibration
