"""Files of records to read, and files of rows read from them.

Input: JSON lines (`.jsonl`) or Parquet (`.parquet`, through pyarrow), one record per
line or row: `{"id"?, "text"}` or `{"id"?, "messages": [{role, content}, ...]}`. A record
without an id gets its line number (1-based; the row number in Parquet). Every record is
checked before any reading: the first malformed one is a one-line `file:line` error,
or with `skip_bad` it is left out, counted and logged.

Output: JSON lines (one row per record, `{"id", "kind", "scores"[, "turns"]}`) or
Parquet with the same nested columns. Parquet holds one id type: ids become strings when
they mix types, and `check_ids` refuses, before any work, two ids that would then be the
same (1 and "1") or an integer id beyond 64 bits, naming the lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from emosae.core.errors import EmosaeError
from emosae.core.log import logger
from emosae.reading.batch import Record

FORMATS = (".jsonl", ".parquet")
DIGITS = 6
"""Decimals of the scores written to a file (read_many's equality holds to 1e-4)."""


def file_format(path: str | Path, what: str) -> str:
    """`.jsonl` or `.parquet` from the file name, else a one-line error."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise EmosaeError(f"{what} must be a .jsonl or .parquet file, not {str(path)!r}")
    return suffix


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise EmosaeError(
            "Parquet needs pyarrow: pip install 'emosae[parquet]' (or use .jsonl)"
        ) from None
    return pyarrow


def _raw(path: Path) -> Iterator[tuple[int, Any]]:
    """(line or row number, decoded item) of every non-blank line or row."""
    if file_format(path, "--input") == ".parquet":
        pa = _pyarrow()
        try:
            rows = pa.parquet.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as e:
            raise EmosaeError(f"{path}: not a readable Parquet file ({e})") from None
        for n, row in enumerate(rows, 1):
            yield n, {k: v for k, v in row.items() if v is not None}
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise EmosaeError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            yield n, EmosaeError(f"not JSON ({e.msg}, column {e.colno})")


class Loaded(NamedTuple):
    records: list[Record]
    lines: list[int]
    """The line (Parquet: row) number of each record, for `file:line` errors."""
    skipped: int
    """Malformed records left out (with `skip_bad`)."""


def load_records(path: str | Path, skip_bad: bool = False) -> Loaded:
    """Every record of `path` and the number of malformed ones skipped (`skip_bad`);
    without `skip_bad` the first malformed record is a one-line `file:line` error."""
    path = Path(path)
    if not path.is_file():
        raise EmosaeError(f"--input {path} is not a file")
    records: list[Record] = []
    lines: list[int] = []
    seen: set[str | int] = set()
    bad = 0
    for n, item in _raw(path):
        try:
            if isinstance(item, EmosaeError):
                raise item
            if not isinstance(item, dict):
                raise EmosaeError(f"a record is a JSON object, not {type(item).__name__}")
            rec = Record.of(item, n)
            if rec.id in seen:
                raise EmosaeError(f"duplicate id {rec.id!r}")
        except EmosaeError as e:
            if not skip_bad:
                raise EmosaeError(f"{path}:{n}: {e}") from None
            bad += 1
            (logger.warning if bad <= 10 else logger.debug)("skipping %s:%d: %s", path, n, e)
            continue
        seen.add(rec.id)
        records.append(rec)
        lines.append(n)
    if not records:
        raise EmosaeError(f"{path} has no records to read")
    return Loaded(records, lines, bad)


def check_ids(loaded: Loaded, path: str | Path, out: str | Path) -> None:
    """One-line `file:line` error unless every id stays distinct and exact in `out`:
    in Parquet, integer ids must fit 64 bits, and mixed ids (written as strings) must
    not meet as the same string. JSON lines keeps every id as it is."""
    if file_format(out, "--out") != ".parquet":
        return
    recs = list(zip(loaded.records, loaded.lines, strict=True))
    if len({type(r.id) for r, _ in recs}) == 1:
        for r, line in recs:
            if isinstance(r.id, int) and not -(2**63) <= r.id < 2**63:
                raise EmosaeError(
                    f"{path}:{line}: id {r.id} does not fit Parquet's 64-bit integers; "
                    "make the ids strings, or write a .jsonl --out"
                )
        return
    seen: dict[str, tuple[str | int, int]] = {}
    for r, line in recs:
        key = str(r.id)
        if key in seen:
            other, at = seen[key]
            raise EmosaeError(
                f"{path}:{line}: id {r.id!r} and the id {other!r} of line {at} would both be "
                f"{key!r} in Parquet (ids of mixed types are written as strings); give "
                "distinct ids, or write a .jsonl --out"
            )
        seen[key] = (r.id, line)


def row_line(row: dict[str, Any]) -> str:
    """One row as a JSON line, scores rounded to `DIGITS` decimals."""

    def rounded(scores: dict[str, float]) -> dict[str, float]:
        return {c: round(v, DIGITS) for c, v in scores.items()}

    out = {**row, "scores": rounded(row["scores"])}
    if "turns" in row:
        out["turns"] = [{**t, "scores": rounded(t["scores"])} for t in row["turns"]]
    return json.dumps(out, ensure_ascii=False) + "\n"


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines output file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_parquet(rows: list[dict[str, Any]], dest: Path) -> None:
    """`rows` as a Parquet table with the JSON rows' nested columns."""
    pa = _pyarrow()
    mixed = len({type(r["id"]) for r in rows}) > 1
    keys = list(dict.fromkeys(k for r in rows for k in r))  # pyarrow reads keys off row 0
    rows = [{k: r.get(k) for k in keys} | ({"id": str(r["id"])} if mixed else {}) for r in rows]
    pa.parquet.write_table(pa.Table.from_pylist(rows), dest)
