"""`emosae read --input FILE --out OUT`: read every record of a JSON-lines or Parquet file
(batched, resumable), write one row per record, and optionally per-token traces and a
summary page. The work is `emosae.reading.dataset.run_read_job`; this parses and prints."""

from __future__ import annotations

import argparse
from typing import Any

from emosae.core.errors import EmosaeError


def add_dataset_args(r: argparse.ArgumentParser, what: Any) -> None:
    what.add_argument(
        "--input", default=None, help="a .jsonl or .parquet file of {id?, text | messages} records"
    )
    r.add_argument("--out", default=None, help="with --input: the rows, .jsonl or .parquet")
    r.add_argument(
        "--per-turn",
        action="store_true",
        help="with --input: also read each assistant turn, at the token before it",
    )
    r.add_argument("--traces", default=None, help="with --input: a folder for per-token traces")
    r.add_argument(
        "--skip-bad", action="store_true", help="with --input: skip and count malformed records"
    )
    r.add_argument("--batch-size", type=int, default=16, help="with --input: sequences per forward")


def wants_dataset(args: argparse.Namespace) -> bool:
    """Whether the command line asks for a dataset read (any of its flags)."""
    flags = (args.out, args.traces, args.per_turn, args.skip_bad, args.batch_size != 16)
    return args.input is not None or any(flags)


def read_dataset_command(args: argparse.Namespace) -> None:
    from emosae.lm.models import load_model
    from emosae.reading.dataset import ReadJob, check_outputs, run_read_job
    from emosae.reading.records import check_ids, load_records
    from emosae.reading.trace import Basis
    from emosae.steering.directions import load_directions

    if args.input is None:
        raise EmosaeError("--out, --traces, --per-turn, --skip-bad and --batch-size need --input")
    if args.out is None:
        raise EmosaeError("--input needs --out (a .jsonl or .parquet file for the rows)")
    if args.top < 1:
        raise EmosaeError(f"--top must be >= 1, not {args.top}")
    job = ReadJob(
        input=args.input,
        out=args.out,
        per_turn=args.per_turn,
        traces=args.traces,
        html=args.html,
        batch_size=args.batch_size,
        skip_bad=args.skip_bad,
        force=args.force,
        top=args.top,
    )
    check_outputs(job)
    loaded = load_records(job.input, job.skip_bad)  # malformed records: before any loading
    check_ids(loaded, job.input, job.out)
    vecs = load_directions(args.directions, kind=args.kind, layer=args.layer)
    names = args.concepts or list(vecs)
    unknown = [c for c in names if c not in vecs]
    if unknown:
        raise EmosaeError(f"unknown concept {unknown[0]!r}; known: {', '.join(vecs)}")
    basis = Basis.of({c: vecs[c] for c in names})
    res = run_read_job(load_model(args.model), job, basis, loaded)
    resumed = f", {res.n_resumed} of them resumed from a stopped read" if res.n_resumed else ""
    skipped = f"; skipped {res.n_skipped} malformed" if res.n_skipped else ""
    print(f"read {res.n_read} records{resumed}{skipped} ({basis.hook})")
    print(f"wrote {res.out}")
    for p in (res.traces, res.html):
        if p is not None:
            print(f"wrote {p}")
