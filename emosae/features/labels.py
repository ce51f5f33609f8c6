"""SAE feature labels by story contrast: the configuration, and `label_stories`, which
scores every feature for every concept (`emosae.features.rule`), chooses the rule's
thresholds by their permutation false-discovery rate (`emosae.features.fdr`), with
style control (`emosae.features.style`), and makes labels.json's content; reading
labels.json of any version; the logit lens of labelled features.

Shape letters: S stories, F features, E concepts, T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from emosae.core import io
from emosae.core.errors import EmosaeError
from emosae.features.fdr import choose_rule, fdr_summary
from emosae.features.rule import Thresholds, apply_rule, assign_labels, score_features
from emosae.features.style import StyleCovariates, explained


@dataclass(frozen=True)
class LabelConfig:
    """How features are labelled: thresholds (chosen by their false-discovery rate, or
    fixed), specificity and style control, and what each labelled feature lists."""

    fdr_q: float = 0.05
    """False-discovery rate the thresholds must keep: the loosest point of the grid
    whose permutation estimate is at most this is used. 0 (or permutations 0): no choice,
    min_auroc, min_dprime and min_train_auroc as given."""
    grid_auroc: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7)
    """Held-out AUROC thresholds the choice tries."""
    grid_dprime: tuple[float, ...] = (1.5, 1.0, 0.75, 0.5)
    """Held-out d' thresholds the choice tries."""
    grid_train_auroc: tuple[float, ...] = (0.85, 0.8, 0.75, 0.7)
    """Training AUROC thresholds the choice tries."""
    min_auroc: float = 0.9
    """Held-out AUROC needed when the thresholds are fixed."""
    min_dprime: float = 1.0
    """Held-out d' needed when the thresholds are fixed."""
    min_train_auroc: float = 0.85
    """Training AUROC needed when the thresholds are fixed."""
    min_margin: float = 0.05
    """Held-out AUROC by which a concept label must beat the feature's best other
    concept. 0.05 is what one of a concept's 6 held-out stories (bundled set) changes by
    moving past 30 percent of the other stories (0.3 / 6): concepts closer than that are not
    told apart on held-out topics. It is no significance level (the standard error of
    the difference of two held-out AUROCs near 0.9, with 6 stories each, is about 0.1,
    Hanley & McNeil 1982); chance is the permutation null's job, and the null runs
    the same margin. -1: no specificity (emosae 0.2)."""
    style_control: bool = True
    """Require the rule to pass also on activations residualised on story length,
    dialogue and punctuation density and topic (`emosae.features.style`)."""
    permutations: int = 20
    """Label shuffles for the false-discovery estimate (0: none)."""
    seed: int = 0
    """Seed of the shuffles."""
    top_contexts: int = 8
    """Top-activating contexts listed per labelled feature."""
    context_window: int = 12
    """Tokens shown either side of an activating token."""
    transfer: bool = True
    """Also score the labels on the outside corpus (`emosae validate`'s) and prefer, per
    concept, a best feature that transfers (`emosae.validation.transfer`); only where the
    corpus has texts of the run's concepts (the bundled emotions)."""
    outside: str | None = None
    """The outside corpus for `transfer` (default: the bundled one)."""

    def __post_init__(self):
        if not 0 <= self.fdr_q < 1:
            raise EmosaeError(f"fdr_q must be in [0, 1), not {self.fdr_q}")
        if not (self.grid_auroc and self.grid_dprime and self.grid_train_auroc):
            raise EmosaeError("grid_auroc, grid_dprime and grid_train_auroc need a value each")
        if not -1 <= self.min_margin <= 1 or self.permutations < 0:
            raise EmosaeError("min_margin must be in [-1, 1] and permutations >= 0")

    @property
    def chooses(self) -> bool:
        """Whether thresholds are chosen by their false-discovery rate."""
        return self.fdr_q > 0 and self.permutations > 0

    def grid(self) -> list[Thresholds]:
        """The threshold points the rule is evaluated at: the grid, or the fixed point."""
        if not self.chooses:
            return [Thresholds(self.min_auroc, self.min_dprime, self.min_train_auroc)]
        return [
            Thresholds(a, d, t)
            for a in self.grid_auroc
            for d in self.grid_dprime
            for t in self.grid_train_auroc
        ]


@torch.no_grad()
def story_feature_acts(
    sae: Any, token_acts_TD: Tensor, lens_S: Tensor, batch: int = 4096
) -> tuple[Tensor, Tensor]:
    """Per-story mean feature activation [S, F] and per-story firing fraction [S, F]."""
    dev = next(sae.parameters()).device
    feats = []
    for i in range(0, len(token_acts_TD), batch):
        feats.append(sae.encode(token_acts_TD[i : i + batch].float().to(dev)).cpu())
    f_TF = torch.cat(feats)
    seg = torch.repeat_interleave(torch.arange(len(lens_S)), lens_S)
    S, F = len(lens_S), f_TF.shape[1]
    mean = torch.zeros(S, F).index_add_(0, seg, f_TF) / lens_S[:, None].clamp_min(1)
    freq = torch.zeros(S, F).index_add_(0, seg, (f_TF > 0).float()) / lens_S[:, None].clamp_min(1)
    return mean, freq


def _add_style_detail(
    result: dict[str, Any], x_SF: np.ndarray, style: StyleCovariates, train_S: np.ndarray
) -> None:
    """Name, for each listed feature, the covariate that alone explains most of its
    variance on training stories (`style.explained`), and that share."""
    feats = sorted(result["features"])
    if not feats:
        return
    r2 = explained(x_SF[:, feats], style, train_S)
    names = [*style.names, "topic"]
    for j, f in enumerate(feats):
        k = int(r2[:, j].argmax())
        result["features"][f].update(style_covariate=names[k], style_r2=float(r2[k, j]))


def label_stories(
    mean_SF: Tensor,
    freq_SF: Tensor,
    y_S: Tensor,
    held_S: Tensor,
    concepts: list[str],
    clusters: list[str],
    cfg: LabelConfig,
    style: StyleCovariates | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Scores, the rule (chosen or fixed: `choose_rule`), labels with their specificity
    and style details, and the chance estimate at the thresholds in use (`null`): the
    content of labels.json, and the score arrays (style residual scores as style_*)."""
    scores = score_features(mean_SF, freq_SF, y_S, held_S, len(concepts))
    x, held = mean_SF.numpy(), held_S.numpy()
    choice = choose_rule(x, y_S.numpy(), held, len(concepts), cfg, style)
    st = choice.observed.style
    result = assign_labels(scores, concepts, clusters, choice.thresholds, cfg.min_margin, st)
    result["threshold_choice"] = choice.table
    if choice.null is not None:
        labelled = apply_rule(choice.observed, choice.thresholds).labelled
        result["null"] = fdr_summary(labelled, choice.null, concepts)
    if style is not None:
        _add_style_detail(result, x, style, ~held)
    if st is not None:
        scores.update({f"style_{k}": v for k, v in st.items()})
    return result, scores


_RENAMED = {"best_per_emotion": "best_per_concept", "emotions_with_label": "concepts_with_label"}


def upgrade_labels(labels: dict[str, Any]) -> dict[str, Any]:
    """labels.json as this emosae writes it, from a file of any version: emosae 0.1
    said "emotion" for a single-concept label (kind, counts, per-feature list, best
    feature per concept). Returns a new dict; the file is not touched."""
    out = {_RENAMED.get(k, k): v for k, v in labels.items()}
    if isinstance(out.get("counts"), dict):
        out["counts"] = {("concept" if k == "emotion" else k): v for k, v in out["counts"].items()}
    feats = {}
    for f, info in (out.get("features") or {}).items():
        info = {("concepts" if k == "emotions" else k): v for k, v in info.items()}
        if info.get("kind") == "emotion":
            info["kind"] = "concept"
        feats[f] = info
    if "features" in out:
        out["features"] = feats
    return out


def load_labels(path: str | Path) -> dict[str, Any]:
    """A labels.json (any emosae version), upgraded to this version's keys."""
    return upgrade_labels(io.read_json(path))


@torch.no_grad()
def logit_lens(
    W_dec_FD: Tensor, model: Any, feats: list[int], k: int = 8
) -> dict[int, dict[str, list[str]]]:
    """Top and bottom unembedding tokens of each feature's decoder direction."""
    W_U = model.W_U.detach().float().cpu()
    out = {}
    for f in feats:
        logits = W_dec_FD[f].float().cpu() @ W_U
        top, bot = logits.topk(k).indices.tolist(), (-logits).topk(k).indices.tolist()
        out[f] = {
            "top": [model.tokenizer.decode([t]) for t in top],
            "bottom": [model.tokenizer.decode([t]) for t in bot],
        }
    return out
