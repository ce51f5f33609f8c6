"""Choosing where and how hard a vector steers: for each candidate layer, sweep the
strength on a few calibration prompts, keep the largest strength within the coherence
budget, choose the layer whose reply readout moves most there, and report the effect of
that choice on other (held-out) prompts, so the choice does not inflate the result.

Every measurement is `steered_replies` (emosae.experiments.steered): greedy replies to
neutral prompts, steered where the vector steers (from the reply on), read back by the
unsteered model in the concept's readout units, with Warriner valence, perplexity under
the unsteered model and the per-token KL of the steered from the unsteered distribution.

The recommended strength at a layer is the largest swept strength s such that every
swept strength in (0, s] keeps the median reply perplexity ratio <= `budget` (default 2:
steered replies at most twice as surprising to the unsteered model) and, when
`kl_budget` is set, the mean per-token KL <= `kl_budget` (a published recipe allows about
1 nat over 20 steered tokens: 0.05). None when even the smallest breaks a budget.

Held-out report at (layer, r): readout shift +r vs unsteered and the success rate (the
fraction of prompts whose +r reply reads higher on the concept than the unsteered reply,
Wilson 95% interval), valence +r vs -r, perplexity ratio and KL at +r and -r; intervals
are bootstrap 95% over prompts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.experiments.steered import SteeredReplies, steered_replies
from emosae.steering.vector import MAX_STRENGTH, SteeringVector


@dataclass(frozen=True)
class CalibrationConfig:
    """The strength search, the coherence budgets and the prompts."""

    strengths: tuple[float, ...] = (0.075, 0.15, 0.225, 0.3, 0.375, 0.45, 0.525, 0.6)
    """Positive relative strengths searched (both signs are used at the chosen one)."""
    n_prompts: int = 3
    """Calibration prompts (the first neutral prompts): layer and strength are chosen on them."""
    n_heldout: int = 10
    """Other neutral prompts the choice is reported on (0: no held-out report)."""
    max_new_tokens: int = 16
    budget: float = 2.0
    """Largest allowed ratio of steered to unsteered median reply perplexity."""
    kl_budget: float | None = None
    """Largest allowed mean per-token KL(steered || unsteered) in nats (None: no KL budget)."""

    def __post_init__(self):
        if not self.strengths or not all(math.isfinite(s) for s in self.strengths):
            raise EmosaeError("calibration strengths must be finite numbers")
        if not all(0 < s <= MAX_STRENGTH for s in self.strengths):
            raise EmosaeError(
                f"calibration strengths must lie in (0, {MAX_STRENGTH:g}]: both signs are used"
            )
        if self.n_prompts < 1 or self.n_heldout < 0 or self.max_new_tokens < 1:
            raise EmosaeError("n_prompts and max_new_tokens must be >= 1, n_heldout >= 0")
        if not self.budget > 1 or (self.kl_budget is not None and not self.kl_budget > 0):
            raise EmosaeError("budget must be > 1 and kl_budget > 0")


class Calibration(NamedTuple):
    """Where and how hard one concept's vector steers (lists are per swept strength,
    ascending from 0, on the calibration prompts at the chosen layer)."""

    concept: str
    source: str
    hook: str
    """The chosen layer's hook: where the vector steers."""
    layer: int | None
    strengths: list[float]
    readout: list[float]
    valence: list[float]
    ppl_ratio: list[float]
    kl: list[float]
    recommended: float | None
    budget: float
    replies: dict[str, str]
    """The reply to the first calibration prompt at each strength (str(strength) -> text)."""
    kl_budget: float | None = None
    layers: dict[str, Any] = {}
    """Per candidate layer: its hook, recommended strength and readout shift there."""
    heldout: dict[str, Any] | None = None
    """The chosen (layer, strength) on held-out prompts (module docstring)."""
    valence_shift: dict[str, Any] | None = None
    """Held-out valence at +r minus -r: mean, bootstrap 95% interval, n prompts."""

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def recommend(
    strengths: list[float],
    ppl_ratio: list[float],
    budget: float,
    kl: list[float] | None = None,
    kl_budget: float | None = None,
) -> float | None:
    """Largest positive strength whose sweep up to it stays within the budgets."""
    kl = kl if kl is not None else [0.0] * len(strengths)
    best = None
    for s, r, k in sorted(zip(strengths, ppl_ratio, kl, strict=True)):
        if s <= 0:
            continue
        if not r <= budget or (kl_budget is not None and not k <= kl_budget):
            break  # nan (no words) breaks it too
        best = s
    return best


def _prompts(prompts: list[str] | None, cfg: CalibrationConfig) -> tuple[list[str], list[str]]:
    """Calibration prompts and held-out prompts (neutral prompts not among them)."""
    pool = data.load_neutral_prompts()
    cal = list(prompts) if prompts else pool[: cfg.n_prompts]
    rest = [p for p in pool if p not in cal][: cfg.n_heldout]
    if len(rest) < cfg.n_heldout:
        raise EmosaeError(f"only {len(rest)} neutral prompts are left for {cfg.n_heldout} held out")
    return cal, rest


def _sweep(model: Any, vec: SteeringVector, prompts: list[str], cfg: CalibrationConfig):
    """One layer: the sweep, its recommended strength and the readout shift there."""
    sr = steered_replies(
        model, vec, prompts, list(cfg.strengths), max_new_tokens=cfg.max_new_tokens
    )
    ratio, kl = sr.ppl_ratio().tolist(), sr.kl_per_token().tolist()
    rec = recommend(sr.strengths, ratio, cfg.budget, kl, cfg.kl_budget)
    shift = sr.shift("readout", rec)["mean"] if rec is not None else -math.inf
    return sr, rec, shift


def calibrate(
    vec: SteeringVector,
    model: Any,
    prompts: list[str] | None = None,
    cfg: CalibrationConfig | None = None,
    *,
    candidates: dict[int, SteeringVector] | None = None,
) -> Calibration:
    """Calibrate `vec` (see the module docstring). `candidates` ({layer: vector}, each
    read like `vec`) are the layers to choose among; default: `vec`'s own only."""
    cfg = cfg or CalibrationConfig()
    cal_prompts, held = _prompts(prompts, cfg)
    _ = vec.hook_name  # one-line error for a multi-hook vector
    options = candidates or {vec.layer: vec}
    tried = {layer: _sweep(model, v, cal_prompts, cfg) for layer, v in options.items()}
    layer = max(tried, key=lambda L: (tried[L][2], L == vec.layer))
    sr, rec, _ = tried[layer]
    chosen = options[layer]
    rows = {
        str(L): {"hook": options[L].hook_name, "recommended": r, "readout_shift": sh}
        for L, (_, r, sh) in tried.items()
    }
    report = _heldout(model, chosen, held, rec, cfg) if rec is not None and held else None
    return Calibration(
        concept=vec.concept,
        source=vec.source,
        hook=chosen.hook_name,
        layer=layer,
        strengths=sr.strengths,
        readout=(sr.readout - sr.readout[0]).mean(1).tolist(),
        valence=[float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for v in sr.valence],
        ppl_ratio=sr.ppl_ratio().tolist(),
        kl=sr.kl_per_token().tolist(),
        recommended=rec,
        budget=cfg.budget,
        replies={str(s): sr.replies[i][0] for i, s in enumerate(sr.strengths)},
        kl_budget=cfg.kl_budget,
        layers=rows,
        heldout=report,
        valence_shift=report["valence_shift"] if report else None,
    )


def _heldout(
    model: Any, vec: SteeringVector, prompts: list[str], r: float, cfg: CalibrationConfig
) -> dict[str, Any]:
    """The chosen vector at +-r on held-out prompts."""
    sr: SteeredReplies = steered_replies(
        model, vec, prompts, [-r, r], max_new_tokens=cfg.max_new_tokens
    )
    ratio, kl = sr.ppl_ratio(), sr.kl_per_token()
    at = {"+r": sr.row(r), "-r": sr.row(-r)}
    return {
        "n_prompts": len(prompts),
        "strength": r,
        "readout_shift": sr.shift("readout", r),
        "readout_shift_minus": sr.shift("readout", -r),
        "success": sr.success(r),
        "valence_shift": {"strength": r, **sr.shift("valence", r, -r)},
        "judged": sr.judged(r),  # outside judges and the own readout, +r vs 0
        "ppl_ratio": {k: float(ratio[i]) for k, i in at.items()},
        "kl_per_token": {k: float(kl[i]) for k, i in at.items()},
        "replies": {k: sr.replies[i][0] for k, i in {**at, "0": sr.row(0.0)}.items()},
    }


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
