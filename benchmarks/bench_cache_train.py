"""Benchmark emosae's activation cache and SAE training against references, side by side.

Everything runs on CPU in one process (plus one child for the RSS figure), so each figure
is a ratio of two numbers measured on the same machine in the same run:

1. caching tokens/s (`cache_activations`) vs the bare forward `model(tokens, stop_at_layer)`
   over the same contexts and batch size;
2. caching tokens/s vs sae-lens's `CacheActivationsRunner` on the same model and tokens;
3. SAE training samples/s (sae-lens `SAETrainer`) fed from the disk cache (`batch_stream`)
   vs fed from an in-memory tensor, same SAE, seed and number of steps;
4. that training throughput vs the dense-matmul bound: the five float32 GEMMs of one
   training step (encoder, decoder, three backward) timed with `torch.mm`;
5. peak RSS of a child process caching `--rss-tokens` tokens, and its RSS after loading
   the model.

Each measurement is warmed up once before it is timed (`time.perf_counter`). Training
throughput is timed from the first training step, after sae-lens's norm estimate.

Run (full size takes a while on CPU):
    python benchmarks/bench_cache_train.py
    python benchmarks/bench_cache_train.py --tokens 4096 --rss-tokens 8192 --sae-width 512 \
        --train-batch 256                                   # smoke test, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from emosae.activations import ActivationCache, CacheConfig, batch_stream, cache_activations
from emosae.contexts import CorpusConfig, iter_contexts
from emosae.models import load_model
from emosae.training import SAEConfig, TrainConfig, _training_sae, trainer_config

CTX = 128  # tokens per context
SHARD_CONTEXTS = 256  # CacheConfig.contexts_per_shard default; sae-lens buffers match it


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cache_cfg(out: Path, tokens: int, args: argparse.Namespace) -> CacheConfig:
    return CacheConfig(
        out=str(out),
        layers=(args.layer,),
        corpus=CorpusConfig(max_tokens=tokens, context_len=CTX),
        batch_size=args.batch,
        dtype="float16",
        device="cpu",
    )


@torch.no_grad()
def bare_forward(model, contexts, args) -> float:
    """Tokens/s of the bare forward over the same contexts and batch size."""
    batches = [
        torch.stack([c.tokens for c in contexts[i : i + args.batch]])
        for i in range(0, len(contexts), args.batch)
    ]
    model(batches[0], stop_at_layer=args.layer + 1)  # warm-up
    t = time.perf_counter()
    for b in batches:
        model(b, stop_at_layer=args.layer + 1)
    return len(contexts) * CTX / (time.perf_counter() - t)


def ours_caching(model, n_ctx, args, out: Path) -> float:
    cache_activations(cache_cfg(out / "warmup", args.batch * CTX, args), model)
    t = time.perf_counter()
    cache_activations(cache_cfg(out / "ours", args.tokens, args), model)
    return n_ctx * CTX / (time.perf_counter() - t)


def saelens_caching(model, contexts, args, out: Path) -> float:
    """Tokens/s of sae-lens's CacheActivationsRunner (one buffer per our shard)."""
    import datasets
    import sae_lens.cache_activations_runner as car
    from sae_lens.config import CacheActivationsRunnerConfig

    car.load_model = lambda **_: model  # the runner's constructor would load the model again
    ds = datasets.Dataset.from_dict({"input_ids": [c.tokens.tolist() for c in contexts]})
    bpt = model.cfg.d_model * 2  # float16 bytes per token

    def runner(path: Path, n_ctx: int):
        buf_ctx = min(n_ctx, SHARD_CONTEXTS) // args.batch * args.batch
        cfg = CacheActivationsRunnerConfig(
            dataset_path="emosae-bench-pretokenized",  # unused: override_dataset is passed
            model_name="smollm2",
            hook_name=f"blocks.{args.layer}.hook_resid_post",
            d_in=model.cfg.d_model,
            context_size=CTX,
            model_batch_size=args.batch,
            training_tokens=n_ctx * CTX,
            dtype="float16",
            new_cached_activations_path=str(path),
            device="cpu",
            shuffle=False,
            prepend_bos=False,
            buffer_size_gb=(buf_ctx * CTX * bpt + bpt // 2) / 1e9,
        )
        return car.CacheActivationsRunner(cfg, override_dataset=ds), cfg

    runner(out / "sl_warmup", args.batch)[0].run()
    r, cfg = runner(out / "saelens", len(contexts))
    t = time.perf_counter()
    r.run()
    # Every buffer is filled (wrapping around the dataset), so count what was forwarded.
    return cfg.n_buffers * cfg.n_tokens_in_buffer / (time.perf_counter() - t)


def train_throughput(cache: ActivationCache, args) -> tuple[float, float]:
    """Samples/s of SAETrainer fed from the disk cache and from an in-memory tensor."""
    from sae_lens import SAETrainer

    class Timed(SAETrainer):
        t0: float | None = None

        def step(self, batch):
            if self.t0 is None:  # first training step: the norm estimate is over
                self.t0 = time.perf_counter()
            return super().step(batch)

    hook, B = cache.hooks[0], args.train_batch
    rows = cache.rows(hook, "train")
    sc = SAEConfig(d_sae=args.sae_width, k=args.k)

    def in_memory(seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        while True:
            perm = torch.randperm(len(rows), generator=g)
            for i in range(0, len(perm) - B + 1, B):
                yield rows[perm[i : i + B]]

    def fit(provider, steps: int) -> float:
        epochs = (steps * B + 0.5) / len(rows)
        tc = trainer_config(TrainConfig(sae=sc, batch_size=B, epochs=epochs), len(rows), "cpu",
                            False, "bench")  # fmt: skip
        assert tc.total_training_steps == steps
        torch.manual_seed(0)
        trainer = Timed(tc, _training_sae(sc, cache.d_model, "cpu", steps), data_provider=provider)
        trainer.fit()
        return steps * B / (time.perf_counter() - trainer.t0)

    fit(in_memory(), min(10, args.steps))  # warm-up
    disk = fit(batch_stream(cache, hook, B, device="cpu", seed=0), args.steps)
    mem = fit(in_memory(), args.steps)
    return disk, mem


def gemm_bound(B: int, F: int, D: int, min_s: float = 1.0) -> float:
    """Samples/s if a training step cost only its five dense float32 GEMMs."""
    x, g = torch.randn(B, D), torch.randn(B, D)
    w_enc, w_dec, f = torch.randn(D, F), torch.randn(F, D), torch.randn(B, F)

    def five():
        torch.mm(x, w_enc)  # encoder forward
        torch.mm(f, w_dec)  # decoder forward
        grad_f = torch.mm(g, w_dec.T)  # backward: grad of the features
        torch.mm(f.T, g)  # grad W_dec
        torch.mm(x.T, grad_f)  # grad W_enc

    five()  # warm-up
    times, end = [], time.perf_counter() + min_s
    while len(times) < 5 or time.perf_counter() < end:
        t = time.perf_counter()
        five()
        times.append(time.perf_counter() - t)
    return B / statistics.median(times)


CHILD = """
import json, sys
from emosae.activations import CacheConfig, cache_activations
from emosae.contexts import CorpusConfig
from emosae.models import load_model
out, layer, tokens, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = load_model(device="cpu")
status = open("/proc/self/status").read()
loaded_kib = int(status.split("VmRSS:")[1].split()[0])
cache_activations(CacheConfig(out=out, layers=(layer,), batch_size=batch, dtype="float16",
    device="cpu", corpus=CorpusConfig(max_tokens=tokens, context_len=128)), model)
print(json.dumps({"loaded_kib": loaded_kib}))
"""


def peak_rss(args, out: Path) -> tuple[float, float]:
    """(peak RSS, RSS after model load) in GB of a child caching --rss-tokens tokens."""
    argv = [str(out / "rss"), str(args.layer), str(args.rss_tokens), str(args.batch)]
    p = subprocess.run([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise RuntimeError(f"RSS child exited with {p.returncode}")
    loaded = json.loads(p.stdout.strip().splitlines()[-1])["loaded_kib"]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return peak * 1024 / 1e9, loaded * 1024 / 1e9


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:160]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000, help="tokens to cache (and train on)")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8, help="contexts per forward pass")
    ap.add_argument("--sae-width", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--train-batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=100, help="SAE training steps per run")
    ap.add_argument("--rss-tokens", type=int, default=1_000_000)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-runner", action="store_true", help="skip sae-lens's runner")
    ap.add_argument("--out", default=None, help="work folder (default: a temp dir, removed)")
    args = ap.parse_args()
    if args.tokens < args.batch * CTX:
        ap.error(f"--tokens must be at least --batch x {CTX}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="emosae-bench-", dir=args.out))  # always fresh
    rows: list[tuple[str, str, str, str, str]] = []

    def ratio_row(name, ours, ref, unit, target):
        rows.append((name, f"{ours:,.0f} {unit}", f"{ref:,.0f} {unit}", f"{ours / ref:.2f}", target))

    try:
        log("loading model")
        model = load_model(device="cpu")
        contexts = list(iter_contexts(CorpusConfig(max_tokens=args.tokens), model.tokenizer))
        log(f"bare forward over {len(contexts)} contexts")
        bare = bare_forward(model, contexts, args)
        log("cache_activations")
        ours = ours_caching(model, len(contexts), args, out)
        ratio_row("1. caching vs bare forward", ours, bare, "tok/s", ">= 0.9")
        if not args.skip_runner:
            log("sae-lens CacheActivationsRunner")
            try:
                theirs = saelens_caching(model, contexts, args, out)
                ratio_row("2. caching vs sae-lens CacheActivationsRunner", ours, theirs, "tok/s",
                          ">= 2")  # fmt: skip
            except Exception as e:  # report why instead of a ratio
                rows.append(("2. caching vs sae-lens runner", f"{ours:,.0f} tok/s",
                             f"failed: {one_line(e)}", "-", ">= 2"))  # fmt: skip
        log(f"SAE training, {args.steps} steps x {args.train_batch}")
        cache = ActivationCache.open(out / "ours")
        disk, mem = train_throughput(cache, args)
        ratio_row("3. SAE training: disk cache vs in-memory", disk, mem, "samples/s", ">= 0.9")
        bound = gemm_bound(args.train_batch, args.sae_width, cache.d_model)
        ratio_row("4. SAE training (disk) vs 5-GEMM bound", disk, bound, "samples/s", "-")
        if not args.skip_rss:
            log(f"peak RSS caching {args.rss_tokens} tokens (child process)")
            peak, loaded = peak_rss(args, out)
            rows.append((f"5. peak RSS caching {args.rss_tokens:,} tokens", f"{peak:.2f} GB",
                         f"{loaded:.2f} GB after model load", "-", "< 4 GB"))  # fmt: skip
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)

    print("\n| figure | ours | reference | ratio | target |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
        "unknown CPU",
    )
    print(f"\ncommand: python {shlex.join(sys.argv)}")
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu}), torch {torch.__version__}, "
        f"torch.get_num_threads() {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
