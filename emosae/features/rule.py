"""The label rule: scores of each feature for each concept, and what the rule makes
of them.

For every feature f and concept e, `score_features` scores how f separates e's stories
from all other stories, on training topics and again on held-out topics:
  auroc       AUROC of the story-level activation (mean over the story's tokens)
  dprime      difference of means in pooled standard deviations
  freq_in/out fraction of tokens where f fires, in e's stories / in the others

`apply_rule`: feature f passes for e when its held-out AUROC and d' and its training
AUROC reach the thresholds; with style control (`emosae.features.style`) it must pass
again on its activations residualised on surface covariates. Then f is
  style       when it passes on raw activations only (not an emotion label);
  cluster /   when it passes for several concepts, of one cluster / of several;
  ambiguous
  concept     when it passes for one concept e that is also its best concept on
              held-out stories, ahead of every other by a margin in AUROC;
  unspecific  when it passes for one concept that is not its held-out best by the margin
              (not a label: another concept describes it as well or better).
concept, cluster and ambiguous are labels; style and unspecific are listed beside them
(`assign_labels`, labels.json `features`, with their kind) to be inspected.

Shape letters: S stories, F features, E concepts, G grid points.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from scipy.stats import rankdata
from torch import Tensor


class Thresholds(NamedTuple):
    """What a feature's scores for a concept must reach to pass."""

    heldout_auroc: float
    heldout_dprime: float
    train_auroc: float


def _onehot(y_S: np.ndarray, n_classes: int) -> np.ndarray:
    return (y_S[:, None] == np.arange(n_classes)[None]).astype(float)


def auroc_from_ranks(ranks_SF: np.ndarray, y_S: np.ndarray, n_classes: int) -> np.ndarray:
    """AUROC [E, F] of each feature for each class vs the rest, from per-feature ranks
    (ties ranked by their mean: they count half). nan for a class with no stories."""
    oh = _onehot(y_S, n_classes)
    n_p = oh.sum(0)[:, None]
    n_n = len(y_S) - n_p
    with np.errstate(invalid="ignore", divide="ignore"):
        return (oh.T @ ranks_SF - n_p * (n_p + 1) / 2) / (n_p * n_n)


def auroc_matrix(x_SF: np.ndarray, y_S: np.ndarray, n_classes: int) -> np.ndarray:
    """AUROC [E, F] of each feature for each class vs the rest (ties count half)."""
    return auroc_from_ranks(rankdata(x_SF, axis=0), y_S, n_classes)


def dprime_matrix(x_SF: np.ndarray, y_S: np.ndarray, n_classes: int) -> np.ndarray:
    """Difference of class and rest means over the pooled sd (each var with ddof 1)."""
    x_SF = np.asarray(x_SF, dtype=np.float64)
    oh = _onehot(y_S, n_classes)
    n_p = oh.sum(0)[:, None]
    n_n = len(y_S) - n_p
    s1, s2 = x_SF.sum(0)[None], (x_SF**2).sum(0)[None]
    p1, p2 = oh.T @ x_SF, oh.T @ x_SF**2
    with np.errstate(invalid="ignore", divide="ignore"):
        m_p, m_n = p1 / n_p, (s1 - p1) / n_n
        v_p = (p2 - n_p * m_p**2) / (n_p - 1)
        v_n = (s2 - p2 - n_n * m_n**2) / (n_n - 1)
        pooled = np.sqrt(np.maximum((v_p + v_n) / 2, 0)) + 1e-8
        return (m_p - m_n) / pooled


def score_features(
    mean_SF: Tensor, freq_SF: Tensor, y_S: Tensor, split_S: Tensor, n_emotions: int
) -> dict[str, np.ndarray]:
    """All scores on the training (split False) and held-out (split True) stories."""
    out = {}
    x, fq, y = mean_SF.numpy(), freq_SF.numpy(), y_S.numpy()
    for name, m in (("train", ~split_S.numpy()), ("heldout", split_S.numpy())):
        out[f"{name}_auroc"] = auroc_matrix(x[m], y[m], n_emotions)
        out[f"{name}_dprime"] = dprime_matrix(x[m], y[m], n_emotions)
        f_in = np.stack([fq[m][y[m] == e].mean(0) for e in range(n_emotions)])
        f_out = np.stack([fq[m][y[m] != e].mean(0) for e in range(n_emotions)])
        out[f"{name}_freq_in"], out[f"{name}_freq_out"] = f_in, f_out
    return out


RULE_KEYS = ("heldout_auroc", "heldout_dprime", "train_auroc")
"""The scores the rule reads."""
UNLABELLED, CONCEPT, MULTI, UNSPECIFIC, STYLE = range(5)
"""Kind codes of `apply_rule` (MULTI: cluster or ambiguous, told apart by `assign_labels`)."""
_KIND = {
    UNLABELLED: "unlabelled",
    CONCEPT: "concept",
    MULTI: "multi",
    UNSPECIFIC: "unspecific",
    STYLE: "style",
}
LABEL_KINDS = ("concept", "cluster", "ambiguous")
"""Kinds that are labels (style and unspecific are not)."""


def passes_thresholds(
    scores: dict[str, np.ndarray], th: Thresholds, memo: dict | None = None, tag: str = ""
) -> np.ndarray:
    """[E, F] True where feature f's scores for concept e reach every threshold (nan
    reaches none). `memo` keeps each comparison (by `tag`, score and threshold) for the
    next threshold point of a grid."""
    memo = {} if memo is None else memo
    out = None
    for key, v in zip(RULE_KEYS, th, strict=True):
        if (tag, key, v) not in memo:
            memo[tag, key, v] = scores[key] >= v
        out = memo[tag, key, v] if out is None else out & memo[tag, key, v]
    return out


def heldout_runner_up(heldout_auroc_EF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each concept e and feature f, the best other concept on held-out stories
    (runner-up index [E, F]; -1 with a single concept) and e's margin over it [E, F]
    (e's held-out AUROC less the runner-up's; nan counts as 0)."""
    h = np.nan_to_num(np.asarray(heldout_auroc_EF, dtype=np.float64))
    E, F = h.shape
    if E < 2:
        return np.full((E, F), -1), np.full((E, F), np.inf)
    cols = np.arange(F)
    first = h.argmax(0)
    rest = h.copy()
    rest[first, cols] = -np.inf
    runner = np.where(np.arange(E)[:, None] == first[None], rest.argmax(0)[None], first[None])
    return runner, h - h[runner, cols[None]]


class RuleScores(NamedTuple):
    """What the rule reads, [E, F] each."""

    raw: dict[str, np.ndarray]
    """RULE_KEYS scores of the story activations."""
    style: dict[str, np.ndarray] | None
    """The same on the style residuals (None: no style control)."""
    specific: np.ndarray
    """True where e is f's best concept on held-out stories by the margin."""


def rule_scores(
    raw: dict[str, np.ndarray], style: dict[str, np.ndarray] | None, min_margin: float
) -> RuleScores:
    return RuleScores(raw, style, heldout_runner_up(raw["heldout_auroc"])[1] >= min_margin)


class RuleOutcome(NamedTuple):
    """The rule at one threshold point."""

    passes: np.ndarray
    """[E, F] raw scores reach the thresholds."""
    kept: np.ndarray
    """[E, F] raw scores and style-residual scores reach them."""
    kind: np.ndarray
    """[F] kind code (UNLABELLED, CONCEPT, MULTI, UNSPECIFIC, STYLE)."""

    @property
    def labelled(self) -> np.ndarray:
        """[E, F] the concepts in each feature's label (kind concept, cluster, ambiguous)."""
        return self.kept & np.isin(self.kind, (CONCEPT, MULTI))[None]


def apply_rule(rs: RuleScores, th: Thresholds, memo: dict | None = None) -> RuleOutcome:
    """The label rule (module docstring) at thresholds `th`, for every feature at once
    (`memo`: comparisons kept across the points of a grid, `passes_thresholds`)."""
    memo = {} if memo is None else memo
    passes = passes_thresholds(rs.raw, th, memo, "raw")
    if rs.style is not None:
        kept = passes & passes_thresholds(rs.style, th, memo, "style")
    else:
        kept = passes
    n = kept.sum(0)
    kind = np.full(n.shape, UNLABELLED)
    kind[passes.any(0) & (n == 0)] = STYLE
    kind[n == 1] = UNSPECIFIC
    kind[(n == 1) & (kept & rs.specific).any(0)] = CONCEPT
    kind[n > 1] = MULTI
    return RuleOutcome(passes, kept, kind)


def grid_counts(rs: RuleScores, grid: list[Thresholds]) -> dict[str, np.ndarray]:
    """The rule at every grid point: labelled features [G], features labelled per
    concept [G, E] and concepts with a concept label [G]."""
    n_feat, per_concept, n_concepts, memo = [], [], [], {}
    for th in grid:
        out = apply_rule(rs, th, memo)
        lab = out.labelled
        n_feat.append(int(lab.any(0).sum()))
        per_concept.append(lab.sum(1))
        n_concepts.append(int((out.kept & (out.kind == CONCEPT)[None]).any(1).sum()))
    return {
        "labelled_features": np.array(n_feat),
        "per_concept": np.array(per_concept),
        "concepts_labelled": np.array(n_concepts),
    }


def _rank(h_E: np.ndarray, e: int) -> int:
    """1 + the number of concepts with a higher score than e."""
    return int((h_E > h_E[e]).sum()) + 1


def _feature_entry(
    f: int,
    out: RuleOutcome,
    scores: dict[str, np.ndarray],
    style: dict[str, np.ndarray] | None,
    concepts: list[str],
    clusters: list[str],
) -> dict[str, Any]:
    """labels.json's entry for feature f: kind, label, the scores of its best concept
    (by held-out AUROC) and that concept's held-out rank, runner-up and margin."""
    kind = _KIND[int(out.kind[f])]
    es = np.nonzero((out.passes if kind == "style" else out.kept)[:, f])[0].tolist()
    h = np.nan_to_num(np.asarray(scores["heldout_auroc"][:, f], dtype=np.float64))
    best = max(es, key=lambda e: h[e])
    cl = sorted({clusters[e] for e in es})
    if kind == "multi":
        kind = "cluster" if len(cl) == 1 else "ambiguous"
    name = (
        concepts[best]
        if len(es) == 1
        else (cl[0] if len(cl) == 1 else "+".join(concepts[e] for e in es))
    )
    r = int(heldout_runner_up(h[:, None])[0][best, 0])
    return {
        "feature": f,
        "kind": kind,
        "label": name if kind in LABEL_KINDS else f"{kind}: {name}",
        "concepts": [concepts[e] for e in es],
        "cluster": cl[0] if len(cl) == 1 else None,
        **{k: float(scores[k][best, f]) for k in scores},
        "heldout_rank": _rank(h, best),
        "runner_up": concepts[r] if r >= 0 else None,
        "runner_up_auroc": float(h[r]) if r >= 0 else None,
        "margin": float(h[best] - h[r]) if r >= 0 else None,
        "style_auroc": None if style is None else float(style["heldout_auroc"][best, f]),
    }


def _best_per_concept(
    scores: dict[str, np.ndarray], out: RuleOutcome, concepts: list[str]
) -> dict[str, Any]:
    """Per concept, its feature with the highest training AUROC among those labelled with
    that concept alone (kind concept), else among those whose cluster or ambiguous label
    holds it, else among all features: whether it is labelled with the concept alone
    (`passes`), its `kind` for the concept, the concept's held-out rank for it, its
    scores. This is the feature `load_directions(kind="sae")` steers with."""
    h = np.nan_to_num(np.asarray(scores["heldout_auroc"], dtype=np.float64))
    train = np.nan_to_num(np.asarray(scores["train_auroc"], dtype=np.float64), nan=-1.0)
    specific = out.labelled & (out.kind == CONCEPT)[None]
    best = {}
    for e, name in enumerate(concepts):
        pools = (
            ("concept", specific[e]),
            ("shared", out.labelled[e]),
            ("unlabelled", np.ones(train.shape[1], dtype=bool)),
        )
        kind, pool = next((k, np.nonzero(m)[0]) for k, m in pools if m.any())
        f = int(pool[np.argmax(train[e, pool])])
        best[name] = {
            "feature": f,
            "passes": kind == "concept",
            "kind": kind,
            "heldout_rank": _rank(h[:, f], e),
            **{k: float(scores[k][e, f]) for k in scores},
        }
    return best


def assign_labels(
    scores: dict[str, np.ndarray],
    concepts: list[str],
    clusters: list[str],
    th: Thresholds,
    min_margin: float,
    style: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every feature passing on raw scores with its kind and label (`apply_rule` at `th`),
    counts per kind and the best feature per concept. `style`: the rule's scores on the
    style residuals (None: no style control)."""
    out = apply_rule(rule_scores(scores, style, min_margin), th)
    features = {
        int(f): _feature_entry(int(f), out, scores, style, concepts, clusters)
        for f in np.nonzero(out.passes.any(0))[0]
    }
    counts = {k: 0 for k in (*LABEL_KINDS, "unspecific", "style")}
    for v in features.values():
        counts[v["kind"]] += 1
    counts["unlabelled"] = len(out.kind) - sum(counts.values())
    return {
        "thresholds": {
            **th._asdict(),
            "min_margin": min_margin,
            "style_control": style is not None,
        },
        "counts": counts,
        "concepts_with_label": sorted(
            {v["label"] for v in features.values() if v["kind"] == "concept"}
        ),
        "features": features,
        "best_per_concept": _best_per_concept(scores, out, concepts),
    }
