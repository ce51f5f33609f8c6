"""How many labels would chance alone give, and the thresholds chosen by it.

The rule (`emosae.features.rule`) is run on `permutations` shuffles of the concept
labels across stories (within each split; ranks and style residuals do not change
under a shuffle, so a shuffle costs a few matrix products: `StoryContrast`). The mean
number of features it labels is the expected number of false labels, and over the
observed number it estimates the false-discovery rate (overall and per concept:
`fdr_summary`). Every point of a threshold grid is evaluated on the same shuffles, and
the loosest point (most concepts with a concept label, then most labelled features)
whose estimated rate is at most q is chosen (`choose_thresholds`, `choose_rule`).

What it does not do: correct the estimate for choosing among grid points (with 96
points and 20 shuffles the chosen point's estimate is somewhat optimistic).

Shape letters: S stories, F features, E concepts, G grid points, P shuffles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from scipy.stats import rankdata

from emosae.core.log import logger
from emosae.features.rule import (
    RuleScores,
    Thresholds,
    auroc_from_ranks,
    dprime_matrix,
    grid_counts,
    rule_scores,
)
from emosae.features.style import StyleCovariates, residualise

if TYPE_CHECKING:
    from emosae.features.labels import LabelConfig


class StoryContrast:
    """Story-level activations of the training and held-out stories, raw and (given
    style covariates) residualised, each ranked once per feature: any labelling of the
    stories is then scored for the rule in a few matrix products."""

    def __init__(
        self,
        mean_SF: np.ndarray,
        held_S: np.ndarray,
        n_classes: int,
        min_margin: float,
        style: StyleCovariates | None = None,
    ):
        x = np.asarray(mean_SF, dtype=np.float64)
        self.held, self.n_classes, self.min_margin = np.asarray(held_S, bool), n_classes, min_margin
        self.acts = {"raw": x}
        if style is not None:
            self.acts["style"] = residualise(x, style, ~self.held)
        self.ranks = {
            (v, split): rankdata(a[m], axis=0)
            for v, a in self.acts.items()
            for split, m in (("train", ~self.held), ("heldout", self.held))
        }

    def scores(self, y_S: np.ndarray) -> RuleScores:
        """The rule's scores under the concept labels `y_S`."""
        y, m, E = np.asarray(y_S), self.held, self.n_classes
        out = {
            v: {
                "heldout_auroc": auroc_from_ranks(self.ranks[v, "heldout"], y[m], E),
                "heldout_dprime": dprime_matrix(a[m], y[m], E),
                "train_auroc": auroc_from_ranks(self.ranks[v, "train"], y[~m], E),
            }
            for v, a in self.acts.items()
        }
        return rule_scores(out["raw"], out.get("style"), self.min_margin)


def shuffle_within(y_S: np.ndarray, held_S: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Concept labels shuffled among the training stories and among the held-out ones."""
    y, held = np.asarray(y_S), np.asarray(held_S, bool)
    out = y.copy()
    for m in (~held, held):
        out[m] = rng.permutation(y[m])
    return out


def permutation_null(
    contrast: StoryContrast, y_S: np.ndarray, grid: list[Thresholds], permutations: int, seed: int
) -> dict[str, np.ndarray]:
    """`grid_counts` of the same rule on `permutations` label shuffles (`shuffle_within`,
    seeded): labelled_features [P, G], per_concept [P, G, E], concepts_labelled [P, G]."""
    rng = np.random.default_rng(seed)
    runs = [
        grid_counts(contrast.scores(shuffle_within(y_S, contrast.held, rng)), grid)
        for _ in range(permutations)
    ]
    return {k: np.stack([r[k] for r in runs]) for k in runs[0]}


def _rate(expected: float, observed: int) -> float:
    """Estimated false-discovery rate: expected false over observed labels, capped at
    1; 0 with no labels (no label, no false label)."""
    return min(1.0, expected / observed) if observed else 0.0


def fdr_summary(
    labelled_EF: np.ndarray, null: dict[str, np.ndarray], concepts: list[str]
) -> dict[str, Any]:
    """Expected false labels (mean over shuffles) against the labels observed, overall
    (labelled features) and per concept (features whose label holds it). `null`: per
    shuffle, labelled_features [P] and per_concept [P, E] at the rule's thresholds."""
    exp_all, obs_all = float(null["labelled_features"].mean()), int(labelled_EF.any(0).sum())
    per = {}
    for e, name in enumerate(concepts):
        exp_e, obs_e = float(null["per_concept"][:, e].mean()), int(labelled_EF[e].sum())
        per[name] = {"observed": obs_e, "expected_false": exp_e, "fdr": _rate(exp_e, obs_e)}
    return {
        "permutations": len(null["labelled_features"]),
        "observed_labelled_features": obs_all,
        "expected_false_labels": exp_all,
        "expected_false_labels_max": int(null["labelled_features"].max()),
        "fdr": _rate(exp_all, obs_all),
        "per_concept": per,
    }


def choose_thresholds(
    observed: dict[str, np.ndarray],
    null: dict[str, np.ndarray] | None,
    grid: list[Thresholds],
    q: float | None,
) -> dict[str, Any]:
    """The grid as a table (thresholds, labelled features, concepts labelled, expected
    false labels, FDR) and the chosen point's index: with `q`, the loosest point whose
    FDR is at most q (most concepts labelled, then most labelled features, then the
    strictest thresholds), else the strictest point (`met` False); without, the first."""
    exp = None if null is None else null["labelled_features"].mean(0)
    rows = []
    for g, th in enumerate(grid):
        obs = int(observed["labelled_features"][g])
        row = {**th._asdict(), "labelled_features": obs}
        row["concepts_labelled"] = int(observed["concepts_labelled"][g])
        if exp is not None:
            row.update(expected_false=float(exp[g]), fdr=_rate(float(exp[g]), obs))
        rows.append(row)
    if q is None or exp is None:
        return {"q": None, "met": None, "chosen": 0, "grid": rows}
    ok = [g for g, r in enumerate(rows) if r["fdr"] <= q]
    if ok:
        pick = max(
            ok, key=lambda g: (rows[g]["concepts_labelled"], rows[g]["labelled_features"], *grid[g])
        )
    else:
        pick = max(range(len(grid)), key=lambda g: tuple(grid[g]))
        logger.warning("no label thresholds keep the FDR <= %g; using the strictest", q)
    return {"q": q, "met": bool(ok), "chosen": pick, "grid": rows}


class RuleChoice(NamedTuple):
    """The thresholds in use and how they were chosen."""

    thresholds: Thresholds
    observed: RuleScores
    """The rule's scores under the true labels."""
    table: dict[str, Any]
    """`choose_thresholds`' table (labels.json `threshold_choice`)."""
    null: dict[str, np.ndarray] | None
    """Per shuffle at the chosen point: labelled_features [P], per_concept [P, E]."""


def choose_rule(
    mean_SF: np.ndarray,
    y_S: np.ndarray,
    held_S: np.ndarray,
    n_classes: int,
    cfg: LabelConfig,
    style: StyleCovariates | None = None,
) -> RuleChoice:
    """Evaluate the rule over `cfg.grid()` on the true labels and on the same shuffles,
    and choose the thresholds (`choose_thresholds`). `style` is used when
    `cfg.style_control`."""
    contrast = StoryContrast(
        mean_SF, held_S, n_classes, cfg.min_margin, style if cfg.style_control else None
    )
    y, grid = np.asarray(y_S), cfg.grid()
    observed = contrast.scores(y)
    null = (
        permutation_null(contrast, y, grid, cfg.permutations, cfg.seed)
        if cfg.permutations
        else None
    )
    table = choose_thresholds(
        grid_counts(observed, grid), null, grid, cfg.fdr_q if cfg.chooses else None
    )
    g = table["chosen"]
    at = None if null is None else {k: null[k][:, g] for k in ("labelled_features", "per_concept")}
    return RuleChoice(grid[g], observed, table, at)
