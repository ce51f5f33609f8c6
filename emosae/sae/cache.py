"""Activation cache writer: run the model once over a corpus and store residual
activations as sharded safetensors (read back by `emosae.sae.reader`).

Layout of a cache folder (file names from `emosae.core.layout.CacheFiles`):
  manifest.json            model, hooks, d_model, dtype and why, context length, rows per
                           shard, sha256 and largest |x| of every shard, corpus
                           fingerprint, code version
  shard_00000.safetensors  one [rows, d_model] tensor per hook, plus `tokens`, `doc_ids`,
                           `positions` and `context_ids` per row (row = one token)
  shard_00000.json         sidecar written after the shard: its sha256 and row count
  documents.jsonl          document id -> source and index, to trace rows to text

Nothing unrepresentable is stored: the storage dtype is chosen from the model's measured
range on the first batch (`CacheConfig.dtype`, recorded with its reason as the manifest's
`dtype_choice`), and every shard is checked before it is written: a value its dtype
cannot hold (float16 overflows at 65504; Gemma's residual stream passes that) is one
line naming the shard, the hook and the largest magnitude, and nothing is sealed.

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
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from emosae import data
from emosae.core import folders, io
from emosae.core.distributed import Dist
from emosae.core.errors import EmosaeError
from emosae.core.finite import HEADROOM, check_finite, dtype_max, max_abs, storage_dtype
from emosae.core.layout import CacheFiles
from emosae.core.log import logger
from emosae.core.provenance import code_version
from emosae.lm.hooks import check_hooks, resid_hooks, stop_layer
from emosae.sae.contexts import (
    Context,
    CorpusConfig,
    DocumentLog,
    corpus_fingerprint,
    iter_contexts,
)
from emosae.sae.reader import DTYPES, mmap_tensor


@dataclass(frozen=True)
class CacheConfig:
    """How activations are cached (what `emosae run` composes; hooks come from its layer)."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    batch_size: int = 8
    """Contexts per forward pass."""
    contexts_per_shard: int = 256
    """Contexts per shard file (x context_len rows)."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Storage dtype of the activations. auto: measured on the first batch, float16 when
    the largest magnitude x 8 fits (65504), else bfloat16, else float32; the choice and
    the measurement are recorded in the manifest (`dtype_choice`)."""
    skip_first: int = 1
    """Leading positions of each context not stored (position 0 is an attention sink
    with an outsized norm in models without a BOS token)."""

    def __post_init__(self):
        if self.batch_size < 1 or self.contexts_per_shard < 1:
            raise EmosaeError("batch_size and contexts_per_shard must be >= 1")
        if not 0 <= self.skip_first < self.corpus.context_len:
            raise EmosaeError("skip_first must be in [0, context_len)")


@dataclass(frozen=True)
class CacheJob:
    """`emosae cache`: which model and hooks, where, and how (`cache`)."""

    out: str = "runs/default/activations"
    """Output folder (created; a rerun resumes it)."""
    model: str | None = None
    """Model name for `emosae.load_model` (default: the embedded SmolLM2)."""
    layers: tuple[int, ...] = (15,)
    """Residual-stream layers to cache (`blocks.{L}.hook_resid_post`), all in one pass."""
    hook_names: tuple[str, ...] = ()
    """Explicit hook names instead of `layers` (any TransformerLens hook with d_model)."""
    device: str | None = None
    """cpu or cuda (default: cuda when available)."""
    cache: CacheConfig = field(default_factory=CacheConfig)


def resolve_hooks(model: Any, job: CacheJob) -> list[str]:
    """Validate the job's hooks against the model; one-line error naming the valid range."""
    if job.hook_names:
        return check_hooks(model, job.hook_names)
    return check_hooks(model, resid_hooks(model, job.layers))


def shard_owner(shard: int, world_size: int) -> int:
    """Rank that computes shard `shard`: round robin, so every rank's shards hold the
    same contexts, batched the same way, as in a single-process run."""
    return shard % world_size


def shard_done(files: CacheFiles, i: int) -> dict[str, Any] | None:
    """The sidecar of shard `i` if the shard is complete and matches it, else None."""
    try:
        meta = json.loads(files.sidecar(i).read_text())
        sha = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError):  # absent or half-written: redo it
        return None
    sp = files.shard(i)
    if not sp.exists() or io.sha256_file(sp) != sha:
        return None
    return meta


@torch.no_grad()
def cache_activations(job: CacheJob, model: Any = None) -> Path:
    """Compute and store activations for `job`; resumes an interrupted run.

    Under torchrun each rank computes the shards it owns (`shard_owner`) and writes
    them into the same folder; rank 0 writes the manifest once all are done. The
    files are the same as a single-process run writes."""
    from emosae.core import distributed
    from emosae.lm.models import check_layers_early, load_model

    d, dev = distributed.setup(job.device)
    # everything that can be checked is checked before the model loads or a file is written
    folders.check_claimable(job.out, "cache")
    io.check_creatable(job.out)
    data.check_sources(job.cache.corpus.sources)
    if not job.hook_names:
        check_layers_early(job.model, list(job.layers))
    if model is None:
        with distributed.local_main_first(d):  # local rank 0 converts the model once per machine
            model = load_model(job.model, device=dev)
    hooks = resolve_hooks(model, job)
    with folders.lock(job.out) if d.is_main else nullcontext():
        if d.is_main:
            folders.claim(job.out, "cache")
        d.barrier()
        return CacheWriter(job.cache, CacheFiles(Path(job.out)), model, hooks, d).run()


class CacheWriter:
    """Writes one cache folder: checks the header, computes this rank's missing shards
    batch by batch, and (rank 0) writes the manifest."""

    def __init__(self, cfg: CacheConfig, files: CacheFiles, model: Any, hooks: list[str], d: Dist):
        self.cfg, self.files, self.model, self.hooks, self.d = cfg, files, model, hooks, d
        self.dev = torch.device(model.cfg.device)
        self.pin = self.dev.type == "cuda"
        self.L, self.S = cfg.corpus.context_len, cfg.skip_first
        self.cps = cfg.contexts_per_shard
        self.total_ctx = cfg.corpus.max_tokens // self.L
        self.sdt = torch.float32  # set from the header by `check_header`
        self.acts: dict[str, list[Tensor]] = {h: [] for h in hooks}
        self.peak: dict[str, Tensor] = {}  # per hook: largest |x| of the shard, before storing
        self.log = DocumentLog()

    def header(self) -> dict[str, Any]:
        cfg, name = self.cfg, self.model.cfg.model_name
        header = {
            "model": name,
            "hooks": self.hooks,
            "d_model": self.model.cfg.d_model,
            "context_len": self.L,
            "skip_first": self.S,
            "contexts_per_shard": self.cps,
            "rows_per_shard": self.cps * (self.L - self.S),
            "corpus": asdict(cfg.corpus),
            "corpus_sha256": corpus_fingerprint(cfg.corpus, name),
        }
        return json.loads(json.dumps(header))  # tuples -> lists, as read back from disk

    def check_header(self, header: dict[str, Any]) -> dict[str, Any]:
        """The first process writes the header with its storage dtype; any later run must
        match it (with dtype auto it takes the recorded dtype). Returns the full header."""
        if not self.files.config.exists():
            choice = self.choose_dtype()  # on every rank, so that a bad corpus stops them all
            if self.d.is_main:
                io.write_json(self.files.config, {**header, **choice})
        self.d.barrier()
        old = json.loads(self.files.config.read_text())
        asked = self.cfg.dtype
        want = {**header, "dtype": old.get("dtype") if asked == "auto" else asked}
        diff = sorted(k for k in want if old.get(k) != want[k])
        if diff or want["dtype"] not in DTYPES:
            diff = diff or ["dtype"]
            raise EmosaeError(
                f"{self.files.dir} holds a cache with a different config ({', '.join(diff)}); "
                "use another --out"
            )
        self.sdt = DTYPES[old["dtype"]]
        return {**want, "dtype_choice": old.get("dtype_choice", {"asked": old["dtype"]})}

    def choose_dtype(self) -> dict[str, Any]:
        """The storage dtype and why: as asked, or (auto) the narrowest that holds the
        first batch's largest magnitude with `HEADROOM` (`emosae.core.finite`)."""
        if self.cfg.dtype != "auto":
            return {"dtype": self.cfg.dtype, "dtype_choice": {"asked": self.cfg.dtype}}
        ctxs = list(
            islice(
                iter_contexts(self.cfg.corpus, self.model.tokenizer, DocumentLog()),
                self.cfg.batch_size,
            )
        )
        seen: dict[str, Tensor] = {}

        def grab(x: Tensor, hook: Any) -> None:
            seen[hook.name] = x[:, self.S :].detach().float().cpu()

        toks = torch.stack([c.tokens for c in ctxs]).to(self.dev)
        with self.model.hooks(fwd_hooks=[(h, grab) for h in self.hooks]):
            self.model(toks, stop_at_layer=stop_layer(self.hooks))
        for h in self.hooks:
            check_finite(seen[h], f"the first batch's {h}", hint="the model itself makes them")
        peak = max(max_abs(seen[h]) for h in self.hooks)
        name = storage_dtype(peak)
        why = f"{name}: the narrowest dtype whose largest value exceeds {HEADROOM:g} x {peak:.6g}"
        logger.info("cache dtype %s (largest |activation| on the first batch: %.6g)", name, peak)
        return {
            "dtype": name,
            "dtype_choice": {
                "asked": "auto",
                "first_batch_max_abs": peak,
                "first_batch_contexts": len(ctxs),
                "headroom": HEADROOM,
                "why": why,
            },
        }

    def run(self) -> Path:
        header = self.check_header(self.header())
        n_shards = -(-self.total_ctx // self.cps)
        mine = [i for i in range(n_shards) if shard_owner(i, self.d.world_size) == self.d.rank]
        self.todo = {i for i in mine if shard_done(self.files, i) is None}
        if self.todo and len(self.todo) < len(mine):
            logger.info(
                "resuming %s: %d of %d shards to compute (%s)",
                self.files.dir,
                len(self.todo),
                len(mine),
                ", ".join(map(str, sorted(self.todo)[:10])),
            )
        self.pbar = tqdm(
            total=self.tokens_in(mine),
            initial=self.tokens_in([i for i in mine if i not in self.todo]),
            unit="tok",
            unit_scale=True,
            desc="caching activations"
            + (f" (rank {self.d.rank})" if self.d.world_size > 1 else ""),
            disable=not self.d.is_main,
        )
        self.start_n, self.t0 = self.pbar.n, time.perf_counter()
        n_seen = self.walk()
        self.pbar.close()
        self.d.barrier()
        if self.d.is_main:
            self.write_manifest(header, -(-n_seen // self.cps))
        self.d.barrier()
        return self.files.dir

    def tokens_in(self, shards: list[int]) -> int:
        return sum(min(self.cps, self.total_ctx - i * self.cps) for i in shards) * self.L

    def walk(self) -> int:
        """Every rank walks all contexts (tokenizing is cheap next to the forward pass)
        and runs the model on the shards it owns, in batches that never cross a shard.
        Returns the number of contexts the corpus gave."""
        cps, shard, batch, n_seen = self.cps, [], [], 0
        for ctx in iter_contexts(self.cfg.corpus, self.model.tokenizer, self.log):
            n_seen = ctx.index + 1
            si = ctx.index // cps
            if si not in self.todo:
                continue
            batch.append(ctx)
            shard.append(ctx)
            last_of_shard = (ctx.index + 1) % cps == 0 or ctx.index == self.total_ctx - 1
            if len(batch) == self.cfg.batch_size or last_of_shard:
                self.forward(batch)
                batch = []
            if last_of_shard:
                self.flush(si, shard)
                shard = []
        if shard:  # the corpus ended inside a shard
            if batch:
                self.forward(batch)
            self.flush(shard[0].index // cps, shard)
        return n_seen

    def _store(self, name: str) -> Any:
        def hook(x: Tensor, hook: Any) -> None:
            x = x[:, self.S :]
            peak = x.detach().abs().amax().float()  # stays on the device: no sync per batch
            self.peak[name] = torch.maximum(self.peak[name], peak) if name in self.peak else peak
            y = x.reshape(-1, x.shape[-1]).to(self.sdt)
            if self.pin:
                buf = torch.empty(y.shape, dtype=self.sdt, pin_memory=True)
                buf.copy_(y, non_blocking=True)
                y = buf
            self.acts[name].append(y)

        return hook

    def forward(self, batch: list[Context]) -> None:
        toks = torch.stack([c.tokens for c in batch]).to(self.dev, non_blocking=self.pin)
        with self.model.hooks(fwd_hooks=[(h, self._store(h)) for h in self.hooks]):
            self.model(toks, stop_at_layer=stop_layer(self.hooks))
        self.pbar.update(len(batch) * self.L)
        rate = (self.pbar.n - self.start_n) / (time.perf_counter() - self.t0)
        w = self.d.world_size
        self.pbar.set_postfix(tok_s=f"{rate * w:.0f}" + ("/all" if w > 1 else ""))

    def shard_tensors(self, ctxs: list[Context]) -> dict[str, Tensor]:
        L, S = self.L, self.S
        tens = {h: torch.cat(self.acts[h]).contiguous() for h in self.hooks}
        tens["tokens"] = torch.stack([c.tokens for c in ctxs])[:, S:].reshape(-1).to(torch.int32)
        tens["doc_ids"] = torch.stack([c.doc_ids for c in ctxs])[:, S:].reshape(-1)
        tens["positions"] = torch.arange(S, L, dtype=torch.int16).repeat(len(ctxs))
        tens["context_ids"] = torch.tensor(
            [c.index for c in ctxs], dtype=torch.int32
        ).repeat_interleave(L - S)
        return tens

    def flush(self, shard: int, ctxs: list[Context]) -> None:
        if self.pin:
            torch.cuda.synchronize()
        tens = self.shard_tensors(ctxs)
        path = self.files.shard(shard)
        peaks = self.check_shard(path.name, tens)
        try:
            io.save_tensors(path, tens)
            side = {
                "shard": path.name,
                "rows": int(tens["tokens"].numel()),
                "sha256": io.sha256_file(path),
                "contexts": [ctxs[0].index, ctxs[-1].index + 1],
                "rank": self.d.rank,  # which torchrun rank computed it (0 on one process)
                "max_abs": peaks,  # per hook, as the model made it (before storing)
            }
            io.write_json(self.files.sidecar(shard), side, indent=None)
        except OSError as e:
            raise EmosaeError(
                f"writing {path.name} failed ({e.strerror}); the partial shard was removed, rerun to resume"
            ) from None
        for h in self.hooks:
            self.acts[h].clear()
        self.peak.clear()

    def check_shard(self, name: str, tens: dict[str, Tensor]) -> dict[str, float]:
        """Refuse, before anything is written, a shard whose stored activations are not
        finite: one line naming the shard, the hook and the largest magnitude the model
        made. Returns that magnitude per hook."""
        peaks = {h: float(self.peak[h]) for h in self.hooks}
        dt = str(self.sdt).removeprefix("torch.")
        for h in self.hooks:
            hint = (
                f"{dt} holds at most {dtype_max(dt):.6g}; cache with --dtype bfloat16 or "
                "float32 (the default, auto, picks from the model's range) in a new --out"
                if math.isfinite(peaks[h])
                else "the model itself makes them (not a storage problem)"
            )
            check_finite(tens[h], f"{name}: {h}", largest=peaks[h], hint=hint)
        return peaks

    def write_manifest(self, header: dict[str, Any], n_shards: int) -> None:
        files = self.files
        shards = [shard_done(files, i) for i in range(n_shards)]
        missing = [i for i, s in enumerate(shards) if s is None]
        if missing:
            raise EmosaeError(
                f"shards {missing} of {files.dir} are missing or corrupt; rerun to resume"
            )
        # Document table: regenerate it (cheap) so a resumed run has the full table.
        last_doc = max(int(mmap_tensor(files.dir / s["shard"], "doc_ids").max()) for s in shards)
        rows = self.log.rows[: last_doc + 1]
        io.write_text(
            files.documents,
            "".join(
                json.dumps({"id": i, "source": src, "index": idx}) + "\n"
                for i, (src, idx) in enumerate(rows)
            ),
        )
        manifest = {
            **header,
            "n_rows": sum(s["rows"] for s in shards),
            "n_contexts": sum(s["contexts"][1] - s["contexts"][0] for s in shards),
            "shards": shards,
            "code_version": code_version(),
        }
        io.write_json(files.manifest, manifest)
