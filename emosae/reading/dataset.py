"""`emosae read --input FILE --out OUT`: read a whole file of records, resumably.

Before any reading, every record is parsed and tokenized (a malformed or over-long one is
a one-line `file:line` error, or skipped and counted with `skip_bad`) and every output
path is checked under `core.folders`' rules. Rows are then appended chunk by chunk to a
hidden partial file beside OUT, `.OUT.partial.jsonl`, with a small progress file
(`.OUT.progress.json`: how many records are done, the partial's length, and a key of the
input and options). A killed read, rerun with the same command, truncates the partial to
its last finished chunk and goes on from there; a changed input or option starts over.
At the end OUT is written atomically (JSON lines or Parquet) and recorded as emosae's.

`traces`: an emosae `traces` folder with each chunk's per-token scores (float16) and
token ids in `shard-NNNNN.safetensors` (keys `{position}.scores`, `{position}.tokens`),
`index.json` (concepts, hook and one entry per record: id, position, shard, kind,
read_from), and, with `html`, a trace page per record shown on the summary page.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.log import logger
from emosae.reading.batch import Plan, Trace, plan_record, read_plans
from emosae.reading.records import (
    Loaded,
    file_format,
    load_records,
    read_rows,
    row_line,
    write_parquet,
)
from emosae.reading.summary import TRACES_KIND, finish_outputs
from emosae.reading.trace import Basis


@dataclass(frozen=True)
class ReadJob:
    """What `emosae read --input` reads and writes."""

    input: str
    """JSON lines or Parquet of `{"id"?, "text"}` / `{"id"?, "messages"}` records."""
    out: str
    """Where the rows go: `.jsonl` or `.parquet`."""
    per_turn: bool = False
    """Also read each assistant turn of a conversation, at the token before it."""
    traces: str | None = None
    """A folder for per-token traces (safetensors shards plus index.json)."""
    html: str | None = None
    """The summary page."""
    batch_size: int = 16
    """Sequences per forward."""
    chunk: int = 256
    """Records per resumable step (rows and a trace shard are written per chunk)."""
    skip_bad: bool = False
    """Skip (and count) malformed records instead of stopping."""
    force: bool = False
    """Replace OUT and the page even where emosae did not write them."""
    top: int = 5
    """Records listed per concept on the summary page."""

    def __post_init__(self) -> None:
        if min(self.batch_size, self.chunk, self.top) < 1:
            raise EmosaeError("--batch-size, the chunk and --top must be >= 1")
        file_format(self.out, "--out")
        file_format(self.input, "--input")
        if self.html and not self.html.endswith((".html", ".htm")):
            raise EmosaeError(f"--html must name an .html file, not {self.html!r}")


class ReadResult(NamedTuple):
    out: Path
    n_read: int
    n_skipped: int
    """Malformed records left out (`skip_bad`)."""
    n_resumed: int
    """Records already done by an earlier, killed read of the same job."""
    html: Path | None
    traces: Path | None


def check_outputs(job: ReadJob) -> None:
    """Every output path, checked before any work (one-line errors)."""
    folders.check_output_file(job.out, job.force)
    if job.html:
        folders.check_output_file(job.html, job.force)
    if job.traces:
        folders.check_claimable(job.traces, TRACES_KIND)
    if Path(job.input).resolve() == Path(job.out).resolve():
        raise EmosaeError("--out must not be the --input file")


def _plans(model: Any, job: ReadJob, basis: Basis, loaded: Loaded) -> tuple[list, list[Plan], int]:
    recs, plans, bad = [], [], loaded.skipped
    for rec, line in tqdm(
        list(zip(loaded.records, loaded.lines, strict=True)), desc="tokenizing", leave=False
    ):
        try:
            plans.append(plan_record(model, rec, basis.skip, job.per_turn))
        except EmosaeError as e:
            if not job.skip_bad:
                raise EmosaeError(f"{job.input}:{line}: {e}") from None
            logger.warning("skipping %s:%d: %s", job.input, line, e)
            bad += 1
            continue
        recs.append(rec)
    if not recs:
        raise EmosaeError(f"{job.input} has no readable records")
    return recs, plans, bad


def _key(job: ReadJob, model: Any, basis: Basis) -> str:
    """What a partial read depends on: the input's bytes, the options, model, directions."""
    opts = {k: v for k, v in asdict(job).items() if k not in ("html", "force", "top", "out")}
    basis_sha = hashlib.sha256(basis.unit.numpy().tobytes() + basis.center.numpy().tobytes())
    return io.hash_json(
        {
            "input": io.sha256_file(job.input),
            "options": opts,
            "model": getattr(model.cfg, "model_name", ""),
            "hook": basis.hook,
            "concepts": basis.concepts,
            "directions": basis_sha.hexdigest(),
        }
    )


class _Partial:
    """Rows of a read in progress, beside OUT, and how far they go."""

    def __init__(self, out: Path, key: str) -> None:
        self.rows = out.with_name(f".{out.name}.partial.jsonl")
        self.state = out.with_name(f".{out.name}.progress.json")
        self.key = key

    def resume(self) -> int:
        """Records already done (0 unless an earlier read of the same job stopped)."""
        state = None
        if self.state.exists() and self.rows.exists():
            try:
                state = json.loads(self.state.read_text())
            except (OSError, json.JSONDecodeError):
                state = None
        if not state or state.get("key") != self.key or self.rows.stat().st_size < state["bytes"]:
            if state:
                logger.info("the input or options changed since %s: reading anew", self.rows)
            self.rows.write_text("")
            return 0
        with open(self.rows, "r+b") as f:
            f.truncate(state["bytes"])  # drop a chunk half-written when the read stopped
        return int(state["done"])

    def append(self, lines: list[str], done: int) -> None:
        with open(self.rows, "a", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        size = self.rows.stat().st_size
        io.write_json(self.state, {"key": self.key, "done": done, "bytes": size})

    def finish(self, out: Path, force: bool) -> list[dict[str, Any]]:
        rows = read_rows(self.rows)
        if file_format(out, "--out") == ".parquet":
            folders.write_output(out, lambda t: write_parquet(rows, t), force)
        else:
            folders.write_output(out, lambda t: t.write_bytes(self.rows.read_bytes()), force)
        self.rows.unlink()
        self.state.unlink()
        return rows


def _save_shard(folder: Path, k: int, start: int, traces: list[Trace], ids: list) -> None:
    tensors: dict[str, torch.Tensor] = {}
    index = []
    for n, (t, rid) in enumerate(zip(traces, ids, strict=True), start):
        tensors[f"{n}.scores"] = t.scores.to(torch.float16).contiguous()
        tensors[f"{n}.tokens"] = t.tokens.to(torch.int32).contiguous()
        index.append({"id": rid, "position": n, "kind": t.kind, "read_from": t.read_from})
    meta = {"index": json.dumps(index)}
    io.save_tensors(folder / f"shard-{k:05d}.safetensors", tensors, metadata=meta)


def run_read_job(
    model: Any, job: ReadJob, basis: Basis, loaded: Loaded | None = None
) -> ReadResult:
    """Read every record of `job.input` (or of `loaded`, its records already parsed)
    into `job.out` (see the module docstring)."""
    check_outputs(job)
    loaded = loaded or load_records(job.input, job.skip_bad)
    recs, plans, bad = _plans(model, job, basis, loaded)
    out = Path(job.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with folders.lock(out):
        part = _Partial(out, _key(job, model, basis))
        done = first = part.resume()
        traces = folders.claim(job.traces, TRACES_KIND) if job.traces else None
        bar = tqdm(total=len(recs), initial=done, desc="reading", unit="rec")
        while done < len(recs):
            end = min(done + job.chunk, len(recs))
            got = read_plans(
                model, basis, recs[done:end], plans[done:end], job.batch_size, job.per_turn
            )
            if traces:
                ids = [r.id for r in recs[done:end]]
                _save_shard(traces, done // job.chunk, done, [t for _, t in got], ids)
            part.append([row_line(row) for row, _ in got], end)
            bar.update(end - done)
            done = end
        bar.close()
        rows = part.finish(out, job.force)
    html = None
    if traces or job.html:
        html = finish_outputs(model, job, basis, recs, rows, traces)
    return ReadResult(out, len(recs), bad, first, html, traces)
