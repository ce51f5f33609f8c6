"""How far apart do the same scores come out along different kernel paths?

The tests compare model outputs across batch sizes, paddings and code paths; their bounds
must hold on every x86 machine, not only on the one that wrote them. This script measures
the float noise of those comparisons on the real default model and on the tiny random test
model, at 1 and 2 threads and at several batch sizes, and writes the largest difference of
each to `benchmarks/results/tolerance_noise.md`. A test's bound should sit well above the
largest figure here (the tests use the promise, 1e-4 for batched reading, or about 10x the
measured noise where nothing is promised).

    python benchmarks/tolerance_noise.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import emosae
from emosae.lm.hooks import right_pad

RECORDS = [
    "The soup was cold and nobody apologised.",
    [{"role": "user", "content": "My cat died this morning."}],
    "What a wonderful surprise party!",
    [
        {"role": "user", "content": "I failed the exam."},
        {"role": "assistant", "content": "I'm sorry. You can retake it."},
        {"role": "user", "content": "They said I can't!"},
    ],
    "I am terrified of the dark road home tonight, and the streetlights are out again.",
    "Fine, thanks.",
]


def reading_noise(model, directions) -> dict[str, float]:
    """Largest score difference of `read_many` at batch sizes 1, 2 and 16 against
    `emosae.read` one record at a time (at the record's read position), relative to the
    score where it exceeds 1: float32 carries 7 digits, so a score of 1,400 (a one-token
    text) differs by 1.2e-4 where scores of about 5 differ by 3e-6."""
    one = [emosae.read(model, r, directions) for r in RECORDS]
    ref = [{c: float(x.at_read[i]) for i, c in enumerate(x.concepts)} for x in one]
    out = {}
    for bs in (1, 2, 16):
        rows = list(emosae.read_many(model, RECORDS, directions, batch_size=bs))
        out[f"read_many bs={bs} vs read"] = max(
            abs(row["scores"][c] - want[c]) / max(1.0, abs(want[c]))
            for row, want in zip(rows, ref, strict=True)
            for c in want
        )
    return out


def tiny_noise() -> dict[str, float]:
    """The tiny random model of the fast tests: padded batch vs one sequence."""
    torch.manual_seed(0)
    cfg = HookedTransformerConfig(
        n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_vocab=101, act_fn="gelu"
    )
    tiny = HookedTransformer(cfg).eval()
    seqs = [torch.randint(0, 101, (n,)) for n in (30, 3, 17)]
    with torch.no_grad():
        batched = tiny(right_pad(seqs, pad=0))
        return {
            "tiny padded batch vs alone (logits)": max(
                float((batched[i, : len(s)] - tiny(s[None])[0]).abs().max())
                for i, s in enumerate(seqs)
            )
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/tolerance_noise.md")
    args = ap.parse_args()
    model = emosae.load_model()
    directions = emosae.load_directions()
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, diff in {**reading_noise(model, directions), **tiny_noise()}.items():
            rows.append((threads, name, diff))
            print(f"threads={threads} {name}: {diff:.3g}")
    lines = [
        "# Float noise of the comparisons the tests make",
        "",
        f"`python benchmarks/tolerance_noise.py` (torch {torch.__version__}, "
        f"{len(directions)} shipped concepts, {len(RECORDS)} records).",
        "",
        "| threads | comparison | largest difference (relative above 1) |",
        "|---|---|---|",
        *(f"| {t} | {n} | {d:.3g} |" for t, n, d in rows),
        "",
    ]
    Path(args.out).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
