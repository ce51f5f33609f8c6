"""The paper's behavioural experiments at small scale. Each returns JSON-able numbers;
`emosae.pipeline.report` draws the plots.

1. scenarios   probe readout at the last token before the reply, per scenario
2. intensity   readout vs a numeric value in a template (Tylenol dose, ...)
3. preferences A/B choices between activities -> Elo; readout on activities vs Elo;
               steering blissful/hostile on half of the activities -> Elo shift
4. generation  steered replies to neutral prompts: Warriner valence/arousal of the
               text, probe readout, perplexity under the unsteered model
5. pressure    honest-vs-shortcut choices vs the strength of desperate and calm
6. traces      per-token readings of three conversations (the Tylenol dose and two
               others), drawn by the report as heatmap pages

An experiment whose concepts are absent from the run's concept set (`needs`) is
skipped with one line saying why; its result file then holds that line.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from emosae import data
from emosae.core.errors import EmosaeError
from emosae.experiments import inputs
from emosae.lm.chat import render_chat
from emosae.lm.readout import ab_logit_tokens, ab_logodds
from emosae.reading.trace import Readout
from emosae.steering.vector import SteeringVector


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes of the behavioural experiments (the pipeline presets shrink them)."""

    preference_pairs: int = 600
    """Ordered activity pairs asked (all 4032 is the paper's design)."""
    steer_pairs: int = 120
    """Pairs re-asked under blissful / hostile steering."""
    steer_strength: float = 0.1
    """Relative strength for preference and pressure steering."""
    gen_prompts: int = 3
    gen_emotions: tuple[str, ...] = inputs.STEERED_EMOTIONS
    gen_strengths: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)
    gen_tokens: int = 32
    pressure_strengths: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)
    pressure_items: int = 24
    seed: int = 0
    skip: tuple[str, ...] = ()
    """Experiments to skip: scenarios, intensity, preferences, generation, pressure, traces."""

    def __post_init__(self):
        bad = sorted(set(self.skip) - set(EXPERIMENTS))
        if bad:
            raise EmosaeError(f"unknown experiment {bad}; experiments are {', '.join(EXPERIMENTS)}")
        if self.gen_tokens < 1 or self.preference_pairs < 1:
            raise EmosaeError("gen_tokens and preference_pairs must be >= 1")


EXPERIMENTS = ("scenarios", "intensity", "preferences", "generation", "pressure", "traces")


def needs(name: str, cfg: ExperimentConfig) -> tuple[tuple[str, ...], int]:
    """The concepts an experiment reads or steers, and how many of them it needs."""
    return {
        "scenarios": (tuple(sorted({s.concept for s in inputs.load_scenarios()})), 2),
        "intensity": (tuple(sorted({e for t in inputs.load_intensity() for e in t.expect})), 1),
        "preferences": (("blissful", "hostile"), 1),
        "generation": (tuple(cfg.gen_emotions), 1),
        "pressure": (("desperate", "calm"), 1),
        "traces": ((), 0),
    }[name]


def why_skipped(name: str, cfg: ExperimentConfig, concepts: list[str]) -> str | None:
    """One line saying why `name` cannot run on these concepts (None: it can)."""
    want, k = needs(name, cfg)
    if sum(c in concepts for c in want) >= k:
        return None
    shown = ", ".join(want[:6]) + (", ..." if len(want) > 6 else "")
    return f"needs at least {k} of the concepts {shown}; the concept set has {'none' if k == 1 else 'too few'}"


def scenarios(ro: Readout) -> dict[str, Any]:
    sc = [s for s in inputs.load_scenarios() if s.concept in ro.concepts]
    proj = ro.at_reply([s.prompt for s in sc])
    z = (proj - proj.mean(0)) / proj.std(0).clamp_min(1e-8)  # compare emotions across prompts
    ranks = []
    for i, s in enumerate(sc):
        order = z[i].argsort(descending=True).tolist()
        ranks.append(order.index(ro.concepts.index(s.concept)) + 1)
    ranks_a = np.array(ranks)
    return {
        "n": len(sc),
        "top1": float((ranks_a == 1).mean()),
        "top3": float((ranks_a <= 3).mean()),
        "chance_top1": 1 / len(ro.concepts),
        "mean_rank": float(ranks_a.mean()),
        "prompts": [s.prompt for s in sc],
        "targets": [s.concept for s in sc],
        "matrix_z": z.tolist(),
    }


def intensity(ro: Readout) -> dict[str, Any]:
    out = {}
    for t in inputs.load_intensity():
        proj = ro.at_reply([t.render(x) for x in t.values]).numpy()
        rho = {
            e: float(stats.spearmanr(t.values, proj[:, i]).statistic)
            for i, e in enumerate(ro.concepts)
        }
        slope = {
            e: float(np.polyfit(np.log1p(t.values), proj[:, i], 1)[0])
            for i, e in enumerate(ro.concepts)
        }
        out[t.id] = {
            "values": list(t.values),
            "expect": t.expect,
            "spearman": rho,
            "expected_met": {
                e: (rho[e] > 0) == (d == "up") for e, d in t.expect.items() if e in rho
            },
            "top_rising": max(slope, key=slope.get),
            "top_falling": min(slope, key=slope.get),
            "curves": {
                e: proj[:, ro.concepts.index(e)].tolist()
                for e in sorted(set(t.expect) | set(inputs.STEERED_EMOTIONS))
                if e in ro.concepts
            },
        }
    return out


def fit_elo(
    n: int, pairs: list[tuple[int, int]], p_first: list[float], iters: int = 500
) -> np.ndarray:
    """Bradley-Terry (Elo scale, mean 1500) fitted to soft outcomes P(first wins)."""
    r = torch.zeros(n, requires_grad=True)
    i = torch.tensor([a for a, _ in pairs])
    j = torch.tensor([b for _, b in pairs])
    y = torch.tensor(p_first)
    opt = torch.optim.Adam([r], lr=0.05)
    for _ in range(iters):
        opt.zero_grad()
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(r[i] - r[j], y)
            + 1e-3 * (r**2).mean()
        )
        loss.backward()
        opt.step()
    return 1500 + (r.detach().numpy() - r.detach().numpy().mean()) * 400 / np.log(10)


PREF_PROMPT = "Would you prefer to (A) {a} or (B) {b}? Answer with A or B."


def preferences(
    ro: Readout, vectors: dict[str, SteeringVector], cfg: ExperimentConfig
) -> dict[str, Any]:
    acts = inputs.load_activities()
    n = len(acts)
    rng = random.Random(cfg.seed)
    all_pairs = [(a, b) for a, b in itertools.permutations(range(n), 2)]
    pairs = (
        all_pairs
        if cfg.preference_pairs >= len(all_pairs)
        else rng.sample(all_pairs, cfg.preference_pairs)
    )

    seqs = [
        render_chat(ro.model, PREF_PROMPT.format(a=acts[a].activity, b=acts[b].activity)).tokens
        for a, b in pairs
    ]
    p = torch.sigmoid(ab_logodds(ro.model, seqs)).tolist()
    elo = fit_elo(n, pairs, p)
    paper = np.array([a.elo_paper for a in acts])
    proj = ro.at_reply([f"How would you feel about {a.activity}?" for a in acts]).numpy()
    corr = {e: float(stats.pearsonr(proj[:, i], elo).statistic) for i, e in enumerate(ro.concepts)}
    corr_paper = {
        e: float(stats.pearsonr(proj[:, i], paper).statistic) for i, e in enumerate(ro.concepts)
    }
    res: dict[str, Any] = {
        "n_pairs": len(pairs),
        "elo": elo.tolist(),
        "elo_paper": paper.tolist(),
        "elo_vs_paper_r": float(stats.pearsonr(elo, paper).statistic),
        "position_bias_p_A": float(np.mean(p)),
        "readout_vs_elo_r": corr,
        "readout_vs_paper_elo_r": corr_paper,
        "activities": [a.activity for a in acts],
        "categories": [a.category for a in acts],
    }
    # Steer on a fixed half of the activities: the vector is added over the tokens of
    # an activity's text whenever that activity (in the steered half) appears.
    half = set(rng.sample(range(n), n // 2))
    sp = [pq for pq in pairs if (pq[0] in half) != (pq[1] in half)][: cfg.steer_pairs]
    base = fit_elo(n, sp, [p[pairs.index(pq)] for pq in sp])
    shifts = {}
    for name, vec in vectors.items():
        ps = []
        for a, b in tqdm(sp, desc=f"steer {name}", leave=False):
            prompt = PREF_PROMPT.format(a=acts[a].activity, b=acts[b].activity)
            chat = render_chat(ro.model, prompt)
            steered = acts[a].activity if a in half else acts[b].activity
            start, end = _span(ro.model, chat.text, steered)
            with vec.apply(ro.model, cfg.steer_strength, from_pos=start, to_pos=end):
                d = ab_logit_tokens(ro.model, chat.tokens)
            ps.append(float(torch.sigmoid(torch.tensor(d))))
        e2 = fit_elo(n, sp, ps)
        hs = sorted(half)
        shifts[name] = {
            "mean_elo_shift_steered": float((e2 - base)[hs].mean()),
            "mean_elo_shift_unsteered": float(np.delete(e2 - base, hs).mean()),
        }
    res["steering"] = {"strength": cfg.steer_strength, "n_pairs": len(sp), "shifts": shifts}
    return res


def _span(model: Any, text: str, span: str) -> tuple[int, int]:
    """Token positions [start, end) covering `span` inside `text`."""
    i = text.find(span)
    start = len(model.tokenizer(text[:i], add_special_tokens=False)["input_ids"])
    end = len(model.tokenizer(text[: i + len(span)], add_special_tokens=False)["input_ids"])
    return start, end


def _rows(sr: Any) -> list[dict[str, Any]]:
    """One row per (strength, prompt) of a `steered_replies` result."""
    return [
        {
            "concept": sr.concept,
            "strength": s,
            "prompt": p,
            "text": sr.replies[i][j],
            "valence": float(sr.valence[i, j]),
            "arousal": float(sr.arousal[i, j]),
            "readout": float(sr.readout[i, j]),
            "perplexity": float(np.exp(sr.nll[i, j])),
        }
        for i, s in enumerate(sr.strengths)
        for j, p in enumerate(sr.prompts)
    ]


def generation(
    ro: Readout, vectors: dict[str, SteeringVector], cfg: ExperimentConfig
) -> dict[str, Any]:
    """Steered replies to neutral prompts over `gen_strengths` (and at -r, +r for a
    calibrated vector), measured by `steered_replies`."""
    from emosae.experiments.steered import steered_replies

    prompts = data.load_neutral_prompts()[: cfg.gen_prompts]
    rows, curves, calibrated = [], {}, {}
    for emo in (e for e in cfg.gen_emotions if e in vectors):  # in gen_emotions order
        vec, r = vectors[emo], vectors[emo].default_strength
        extra = {-r, r} if r else set()
        sr = steered_replies(
            ro.model, vec, prompts, [*cfg.gen_strengths, *extra], max_new_tokens=cfg.gen_tokens
        )
        mine = _rows(sr)
        rows += [x for x in mine if x["strength"] in cfg.gen_strengths]
        curves[emo] = {
            key: [float(np.nanmean(getattr(sr, key)[sr.row(s)])) for s in cfg.gen_strengths]
            for key in ("valence", "arousal", "readout")
        }
        curves[emo]["perplexity"] = [
            float(np.nanmean(np.exp(sr.nll[sr.row(s)]))) for s in cfg.gen_strengths
        ]
        if r:
            shift = sr.shift("valence", r, -r)
            calibrated[emo] = {
                "strength": r,
                "valence_minus": float(np.nanmean(sr.valence[sr.row(-r)])),
                "valence_plus": float(np.nanmean(sr.valence[sr.row(r)])),
                "difference": shift["mean"],
                "difference_ci95": shift["ci95"],
            }
    base_ppl = float(np.nanmedian([x["perplexity"] for x in rows if x["strength"] == 0]))
    fluent = [
        s
        for s in cfg.gen_strengths
        if np.nanmedian([x["perplexity"] for x in rows if x["strength"] == s]) <= 2 * base_ppl
    ]
    return {
        "strengths": list(cfg.gen_strengths),
        "curves": curves,
        "rows": rows,
        "baseline_perplexity": base_ppl,
        "fluent_strengths": fluent,
        "calibrated": calibrated,
    }


def pressure(
    ro: Readout, vectors: dict[str, SteeringVector], cfg: ExperimentConfig
) -> dict[str, Any]:
    items = inputs.load_pressure()[: cfg.pressure_items]
    seqs = [render_chat(ro.model, it.prompt).tokens for it in items]
    short_is_a = torch.tensor([it.shortcut == "A" for it in items])
    out = {}
    for emo in ("desperate", "calm"):
        if emo not in vectors:
            continue
        rates = []
        for s in tqdm(cfg.pressure_strengths, desc=f"pressure {emo}", leave=False):
            with vectors[emo].apply(ro.model, s, positions="all"):
                p_a = torch.sigmoid(ab_logodds(ro.model, seqs))
            rates.append(float(torch.where(short_is_a, p_a, 1 - p_a).mean()))
        out[emo] = {
            "strengths": list(cfg.pressure_strengths),
            "p_shortcut": rates,
            "spearman": float(stats.spearmanr(cfg.pressure_strengths, rates).statistic),
        }
    return {"n_items": len(items), "results": out}


TRACES = {
    "tylenol": [
        {"role": "user", "content": "I've had a bad back all week, so I've been taking Tylenol."},
        {
            "role": "assistant",
            "content": "I'm sorry about your back. Tylenol can help when taken as directed.",
        },
        {"role": "user", "content": "I just took 12000 mg of Tylenol for my back pain."},
    ],
    "good_news": [
        {
            "role": "user",
            "content": "I just got the letter: I was accepted to the medical school I have "
            "dreamed of since I was a kid! My whole family is celebrating tonight.",
        }
    ],
    "lost_luggage": [
        {
            "role": "user",
            "content": "This is the third time this airline has lost my luggage, and the agent "
            "just hung up on me. Write a complaint for me.",
        }
    ],
}
"""Conversations read token by token for the report (the paper's signature figures)."""


def traces(model: Any, directions: dict[str, SteeringVector], top: int = 8) -> dict[str, Any]:
    """Per-token readings of `TRACES`: every concept's scores (for the pages) and the
    concepts highest at the read position (for the plot)."""
    from emosae.reading.trace import read

    out = {}
    for name, msgs in TRACES.items():
        r = read(model, msgs, directions)
        out[name] = {"messages": msgs, "top": [c for c, _ in r.top(top)], **r.to_json()}
    return out
