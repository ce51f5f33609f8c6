"""What an SAE is and how it is trained: its architecture (`SAEConfig`), the training
knobs `emosae run` composes (`TrainConfig`), and `emosae train`'s job (`TrainJob`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from emosae.core.errors import EmosaeError
from emosae.core.tracking import WandbConfig

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
        if "topk" in self.architecture and self.k > self.d_sae:
            raise EmosaeError(f"k ({self.k}) must be at most d_sae ({self.d_sae})")
        if not (self.l1_coefficient >= 0 and self.l0_coefficient >= 0):
            raise EmosaeError("l1_coefficient and l0_coefficient must be finite and >= 0")

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
    """How one SAE is trained and evaluated (what `emosae run` composes)."""

    sae: SAEConfig = field(default_factory=SAEConfig)
    epochs: float = 2.0
    """Passes over the cache's training rows."""
    batch_size: int = 1024
    """Global batch (rows per optimizer step); data-parallel ranks take 1/world each."""
    lr: float = 4e-4
    lr_end: float | None = None
    """Final learning rate (default lr / 10), reached by cosine decay over the last fifth of training."""
    warmup_steps: int = 100
    seed: int = 0
    resident: bool | None = None
    """Keep the cache in GPU memory (None: when it fits)."""
    eval_every: int = 20
    """Contexts whose id is a multiple of this are held out for evaluation."""
    eval_contexts: int = 32
    """Held-out contexts for CE-loss-recovered and KL."""

    def __post_init__(self):
        if not (0 < self.epochs < float("inf")) or self.batch_size < 1:
            raise EmosaeError("epochs must be a finite positive number and batch_size >= 1")
        lr_end_ok = self.lr_end is None or 0 <= self.lr_end < float("inf")
        if (
            not (0 < self.lr < float("inf"))
            or not lr_end_ok
            or self.warmup_steps < 0
            or self.eval_every < 2
        ):
            raise EmosaeError("lr must be positive, warmup_steps >= 0 and eval_every >= 2")


@dataclass(frozen=True)
class TrainJob:
    """`emosae train`: one SAE (or a sweep) from an activation cache."""

    cache: str = "runs/default/activations"
    """Activation cache folder (from `emosae cache`)."""
    hook: str | None = None
    """Hook to train on (default: the cache's first hook)."""
    out: str = "checkpoints/sae"
    """Checkpoint folder."""
    device: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
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
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        if self.sync_check_every < 0:
            raise EmosaeError("sync_check_every must be >= 0")
        for w in self.sweep_d_sae or (self.train.sae.d_sae,):
            for k in self.sweep_k or (self.train.sae.k,):
                replace(self.train.sae, d_sae=w, k=k)  # validates each SAE of the sweep

    @property
    def kind(self) -> str:
        """Folder kind of `out`: one SAE, or a folder of a sweep's SAEs."""
        return "sae-sweep" if (self.sweep_k or self.sweep_hooks or self.sweep_d_sae) else "sae"
