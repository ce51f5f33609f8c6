"""Quality checks for the hand-written emotion corpus (pure Python, no torch).

These are the rules the corpus promises: no story names its emotion (or a direct
synonym), story length 70-180 words, one topic per story and at least 16 distinct
topics per emotion, and no two stories sharing a run of 8 identical words (names,
i.e. capitalised words other than sentence starts, are ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

WORD_RE = re.compile(r"[A-Za-z][A-Za-z'\-]*")
MIN_WORDS, MAX_WORDS = 70, 180
SHARED_RUN = 8


def words(text: str) -> list[str]:
    """Lower-cased words of `text` (letters, apostrophes and hyphens)."""
    return [w.lower() for w in WORD_RE.findall(text)]


def forbidden_hits(text: str, forbidden: Iterable[str]) -> list[str]:
    """Forbidden words that occur in `text` as whole words, any case.

    Hyphenated forbidden entries ("worn-out") are matched as written; a forbidden word
    also matches inside a hyphenated compound ("joy-filled" hits "joy").
    """
    toks = set(words(text))
    parts = {p for t in toks for p in t.split("-")}
    parts |= {t[:-2] for t in toks if t.endswith("'s")}
    return sorted({f for f in forbidden if f.lower() in toks or f.lower() in parts})


def content_words(text: str) -> list[str]:
    """Words for the shared-run check: names (capitalised mid-sentence) dropped."""
    out: list[str] = []
    sentence_start = True
    for m in re.finditer(r"[A-Za-z][A-Za-z'\-]*|[.!?]", text):
        tok = m.group(0)
        if tok in ".!?":
            sentence_start = True
            continue
        if tok[0].isupper() and not sentence_start and tok != "I":
            sentence_start = False
            continue
        out.append(tok.lower())
        sentence_start = False
    return out


def shared_runs(texts: Sequence[str], n: int = SHARED_RUN) -> list[tuple[int, int, str]]:
    """Pairs (i, j, run) of texts that share a run of `n` identical words."""
    seen: dict[tuple[str, ...], int] = {}
    hits: dict[tuple[int, int], str] = {}
    for i, t in enumerate(texts):
        ws = content_words(t)
        for k in range(len(ws) - n + 1):
            g = tuple(ws[k : k + n])
            j = seen.setdefault(g, i)
            if j != i and (j, i) not in hits:
                hits[(j, i)] = " ".join(g)
    return [(i, j, g) for (i, j), g in sorted(hits.items())]
