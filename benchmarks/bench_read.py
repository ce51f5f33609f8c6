"""Throughput of `emosae.read_many` (issue 22), side by side in one run:

1. batched vs one at a time: records/s of `read_many(..., batch_size=B)` against
   `emosae.read(...).at_read` called per record, over the same records;
2. batched readout vs the bare forward: records/s of `read_many` against
   `model(tokens, stop_at_layer=hook layer + 1)` over exactly the same tokens, in the same
   length-sorted right-padded batches (no tokenizing, no hook, no scoring).
   The goal is >= 0.8.

The records mix plain texts (bundled stories cut at random lengths, 8 to 200 tokens) and
conversations (bundled neutral dialogues: one user turn, or user-assistant-user). Each
measurement is warmed up once; with --repeats N the timed runs alternate N rounds and the
best of each is kept.

    OMP_NUM_THREADS=1 python benchmarks/bench_read.py --threads 1 \
        > benchmarks/results/read_throughput.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time

import torch

import emosae
from emosae import data
from emosae.lm.hooks import pad_id, right_pad, right_pad_mask, stop_layer
from emosae.reading.batch import Record, plan_record
from emosae.reading.trace import Basis

CHUNK = 256
"""read_many's default chunk: records sorted by length together."""


def make_records(model, n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    stories, dialogues = data.load_stories(), data.load_dialogues()
    tok = model.tokenizer
    out: list = []
    for i in range(n):
        if i % 2:
            ids = tok(rng.choice(stories).text, add_special_tokens=False)["input_ids"]
            out.append(tok.decode(ids[: rng.randint(8, 200)]))
        else:
            d = rng.choice(dialogues)
            msgs = [{"role": "user", "content": d.user}]
            if rng.random() < 0.5:
                msgs += [
                    {"role": "assistant", "content": d.assistant},
                    {"role": "user", "content": "Thanks. Can you say more?"},
                ]
            out.append(msgs)
    return out


@torch.no_grad()
def bare_forward(model, seqs: list[torch.Tensor], hook: str, batch: int) -> None:
    """The same batches as `read_many`: chunks of CHUNK records, each sorted by length,
    right-padded and masked."""
    stop, pad, dev = stop_layer([hook]), pad_id(model.tokenizer), model.cfg.device
    for c in range(0, len(seqs), CHUNK):
        part = seqs[c : c + CHUNK]
        order = sorted(range(len(part)), key=lambda i: len(part[i]))
        for b in range(0, len(order), batch):
            chunk = [part[i] for i in order[b : b + batch]]
            model(
                right_pad(chunk, pad).to(dev),
                attention_mask=right_pad_mask(chunk).to(dev),
                stop_at_layer=stop,
            )


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--records", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model, vecs = emosae.load_model(device=a.device), emosae.load_directions()
    basis = Basis.of(vecs)
    recs = make_records(model, a.records)
    # the tokens read_many reads (no per-turn here: one sequence per record)
    seqs = [plan_record(model, Record.of(r, i), basis.skip).tokens for i, r in enumerate(recs)]
    n_tok = sum(len(s) for s in seqs)

    def batched():
        rows = list(emosae.read_many(model, recs, vecs, batch_size=a.batch_size))
        assert len(rows) == len(recs)

    def one_at_a_time():
        rows = [emosae.read(model, r, vecs).at_read for r in recs]
        assert len(rows) == len(recs)

    runs = {
        "read_many (batched)": batched,
        "emosae.read, one at a time": one_at_a_time,
        "bare forward, same batches": lambda: bare_forward(model, seqs, basis.hook, a.batch_size),
    }
    for fn in runs.values():  # warm-up
        fn()
    best = {k: float("inf") for k in runs}
    for _ in range(a.repeats):
        for k, fn in runs.items():
            best[k] = min(best[k], timed(fn))
    rate = {k: len(recs) / t for k, t in best.items()}
    print(f"{len(recs)} records ({n_tok} tokens, {n_tok / len(recs):.0f} per record on average)")
    print(f"{len(vecs)} concepts at {basis.hook}; batch size {a.batch_size}; best of {a.repeats}")
    print()
    print("| run | records/s | tokens/s | seconds |")
    print("|---|---|---|---|")
    for k, r in rate.items():
        print(f"| {k} | {r:.1f} | {r * n_tok / len(recs):,.0f} | {best[k]:.2f} |")
    print()
    b, one, bare = rate.values()
    print(f"batched / one at a time: {b / one:.2f}x")
    print(f"batched readout / bare forward: {b / bare:.2f} (goal >= 0.8)")
    print()
    print("command: " + " ".join([os.path.basename(sys.executable), *sys.argv]))
    print(
        f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, device {a.device}"
    )


if __name__ == "__main__":
    main()
