"""SAE feature labels by story contrast.

For every feature f and emotion e we score how f separates e's stories from all other
stories, on training topics and again on held-out topics:
  auroc       AUROC of the story-level activation (mean over the story's tokens)
  dprime      difference of means in pooled standard deviations
  freq_in/out fraction of tokens where f fires, in e's stories / in the others
A feature is labelled e when its *held-out* scores pass the thresholds (and its training
AUROC does too); several passing emotions make it ambiguous, reported with a cluster
label when they share a cluster. The best feature per emotion (by training AUROC) is
reported whether or not it passes.

How many labels would chance alone give? The same rule is run on `permutations`
shuffles of the concept labels across stories (within each split); the mean number of
features it labels is the expected number of false labels, and over the observed
number it estimates the false-discovery rate (overall and per concept: `null` in
labels.json).

Shape letters: S stories, F features, E emotions, T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor

from emosae.core import io


@dataclass(frozen=True)
class LabelConfig:
    """Thresholds a feature must pass on held-out topics to get a label."""

    min_auroc: float = 0.9
    min_dprime: float = 1.0
    min_train_auroc: float = 0.85
    permutations: int = 20
    """Label shuffles for the false-discovery estimate (0: none)."""
    seed: int = 0
    top_contexts: int = 8
    """Top-activating contexts listed per labelled feature."""
    context_window: int = 12
    """Tokens shown either side of an activating token."""


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


def label_rule(scores: dict[str, np.ndarray], cfg: LabelConfig) -> np.ndarray:
    """[E, F] True where feature f passes every threshold for concept e."""
    with np.errstate(invalid="ignore"):
        return (
            (np.nan_to_num(scores["heldout_auroc"]) >= cfg.min_auroc)
            & (np.nan_to_num(scores["heldout_dprime"]) >= cfg.min_dprime)
            & (np.nan_to_num(scores["train_auroc"]) >= cfg.min_train_auroc)
        )


def permutation_null(
    mean_SF: Tensor, y_S: Tensor, split_S: Tensor, n_classes: int, cfg: LabelConfig
) -> dict[str, np.ndarray]:
    """The label rule on `cfg.permutations` shuffles of the concept labels (within the
    training and the held-out stories separately): per shuffle, the number of labelled
    features and of passing features per concept. Ranks do not change under a shuffle,
    so each costs a few matrix products."""
    x, y, held = mean_SF.numpy().astype(float), y_S.numpy(), split_S.numpy()
    parts = {name: m for name, m in (("train", ~held), ("heldout", held))}
    ranks = {name: rankdata(x[m], axis=0) for name, m in parts.items()}
    rng = np.random.default_rng(cfg.seed)
    n_feat, per_concept = [], []
    for _ in range(cfg.permutations):
        sc = {}
        for name, m in parts.items():
            yp = rng.permutation(y[m])
            sc[f"{name}_auroc"] = auroc_from_ranks(ranks[name], yp, n_classes)
            sc[f"{name}_dprime"] = dprime_matrix(x[m], yp, n_classes)
        p = label_rule(sc, cfg)
        n_feat.append(int(p.any(0).sum()))
        per_concept.append(p.sum(1))
    return {"labelled_features": np.array(n_feat), "per_concept": np.array(per_concept)}


def fdr_summary(
    passes_EF: np.ndarray, null: dict[str, np.ndarray], concepts: list[str]
) -> dict[str, Any]:
    """Expected false labels (mean over shuffles) against the labels observed, overall
    (labelled features) and per concept (features passing for it); fdr = expected /
    observed, capped at 1 (0 when nothing is labelled and nothing expected)."""

    def rate(expected: float, observed: int) -> float:
        return min(1.0, expected / observed) if observed else (0.0 if expected == 0 else 1.0)

    exp_all, obs_all = float(null["labelled_features"].mean()), int(passes_EF.any(0).sum())
    per = {}
    for e, name in enumerate(concepts):
        exp_e, obs_e = float(null["per_concept"][:, e].mean()), int(passes_EF[e].sum())
        per[name] = {"observed": obs_e, "expected_false": exp_e, "fdr": rate(exp_e, obs_e)}
    return {
        "permutations": len(null["labelled_features"]),
        "observed_labelled_features": obs_all,
        "expected_false_labels": exp_all,
        "expected_false_labels_max": int(null["labelled_features"].max()),
        "fdr": rate(exp_all, obs_all),
        "per_concept": per,
    }


def assign_labels(
    scores: dict[str, np.ndarray], emotions: list[str], clusters: list[str], cfg: LabelConfig
) -> dict[str, Any]:
    """Labels per feature and the best feature per emotion."""
    passes = label_rule(scores, cfg)  # [E, F]
    features = {}
    for f in np.nonzero(passes.any(0))[0]:
        es = [int(e) for e in np.nonzero(passes[:, f])[0]]
        best_e = max(es, key=lambda e: scores["heldout_auroc"][e, f])
        cl = sorted({clusters[e] for e in es})
        kind = "concept" if len(es) == 1 else ("cluster" if len(cl) == 1 else "ambiguous")
        features[int(f)] = {
            "feature": int(f),
            "kind": kind,
            "label": emotions[best_e]
            if kind == "concept"
            else (cl[0] if kind == "cluster" else "+".join(emotions[e] for e in es)),
            "concepts": [emotions[e] for e in es],
            "cluster": cl[0] if len(cl) == 1 else None,
            **{k: float(scores[k][best_e, f]) for k in scores},
        }
    best = {}
    for e, name in enumerate(emotions):
        f = int(np.nanargmax(scores["train_auroc"][e]))
        best[name] = {
            "feature": f,
            "passes": bool(passes[e, f]),
            **{k: float(scores[k][e, f]) for k in scores},
        }
    n_f = scores["train_auroc"].shape[1]
    counts = {
        "concept": sum(v["kind"] == "concept" for v in features.values()),
        "cluster": sum(v["kind"] == "cluster" for v in features.values()),
        "ambiguous": sum(v["kind"] == "ambiguous" for v in features.values()),
    }
    counts["unlabelled"] = n_f - sum(counts.values())
    return {
        "thresholds": {
            "heldout_auroc": cfg.min_auroc,
            "heldout_dprime": cfg.min_dprime,
            "train_auroc": cfg.min_train_auroc,
        },
        "counts": counts,
        "concepts_with_label": sorted(
            {e for v in features.values() if v["kind"] == "concept" for e in v["concepts"]}
        ),
        "features": features,
        "best_per_concept": best,
    }


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
