"""Measures of a text that need no model: the mean Warriner et al. (2013) valence and
arousal of its words (`text_norms`), the external check of a steered reply's tone."""

from __future__ import annotations

import re

import numpy as np

from emosae.data import Norm, load_norms

_WORD = re.compile(r"[a-z]+")


def text_norms(text: str, norms: dict[str, Norm] | None = None) -> tuple[float, float, int]:
    """Mean Warriner valence and arousal of the words of `text` that have norms
    (a word is looked up as is, then with a plural/past/-ing ending undone)."""
    norms = norms if norms is not None else load_norms()
    vals, aros = [], []
    for w in _WORD.findall(text.lower()):
        n = norms.get(w)
        if n is None:
            for suf, rep in (
                ("s", ""),
                ("ies", "y"),
                ("es", ""),
                ("ed", ""),
                ("ed", "e"),
                ("ing", ""),
                ("ing", "e"),
            ):
                if w.endswith(suf) and (n := norms.get(w[: -len(suf)] + rep)) is not None:
                    break
        if n is not None:
            vals.append(n.valence)
            aros.append(n.arousal)
    if not vals:
        return float("nan"), float("nan"), 0
    return float(np.mean(vals)), float(np.mean(aros)), len(vals)
