"""Steer replies and measure them: the one place that generates replies to prompts
under a steering vector and scores them. Calibration, the generation experiment,
`emosae steer` and the tests all call `steered_replies`.

For each prompt, the replies at every strength are generated in one batch (the prompt
once per strength, each row with its own strength), greedily, with the vector steering
its own positions (by default from the last prompt token on: the reply). Each reply is
then measured:

  readout  the concept's readout of the reply by the unsteered model: the reply as a
           user turn, read at the token before the model's answer (`Readout.at_reply`,
           in the vector's readout units, at its readout's hook)
  valence  mean Warriner valence (1-9) of the reply's words (nan: no normed words);
           `arousal` likewise
  nll      mean negative log-likelihood per reply token under the unsteered model
           (perplexity = exp(nll))
  kl       mean over the reply's tokens of KL(steered || unsteered) between the
           next-token distributions along the steered reply (nats per token; the
           steered pass steers the same positions generation did; the model's
           distributions, before any repetition penalty)
  vader    VADER compound valence (-1 to 1) of the reply (nan: no letters)
  nrc      share of the reply's words in the concept's NRC category, per 100 words
           (nan: no words, or a concept with no category; `nrc_category`)
  distinct2  distinct bigrams / bigrams of the reply's tokens; `distinct2_ratio` is
           it over the unsteered reply's to the same prompt (the degeneracy measure)

vader, nrc and the Warriner valence/arousal are judges no vector was fitted on
(emosae.experiments.judges); the readout is not independent of the vector: a reply can
move along the direction without reading as the emotion to anyone else. `success` and
`judged` report each as peers do: the shift at +r against 0 with a bootstrap interval,
and the share of prompts whose reply moved toward the concept (Wilson interval), where a
reply with a distinct-2 ratio under 0.7 (or none) is never a success.

Generation may take a repetition penalty (`repetition_penalty`, the CTRL/HF rule: the
logit of a token already in the row, prompt or reply, is divided by it where positive and
multiplied where negative), applied by torch hooks on the model's embedding (tokens in)
and unembedding (logits out), as TransformerLens's `generate` has none. Its default 1.0
keeps the replies those of `chat_reply` under `vec.apply`, which calibration promises.

Shape letters: S strengths, P prompts.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import binomtest

from emosae.core.errors import EmosaeError
from emosae.core.stats import mean_ci
from emosae.experiments.judges import Nrc, distinct2, judges_for
from emosae.experiments.measures import text_norms
from emosae.lm.chat import check_fits_context, render_chat, stop_token_ids
from emosae.lm.hooks import left_pad, pad_id
from emosae.reading.trace import Basis, Readout
from emosae.steering.vector import SteeringVector

MIN_DISTINCT2 = 0.7
"""A reply whose distinct-2 ratio to the unsteered reply is below this is degenerate."""


class SteeredReplies(NamedTuple):
    """Replies to `prompts` at each of `strengths` and their measures ([S, P] arrays)."""

    concept: str
    source: str
    hook: str
    strengths: list[float]
    prompts: list[str]
    replies: list[list[str]]
    readout: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    nll: np.ndarray
    kl: np.ndarray
    vader: np.ndarray
    nrc: np.ndarray
    nrc_category: str | None
    distinct2: np.ndarray
    distinct2_ratio: np.ndarray

    def row(self, s: float) -> int:
        if s not in self.strengths:
            raise EmosaeError(f"strength {s:g} was not generated (have {self.strengths})")
        return self.strengths.index(s)

    def ppl_ratio(self) -> np.ndarray:
        """Per strength: median reply perplexity over the unsteered (strength 0) one's."""
        med = np.array([_nan(np.median, np.exp(r)) for r in self.nll])
        return med / med[self.row(0.0)]

    def kl_per_token(self) -> np.ndarray:
        """Per strength: mean over prompts of the per-token KL (nats)."""
        return np.array([_nan(np.mean, r) for r in self.kl])

    def shift(self, key: str, s: float, ref: float = 0.0, seed: int = 0) -> dict[str, Any]:
        """Mean over prompts of measure `key` at `s` minus at `ref` (paired by prompt),
        with a bootstrap 95% interval over prompts (None with fewer than two)."""
        m = getattr(self, key)
        d = m[self.row(s)] - m[self.row(ref)]
        d = d[np.isfinite(d)]
        ci = [float(x) for x in mean_ci(d, seed=seed)] if len(d) >= 2 else None
        return {"mean": float(d.mean()) if len(d) else math.nan, "ci95": ci, "n": len(d)}

    def success(
        self,
        s: float,
        ref: float = 0.0,
        *,
        key: str = "readout",
        direction: int = 1,
        min_distinct2: float = MIN_DISTINCT2,
    ) -> dict[str, Any]:
        """Fraction of prompts whose reply at `s` scores further toward the concept on
        measure `key` than at `ref`, with a Wilson 95% interval: the classifier-verified
        success rate. Toward the concept is `direction` (+1: up) for s > ref, the
        opposite for s < ref. A reply whose distinct-2 ratio is under `min_distinct2`
        (or nan) and a reply the judge cannot score are failures, not dropped."""
        if direction not in (1, -1) or s == ref:
            raise EmosaeError("success needs direction +1 or -1 and s != ref")
        m = getattr(self, key)
        d = (m[self.row(s)] - m[self.row(ref)]) * direction * (1 if s > ref else -1)
        ok = (d > 0) & (self.distinct2_ratio[self.row(s)] >= min_distinct2)
        k, n = int(ok.sum()), len(d)
        ci = binomtest(k, n).proportion_ci(method="wilson")
        return {"rate": k / n, "ci95": [float(ci.low), float(ci.high)], "k": k, "n": n}

    def judged(self, s: float, seed: int = 0) -> dict[str, Any]:
        """At strength `s` against 0, per measure: its direction for this concept, the
        shift (`shift`) and the success rate (`success`); the own readout is marked
        `independent: False`. Measures with no expected direction are left out. Also
        the median distinct-2 ratio and the count of replies under `MIN_DISTINCT2`."""
        dirs = {k: j.direction for k, j in judges_for(self.concept).items()}
        dirs = {"readout": 1, **{k: d for k, d in dirs.items() if d}}
        out: dict[str, Any] = {
            key: {
                "direction": d,
                "independent": key != "readout",
                "shift": self.shift(key, s, 0.0, seed=seed),
                "success": self.success(s, 0.0, key=key, direction=d),
            }
            for key, d in dirs.items()
        }
        if "nrc" in out:
            out["nrc"]["category"] = self.nrc_category
        r = self.distinct2_ratio[self.row(s)]
        out["distinct2_ratio"] = {
            "median": _nan(np.median, r),
            "degenerate": int((~(r >= MIN_DISTINCT2)).sum()),
            "n": len(r),
        }
        return {"strength": s, **out}


def _nan(fn: Any, xs: Any) -> float:
    xs = np.asarray(xs, dtype=float)
    xs = xs[np.isfinite(xs)]
    return float(fn(xs)) if len(xs) else math.nan


def _left_padded(model: Any, seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts left-padded to one length, so that they all end at the same position (the
    "reply" positions line up), and their mask. generate() tells padding from tokens by
    the pad id: a prompt that starts with it is refused in a batch."""
    pad = model.tokenizer.pad_token_id
    if pad is None:  # nothing pads a batch (steered_replies then runs one row at a time)
        pad = pad_id(model.tokenizer)
    if len(seqs) > 1 and any(int(t[0]) == pad for t in seqs):
        raise EmosaeError("a prompt starts with the pad token; batch it alone")
    return left_pad(seqs, pad)


FINAL = "ln_final.hook_normalized"
"""The last residual before the unembedding: kept at every generated position, so the
steered next-token distributions come from generation itself (no second pass)."""


@contextmanager
def _repetition_penalty(model: Any, inp: torch.Tensor, mask: torch.Tensor, penalty: float):
    """While open, `model.generate`'s next-token logits carry the repetition penalty
    (module docstring) for the tokens of each row: the prompt's (not its padding) and each
    token fed back. Torch hooks: the embedding sees the fed-back tokens, the unembedding's
    last position is penalised. Assumes a KV-cached generate, which embeds the prompt
    once and then one token per step."""
    if penalty == 1.0:
        yield
        return
    seen = torch.zeros(inp.shape[0], model.cfg.d_vocab_out, dtype=torch.bool, device=inp.device)
    seen[torch.arange(inp.shape[0])[:, None].expand_as(inp)[mask.bool()], inp[mask.bool()]] = True
    calls = [0]

    def fed(module: Any, args: tuple) -> None:
        calls[0] += 1
        if calls[0] > 1:  # the first call embeds the prompt, marked above
            seen.scatter_(1, args[0].to(seen.device), True)

    def penalise(module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        last = out[:, -1]
        hit = seen.to(last.device)
        out = out.clone()
        out[:, -1] = torch.where(hit, torch.where(last > 0, last / penalty, last * penalty), last)
        return out

    handles = [
        model.embed.register_forward_pre_hook(fed),
        model.unembed.register_forward_hook(penalise),
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _generate(model: Any, vec: SteeringVector, seqs, strengths, n_new: int, penalty: float):
    """Greedy reply token ids, one row per (prompt, strength), cut at the end of the turn,
    and the steered log-probabilities [B, n_new, vocab] that chose each token (before
    the repetition penalty)."""
    stops = stop_token_ids(model)
    inp, mask = _left_padded(model, seqs)
    inp = inp.to(model.cfg.device)
    check_fits_context(model, inp.shape[1], n_new)
    finals: list[torch.Tensor] = []

    def keep(x: torch.Tensor, hook: Any) -> None:
        finals.append(x[:, -1].clone())

    with (
        vec.apply(model, strengths),
        model.hooks(fwd_hooks=[(FINAL, keep)]),
        _repetition_penalty(model, inp, mask.to(inp.device), penalty),
    ):
        out = model.generate(
            inp,
            max_new_tokens=n_new,
            do_sample=False,
            stop_at_eos=True,
            eos_token_id=stops,
            verbose=False,
            use_past_kv_cache=True,
            padding_side="left",
        )
    replies = []
    for row in out[:, inp.shape[1] :].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        replies.append(row[:cut])
    return replies, model.unembed(torch.stack(finals, 1))


@torch.no_grad()
def _score(model: Any, seqs, replies, steered_logits: torch.Tensor):
    """Per reply: mean NLL of its tokens unsteered and mean KL(steered || unsteered), the
    steered distributions being those generation drew the reply from."""
    prompt, pmask = _left_padded(model, seqs)
    n, r_max = prompt.shape[1], max(1, max(len(r) for r in replies))
    batch = torch.cat([prompt, torch.zeros(len(seqs), r_max, dtype=torch.long)], 1)
    mask = torch.cat([pmask, torch.ones(len(seqs), r_max, dtype=torch.long)], 1)
    for i, r in enumerate(replies):
        batch[i, n : n + len(r)] = torch.tensor(r, dtype=torch.long)
    batch, mask = batch.to(model.cfg.device), mask.to(model.cfg.device)
    base = model(batch, attention_mask=mask)[:, n - 1 : -1].float().log_softmax(-1)
    steered = steered_logits.float().log_softmax(-1)
    nll, kl = [], []
    for i, r in enumerate(replies):
        if not r:
            nll.append(math.nan), kl.append(math.nan)
            continue
        ids = batch[i, n : n + len(r)]
        b, s = base[i, : len(r)], steered[i, : len(r)]
        nll.append(float(-b.gather(1, ids[:, None]).mean()))
        kl.append(float((s.exp() * (s - b)).sum(-1).mean()))
    return nll, kl


def steered_replies(
    model: Any,
    vec: SteeringVector,
    prompts: list[str],
    strengths: list[float],
    *,
    max_new_tokens: int = 48,
    batch: int = 32,
    repetition_penalty: float = 1.0,
) -> SteeredReplies:
    """Replies to each prompt at each strength, and their measures (module docstring).
    Strength 0 (the unsteered reference) is added when missing; strengths are sorted.
    Generation and scoring run `batch` (prompt, strength) rows at a time; greedy, with
    `repetition_penalty` (1.0: none; the issue's peers use 1.1)."""
    strengths = sorted({float(s) for s in strengths} | {0.0})
    if model.tokenizer.pad_token_id is None:
        batch = 1
    if not prompts:
        raise EmosaeError("steered_replies needs at least one prompt")
    if not (math.isfinite(repetition_penalty) and repetition_penalty > 0):
        raise EmosaeError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    S, P = len(strengths), len(prompts)
    toks = [render_chat(model, p).tokens for p in prompts]
    rows = [(i, j) for j in range(P) for i in range(S)]
    texts = [[""] * P for _ in range(S)]
    nll, kl = np.full((S, P), math.nan), np.full((S, P), math.nan)
    for k in range(0, len(rows), batch):
        chunk = rows[k : k + batch]
        seqs, sts = [toks[j] for _, j in chunk], [strengths[i] for i, _ in chunk]
        ids, logits = _generate(model, vec, seqs, sts, max_new_tokens, repetition_penalty)
        scored = _score(model, seqs, ids, logits)
        for (i, j), r, a, b in zip(chunk, ids, *scored, strict=True):
            texts[i][j] = model.tokenizer.decode(r, skip_special_tokens=True).strip()
            nll[i, j], kl[i, j] = a, b
    flat = [t or "." for row in texts for t in row]
    readout = Readout(model, Basis.single(vec)).at_reply(flat)[:, 0].numpy().reshape(S, P)
    norms = np.array([[text_norms(t)[:2] for t in row] for row in texts], dtype=float)
    judged = _judge(vec.concept, texts, strengths.index(0.0))
    return SteeredReplies(
        vec.concept, vec.source, vec.hook_name, strengths, list(prompts), texts,
        readout, norms[..., 0], norms[..., 1], nll, kl, *judged,
    )  # fmt: skip


def _judge(concept: str, texts: list[list[str]], base: int):
    """vader, nrc, nrc_category, distinct2 and distinct2_ratio of the replies `texts`
    [S][P] (`base`: the unsteered row)."""
    judges = judges_for(concept)
    nrc = judges.get("nrc")

    def each(fn: Any) -> np.ndarray:
        return np.array([[fn(t) for t in row] for row in texts], dtype=float)

    d2 = each(distinct2)
    return (
        each(judges["vader"].score),
        each(nrc.score) if nrc is not None else np.full(d2.shape, math.nan),
        nrc.category if isinstance(nrc, Nrc) else None,
        d2,
        d2 / d2[base],
    )
