"""Surface style of the labelled stories, to keep it from passing for an emotion.

A feature that fires on dialogue separates the stories of a concept whose writers used
more dialogue, on training and held-out topics alike, without meaning the concept. So
each story gets covariates the labeller can measure without its concept:
  log_length   log of the story's read tokens
  quotes       fraction of its tokens holding a quote mark (" “ ” ‘, or ' after a space:
               an opening single quote, not the apostrophe of "don't")
  punctuation  fraction of its tokens holding ! ? , . ; : – or —
and its topic. `residualise` centres feature activations and covariates within each
topic (every topic of the bundled set has stories of 26 to 48 of its 48 concepts, so a
topic mean is not a concept mean; it also works for held-out topics, which a one-hot
fitted on training topics could not), then removes the least-squares fit on the
covariates, fitted on training stories and applied to all. None of this reads the
concept labels, so the permutation null reuses the residuals as they are.

What it does not do: model nonlinear or per-concept style effects, or style the
covariates do not name (sentence length, person, tense).

Shape letters: S stories, F features, K covariates, T tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

COVARIATES = ("log_length", "quotes", "punctuation")
_QUOTE = re.compile(r"[\"“”‘]|\s'")
_PUNCT = re.compile(r"[!?,.;:–—]")


class StyleCovariates(NamedTuple):
    """Story-level surface covariates."""

    z_SK: np.ndarray
    """Covariates per story, columns in `names` order."""
    topic_S: np.ndarray
    """Topic code of each story (stories of one topic are centred together)."""
    names: tuple[str, ...] = COVARIATES


def is_quote(token: str) -> bool:
    """A token that holds a quotation mark opening or closing dialogue."""
    return bool(_QUOTE.search(token))


def is_punct(token: str) -> bool:
    return bool(_PUNCT.search(token))


def story_topic(story_id: str, concept: str) -> str:
    """The topic in a story id `<concept>/<topic>` or `<concept>/<topic>#<n>`
    (`emosae.data.concepts`); "" for an id of another form."""
    if not story_id.startswith(f"{concept}/"):
        return ""
    topic = story_id[len(concept) + 1 :]
    head, sep, n = topic.rpartition("#")
    return head if sep and n.isdigit() else topic


def story_covariates(
    tokens_T: Sequence[str], lens_S: Sequence[int], topics_S: Sequence[str]
) -> StyleCovariates:
    """Covariates of stories whose tokens (as text) are concatenated in `tokens_T`."""
    lens = np.asarray(lens_S, dtype=np.int64)
    if lens.sum() != len(tokens_T) or len(topics_S) != len(lens):
        raise ValueError(f"{len(tokens_T)} tokens, {lens.sum()} in lengths, {len(topics_S)} topics")
    seg = np.repeat(np.arange(len(lens)), lens)
    n = np.maximum(lens, 1)

    def density(flags: list[bool]) -> np.ndarray:
        return np.bincount(seg, weights=np.asarray(flags, float), minlength=len(lens)) / n

    z = np.stack(
        [
            np.log(n),
            density([is_quote(t) for t in tokens_T]),
            density([is_punct(t) for t in tokens_T]),
        ],
        axis=1,
    )
    _, topic = np.unique(np.asarray(topics_S, dtype=object).astype(str), return_inverse=True)
    return StyleCovariates(z, topic.reshape(-1))


def covariates_from_ids(
    ids_T: Sequence[int], lens_S: Sequence[int], topics_S: Sequence[str], decode: Callable
) -> StyleCovariates:
    """`story_covariates` from token ids, each distinct id decoded once with `decode`
    (a tokenizer's `decode`, taking a list of ids)."""
    ids = np.asarray(ids_T, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    text = [decode([int(i)]) for i in uniq]
    return story_covariates([text[j] for j in inv.reshape(-1)], lens_S, topics_S)


def centre_within(x_SF: np.ndarray, group_S: np.ndarray) -> np.ndarray:
    """x minus the mean of its group (rows of one group share a mean)."""
    _, g = np.unique(group_S, return_inverse=True)
    oh_SG = (g.reshape(-1)[:, None] == np.arange(g.max() + 1)[None]).astype(float)
    means_GF = (oh_SG.T @ x_SF) / oh_SG.sum(0)[:, None]
    return x_SF - oh_SG @ means_GF


def _centred(x_SF: np.ndarray, cov: StyleCovariates) -> tuple[np.ndarray, np.ndarray]:
    """Activations and standardised covariates, both centred within topics."""
    xc = centre_within(np.asarray(x_SF, dtype=np.float64), cov.topic_S)
    zc = centre_within(np.asarray(cov.z_SK, dtype=np.float64), cov.topic_S)
    return xc, zc / (zc.std(0) + 1e-12)


def residualise(x_SF: np.ndarray, cov: StyleCovariates, train_S: np.ndarray) -> np.ndarray:
    """Activations centred within topics, less their least-squares fit on the
    covariates (coefficients fitted on the `train_S` stories, applied to all)."""
    xc, zc = _centred(x_SF, cov)
    coef_KF, *_ = np.linalg.lstsq(zc[train_S], xc[train_S], rcond=None)
    return xc - zc @ coef_KF


def explained(x_SF: np.ndarray, cov: StyleCovariates, train_S: np.ndarray) -> np.ndarray:
    """[K + 1, F] share of each feature's variance on training stories explained by each
    covariate alone (squared correlation, within topics) and, last row, by topic (the
    share between topic means)."""
    x = np.asarray(x_SF, dtype=np.float64)[train_S]
    xc, zc = (a[train_S] for a in _centred(x_SF, cov))
    xc0, zc0 = xc - xc.mean(0), zc - zc.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_KF = (zc0.T @ xc0) / np.outer(np.linalg.norm(zc0, axis=0), np.linalg.norm(xc0, axis=0))
        topic_F = 1 - (xc0**2).sum(0) / ((x - x.mean(0)) ** 2).sum(0)
    return np.nan_to_num(np.vstack([r_KF**2, topic_F[None]]))
