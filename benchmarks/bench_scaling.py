"""Scaling of caching and data-parallel SAE training from 1 to N processes (torchrun).

The same work runs three ways, side by side in one run:
  1 process x 1 thread      the per-process baseline
  1 process x N threads     what one process gets from all N cores
  N processes x 1 thread    torchrun --nproc_per_node=N (gloo on CPU, nccl on GPUs)

Each is a fresh process group timed from inside (rank 0, between barriers), after the
model is loaded, so process start and model loading are left out. With `--repeats R` the
layouts alternate R rounds and the fastest run of each is kept. Printed:
  efficiency = T(1 proc x 1 thread) / (N x T(N procs))    1.0 = perfect scaling
  speedup vs threads = T(1 proc x N threads) / T(N procs)
Caching is the same cache (same contexts and shards, `shard_owner` splits them); training
is the same data-parallel SAE (same global batch and steps; gradients all-reduced).

    python benchmarks/bench_scaling.py                       # defaults: N=2, CPU
    python benchmarks/bench_scaling.py --tokens 8192 --steps 10   # quick look
On a 2-core machine these are two processes sharing two cores, not a cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(args: argparse.Namespace) -> None:
    import torch

    from emosae.core import distributed
    from emosae.core.tracking import WandbConfig
    from emosae.lm.models import load_model
    from emosae.sae.cache import CacheConfig, CacheJob, cache_activations
    from emosae.sae.config import SAEConfig, TrainConfig, TrainJob
    from emosae.sae.contexts import CorpusConfig
    from emosae.sae.training import train_sae

    d, dev = distributed.setup(args.device)
    out = Path(args.dir)
    if args.worker == "cache":
        with distributed.local_main_first(d):
            model = load_model(device=dev)
        cfg = CacheJob(
            out=str(out / "cache"),
            layers=(args.layer,),
            device=str(dev),
            cache=CacheConfig(
                corpus=CorpusConfig(max_tokens=args.tokens, context_len=128),
                contexts_per_shard=args.shard_contexts,
                batch_size=args.batch,
            ),
        )
        run = lambda: cache_activations(cfg, model)  # noqa: E731
        work = args.tokens // 128 * 128
    else:
        from emosae.sae.reader import ActivationCache

        c = ActivationCache.open(args.cache)
        n_train = c.n_rows - c.meta("context_ids", "eval", 20).numel()
        cfg = TrainJob(
            cache=args.cache,
            out=str(out / "sae"),
            train=TrainConfig(
                sae=SAEConfig(architecture="topk", d_sae=args.sae_width, k=32),
                batch_size=args.train_batch,
                epochs=(args.steps + 0.5) * args.train_batch / n_train,  # exactly `steps` steps
                warmup_steps=0,
                eval_contexts=0,
            ),
            parallel="data",
            device=str(dev),
            wandb=WandbConfig(mode="disabled"),
        )
        run = lambda: train_sae(cfg)  # noqa: E731
        work = args.train_batch * args.steps
    d.barrier()
    t0 = time.perf_counter()
    run()
    d.barrier()
    dt = time.perf_counter() - t0
    if d.is_main:
        print(json.dumps({"seconds": dt, "work": work, "threads": torch.get_num_threads()}))
    distributed.shutdown()


def launch(procs: int, threads: int, extra: list[str], args: argparse.Namespace) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["TQDM_DISABLE"] = "1"
    d = tempfile.mkdtemp(dir=args.tmp)
    if procs == 1:
        cmd = [sys.executable, str(HERE)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={procs}", str(HERE)]
    cmd += [*extra, "--dir", d, "--device", args.device]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["dir"] = d
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--tokens", type=int, default=32768, help="tokens to cache")
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--batch", type=int, default=8, help="contexts per forward")
    p.add_argument("--shard-contexts", type=int, default=16)
    p.add_argument("--sae-width", type=int, default=3072)
    p.add_argument("--train-batch", type=int, default=4096, help="global batch")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tmp", default=None, help="folder for the temporary caches")
    p.add_argument("--repeats", type=int, default=1, help="runs per layout; the best is kept")
    p.add_argument("--worker", choices=["cache", "train"], help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    n = args.procs
    common = ["--tokens", str(args.tokens), "--layer", str(args.layer), "--batch", str(args.batch)]
    common += ["--shard-contexts", str(args.shard_contexts), "--sae-width", str(args.sae_width)]
    common += ["--train-batch", str(args.train_batch), "--steps", str(args.steps)]
    layouts = [(1, 1), (1, n), (n, 1)]
    rows, dirs = [], []

    def best(stage: str, extra: list[str]) -> dict:
        """Each layout `--repeats` times, alternating; the fastest run of each is kept."""
        res: dict = {}
        for r in range(args.repeats):
            for procs, threads in layouts:
                print(f"[bench] {stage} {r + 1}/{args.repeats}: {procs} proc x {threads} thread",
                      file=sys.stderr, flush=True)  # fmt: skip
                got = launch(procs, threads, extra, args)
                dirs.append(got["dir"])
                key = (procs, threads)
                if key not in res or got["seconds"] < res[key]["seconds"]:
                    res[key] = got
        return res

    try:
        caches = best("caching", ["--worker", "cache", *common])
        rows.append(("caching", "tokens/s", caches))
        cache = Path(caches[(1, 1)]["dir"]) / "cache"
        trains = best("training", ["--worker", "train", *common, "--cache", str(cache)])
        rows.append(("DP training", "samples/s", trains))
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

    import torch

    print(
        f"\n| stage | unit | 1 proc x 1 thr | 1 proc x {n} thr | {n} procs x 1 thr | "
        f"efficiency T(1x1)/({n} T({n}p)) | speedup vs {n} threads |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, unit, res in rows:
        rate = {k: v["work"] / v["seconds"] for k, v in res.items()}
        t11, t1n, tn = (res[k]["seconds"] for k in layouts)
        print(
            f"| {name} | {unit} | {rate[(1, 1)]:.0f} | {rate[(1, n)]:.0f} | {rate[(n, 1)]:.0f} | "
            f"{t11 / (n * tn):.2f} | {t1n / tn:.2f} |"
        )
    print(
        f"\ncommand: python {' '.join(sys.argv)}\nmachine: {os.cpu_count()} cpus, "
        f"torch {torch.__version__}, device {args.device}"
    )


if __name__ == "__main__":
    main()
