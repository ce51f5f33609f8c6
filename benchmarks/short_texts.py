"""What the short-text read position changes (issue 22), with the shipped directions.

Plain text is read as the mean of the per-token scores from the probe's skip (20) on. A
text shorter than that used to be read at its last token alone; now a text shorter than
skip + min_span (min_span = skip) is read as the mean over every token after the first,
the attention sink (`emosae.reading.trace.text_read_start`). This script compares three
rules over the same per-token readings:

  before     mean from min(skip, n - 1) on (the last token alone when n <= skip)
  now        mean from text_read_start(n, skip) on
  all        mean over every token, the sink included

on (1) the 288 held-out bundled stories, whole (all are >= 149 tokens: the rule must leave
them unchanged); (2) their first n tokens, n = 6 .. 40 (a causal model reads a prefix
exactly as the first n positions of the whole story): top-1 accuracy over the 48 emotions
and a valence AUROC; (4) 300 short sentences, "I keep thinking about the {word}.", built
from the 150 most positive and 150 most negative words of the Warriner et al. (2013) norms
(bundled): valence AUROC. The valence axis is sum_c (v_c - mean v) * score_c, with v_c
the Warriner valence of concept c; a story is positive when its emotion's v_c > 5.
(3) the first, second and last sentence of each held-out story, read on its own (natural
short texts, ending in punctuation). min_span = skip was fixed before measuring; a fourth
column, `last`, reads the last token alone whatever the length, for comparison.

    OMP_NUM_THREADS=1 python benchmarks/short_texts.py > benchmarks/results/short_texts.txt
"""

from __future__ import annotations

import argparse
import re

import torch
from tqdm import tqdm

import emosae
from emosae import data
from emosae.reading.trace import text_read_start

PREFIXES = (6, 10, 15, 20, 25, 30, 35, 40)


def auroc(score: torch.Tensor, pos: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counted half."""
    a, b = score[pos], score[~pos]
    gt = (a[:, None] > b[None]).float().mean()
    eq = (a[:, None] == b[None]).float().mean()
    return float(gt + eq / 2)


def read_at(per_tok: list[torch.Tensor], n: int | None, start) -> torch.Tensor:
    """[N, C] reads of the first n tokens (None: all) of each text, from start(len) on."""
    out = []
    for s in per_tok:
        s = s[:n] if n else s
        out.append(s[start(len(s)) :].mean(0))
    return torch.stack(out)


def rules(skip: int) -> dict:
    return {
        "before": lambda n: min(skip, n - 1),
        "now": lambda n: text_read_start(n, skip),
        "all": lambda n: 0,
        "last": lambda n: n - 1,
    }


def sentences(text: str) -> list[str]:
    return [x for x in re.split(r"(?<=[.!?])\s+", text.strip()) if x]


def per_token(model, texts: list[str], vecs) -> list[torch.Tensor]:
    return [emosae.read(model, t, vecs).scores for t in tqdm(texts, desc="reading", leave=False)]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    model, vecs = emosae.load_model(device="cpu"), emosae.load_directions()
    concepts = list(vecs)
    skip = next(iter(vecs.values())).readout.skip
    cs = emosae.load_concept_set(None)
    norms = data.emotion_norms()
    val = torch.tensor([norms[c].valence if norms[c] else float("nan") for c in concepts])
    w = (val - val.nanmean()).nan_to_num(0.0)  # a concept without a norm weighs nothing
    held = [s for s in cs.stories if cs.is_heldout(s)]
    print(f"model {model.cfg.model_name}, hook {next(iter(vecs.values())).hook_name}, skip {skip}")

    def report(name: str, stories, reads_by_rule):
        label = torch.tensor([concepts.index(s.concept) for s in stories])
        known = torch.tensor([norms[s.concept] is not None for s in stories])
        pos = torch.tensor(
            [bool(norms[s.concept] and norms[s.concept].valence > 5) for s in stories]
        )
        cells = []
        for r in reads_by_rule.values():
            top1 = float((r.argmax(1) == label).float().mean())
            au = auroc((r @ w)[known], pos[known])
            cells.append(f"{top1:.3f} / {au:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")

    head = "| texts | " + " | ".join(rules(skip)) + " |"
    cells_doc = "each cell: top-1 over the 48 emotions (chance 0.021) / valence AUROC"

    ht = per_token(model, [s.text for s in held], vecs)
    lengths = [len(s) for s in ht]
    print(f"held-out stories: {len(held)}, tokens {min(lengths)}..{max(lengths)}")
    whole = {k: read_at(ht, None, f) for k, f in rules(skip).items()}
    same = torch.equal(whole["before"], whole["now"])
    print(f"whole stories: 'now' identical to 'before': {same}")
    print(cells_doc)
    print()
    print(head)
    print("|---" * (len(rules(skip)) + 1) + "|")
    report("whole held-out stories", held, whole)
    for n in PREFIXES:
        reads = {k: read_at(ht, n, f) for k, f in rules(skip).items()}
        report(f"their first {n} tokens", held, reads)
    for name, i in (("first", 0), ("second", 1), ("last", -1)):
        st = per_token(model, [sentences(s.text)[i] for s in held], vecs)
        n_tok = sorted(len(s) for s in st)
        tag = f"their {name} sentence alone ({n_tok[0]}-{n_tok[-1]} tokens)"
        report(tag, held, {k: read_at(st, None, f) for k, f in rules(skip).items()})
    print()

    words = sorted(data.load_norms().items(), key=lambda kv: kv[1].valence)
    picked = [w_ for w_, _ in words[:150]] + [w_ for w_, _ in words[-150:]]
    sents = [f"I keep thinking about the {w_}." for w_ in picked]
    pos = torch.tensor([False] * 150 + [True] * 150)
    st = per_token(model, sents, vecs)
    n_tok = sorted(len(s) for s in st)
    print(f"300 Warriner sentences ({n_tok[0]}..{n_tok[-1]} tokens), valence AUROC:")
    cells = [f"{k} {auroc(read_at(st, None, f) @ w, pos):.3f}" for k, f in rules(skip).items()]
    print("  " + " | ".join(cells))


if __name__ == "__main__":
    main()
