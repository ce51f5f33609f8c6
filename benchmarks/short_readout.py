"""Which readout reads short texts best? (issue 32, item 4)

On the outside corpus (`emosae/data/resources/outside/`, 528 texts of 12-42 tokens, never
used to fit anything) and on the bundled held-out stories (which must not get worse), with
the shipped probe vectors, one forward per text collects every probe layer; then each rule
reads the same per-token activations:

  L<n>            the layer-n probe vectors, the mean from `text_read_start` on (today's
                  rule at layer 15, the readout layer)
  L<n> last       layer n, the last token alone
  L<n> from 1     layer n, the mean over every token after the first, whatever the length
  mean 14-17      the mean of the layer-14, 15 and 17 readings (each in its own story units)
  L15 sentences   (`--sentence-fit`) concept directions fitted the same way (difference of
                  each concept's mean from the grand mean, no neutral-PC denoising) on the
                  training stories cut into sentences, each sentence read on its own from
                  token 1, against `L15 stories`, the same recipe on whole training stories

Figures: top-1 and top-3 over the 48 concepts and the valence AUROC (texts of positive vs
negative concepts along sum_c (v_c - mean v) * score_c), each with a 95% bootstrap
interval over texts.

    OMP_NUM_THREADS=1 python benchmarks/short_readout.py > benchmarks/results/short_readout.md
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch

import emosae
from emosae.data.concepts import bundled
from emosae.data.outside import load_outside
from emosae.lm.hooks import padded_hook_acts
from emosae.reading.trace import Basis, tokens_to_read
from emosae.validation import measures as M

LAYERS = (11, 14, 15, 17, 20)


def per_token(model, texts: list[str], bases: dict[int, Basis]):
    """Per layer, each text's [T, C] scores, and each text's read start."""
    skip = bases[15].skip
    plans = [tokens_to_read(model, t, skip) for t in texts]
    hooks = [bases[L].hook for L in LAYERS]
    out: dict[int, list] = {L: [None] * len(texts) for L in LAYERS}
    for i, acts in padded_hook_acts(model, [p[0] for p in plans], hooks, 16):
        for L in LAYERS:
            out[L][i] = bases[L].score(acts[bases[L].hook].float().cpu())
    return out, [p[2] for p in plans]


def rules(s: dict[int, list], starts: list[int]) -> dict[str, np.ndarray]:
    """[N, C] readings of every text under each rule."""

    def mean_from(L: int, first) -> np.ndarray:
        return np.stack(
            [x[first(len(x), p) :].mean(0).numpy() for x, p in zip(s[L], starts, strict=True)]
        )

    out = {}
    for L in LAYERS:
        out[f"L{L}"] = mean_from(L, lambda n, p: p)
        out[f"L{L} last"] = np.stack([x[-1].numpy() for x in s[L]])
        out[f"L{L} from 1"] = mean_from(L, lambda n, p: min(1, n - 1))
    out["mean 14-17"] = (out["L14"] + out["L15"] + out["L17"]) / 3
    return out


def _means(model, texts: list[str], hook: str, skip: int) -> np.ndarray:
    """[N, D] mean activation of each text from its read start (as `emosae.read`)."""
    plans = [tokens_to_read(model, t, skip) for t in texts]
    out: list = [None] * len(texts)
    for i, acts in padded_hook_acts(model, [p[0] for p in plans], [hook], 16):
        out[i] = acts[hook][plans[i][2] :].float().mean(0).cpu().numpy()
    return np.stack(out)


def sentence_fit(model, basis: Basis, evals: dict[str, list[str]]) -> dict[str, dict]:
    """Readings of each evaluation set by directions fitted on training sentences and on
    training stories (the same recipe), as rules for `table`."""
    cs = bundled()
    train = [x for x in cs.stories if not cs.is_heldout(x)]
    sents, s_c = [], []
    for x in train:
        for piece in re.split(r"(?<=[.!?])\s+", x.text):
            if len(piece.split()) >= 4:
                sents.append(piece)
                s_c.append(x.concept)
    fits = {
        "L15 sentences": (_means(model, sents, basis.hook, basis.skip), s_c),
        "L15 stories": (_means(model, [x.text for x in train], basis.hook, basis.skip),
                        [x.concept for x in train]),
    }  # fmt: skip
    evals_m = {k: _means(model, v, basis.hook, basis.skip) for k, v in evals.items()}
    out: dict[str, dict] = {k: {} for k in evals}
    for name, (m_ND, cs_N) in fits.items():
        y = np.array([basis.concepts.index(c) for c in cs_N])
        mu_CD = np.stack([m_ND[y == c].mean(0) for c in range(len(basis.concepts))])
        centre = mu_CD.mean(0)
        u_CD = mu_CD - centre
        u_CD /= np.linalg.norm(u_CD, axis=1, keepdims=True)
        for k, e_ND in evals_m.items():
            out[k][name] = (e_ND - centre) @ u_CD.T
    print(f"(sentence fit: {len(sents)} training sentences, {len(train)} training stories)\n")
    return out


def table(name: str, scores: dict[str, np.ndarray], y: np.ndarray, v_C: np.ndarray) -> list[str]:
    def ci(x):
        return f"{x[0]:.3f} [{x[1]:.3f}, {x[2]:.3f}]"

    lines = [
        f"## {name} (n={len(y)})",
        "",
        "| rule | top-1 | top-3 | valence AUROC |",
        "|---|---|---|---|",
    ]
    for r, s in scores.items():
        lines.append(
            f"| {r} | {ci(M.share_ci(M.topk_hits(s, y, 1)))} | {ci(M.share_ci(M.topk_hits(s, y, 3)))} "
            f"| {ci(M.valence_auroc(s, y, v_C))} |"
        )
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentence-fit", action="store_true", help="only the sentence-fit rules")
    args = ap.parse_args()
    model = emosae.load_model()
    bases = {L: Basis.of(emosae.load_directions(layer=L)) for L in LAYERS}
    concepts = bases[15].concepts
    assert all(b.concepts == concepts for b in bases.values())
    idx = {c: i for i, c in enumerate(concepts)}
    v_C = M.concept_valences(concepts)
    outside = load_outside()
    cs = bundled()
    held = [x for x in cs.stories if cs.is_heldout(x)]
    print("# Short-text readout: rules compared (benchmarks/short_readout.py)\n")
    sets = {
        "outside corpus": ([t.text for t in outside], [t.concept for t in outside]),
        "bundled held-out stories": ([x.text for x in held], [x.concept for x in held]),
    }
    fitted = sentence_fit(model, bases[15], {k: v[0] for k, v in sets.items()})
    for name, (texts, ys) in sets.items():
        y = np.array([idx[c] for c in ys])
        if args.sentence_fit:
            scores = fitted[name]
        else:
            s, starts = per_token(model, texts, bases)
            scores = {**rules(s, starts), **fitted[name]}
        print("\n".join(table(name, scores, y, v_C)))


if __name__ == "__main__":
    with torch.no_grad():
        main()
