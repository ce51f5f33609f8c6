"""Data-parallel SAE training: PyTorch's DistributedDataParallel around a sae-lens
training SAE, driven by sae-lens's own `SAETrainer`.

sae-lens 6.54 has no multi-process mechanism of its own, and its trainer calls
`sae.training_forward_pass(...)` rather than `sae(...)`, so DDP (whose gradient
all-reduce is armed by calling the wrapped module) is put in that method's place.
Each rank feeds its 1/world slice of every global batch; DDP averages the gradients
during `backward`, before sae-lens clips them, so every rank takes the step that one
process would take on the whole global batch.

Per-rank state that changes the loss is synchronised too: the steps since each feature
last fired (the dead-feature mask of TopK's AuxK loss) is min-reduced before every
step, giving the global count. Floating-point buffers (BatchTopK's running threshold,
updated from each rank's own activations) are averaged over the ranks after every step.
Two differences from one process remain and are documented: BatchTopK picks its top
k*batch activations within each rank's slice, and feature-frequency logs (rank 0 logs)
count rank 0's rows only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from emosae.core.errors import EmosaeError


class _TrainingForward(nn.Module):
    """`forward` = the SAE's own `training_forward_pass`, so DDP can wrap it."""

    def __init__(self, sae: nn.Module):
        super().__init__()
        self.sae = sae

    def forward(self, step_input: Any) -> Any:
        return type(self.sae).training_forward_pass(self.sae, step_input)


def weights_checksum(module: nn.Module) -> torch.Tensor:
    """Exact fingerprint of all parameters and buffers: two int64 sums over their bit
    patterns (plain and position-weighted). Equal weights give equal checksums."""
    out = torch.zeros(2, dtype=torch.int64, device=next(module.parameters()).device)
    for t in [*module.parameters(), *module.buffers()]:
        t = t.detach().reshape(-1)
        if not t.is_floating_point():
            bits = t.to(torch.int64)
        else:
            bits = t.float().contiguous().view(torch.int32).to(torch.int64)
        w = torch.arange(1, bits.numel() + 1, device=bits.device, dtype=torch.int64) % 65521
        out[0] += bits.sum()
        out[1] += (bits * w).sum()
    return out


def make_data_parallel_(trainer: Any, sync_check_every: int = 0) -> dict[str, int]:
    """Turn a sae-lens `SAETrainer` (also one inside `MultiSAETrainer`) into a data-
    parallel one, in place. Call after the SAE is initialised: DDP copies rank 0's
    weights to every rank here. With `sync_check_every` > 0 the ranks compare exact
    weight checksums every that many steps and stop with an error if they differ.
    Returns a live counter {"sync_checks": n} for provenance."""
    if not (dist.is_available() and dist.is_initialized()):
        raise EmosaeError("data-parallel training needs torch.distributed (launch with torchrun)")
    sae = trainer.sae
    ddp = DistributedDataParallel(_TrainingForward(sae), find_unused_parameters=False)
    # Shadow the method on this instance only; DDP's forward calls the class's method.
    sae.training_forward_pass = lambda step_input: ddp(step_input)
    step = trainer.step
    world = dist.get_world_size()
    counter = {"sync_checks": 0}

    def dp_step(batch: torch.Tensor) -> Any:
        dist.all_reduce(trainer.n_forward_passes_since_fired, op=dist.ReduceOp.MIN)
        out = step(batch)
        for b in sae.buffers():  # running statistics (BatchTopK's threshold): rank mean
            if b.is_floating_point():
                dist.all_reduce(b)
                b.div_(world)
        if sync_check_every and (trainer.n_training_steps + 1) % sync_check_every == 0:
            mine = weights_checksum(sae)
            every = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(every, mine)
            if any(not torch.equal(e, every[0]) for e in every):
                raise EmosaeError(
                    f"SAE weights differ across ranks after step {trainer.n_training_steps + 1}"
                )
            counter["sync_checks"] += 1
        return out

    trainer.step = dp_step
    trainer._emosae_ddp = ddp  # keep the wrapper alive as long as the trainer
    return counter


def release(trainer: Any) -> None:
    """Undo `make_data_parallel_` (after `fit`), leaving a plain SAE."""
    trainer.sae.__dict__.pop("training_forward_pass", None)
    trainer.__dict__.pop("step", None)
    trainer.__dict__.pop("_emosae_ddp", None)
