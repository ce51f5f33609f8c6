"""Measures of a text that need no model: the mean Warriner et al. (2013) valence and
arousal of its words (`text_norms`), the external check of a steered reply's tone, and
the word lookup it uses (`lookup`), shared with the NRC judge (emosae.experiments.judges)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

import numpy as np

from emosae.data import Norm, load_norms

WORD = re.compile(r"[a-z]+")
"""A word of a lowercased text: a run of letters ("don't" is "don" and "t")."""

_ENDINGS = (("s", ""), ("ies", "y"), ("es", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"))

T = TypeVar("T")


def words(text: str) -> list[str]:
    """The words of `text`, lowercased (`WORD`)."""
    return WORD.findall(text.lower())


def lookup(word: str, table: Mapping[str, T]) -> T | None:
    """`table`'s entry for `word` as is, else with a plural/past/-ing ending undone."""
    hit = table.get(word)
    if hit is not None:
        return hit
    for suf, rep in _ENDINGS:
        if word.endswith(suf) and (hit := table.get(word[: -len(suf)] + rep)) is not None:
            return hit
    return None


def text_norms(text: str, norms: dict[str, Norm] | None = None) -> tuple[float, float, int]:
    """Mean Warriner valence and arousal of the words of `text` that have norms
    (a word is looked up as is, then with a plural/past/-ing ending undone)."""
    norms = norms if norms is not None else load_norms()
    found = [n for w in words(text) if (n := lookup(w, norms)) is not None]
    if not found:
        return float("nan"), float("nan"), 0
    return (
        float(np.mean([n.valence for n in found])),
        float(np.mean([n.arousal for n in found])),
        len(found),
    )
