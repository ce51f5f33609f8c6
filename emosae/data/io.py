"""Reading the bundled data and concept-set files: UTF-8 text (gzipped or not), JSON and
JSON-lines records, every error one line naming the file (and line). The one place
that knows where the package data lives (`RESOURCES`)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from emosae.core.errors import EmosaeError

RESOURCES = Path(str(files("emosae.data").joinpath("resources")))
"""The package data folder (`emosae/data/resources/`, see its README)."""


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise EmosaeError(f"{path}:{e.lineno}: malformed JSON: {e.msg}") from None


def read_text(path: Path) -> str:
    """A UTF-8 text file (gzipped if its name ends in .gz); one-line errors."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EmosaeError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise EmosaeError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except (OSError, EOFError) as e:
        raise EmosaeError(f"{path}: cannot read ({e})") from None


def read_jsonl(path: Path, keys: Sequence[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Records of a jsonl file: each an object with `keys`, whose values are text.
    Errors name the file and line."""
    return records(path, read_text(path).splitlines(), keys)


def records(
    path: Path, lines: Sequence[str], keys: Sequence[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EmosaeError(f"{path}:{ln}: malformed JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise EmosaeError(f"{path}:{ln}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in keys if k not in rec]
        if missing:
            raise EmosaeError(f"{path}:{ln}: record lacks keys {missing}")
        bad = [k for k in keys if not isinstance(rec[k], str)]
        if bad:
            raise EmosaeError(f"{path}:{ln}: {', '.join(bad)} must be text, not {rec[bad[0]]!r}")
        yield ln, rec
