"""The outside corpus: short emotion texts written apart from the bundled stories, for
evaluation only (never to fit a probe or choose a threshold).

The bundled file (`resources/outside/texts.jsonl`, see its README) holds ten texts per
bundled emotion in five registers other than the stories'. Any file of the same format
can take its place, so users can check the instruments on their own texts:

  {"concept": "<name>", "register": "<diary|dialogue|post|review|message>", "text": "..."}

one JSON object per line. A file is checked whole on load, with the rules the stories
follow (`concepts.py`): every record names a known concept and register and has text,
no text names its concept or one of the concept's forbidden words, no text appears twice
for a concept, and every concept checked against has at least `min_texts` texts. Errors
are one line naming the file and line. Length and shared-run rules are the bundled
file's promises, checked by its tests, not demanded of a user's file.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

from emosae.core.errors import EmosaeError
from emosae.data.checks import forbidden_hits
from emosae.data.concepts import ConceptSet, bundled
from emosae.data.io import RESOURCES, read_jsonl

Register = Literal["diary", "dialogue", "post", "review", "message"]
REGISTERS: tuple[str, ...] = get_args(Register)
"""first-person diary lines, a line of quoted speech with a speaker tag, a short
social-media post, a one-to-three-sentence review, a short message to someone."""
DEFAULT_PATH = RESOURCES / "outside" / "texts.jsonl"


@dataclass(frozen=True)
class OutsideText:
    concept: str
    register: Register
    text: str
    line: int
    """1-based line of the record in its file."""


def _record(
    path: Path, ln: int, rec: dict[str, Any], cs: ConceptSet, allowed: Collection[str]
) -> OutsideText:
    c, reg, text = rec["concept"], rec["register"], rec["text"]
    if c not in allowed:
        raise EmosaeError(
            f"{path}:{ln}: unknown concept {c!r} (not one of the {len(allowed)} concepts "
            "checked against)"
        )
    if reg not in REGISTERS:
        raise EmosaeError(
            f"{path}:{ln}: unknown register {reg!r} (expected one of {', '.join(REGISTERS)})"
        )
    if not text.strip():
        raise EmosaeError(f"{path}:{ln}: empty text for concept {c!r}")
    forbidden = cs.concepts[cs.names.index(c)].forbidden if c in cs.names else ()
    hits = forbidden_hits(text, (*forbidden, c))
    if hits:
        raise EmosaeError(
            f"{path}:{ln}: text of {c!r} names its concept: forbidden word(s) {', '.join(hits)}"
        )
    return OutsideText(c, cast(Register, reg), text, ln)


def load_outside(
    path: str | Path | None = None,
    concepts: ConceptSet | None = None,
    allowed: Collection[str] | None = None,
    min_texts: int = 1,
) -> list[OutsideText]:
    """The texts of an outside-corpus file (None: the bundled one), checked whole.

    `concepts` gives each concept's forbidden words (default: the bundled emotions);
    `allowed` the concepts a text may name, each of which needs `min_texts` texts
    (default: all of `concepts`; a validator passes the concepts its directions have).
    """
    path = DEFAULT_PATH if path is None else Path(path)
    cs = bundled() if concepts is None else concepts
    allowed = set(cs.names if allowed is None else allowed)
    out: list[OutsideText] = []
    first: dict[tuple[str, str], int] = {}
    last = 0
    for ln, rec in read_jsonl(path, ("concept", "register", "text")):
        t = _record(path, ln, rec, cs, allowed)
        key = (t.concept, " ".join(t.text.split()).lower())
        if key in first:
            raise EmosaeError(
                f"{path}:{ln}: duplicate text of {t.concept!r} (the same as line {first[key]})"
            )
        first[key] = last = ln
        out.append(t)
    _check_counts(path, out, allowed, min_texts, last)
    return out


def _check_counts(
    path: Path, texts: list[OutsideText], allowed: Collection[str], min_texts: int, last: int
) -> None:
    """Every allowed concept has >= `min_texts` texts; the error points at the concept's
    first text, or at the file's last record when it has none."""
    lines: dict[str, list[int]] = {c: [] for c in allowed}
    for t in texts:
        lines[t.concept].append(t.line)
    short = sorted(c for c, ls in lines.items() if len(ls) < min_texts)
    if short:
        c, ls = short[0], lines[short[0]]
        more = f" (and {len(short) - 1} more concept(s))" if len(short) > 1 else ""
        if not ls:
            raise EmosaeError(
                f"{path}:{max(last, 1)}: the file ends with no text of concept {c!r} "
                f"(needs >= {min_texts}){more}"
            )
        raise EmosaeError(
            f"{path}:{ls[0]}: concept {c!r} has {len(ls)} text(s), needs >= {min_texts}{more}"
        )
