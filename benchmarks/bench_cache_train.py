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

Each measurement is warmed up once, then timed with `time.perf_counter`; with
`--repeats N` the timed runs alternate N rounds and the best of each is kept (fairer on a
busy machine). Training throughput is timed from the first training step, after
sae-lens's norm estimate. On a machine shared with other jobs, `--threads 1` avoids the
large slowdowns of OpenMP threads competing for busy cores.

Run (full size takes a while on CPU):
    python benchmarks/bench_cache_train.py
    python benchmarks/bench_cache_train.py --tokens 4096 --rss-tokens 8192 --sae-width 512 \
        --train-batch 256                                   # smoke test, a few minutes
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

from emosae.lm.models import load_model
from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
from emosae.sae.config import SAEConfig, TrainConfig
from emosae.sae.contexts import CorpusConfig, iter_contexts
from emosae.sae.reader import ActivationCache, batch_stream
from emosae.sae.training import _training_sae, trainer_config

CTX = 128  # tokens per context
SHARD_CONTEXTS = 256  # CacheConfig.contexts_per_shard default; sae-lens buffers match it


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def cache_cfg(out: Path, tokens: int, args: argparse.Namespace) -> CacheJob:
    corpus = CorpusConfig(max_tokens=tokens, context_len=CTX)
    cache = CacheConfig(corpus=corpus, batch_size=args.batch, dtype="float16")
    return CacheJob(out=str(out), layers=(args.layer,), device="cpu", cache=cache)


def best_of(fns: dict, repeats: int) -> dict[str, float]:
    """Run the timed callables in turn, `repeats` rounds (so background load hits them
    alike), and keep each one's best rate."""
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        for k, f in fns.items():
            rates[k].append(f(i))
    return {k: max(v) for k, v in rates.items()}


def caching_runs(model, contexts, args, out: Path) -> dict:
    """Warmed-up timed callables (tokens/s): our cache and the bare forward."""
    n_tok = len(contexts) * CTX
    batches = [
        torch.stack([c.tokens for c in contexts[i : i + args.batch]])
        for i in range(0, len(contexts), args.batch)
    ]

    @torch.no_grad()
    def bare(i: int) -> float:
        t = time.perf_counter()
        for b in batches:
            model(b, stop_at_layer=args.layer + 1)
        return n_tok / (time.perf_counter() - t)

    def ours(i: int) -> float:
        t = time.perf_counter()
        cache_activations(cache_cfg(out / f"ours{i}", args.tokens, args), model)
        return n_tok / (time.perf_counter() - t)

    with torch.no_grad():
        model(batches[0], stop_at_layer=args.layer + 1)  # warm-ups
    cache_activations(cache_cfg(out / "warmup", args.batch * CTX, args), model)
    return {"ours": ours, "bare": bare}


def saelens_run(model, contexts, args, out: Path):
    """Warmed-up timed callable (tokens/s) for sae-lens's CacheActivationsRunner, one
    buffer per our shard, on the same pre-tokenized contexts."""
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
            buffer_size_gb=(buf_ctx * CTX * bpt + bpt // 2) / 1e9,
        )
        return car.CacheActivationsRunner(cfg, override_dataset=ds), cfg

    def theirs(i: int) -> float:
        r, cfg = runner(out / f"saelens{i}", len(contexts))
        t = time.perf_counter()
        r.run()
        dt = time.perf_counter() - t
        shutil.rmtree(out / f"saelens{i}")
        # Every buffer is filled (wrapping around the dataset): count what was forwarded.
        return cfg.n_buffers * cfg.n_tokens_in_buffer / dt

    runner(out / "sl_warmup", args.batch)[0].run()  # warm-up
    return theirs


def train_throughput(cache: ActivationCache, args) -> dict[str, float]:
    """Best samples/s of SAETrainer fed from the disk cache and from an in-memory tensor."""
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
        tcfg = TrainConfig(sae=sc, batch_size=B, epochs=epochs)
        tc = trainer_config(tcfg, len(rows), "cpu", False, "bench")
        assert tc.total_training_steps == steps
        torch.manual_seed(0)
        trainer = Timed(tc, _training_sae(sc, cache.d_model, "cpu", steps), data_provider=provider)
        trainer.fit()
        return steps * B / (time.perf_counter() - trainer.t0)

    fit(in_memory(), min(10, args.steps))  # warm-up
    runs = {
        "disk": lambda i: fit(batch_stream(cache, hook, B, device="cpu", seed=0), args.steps),
        "mem": lambda i: fit(in_memory(), args.steps),
    }
    return best_of(runs, args.repeats)


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
import json, resource, sys
from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
from emosae.sae.contexts import CorpusConfig
from emosae.lm.models import load_model
out, layer, tokens, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
model = load_model(device="cpu")
status = open("/proc/self/status").read()
loaded_kib = int(status.split("VmRSS:")[1].split()[0])
load_peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cache_activations(CacheJob(out=out, layers=(layer,), device="cpu", cache=CacheConfig(
    batch_size=batch, dtype="float16", corpus=CorpusConfig(max_tokens=tokens, context_len=128))), model)
print(json.dumps({"loaded_kib": loaded_kib, "load_peak_kib": load_peak_kib}))
"""


def peak_rss(args, out: Path) -> tuple[float, float, float]:
    """Peak RSS, RSS after loading the model and peak RSS during the load (GB) of a
    child process caching --rss-tokens tokens."""
    argv = [str(out / "rss"), str(args.layer), str(args.rss_tokens), str(args.batch)]
    p = subprocess.run([sys.executable, "-c", CHILD, *argv], stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise RuntimeError(f"RSS child exited with {p.returncode}")
    child = json.loads(p.stdout.strip().splitlines()[-1])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return tuple(kib * 1024 / 1e9 for kib in (peak, child["loaded_kib"], child["load_peak_kib"]))


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:160]


def row(name: str, ours: float, ref: float | str, unit: str, target: str) -> tuple:
    """A table row; `ref` is a string when there is no reference figure (and why)."""
    if isinstance(ref, str):
        return (name, f"{ours:,.0f} {unit}", ref, "-", target)
    return (name, f"{ours:,.0f} {unit}", f"{ref:,.0f} {unit}", f"{ours / ref:.2f}", target)


def measure(args: argparse.Namespace, out: Path) -> list[tuple]:
    log("loading model")
    model = load_model(device="cpu")
    contexts = list(iter_contexts(CorpusConfig(max_tokens=args.tokens), model.tokenizer))
    log(f"caching {len(contexts)} contexts: warm-ups")
    runs, reason = caching_runs(model, contexts, args, out), "skipped (--skip-runner)"
    if not args.skip_runner:
        try:
            runs["saelens"] = saelens_run(model, contexts, args, out)
        except Exception as e:  # e.g. something that needs the network: say why
            reason = f"failed: {one_line(e)}"
    log(f"caching, timed: {args.repeats} round(s) of {', '.join(runs)}")
    rate = best_of(runs, args.repeats)
    ours = rate["ours"]
    rows = [row("1. caching vs bare forward", ours, rate["bare"], "tok/s", ">= 0.9")]
    theirs = rate.get("saelens", reason)
    rows.append(row("2. caching vs sae-lens CacheActivationsRunner", ours, theirs, "tok/s", ">= 2"))
    log(f"SAE training: {args.repeats} round(s) of {args.steps} steps x {args.train_batch}")
    cache = ActivationCache.open(out / "ours0")
    tr = train_throughput(cache, args)
    disk = tr["disk"]
    rows.append(
        row("3. SAE training: disk cache vs in-memory", disk, tr["mem"], "samples/s", ">= 0.9")
    )
    bound = gemm_bound(args.train_batch, args.sae_width, cache.d_model)
    rows.append(row("4. SAE training (disk) vs 5-GEMM bound", disk, bound, "samples/s", "-"))
    if not args.skip_rss:
        log(f"peak RSS caching {args.rss_tokens} tokens (child process)")
        peak, loaded, load_peak = peak_rss(args, out)
        ref = f"{loaded:.2f} GB after model load (peak {load_peak:.2f} GB while loading)"
        name = f"5. peak RSS caching {args.rss_tokens:,} tokens"
        rows.append((name, f"{peak:.2f} GB", ref, "-", "< 4 GB"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=200_000, help="tokens to cache (and train on)")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8, help="contexts per forward pass")
    ap.add_argument("--sae-width", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--train-batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=100, help="SAE training steps per run")
    ap.add_argument("--repeats", type=int, default=1, help="alternating rounds; best kept")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--rss-tokens", type=int, default=1_000_000)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--skip-runner", action="store_true", help="skip sae-lens's runner")
    ap.add_argument("--out", default=None, help="work folder (default: a temp dir, removed)")
    args = ap.parse_args()
    if args.tokens < args.batch * CTX:
        ap.error(f"--tokens must be at least --batch x {CTX}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="emosae-bench-", dir=args.out))  # always a fresh folder
    try:
        rows = measure(args, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print("\n| figure | ours | reference | ratio | target |\n|---|---|---|---|---|")
    print("\n".join("| " + " | ".join(r) + " |" for r in rows))
    cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln]
    print(f"\ncommand: python {shlex.join(sys.argv)}")
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu[0] if cpu else 'unknown CPU'}), "
        f"torch {torch.__version__}, torch.get_num_threads() {torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
