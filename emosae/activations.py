"""Activation cache: run the model once, store residual activations as sharded
safetensors, and serve shuffled batches to sae-lens from memory-mapped shards.

Layout of a cache folder:
  manifest.json            model, hooks, d_model, dtype, context length, rows per shard,
                           sha256 of every shard, corpus fingerprint, code version
  shard_00000.safetensors  one [rows, d_model] tensor per hook, plus `tokens`, `doc_ids`,
                           `positions` and `context_ids` per row (row = one token)
  shard_00000.json         sidecar written after the shard: its sha256 and row count
  documents.jsonl          document id -> source and index, to trace rows to text

Resumable: shards are written to a temp name and renamed, and the sidecar marks a shard
complete; a rerun verifies complete shards and computes the others. Contexts and the
forward pass are deterministic, so the result equals an uninterrupted run.

Distributed (torchrun): shard i is computed by rank i % world_size, each rank writes its
shards into the shared folder, rank 0 writes the manifest. The folder is the same as a
single-process run's, so readers cannot tell them apart.

Shape letters: N rows (tokens), D d_model, B batch, L context length.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from emosae.contexts import Context, CorpusConfig, DocumentLog, corpus_fingerprint, iter_contexts
from emosae.errors import EmosaeError
from emosae.provenance import code_version, sha256_file

MANIFEST = "manifest.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class CacheConfig:
    """Which activations to cache, and how."""

    out: str = "runs/default/activations"
    """Output folder (created; a rerun resumes it)."""
    model: str | None = None
    """Model name for `emosae.load_model` (default: the embedded SmolLM2)."""
    layers: tuple[int, ...] = (15,)
    """Residual-stream layers to cache (`blocks.{L}.hook_resid_post`), all in one pass."""
    hook_names: tuple[str, ...] = ()
    """Explicit hook names instead of `layers` (any TransformerLens hook with d_model)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    batch_size: int = 8
    """Contexts per forward pass."""
    contexts_per_shard: int = 256
    """Contexts per shard file (x context_len rows)."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float16"
    """Storage dtype of the activations."""
    skip_first: int = 1
    """Leading positions of each context not stored (position 0 is an attention sink
    with an outsized norm in models without a BOS token)."""
    device: str | None = None
    """cpu or cuda (default: cuda when available)."""

    def __post_init__(self):
        if self.batch_size < 1 or self.contexts_per_shard < 1:
            raise EmosaeError("batch_size and contexts_per_shard must be >= 1")
        if not 0 <= self.skip_first < self.corpus.context_len:
            raise EmosaeError("skip_first must be in [0, context_len)")


def resolve_hooks(model: Any, cfg: CacheConfig) -> list[str]:
    """Validate hook names against the model; one-line error naming the valid range."""
    n = model.cfg.n_layers
    if cfg.hook_names:
        hooks = list(cfg.hook_names)
    else:
        bad = [layer for layer in cfg.layers if not 0 <= layer < n]
        if bad or not cfg.layers:
            raise EmosaeError(
                f"layer {bad or cfg.layers} out of range: valid layers are 0..{n - 1}"
            )
        hooks = [f"blocks.{layer}.hook_resid_post" for layer in sorted(set(cfg.layers))]
    for h in hooks:
        if h not in model.hook_dict:
            raise EmosaeError(
                f"unknown hook {h!r}; e.g. blocks.0.hook_resid_post .. blocks.{n - 1}.hook_resid_post"
            )
    return hooks


def hook_layer(hook: str) -> int:
    """Block index of a `blocks.{L}.…` hook (embedding hooks count as layer 0)."""
    parts = hook.split(".")
    return int(parts[1]) if parts[0] == "blocks" else 0


def _shard_path(folder: Path, i: int) -> Path:
    return folder / f"shard_{i:05d}.safetensors"


def _sidecar(folder: Path, i: int) -> Path:
    return folder / f"shard_{i:05d}.json"


def _shard_done(folder: Path, i: int) -> dict[str, Any] | None:
    """The sidecar of shard `i` if the shard is complete and matches it, else None."""
    side = _sidecar(folder, i)
    if not side.exists():
        return None
    meta = json.loads(side.read_text())
    sp = _shard_path(folder, i)
    if not sp.exists() or sha256_file(sp) != meta["sha256"]:
        return None
    return meta


def shard_owner(shard: int, world_size: int) -> int:
    """Rank that computes shard `shard`: round robin, so every rank's shards hold the
    same contexts, batched the same way, as in a single-process run."""
    return shard % world_size


def _check_writable(out: Path, rank: int) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test.{rank}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise EmosaeError(f"cannot write to output folder {out}: {e.strerror}") from None


@torch.no_grad()
def cache_activations(cfg: CacheConfig, model: Any = None) -> Path:
    """Compute and store activations for `cfg`; resumes an interrupted run.

    Under torchrun each rank computes the shards it owns (`shard_owner`) and writes
    them into the same folder; rank 0 writes the manifest once all are done. The
    files are the same as a single-process run writes."""
    from emosae import distributed
    from emosae.models import load_model

    d, dev = distributed.setup(cfg.device)
    out = Path(cfg.out)
    _check_writable(out, d.rank)
    if model is None:
        with distributed.local_main_first(d):  # local rank 0 converts the model once per machine
            model = load_model(cfg.model, device=dev)
    dev = torch.device(model.cfg.device)
    hooks = resolve_hooks(model, cfg)
    stop_at = max(hook_layer(h) for h in hooks) + 1
    model_name = model.cfg.model_name
    fp = corpus_fingerprint(cfg.corpus, model_name)
    header = {
        "model": model_name,
        "hooks": hooks,
        "d_model": model.cfg.d_model,
        "dtype": cfg.dtype,
        "context_len": cfg.corpus.context_len,
        "skip_first": cfg.skip_first,
        "contexts_per_shard": cfg.contexts_per_shard,
        "rows_per_shard": cfg.contexts_per_shard * (cfg.corpus.context_len - cfg.skip_first),
        "corpus": asdict(cfg.corpus),
        "corpus_sha256": fp,
    }
    header = json.loads(json.dumps(header))  # tuples -> lists, as read back from disk
    partial = out / "config.json"
    if d.is_main and not partial.exists():
        tmp = out / "config.json.tmp"
        tmp.write_text(json.dumps(header, indent=1))
        os.replace(tmp, partial)
    d.barrier()
    old = json.loads(partial.read_text())
    if old != header:
        diff = sorted(k for k in header if old.get(k) != header[k])
        raise EmosaeError(
            f"{out} holds a cache with a different config ({', '.join(diff)}); use another --out"
        )
    cps = cfg.contexts_per_shard
    total_ctx = cfg.corpus.max_tokens // cfg.corpus.context_len
    n_shards = -(-total_ctx // cps)
    mine = [i for i in range(n_shards) if shard_owner(i, d.world_size) == d.rank]
    todo = {i for i in mine if _shard_done(out, i) is None}
    log = DocumentLog()
    sdt = DTYPES[cfg.dtype]
    L, S = cfg.corpus.context_len, cfg.skip_first
    pin = dev.type == "cuda"

    def tokens_in(shards: list[int]) -> int:
        return sum(min(cps, total_ctx - i * cps) for i in shards) * L

    pbar = tqdm(
        total=tokens_in(mine),
        initial=tokens_in([i for i in mine if i not in todo]),
        unit="tok",
        unit_scale=True,
        desc="caching activations" + (f" (rank {d.rank})" if d.world_size > 1 else ""),
        disable=not d.is_main,
    )
    start_n = pbar.n
    acts: dict[str, list[Tensor]] = {h: [] for h in hooks}
    t0 = time.perf_counter()

    def store(name: str) -> Any:
        def hook(x: Tensor, hook: Any) -> None:
            y = x[:, S:].reshape(-1, x.shape[-1]).to(sdt)
            if pin:
                buf = torch.empty(y.shape, dtype=sdt, pin_memory=True)
                buf.copy_(y, non_blocking=True)
                y = buf
            acts[name].append(y)

        return hook

    fwd_hooks = [(h, store(h)) for h in hooks]

    def forward(batch: list[Context]) -> None:
        toks = torch.stack([c.tokens for c in batch]).to(dev, non_blocking=pin)
        with model.hooks(fwd_hooks=fwd_hooks):
            model(toks, stop_at_layer=stop_at)
        pbar.update(len(batch) * L)
        rate = (pbar.n - start_n) / (time.perf_counter() - t0)
        pbar.set_postfix(tok_s=f"{rate * d.world_size:.0f}" + ("/all" if d.world_size > 1 else ""))

    def flush(shard: int, ctxs: list[Context]) -> None:
        if pin:
            torch.cuda.synchronize()
        tens = {h: torch.cat(acts[h]).contiguous() for h in hooks}
        toks = torch.stack([c.tokens for c in ctxs])[:, S:]
        tens["tokens"] = toks.reshape(-1).to(torch.int32)
        tens["doc_ids"] = torch.stack([c.doc_ids for c in ctxs])[:, S:].reshape(-1)
        tens["positions"] = torch.arange(S, L, dtype=torch.int16).repeat(len(ctxs))
        tens["context_ids"] = torch.tensor(
            [c.index for c in ctxs], dtype=torch.int32
        ).repeat_interleave(L - S)
        path = _shard_path(out, shard)
        tmp = path.with_suffix(".tmp")
        try:
            save_file(tens, str(tmp))
            os.replace(tmp, path)
            side = {
                "shard": path.name,
                "rows": int(toks.numel()),
                "sha256": sha256_file(path),
                "contexts": [ctxs[0].index, ctxs[-1].index + 1],
                "rank": d.rank,  # which torchrun rank computed it (0 on one process)
            }
            side_tmp = out / f".shard_{shard:05d}.json.tmp"
            side_tmp.write_text(json.dumps(side))
            os.replace(side_tmp, _sidecar(out, shard))
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise EmosaeError(
                f"writing {path.name} failed ({e.strerror}); the partial shard was removed, rerun to resume"
            ) from None
        for h in hooks:
            acts[h].clear()

    from safetensors.torch import save_file

    # Every rank walks all contexts (tokenizing is cheap next to the forward pass) and
    # runs the model on the shards it owns, in batches that never cross a shard.
    shard: list[Context] = []
    batch: list[Context] = []
    n_seen = 0
    for ctx in iter_contexts(cfg.corpus, model.tokenizer, log):
        n_seen = ctx.index + 1
        si = ctx.index // cps
        if si not in todo:
            continue
        batch.append(ctx)
        shard.append(ctx)
        last_of_shard = (ctx.index + 1) % cps == 0 or ctx.index == total_ctx - 1
        if len(batch) == cfg.batch_size or last_of_shard:
            forward(batch)
            batch = []
        if last_of_shard:
            flush(si, shard)
            shard = []
    if shard:  # the corpus ended inside a shard
        if batch:
            forward(batch)
        flush(shard[0].index // cps, shard)
    pbar.close()
    d.barrier()
    if d.is_main:
        _write_manifest(out, header, log, -(-n_seen // cps))
    d.barrier()
    return out


def _write_manifest(out: Path, header: dict[str, Any], log: DocumentLog, n_shards: int) -> None:
    shards = [_shard_done(out, i) for i in range(n_shards)]
    missing = [i for i, s in enumerate(shards) if s is None]
    if missing:
        raise EmosaeError(f"shards {missing} of {out} are missing or corrupt; rerun to resume")
    # Document table: regenerate it (cheap) so a resumed run has the full table.
    last_doc = max(int(_read_max_doc(out, s["shard"])) for s in shards)
    with open(out / "documents.jsonl.tmp", "w") as f:
        for i, (src, idx) in enumerate(log.rows[: last_doc + 1]):
            f.write(json.dumps({"id": i, "source": src, "index": idx}) + "\n")
    os.replace(out / "documents.jsonl.tmp", out / "documents.jsonl")
    manifest = {
        **header,
        "n_rows": sum(s["rows"] for s in shards),
        "n_contexts": sum(s["contexts"][1] - s["contexts"][0] for s in shards),
        "shards": shards,
        "code_version": code_version(),
    }
    tmp = out / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)


def _read_max_doc(folder: Path, shard: str) -> int:
    return int(_mmap(folder / shard, "doc_ids").max())


# ----------------------------------------------------------------------------- reading

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


def _mmap(path: Path, name: str) -> np.ndarray:
    """Memory-map one tensor of a safetensors file (no copy)."""
    hdr, base = _header(path)
    if name not in hdr:
        raise EmosaeError(f"{path.name} has no tensor {name!r}")
    t = hdr[name]
    start, end = t["data_offsets"]
    return np.memmap(
        path, dtype=_NP[t["dtype"]], mode="r", offset=base + start, shape=tuple(t["shape"])
    )


def _to_torch(a: np.ndarray, dtype: str) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


@dataclass
class ActivationCache:
    """A finished cache folder: verified manifest, memory-mapped shards."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: str | Path, verify: bool = True) -> ActivationCache:
        folder = Path(folder)
        mp = folder / MANIFEST
        if not mp.exists():
            raise EmosaeError(
                f"{folder} is not a finished activation cache (no {MANIFEST}); run cache_activations"
            )
        try:
            man = json.loads(mp.read_text())
        except json.JSONDecodeError:
            raise EmosaeError(f"{mp} is corrupt (not JSON)") from None
        if verify:
            for s in man["shards"]:
                p = folder / s["shard"]
                if not p.exists():
                    raise EmosaeError(f"shard {s['shard']} listed in the manifest is missing")
                if sha256_file(p) != s["sha256"]:
                    raise EmosaeError(
                        f"shard {s['shard']} does not match its sha256 in the manifest (corrupt?)"
                    )
        return cls(folder, man)

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
        return sha256_file(self.folder / MANIFEST)

    def column(self, shard: int, name: str) -> np.ndarray:
        return _mmap(self.folder / self.manifest["shards"][shard]["shard"], name)

    def check_hook(self, hook: str) -> None:
        if hook not in self.hooks:
            raise EmosaeError(f"hook {hook!r} is not in the cache; it has {', '.join(self.hooks)}")

    def shard_rows(
        self, shard: int, hook: str, index: np.ndarray | None = None
    ) -> Float[Tensor, "N D"]:
        """One shard's rows of one hook (float32); `index` reads only those rows."""
        self.check_hook(hook)
        x = self.column(shard, hook)
        return _to_torch(x if index is None else x[index], self.manifest["dtype"]).float()

    def split_mask(
        self, shard: int, split: Literal["train", "eval", "all"], eval_every: int
    ) -> np.ndarray | None:
        """Which rows of `shard` belong to `split` (None: all). Held out (`eval`) are the
        contexts whose id is a multiple of `eval_every`."""
        if split == "all":
            return None
        held = np.asarray(self.column(shard, "context_ids")) % eval_every == 0
        return held if split == "eval" else ~held

    def rows(
        self,
        hook: str,
        split: Literal["train", "eval", "all"] = "all",
        eval_every: int = 20,
        stored: bool = False,
    ) -> Float[Tensor, "N D"]:
        """All rows of one hook as a tensor: float32, or the storage dtype with `stored`.
        `eval` = contexts with id % eval_every == 0."""
        self.check_hook(hook)
        out = []
        for i in range(len(self.manifest["shards"])):
            x = self.column(i, hook)
            if (m := self.split_mask(i, split, eval_every)) is not None:
                x = x[m]
            t = _to_torch(x, self.manifest["dtype"])
            out.append(t if stored else t.float())
        return torch.cat(out)

    def meta(
        self, name: str, split: Literal["train", "eval", "all"] = "all", eval_every: int = 20
    ) -> Tensor:
        out = []
        for i in range(len(self.manifest["shards"])):
            x = np.asarray(self.column(i, name))
            if (m := self.split_mask(i, split, eval_every)) is not None:
                x = x[m]
            out.append(torch.from_numpy(x.astype(np.int64)))
        return torch.cat(out)

    def documents(self) -> list[dict[str, Any]]:
        return [
            json.loads(line) for line in (self.folder / "documents.jsonl").read_text().splitlines()
        ]


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
    split: Literal["train", "eval", "all"] = "train",
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
            x = cache.column(si, hook)
            if (m := cache.split_mask(si, split, eval_every)) is not None:
                x = x[m]
            t = _to_torch(np.asarray(x), cache.manifest["dtype"])
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
