"""`emosae read --input FILE --out OUT`: read a whole file of records, resumably.

Before any reading, every record is parsed and tokenized (a malformed, over-long or
unreadably short one is a one-line `file:line` error, or skipped and counted with
`skip_bad`), ids are checked to stay distinct in OUT, and every output path is checked
under `core.folders`' rules. Rows are then appended chunk by chunk to a hidden partial
file beside OUT, `.OUT.partial.jsonl`, with a small progress file (`.OUT.progress.json`:
how many records are done, the partial's length, and a key of the input and options);
both are side files (`folders.SideFile`: created exclusively, never through a link,
removed only when emosae's marker is in them). A killed read, rerun with the same
command, truncates the partial to its last finished chunk and goes on from there; a
changed input or option, or a traces folder written by another read since, starts over.
At the end OUT is written atomically (JSON lines or Parquet) and recorded as emosae's.

`traces`: an emosae `traces` folder, locked like OUT, with each chunk's per-token scores
(float16) and token ids in `shard-NNNNN.safetensors` (keys `{position}.scores`,
`{position}.tokens`; metadata: the chunk's index and the key of the read that wrote it),
`index.json` (concepts, hook and one entry per record: id, position, shard, kind,
read_from), and, with `html`, a trace page per record shown on the summary page.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack
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
    check_ids,
    file_format,
    load_records,
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
    """Every output path, checked before any work (one-line errors): OUT and the page
    under the one overwrite rule and outside the traces folder (emosae's own, whole),
    the traces folder claimable, and the side files beside OUT emosae's own or absent."""
    if job.traces:
        inside = Path(job.traces).resolve()
        for flag, path in (("--out", job.out), ("--html", job.html)):
            if path and Path(path).resolve().is_relative_to(inside):
                raise EmosaeError(
                    f"{flag} {path} is inside the --traces folder {job.traces}, which emosae "
                    "writes whole; choose a path outside it"
                )
    out = folders.check_output_file(job.out, job.force)
    folders.check_unlocked(out)
    _Partial(out).check()
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
    """Rows of a read in progress, beside OUT, and how far they go: two side files
    (`folders.SideFile`), never anything else at their paths."""

    def __init__(self, out: Path, key: str = "") -> None:
        self.rows = folders.SideFile(out.with_name(f".{out.name}.partial.jsonl"), "partial")
        self.state = folders.SideFile(out.with_name(f".{out.name}.progress.json"), "progress")
        self.key = key

    def check(self) -> None:
        """A one-line error if anything but emosae's own partial files is there."""
        self.rows.header()
        self.state.header()

    def resume(self) -> int:
        """Records already done (0 unless an earlier read of the same job stopped)."""
        state, head = self.state.header(), self.rows.header()
        if state and head and state.get("key") == self.key == head.get("key"):
            done, size = state.get("done"), state.get("bytes")
            if isinstance(done, int) and isinstance(size, int) and self.rows.size() >= size:
                self.rows.truncate(size)  # drop a chunk half-written when the read stopped
                return done
        if state or head:
            logger.info("the input or options changed since %s: reading anew", self.rows.path)
        return self.restart()

    def restart(self) -> int:
        """Start the partial anew (removing emosae's own earlier one); 0 records done."""
        self.state.remove()
        self.rows.remove()
        self.rows.create({"key": self.key})
        return 0

    def append(self, lines: list[str], done: int) -> None:
        size = self.rows.append("".join(lines).encode("utf-8"))
        self.state.replace({"key": self.key, "done": done, "bytes": size})

    def finish(self, out: Path, force: bool) -> list[dict[str, Any]]:
        data = self.rows.body()
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        if file_format(out, "--out") == ".parquet":
            folders.write_output(out, lambda t: write_parquet(rows, t), force)
        else:
            folders.write_output(out, lambda t: t.write_bytes(data), force)
        self.rows.remove()
        self.state.remove()
        return rows


SHARD_KEY = "read"
"""A trace shard's metadata key holding the key of the read that wrote it (`_key`)."""


def _save_shard(folder: Path, k: int, start: int, traces: list[Trace], ids: list, key: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    index = []
    for n, (t, rid) in enumerate(zip(traces, ids, strict=True), start):
        tensors[f"{n}.scores"] = t.scores.to(torch.float16).contiguous()
        tensors[f"{n}.tokens"] = t.tokens.to(torch.int32).contiguous()
        index.append({"id": rid, "position": n, "kind": t.kind, "read_from": t.read_from})
    meta = {"index": json.dumps(index), SHARD_KEY: key}
    io.save_tensors(folder / f"shard-{k:05d}.safetensors", tensors, metadata=meta)


def _traces_resume(folder: Path, key: str, done: int, chunk: int) -> bool:
    """Whether `folder` holds the shards of the first `done` records of this very read
    (another read may have written the folder since this one stopped)."""
    from safetensors import safe_open

    for k in range((done + chunk - 1) // chunk):
        shard = folder / f"shard-{k:05d}.safetensors"
        try:
            with safe_open(str(shard), "pt") as f:
                if (f.metadata() or {}).get(SHARD_KEY) != key:
                    return False
        except Exception:  # noqa: BLE001 - missing or unreadable: not this read's
            return False
    return True


def run_read_job(
    model: Any, job: ReadJob, basis: Basis, loaded: Loaded | None = None
) -> ReadResult:
    """Read every record of `job.input` (or of `loaded`, its records already parsed)
    into `job.out` (see the module docstring). OUT and the traces folder are locked for
    the whole read; a resumed read goes on only if the traces are its own."""
    check_outputs(job)
    loaded = loaded or load_records(job.input, job.skip_bad)
    check_ids(loaded, job.input, job.out)
    recs, plans, bad = _plans(model, job, basis, loaded)
    out = Path(job.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    key = _key(job, model, basis)
    with ExitStack() as held:
        held.enter_context(folders.lock(out))
        if job.traces:
            held.enter_context(folders.lock(job.traces))
        part = _Partial(out, key)
        done = first = part.resume()
        traces = folders.claim(job.traces, TRACES_KIND) if job.traces else None
        if traces and done and not _traces_resume(traces, key, done, job.chunk):
            logger.info("%s holds traces of another read: reading %s anew", traces, job.input)
            done = first = part.restart()
        bar = tqdm(total=len(recs), initial=done, desc="reading", unit="rec")
        while done < len(recs):
            end = min(done + job.chunk, len(recs))
            got = read_plans(
                model, basis, recs[done:end], plans[done:end], job.batch_size, job.per_turn
            )
            if traces:
                ids = [r.id for r in recs[done:end]]
                _save_shard(traces, done // job.chunk, done, [t for _, t in got], ids, key)
            part.append([row_line(row) for row, _ in got], end)
            bar.update(end - done)
            done = end
        bar.close()
        rows = part.finish(out, job.force)
        html = None
        if traces or job.html:
            html = finish_outputs(model, job, basis, recs, rows, traces)
    return ReadResult(out, len(recs), bad, first, html, traces)
