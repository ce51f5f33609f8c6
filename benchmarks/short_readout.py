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

Figures: top-1 and top-3 over the 48 concepts and the valence AUROC (texts of positive vs
negative concepts along sum_c (v_c - mean v) * score_c), each with a 95% bootstrap
interval over texts.

    OMP_NUM_THREADS=1 python benchmarks/short_readout.py > benchmarks/results/short_readout.md
"""

from __future__ import annotations

import argparse

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
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
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
    for name, texts, ys in (
        ("outside corpus", [t.text for t in outside], [t.concept for t in outside]),
        ("bundled held-out stories", [x.text for x in held], [x.concept for x in held]),
    ):
        s, starts = per_token(model, texts, bases)
        y = np.array([idx[c] for c in ys])
        print("\n".join(table(name, rules(s, starts), y, v_C)))


if __name__ == "__main__":
    with torch.no_grad():
        main()
