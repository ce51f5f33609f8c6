"""SAE training with sae-lens's `SAETrainer` (or `MultiSAETrainer` for a sweep) fed
from the activation cache, saved in sae-lens's format plus emosae provenance.

A checkpoint folder `checkpoints/<run>/` (or `<run>/<name>/` in a sweep) holds:
  sae_weights.safetensors, cfg.json   sae-lens inference format (`SAE.load_from_disk`)
  emosae.json                         model, hook, cache manifest sha256, config, code version
  metrics.json                        held-out evaluation (see `emosae.sae_eval`)

Not done here: resuming a killed training run mid-way (a rerun retrains; the pipeline
skips finished checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from emosae.activations import ActivationCache, batch_stream
from emosae.errors import EmosaeError
from emosae.provenance import code_version
from emosae.tracking import WandbConfig, finish, init_wandb

Architecture = Literal["batchtopk", "topk", "jumprelu", "standard"]


@dataclass(frozen=True)
class SAEConfig:
    """One SAE's architecture and sparsity."""

    architecture: Architecture = "batchtopk"
    """BatchTopK (saved as JumpReLU for inference), TopK, JumpReLU or standard (ReLU + L1)."""
    d_sae: int = 4608
    """Number of features (8x d_model for SmolLM2)."""
    k: int = 32
    """Active features per token (topk) or on average (batchtopk)."""
    l1_coefficient: float = 5.0
    """Sparsity penalty for the standard SAE."""
    l0_coefficient: float = 1.0
    """Sparsity penalty for JumpReLU."""

    def __post_init__(self):
        if self.d_sae < 1 or self.k < 1:
            raise EmosaeError("d_sae and k must be positive")

    def name(self) -> str:
        sparsity = (
            f"k{self.k}"
            if "topk" in self.architecture
            else (
                f"l1_{self.l1_coefficient:g}"
                if self.architecture == "standard"
                else f"l0_{self.l0_coefficient:g}"
            )
        )
        return f"{self.architecture}_{self.d_sae}_{sparsity}"


@dataclass(frozen=True)
class TrainConfig:
    """Train one SAE (or a sweep) from an activation cache."""

    cache: str = "runs/default/activations"
    """Activation cache folder (from `cache_activations`)."""
    hook: str | None = None
    """Hook to train on (default: the cache's first hook)."""
    out: str = "checkpoints/sae"
    """Checkpoint folder."""
    sae: SAEConfig = field(default_factory=SAEConfig)
    sweep_k: tuple[int, ...] = ()
    """Train one SAE per k here, all from the same batches (one pass over the cache)."""
    sweep_hooks: tuple[str, ...] = ()
    """Train one SAE per hook here (hooks must be in the cache)."""
    sweep_d_sae: tuple[int, ...] = ()
    """Train one SAE per width here (x each k and hook of the sweep)."""
    parallel: Literal["auto", "sweep", "data"] = "auto"
    """Under torchrun: `sweep` splits the sweep's SAEs across ranks; `data` trains every
    SAE data-parallel (each rank 1/world of each batch, gradients all-reduced); `auto`:
    data for one SAE, sweep for several. Ignored on one process."""
    sync_check_every: int = 0
    """Data-parallel only: compare exact weight checksums across ranks every this many
    steps, and stop if they differ (0: never)."""
    epochs: float = 2.0
    """Passes over the cache's training rows."""
    batch_size: int = 1024
    """Global batch (rows per optimizer step); data-parallel ranks take 1/world each."""
    lr: float = 4e-4
    lr_end: float | None = None
    """Final learning rate (default lr / 10), reached by cosine decay over the last fifth of training."""
    warmup_steps: int = 100
    device: str | None = None
    resident: bool | None = None
    """Keep the cache in GPU memory (None: when it fits)."""
    seed: int = 0
    eval_every: int = 20
    """Contexts whose id is a multiple of this are held out for evaluation."""
    eval_contexts: int = 32
    """Held-out contexts for CE-loss-recovered and KL."""
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        if self.epochs <= 0 or self.batch_size < 1:
            raise EmosaeError("epochs and batch_size must be positive")
        if self.sync_check_every < 0:
            raise EmosaeError("sync_check_every must be >= 0")


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


def sweep_specs(cfg: TrainConfig, cache: ActivationCache) -> dict[str, tuple[SAEConfig, str]]:
    """{name: (SAE config, hook)} for every SAE that `cfg` asks for."""
    hook = cfg.hook or cache.hooks[0]
    specs: dict[str, tuple[SAEConfig, str]] = {}
    for h in cfg.sweep_hooks or (hook,):
        cache.check_hook(h)
        for width in cfg.sweep_d_sae or (cfg.sae.d_sae,):
            for k in cfg.sweep_k or (cfg.sae.k,):
                sc = replace(cfg.sae, k=k, d_sae=width)
                specs[sc.name() + (f"_{h}" if cfg.sweep_hooks else "")] = (sc, h)
    return specs


def parallel_mode(cfg: TrainConfig, world_size: int, n_saes: int, launched: bool) -> str:
    """`single` (one process), `sweep` (SAEs split across ranks) or `data`. Under
    torchrun an explicit `data` uses DDP even on one rank (same code path as many)."""
    if not launched or (world_size == 1 and cfg.parallel != "data"):
        return "single"
    mode = cfg.parallel if cfg.parallel != "auto" else ("data" if n_saes == 1 else "sweep")
    if mode == "data" and cfg.batch_size % world_size:
        raise EmosaeError(
            f"data-parallel batch_size {cfg.batch_size} must be a multiple of the {world_size} ranks"
        )
    return mode


def train_sae(cfg: TrainConfig, model: Any = None) -> dict[str, Path]:
    """Train the SAE(s) of `cfg`; returns {name: checkpoint folder} of the SAEs this
    process saved (under torchrun: its share of a sweep, or all on rank 0 in data-
    parallel mode)."""
    from emosae import distributed

    d, dev = distributed.setup(cfg.device)
    cache = ActivationCache.open(cfg.cache)
    cache.check_hook(cfg.hook or cache.hooks[0])
    specs = sweep_specs(cfg, cache)
    mode = parallel_mode(cfg, d.world_size, len(specs), d.active)
    if mode == "sweep":
        specs = {n: specs[n] for n in sorted(specs)[d.rank :: d.world_size]}
    saves = mode != "data" or d.is_main
    n_train = cache.n_rows - int(cache.meta("context_ids", "eval", cfg.eval_every).numel())
    run_name = Path(cfg.out).name + (f"-rank{d.rank}" if mode == "sweep" else "")
    run = None
    if saves and specs:
        run = init_wandb(
            cfg.wandb,
            run_name,
            {"train": asdict(cfg), "cache": cache.manifest["corpus"], "parallel": mode},
            "train_sae",
        )
    results: dict[str, Path] = {}
    try:
        shards = d.world_size if mode == "data" else 1
        tcfg = trainer_config(cfg, n_train, str(dev), run is not None, run_name, shards)
        by_hook: dict[str, list[str]] = {}
        for n, (_, h) in specs.items():
            by_hook.setdefault(h, []).append(n)
        for h, names in by_hook.items():
            saes, checks = _fit(cfg, tcfg, cache, h, {n: specs[n][0] for n in names}, dev, d, mode)
            if not saves:
                continue
            for name, sae in saes.items():
                results[name] = _save_and_evaluate(
                    cfg,
                    sae,
                    name,
                    specs[name],
                    cache,
                    dev,
                    model,
                    len(specs) == 1 and mode != "sweep",
                    {"parallel": mode, "rank": d.rank, "world_size": d.world_size, **checks},
                    run,
                )
    finally:
        finish(run)
    d.barrier()  # data parallel: the other ranks wait for rank 0's checkpoint
    return results


def _fit(
    cfg: TrainConfig,
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

    from emosae import data_parallel

    steps = tcfg.total_training_steps
    saes = {}
    for n, sc in sae_cfgs.items():
        # Same seed for every SAE: its start does not depend on the sweep around it or
        # on which rank trains it.
        torch.manual_seed(cfg.seed)
        saes[n] = _training_sae(sc, cache.d_model, str(dev), steps)
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
            counters.append(data_parallel.make_data_parallel_(tr, cfg.sync_check_every))
    trainer.fit()
    if mode == "data":
        for tr in trainers.values():
            data_parallel.release(tr)
    return saes, {"sync_checks": min(c["sync_checks"] for c in counters)} if counters else {}


def _save_and_evaluate(
    cfg: TrainConfig,
    sae: Any,
    name: str,
    spec: tuple[SAEConfig, str],
    cache: ActivationCache,
    dev: torch.device,
    model: Any,
    alone: bool,
    parallel: dict[str, Any],
    run: Any,
) -> Path:
    from emosae.sae_eval import evaluate_sae

    folder = Path(cfg.out) if alone else Path(cfg.out) / name
    tmp = save_checkpoint(sae, folder, cfg, spec[0], spec[1], cache, parallel)
    # Evaluate what was saved: the inference SAE as sae-lens loads it.
    metrics = evaluate_sae(load_sae(tmp, str(dev)), cache, spec[1], cfg, model=model)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    if run is not None:
        run.summary.update(
            {f"{name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        )
    return folder


def save_checkpoint(
    sae: Any,
    folder: Path,
    cfg: TrainConfig,
    sae_cfg: SAEConfig,
    hook: str,
    cache: ActivationCache,
    parallel: dict[str, Any] | None = None,
) -> Path:
    """Write the sae-lens inference checkpoint plus provenance into a temp folder beside
    `folder` and return it; the caller adds metrics.json and renames it into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sae.cfg.metadata.hook_name = hook
    sae.cfg.metadata.model_name = cache.manifest["model"]
    sae.save_inference_model(tmp)
    prov = {
        "model": cache.manifest["model"],
        "hook": hook,
        "layer": int(hook.split(".")[1]) if hook.startswith("blocks.") else None,
        "cache": str(cache.folder),
        "cache_manifest_sha256": cache.manifest_sha256(),
        "corpus_sha256": cache.manifest["corpus_sha256"],
        "sae": asdict(sae_cfg),
        "train": asdict(cfg),
        "parallel": parallel or {"parallel": "single"},
        "code_version": code_version(),
    }
    (tmp / "emosae.json").write_text(json.dumps(prov, indent=1))
    return tmp


def load_sae(folder: str | Path, device: str = "cpu") -> Any:
    """Load a checkpoint with sae-lens (`SAE.load_from_disk`); clear error if absent."""
    from sae_lens import SAE

    folder = Path(folder)
    if not (folder / "cfg.json").exists():
        raise EmosaeError(f"{folder} is not an SAE checkpoint (no cfg.json)")
    return SAE.load_from_disk(str(folder), device=device, dtype="float32")
