"""Reading an activation cache: a verified manifest, memory-mapped shards, and the
shuffled batch stream that feeds sae-lens. Knows the cache's file format (see
`emosae.sae.cache`), nothing of runs or stages. Every row it serves has passed
`emosae.core.finite.check_finite`: a cache holding inf or nan (written before the writer
checked, or edited since) is refused in one line naming the shard and hook.

Shape letters: N rows (tokens), D d_model, B batch.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from emosae.core.errors import EmosaeError
from emosae.core.finite import check_finite
from emosae.core.io import read_json, sha256_file
from emosae.core.layout import CacheFiles

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
Split = Literal["train", "eval", "all"]

_NP = {
    "F16": np.float16,
    "F32": np.float32,
    "BF16": np.uint16,
    "I32": np.int32,
    "I16": np.int16,
    "I64": np.int64,
}


def _header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def mmap_tensor(path: Path, name: str) -> np.ndarray:
    """Memory-map one tensor of a safetensors file (no copy)."""
    hdr, base = _header(path)
    if name not in hdr:
        raise EmosaeError(f"{path.name} has no tensor {name!r}")
    t = hdr[name]
    start, end = t["data_offsets"]
    return np.memmap(
        path, dtype=_NP[t["dtype"]], mode="r", offset=base + start, shape=tuple(t["shape"])
    )


def _check_manifest(files: CacheFiles, man: dict[str, Any]) -> None:
    """The manifest agrees with the shards' own headers (cheap: no data is read)."""
    try:
        hooks, d_model, shards = man["hooks"], int(man["d_model"]), man["shards"]
    except (KeyError, TypeError, ValueError):
        raise EmosaeError(f"{files.manifest} lacks hooks, d_model or shards") from None
    for s in shards:
        p = files.dir / s["shard"]
        if not p.exists():
            raise EmosaeError(f"shard {s['shard']} listed in the manifest is missing")
        try:
            hdr = _header(p)[0]
        except (OSError, ValueError, struct.error):
            raise EmosaeError(f"shard {s['shard']} is corrupt (unreadable header)") from None
        for h in hooks:
            shape = hdr.get(h, {}).get("shape")
            if shape != [s["rows"], d_model]:
                raise EmosaeError(
                    f"{files.manifest} says {h} is [{s['rows']}, {d_model}] but {s['shard']} "
                    f"holds {shape}"
                )


def _to_torch(a: np.ndarray, dtype: str) -> Tensor:
    # shards are read-only memory maps and nothing here writes to them: share, don't copy
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


@dataclass
class ActivationCache:
    """A finished cache folder: verified manifest, memory-mapped shards."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path, verify: bool = True) -> ActivationCache:
        """Open a finished cache; with `verify`, check every shard's sha256."""
        files = CacheFiles(Path(folder))
        if not files.manifest.exists():
            raise EmosaeError(
                f"{files.dir} is not a finished activation cache (no {files.manifest.name}); "
                "run `emosae cache`"
            )
        man = read_json(files.manifest)
        _check_manifest(files, man)
        if man.get("dtype") not in DTYPES:
            raise EmosaeError(f"{files.manifest} has no valid dtype ({man.get('dtype')!r})")
        cache = cls(files.dir, man)
        if verify:
            for i, s in enumerate(man["shards"]):
                p = files.dir / s["shard"]
                if not p.exists():
                    raise EmosaeError(f"shard {s['shard']} listed in the manifest is missing")
                if sha256_file(p) != s["sha256"]:
                    raise EmosaeError(
                        f"shard {s['shard']} does not match its sha256 in the manifest (corrupt?)"
                    )
                for h in cache.hooks:
                    cache.stored(i, h)  # refuses values the dtype could not hold
        return cache

    @property
    def files(self) -> CacheFiles:
        return CacheFiles(self.folder)

    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    def manifest_sha256(self) -> str:
        return sha256_file(self.files.manifest)

    def column(self, shard: int, name: str) -> np.ndarray:
        return mmap_tensor(self.folder / self.manifest["shards"][shard]["shard"], name)

    def check_hook(self, hook: str) -> None:
        if hook not in self.hooks:
            raise EmosaeError(f"hook {hook!r} is not in the cache; it has {', '.join(self.hooks)}")

    def stored(
        self, shard: int, hook: str, index: np.ndarray | None = None
    ) -> Float[Tensor, "N D"]:
        """One shard's rows of one hook in the storage dtype (`index`: only those rows,
        a boolean mask or positions). Refuses, in one line, rows that are not finite: a
        cache written before the writer checked, or edited since."""
        self.check_hook(hook)
        x = self.column(shard, hook)
        dtype = self.manifest["dtype"]
        t = _to_torch(x if index is None else x[index], dtype)
        check_finite(
            t,
            f"{self.manifest['shards'][shard]['shard']}: {hook}",
            hint=f"this cache holds values its dtype ({dtype}) could not; recache it "
            "(the default dtype, auto, picks one wide enough)",
        )
        return t

    def shard_rows(
        self, shard: int, hook: str, index: np.ndarray | None = None
    ) -> Float[Tensor, "N D"]:
        """One shard's rows of one hook (float32); `index` reads only those rows."""
        return self.stored(shard, hook, index).float()

    def split_mask(self, shard: int, split: Split, eval_every: int) -> np.ndarray | None:
        """Which rows of `shard` belong to `split` (None: all). Held out (`eval`) are the
        contexts whose id is a multiple of `eval_every`."""
        if split == "all":
            return None
        held = np.asarray(self.column(shard, "context_ids")) % eval_every == 0
        return held if split == "eval" else ~held

    def rows(
        self,
        hook: str,
        split: Split = "all",
        eval_every: int = 20,
        stored: bool = False,
    ) -> Float[Tensor, "N D"]:
        """All rows of one hook as a tensor: float32, or the storage dtype with `stored`.
        `eval` = contexts with id % eval_every == 0."""
        out = []
        for i in range(len(self.manifest["shards"])):
            t = self.stored(i, hook, self.split_mask(i, split, eval_every))
            out.append(t if stored else t.float())
        return torch.cat(out)

    def meta(self, name: str, split: Split = "all", eval_every: int = 20) -> Tensor:
        out = []
        for i in range(len(self.manifest["shards"])):
            x = np.asarray(self.column(i, name))
            if (m := self.split_mask(i, split, eval_every)) is not None:
                x = x[m]
            out.append(torch.from_numpy(x.astype(np.int64)))
        return torch.cat(out)

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.files.documents.read_text().splitlines()]


def choose_residency(cache: ActivationCache, device: torch.device, resident: bool | None) -> bool:
    """Keep the cache in GPU memory when it fits in 70% of the free memory (or as told)."""
    if resident is not None:
        if resident and device.type != "cuda":
            raise EmosaeError("a GPU-resident cache needs device cuda")
        return resident
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    need = cache.n_rows * cache.d_model * DTYPES[cache.manifest["dtype"]].itemsize
    return need < 0.7 * free


def batch_stream(
    cache: ActivationCache,
    hook: str,
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    split: Split = "train",
    eval_every: int = 20,
    buffer_rows: int = 65536,
    resident: bool | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Float[Tensor, "B D"]]:
    """Endless shuffled `[batch, d_in]` float32 batches: the `data_provider` for sae-lens.

    GPU-resident mode holds all rows on the device and draws random permutations.
    Streaming mode walks the shards in a random order per epoch, fills a mixing buffer
    of `buffer_rows` rows from memory-mapped shards, shuffles it and serves it (through
    pinned memory on CUDA). With `world_size > 1` each rank serves a disjoint 1/world
    slice of every global batch (data parallel). Rows stay in the storage dtype (half
    the memory for float16) and are widened to float32 per batch, on the device: a
    rank converts only its own rows.
    """
    cache.check_hook(hook)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    global_bs = batch_size * world_size
    if choose_residency(cache, dev, resident):
        x = cache.rows(hook, split, eval_every, stored=True).to(dev)
        while True:
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(perm) - global_bs + 1, global_bs):
                idx = perm[i + rank * batch_size : i + (rank + 1) * batch_size]
                yield x[idx.to(dev)].float()
    n_sh = len(cache.manifest["shards"])
    pin = dev.type == "cuda"
    carry = torch.empty(0, cache.d_model, dtype=DTYPES[cache.manifest["dtype"]])
    while True:
        order = torch.randperm(n_sh, generator=g).tolist()
        buf: list[Tensor] = [carry]
        n = len(carry)
        for si in order:
            t = cache.stored(si, hook, cache.split_mask(si, split, eval_every))
            buf.append(t)
            n += len(t)
            if n >= buffer_rows or si == order[-1]:
                mix = torch.cat(buf)
                mix = mix[torch.randperm(len(mix), generator=g)]
                usable = len(mix) // global_bs * global_bs
                if pin:
                    mix = mix.pin_memory()
                for i in range(0, usable, global_bs):
                    yield (
                        mix[i + rank * batch_size : i + (rank + 1) * batch_size]
                        .to(dev, non_blocking=pin)
                        .float()
                    )
                carry = mix[usable:]  # fewer than one global batch: goes into the next buffer
                buf, n = [carry], len(carry)
