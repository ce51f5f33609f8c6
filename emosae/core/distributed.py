"""Running under `torchrun`: join the process group that torchrun describes in the
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), pick the device
and backend (nccl for CUDA, gloo for CPU), and a few collective helpers.

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op and
`setup` returns rank 0 of 1, so the same code runs unchanged on one process.

    torchrun --nproc_per_node=8 -m emosae cache ...        # one machine, 8 GPUs
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=host0:29500 -m emosae train ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from emosae.core.errors import EmosaeError

BACKEND_ENV = "EMOSAE_DIST_BACKEND"
"""Overrides the backend (e.g. gloo on CUDA, where nccl refuses two ranks on one GPU)."""
TIMEOUT = timedelta(hours=2)
"""How long a rank waits at a collective for the others (ranks finish shards and
evaluations at different times)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when a process group is up (torchrun, any world size)."""
        return dist.is_available() and dist.is_initialized()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def launched() -> bool:
    """True inside a torchrun (or other torch.distributed launcher) worker."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def env_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), before `setup`."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """The number of processes torchrun started (1 without torchrun), before `setup`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str | torch.device | None = None) -> tuple[Dist, torch.device]:
    """Join torchrun's process group (once; later calls return the same) and choose
    this rank's device: `cuda:LOCAL_RANK` when CUDA is used, else the CPU."""
    dev = resolve_device(device)
    if not launched():
        return Dist(), dev
    rank, world = env_rank(), env_world_size()
    local = int(os.environ.get("LOCAL_RANK", rank))
    backend = os.environ.get(BACKEND_ENV) or ("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        n_gpu = torch.cuda.device_count()
        if local >= n_gpu and backend == "nccl":
            raise EmosaeError(
                f"local rank {local} has no GPU of its own ({n_gpu} visible) and nccl cannot "
                f"share one; use --nproc_per_node <= {n_gpu} (or {BACKEND_ENV}=gloo to share)"
            )
        dev = torch.device("cuda", local % n_gpu)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kw = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=TIMEOUT, **kw)
    return Dist(rank, world, local), dev


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` means CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EmosaeError("device='cuda' was asked for but torch sees no CUDA GPU")
    return dev


@contextmanager
def local_main_first(d: Dist) -> Iterator[None]:
    """Each machine's local rank 0 runs the body first (e.g. converting a model into
    the machine's model cache), then the other ranks."""
    first = d.local_rank == 0
    if not first:
        d.barrier()
    yield
    if first:
        d.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
