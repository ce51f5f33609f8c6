"""SAE training with sae-lens's `SAETrainer` (or `MultiSAETrainer` for a sweep) fed
from the activation cache, saved in sae-lens's format plus emosae provenance.

A checkpoint folder `checkpoints/<run>/` (or `<run>/<name>/` in a sweep) holds:
  sae_weights.safetensors, cfg.json   sae-lens inference format (`SAE.load_from_disk`)
  emosae.json                         model, hook, cache manifest sha256, config, code version
  metrics.json                        held-out evaluation (see `emosae.sae.metrics`)

Not done here: resuming a killed training run mid-way (a rerun retrains; the pipeline
skips finished checkpoints).
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.finite import check_finite
from emosae.core.layout import SAEFiles
from emosae.core.provenance import code_version
from emosae.core.tracking import finish, init_wandb
from emosae.lm.hooks import block_layer
from emosae.sae.config import SAEConfig, TrainConfig, TrainJob
from emosae.sae.reader import ActivationCache, batch_stream


def _training_sae(sae_cfg: SAEConfig, d_in: int, device: str, total_steps: int) -> Any:
    import sae_lens as sl

    common = dict(
        d_in=d_in,
        d_sae=sae_cfg.d_sae,
        device=device,
        dtype="float32",
        normalize_activations="expected_average_only_in",
    )
    a = sae_cfg.architecture
    if a == "batchtopk":
        c = sl.BatchTopKTrainingSAEConfig(k=sae_cfg.k, **common)
        return sl.BatchTopKTrainingSAE(c)
    if a == "topk":
        return sl.TopKTrainingSAE(sl.TopKTrainingSAEConfig(k=sae_cfg.k, **common))
    if a == "jumprelu":
        c = sl.JumpReLUTrainingSAEConfig(
            l0_coefficient=sae_cfg.l0_coefficient, l0_warm_up_steps=total_steps // 10, **common
        )
        return sl.JumpReLUTrainingSAE(c)
    if a == "standard":
        c = sl.StandardTrainingSAEConfig(
            l1_coefficient=sae_cfg.l1_coefficient, l1_warm_up_steps=total_steps // 10, **common
        )
        return sl.StandardTrainingSAE(c)
    raise EmosaeError(f"unknown architecture {a!r}; choose batchtopk, topk, jumprelu or standard")


def data_statistics(
    cache: ActivationCache, hook: str, eval_every: int, n: int = 50_000
) -> tuple[torch.Tensor, float]:
    """Mean activation and sae-lens's norm scaling factor sqrt(d_in) / E|x| over a fixed
    random sample of `n` training rows, read shard by shard (RAM stays at the sample)."""
    import numpy as np

    shards = range(len(cache.manifest["shards"]))
    # per shard: positions of its training rows
    keep = [np.flatnonzero(cache.split_mask(i, "train", eval_every)) for i in shards]
    starts = np.cumsum([0] + [len(k) for k in keep])
    g = torch.Generator().manual_seed(0)
    pick = np.sort(torch.randperm(int(starts[-1]), generator=g)[:n].numpy())
    parts = []
    for i, k in zip(shards, keep, strict=True):
        sel = pick[(pick >= starts[i]) & (pick < starts[i + 1])] - starts[i]
        if len(sel):
            parts.append(cache.shard_rows(i, hook, k[sel]))
    x = torch.cat(parts)
    return x.mean(0), (x.shape[1] ** 0.5) / x.norm(dim=1).mean().item()


@torch.no_grad()
def init_from_data_(sae: Any, trainer: Any, mean: torch.Tensor, scale: float) -> None:
    """Start the decoder bias at the data mean (in sae-lens's scaled units).

    Residual activations of SmolLM2 carry a large constant offset (the mean is about
    55% of the mean squared norm at layer 15); starting b_dec at zero leaves most
    features dead (measured: 89% dead vs 48% after one epoch at layer 15). The scaling
    factor is fixed here, with sae-lens's own formula, so that b_dec and the inputs
    agree; sae-lens folds it into the weights after training as usual."""
    trainer.activation_scaler.scaling_factor = scale
    sae.b_dec.copy_((mean * scale).to(sae.b_dec))


def trainer_config(
    cfg: TrainConfig, n_rows: int, device: str, log_to_wandb: bool, run_name: str, shards: int = 1
) -> Any:
    """sae-lens trainer config; with `shards` > 1 (data parallel) for one rank's 1/shards
    of every batch, with the same number of steps as one process."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    total = int(n_rows * cfg.epochs) // cfg.batch_size * cfg.batch_size
    if total < cfg.batch_size:
        raise EmosaeError(
            f"the cache has {n_rows} training rows: fewer than one batch of {cfg.batch_size}"
        )
    steps = total // cfg.batch_size
    return SAETrainerConfig(
        total_training_samples=total // shards,
        train_batch_size_samples=cfg.batch_size // shards,
        lr=cfg.lr,
        lr_end=cfg.lr_end if cfg.lr_end is not None else cfg.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=min(cfg.warmup_steps, steps // 10),
        lr_decay_steps=steps // 5,
        device=device,
        dead_feature_window=max(50, min(1000, steps // 4)),
        feature_sampling_window=max(50, min(2000, steps // 2)),
        n_batches_for_norm_estimate=min(100, max(1, steps)),
        logger=LoggingConfig(
            log_to_wandb=log_to_wandb,
            log_weights_to_wandb=False,
            run_name=run_name,
            wandb_log_frequency=10,
            eval_every_n_wandb_logs=10**9,
        ),
    )


def sweep_specs(job: TrainJob, cache: ActivationCache) -> dict[str, tuple[SAEConfig, str]]:
    """{name: (SAE config, hook)} for every SAE that `job` asks for."""
    hook = job.hook or cache.hooks[0]
    sae = job.train.sae
    specs: dict[str, tuple[SAEConfig, str]] = {}
    for h in job.sweep_hooks or (hook,):
        cache.check_hook(h)
        for width in job.sweep_d_sae or (sae.d_sae,):
            for k in job.sweep_k or (sae.k,):
                sc = replace(sae, k=k, d_sae=width)
                specs[sc.name() + (f"_{h}" if job.sweep_hooks else "")] = (sc, h)
    return specs


def parallel_mode(job: TrainJob, world_size: int, n_saes: int, launched: bool) -> str:
    """`single` (one process), `sweep` (SAEs split across ranks) or `data`. Under
    torchrun an explicit `data` uses DDP even on one rank (same code path as many)."""
    if not launched or (world_size == 1 and job.parallel != "data"):
        return "single"
    mode = job.parallel if job.parallel != "auto" else ("data" if n_saes == 1 else "sweep")
    bs = job.train.batch_size
    if mode == "data" and bs % world_size:
        raise EmosaeError(
            f"data-parallel batch_size {bs} must be a multiple of the {world_size} ranks"
        )
    return mode


def train_sae(job: TrainJob, model: Any = None) -> dict[str, Path]:
    """Train the SAE(s) of `job`; returns {name: checkpoint folder} of the SAEs this
    process saved (under torchrun: its share of a sweep, or all on rank 0 in data-
    parallel mode)."""
    from emosae.core import distributed

    d, dev = distributed.setup(job.device)
    cache = ActivationCache.open(job.cache)
    cache.check_hook(job.hook or cache.hooks[0])
    specs = sweep_specs(job, cache)
    mode = parallel_mode(job, d.world_size, len(specs), d.active)
    folders.check_claimable(job.out, job.kind)
    io.check_writable(Path(job.out).parent, f".{d.rank}")
    with folders.lock(job.out) if d.is_main else nullcontext():
        return _train_all(job, cache, specs, mode, d, dev, model)


def _train_all(job, cache, specs, mode, d, dev, model) -> dict[str, Path]:
    if mode == "sweep":
        specs = {n: specs[n] for n in sorted(specs)[d.rank :: d.world_size]}
    saves = mode != "data" or d.is_main
    if job.kind == "sae-sweep" and d.is_main:
        folders.claim(job.out, job.kind)
    cfg = job.train
    n_train = cache.n_rows - int(cache.meta("context_ids", "eval", cfg.eval_every).numel())
    run_name = Path(job.out).name + (f"-rank{d.rank}" if mode == "sweep" else "")
    run = None
    if saves and specs:
        config = {"train": asdict(job), "cache": cache.manifest["corpus"], "parallel": mode}
        run = init_wandb(job.wandb, run_name, config, "train_sae")
    results: dict[str, Path] = {}
    try:
        shards = d.world_size if mode == "data" else 1
        tcfg = trainer_config(cfg, n_train, str(dev), run is not None, run_name, shards)
        by_hook: dict[str, list[str]] = {}
        for n, (_, h) in specs.items():
            by_hook.setdefault(h, []).append(n)
        for h, names in by_hook.items():
            sae_cfgs = {n: specs[n][0] for n in names}
            saes, checks = _fit(job, tcfg, cache, h, sae_cfgs, dev, d, mode)
            if not saves:
                continue
            prov = {"parallel": mode, "rank": d.rank, "world_size": d.world_size, **checks}
            alone = len(specs) == 1 and mode != "sweep"
            for name, sae in saes.items():
                folder = Path(job.out) if alone else Path(job.out) / name
                results[name] = save_and_evaluate(job, sae, folder, specs[name], cache, model, prov)
                _log_metrics(run, name, folder)
    finally:
        finish(run)
    d.barrier()  # data parallel: the other ranks wait for rank 0's checkpoint
    return results


def _fit(
    job: TrainJob,
    tcfg: Any,
    cache: ActivationCache,
    hook: str,
    sae_cfgs: dict[str, SAEConfig],
    dev: torch.device,
    d: Any,
    mode: str,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Train the SAEs of one hook together (one pass over the cache); returns them and
    the number of cross-rank weight checks made (data parallel)."""
    from sae_lens import SAETrainer
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    from emosae.sae import parallel as data_parallel

    cfg = job.train
    saes = {}
    for n, sc in sae_cfgs.items():
        # Same seed for every SAE: its start does not depend on the sweep around it or
        # on which rank trains it.
        torch.manual_seed(cfg.seed)
        saes[n] = _training_sae(sc, cache.d_model, str(dev), tcfg.total_training_steps)
    rank, world = (d.rank, d.world_size) if mode == "data" else (0, 1)
    stream = batch_stream(
        cache,
        hook,
        tcfg.train_batch_size_samples,
        device=dev,
        eval_every=cfg.eval_every,
        resident=cfg.resident,
        seed=cfg.seed,
        rank=rank,
        world_size=world,
    )
    init = data_statistics(cache, hook, cfg.eval_every)
    if len(saes) == 1:
        ((name, sae),) = saes.items()
        trainer = SAETrainer(tcfg, sae, data_provider=stream)
        trainers = {name: trainer}
    else:
        multi = ({hook: b} for b in stream)
        trainer = MultiSAETrainer(tcfg, saes, dict.fromkeys(saes, hook), data_provider=multi)
        trainers = trainer.trainers
    counters = []
    for n, tr in trainers.items():
        init_from_data_(saes[n], tr, *init)
        if mode == "data":
            counters.append(data_parallel.make_data_parallel_(tr, job.sync_check_every))
    trainer.fit()
    if mode == "data":
        for tr in trainers.values():
            data_parallel.release(tr)
    return saes, {"sync_checks": min(c["sync_checks"] for c in counters)} if counters else {}


def save_and_evaluate(
    job: TrainJob,
    sae: Any,
    folder: Path,
    spec: tuple[SAEConfig, str],
    cache: ActivationCache,
    model: Any = None,
    parallel: dict[str, Any] | None = None,
) -> Path:
    """Write the sae-lens inference checkpoint plus provenance, evaluate what was saved
    (the inference SAE as sae-lens loads it), add metrics.json, and rename the folder
    into place: `folder` is either the old checkpoint or the whole new one."""
    from emosae.sae.metrics import evaluate_sae

    sae_cfg, hook = spec
    dev = str(next(sae.parameters()).device)
    folders.check_claimable(folder, "sae")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_dir(folder) as tmp:
        files = SAEFiles(tmp)
        sae.cfg.metadata.hook_name = hook
        sae.cfg.metadata.model_name = cache.manifest["model"]
        sae.save_inference_model(tmp)
        # sae-lens orders cfg.json's keys differently from one process to the next:
        # canonical order, so equal SAEs give equal files (and equal stage hashes)
        io.write_text(files.cfg, json.dumps(io.read_json(files.cfg), sort_keys=True))
        prov = {
            "model": cache.manifest["model"],
            "hook": hook,
            "layer": block_layer(hook),
            "cache": str(cache.folder),
            "cache_manifest_sha256": cache.manifest_sha256(),
            "corpus_sha256": cache.manifest["corpus_sha256"],
            "sae": asdict(sae_cfg),
            "train": asdict(job.train),
            "parallel": parallel or {"parallel": "single"},
            "code_version": code_version(),
        }
        io.write_json(files.provenance, prov)
        metrics = evaluate_sae(load_sae(tmp, dev), cache, hook, job.train, model=model)
        io.write_json(files.metrics, metrics)
        folders.seal(tmp, "sae")
    return folder


def _log_metrics(run: Any, name: str, folder: Path) -> None:
    if run is not None:
        metrics = io.read_json(SAEFiles(folder).metrics)
        run.summary.update(
            {f"{name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        )


def _check_cfg(files: SAEFiles) -> None:
    """One complete line for a cfg.json that is not an object with integer widths, or
    whose widths disagree with the weights' (sae-lens's own errors run to many lines)."""
    from safetensors import safe_open

    bad = f"{files.dir} is not a loadable SAE checkpoint"
    try:
        cfg = json.loads(files.cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EmosaeError(f"{bad}: {files.cfg.name} is not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise EmosaeError(f"{bad}: {files.cfg.name} holds {json.dumps(cfg)[:40]}, not an object")
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in (d_in, d_sae)):
        raise EmosaeError(
            f"{bad}: d_in and d_sae in {files.cfg.name} must be positive integers, "
            f"not {d_in!r:.20} and {d_sae!r:.20}"
        )
    try:
        with safe_open(str(files.weights), "pt") as f:
            shape = f.get_slice("W_dec").get_shape() if "W_dec" in f.keys() else None
    except Exception:  # noqa: BLE001 - missing or corrupt: sae-lens's error names it
        return
    if shape is not None and list(shape) != [d_sae, d_in]:
        raise EmosaeError(
            f"{bad}: {files.cfg.name} says d_sae {d_sae} x d_in {d_in}, but W_dec in "
            f"{files.weights.name} is {list(shape)} (a config of another SAE?)"
        )


def load_sae(folder: str | Path, device: str = "cpu") -> Any:
    """Load a checkpoint with sae-lens (`SAE.load_from_disk`); clear error if absent."""
    from sae_lens import SAE

    files = SAEFiles(Path(folder))
    if not files.cfg.exists():
        raise EmosaeError(f"{files.dir} is not an SAE checkpoint (no {files.cfg.name})")
    folders.verify(files.dir)
    _check_cfg(files)
    try:
        sae = SAE.load_from_disk(str(files.dir), device=device, dtype="float32")
    except Exception as e:  # noqa: BLE001 - sae-lens raises many types for a bad file
        # all of it on one line: the first line alone ("Error(s) in loading ...:") says nothing
        why = " ".join(str(e).split())[:400] or type(e).__name__
        raise EmosaeError(f"{files.dir} is not a loadable SAE checkpoint: {why}") from None
    for name, t in sae.state_dict().items():
        check_finite(t, f"{files.dir}: SAE tensor {name}", hint="retrain it")
    return sae
