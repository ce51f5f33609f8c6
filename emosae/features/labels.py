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

Shape letters: S stories, F features, E emotions, T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor


@dataclass(frozen=True)
class LabelConfig:
    """Thresholds a feature must pass on held-out topics to get a label."""

    min_auroc: float = 0.9
    min_dprime: float = 1.0
    min_train_auroc: float = 0.85
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


def auroc_matrix(x_SF: np.ndarray, y_S: np.ndarray, n_classes: int) -> np.ndarray:
    """AUROC [E, F] of each feature for each class vs the rest (ties count half)."""
    ranks = rankdata(x_SF, axis=0)
    out = np.full((n_classes, x_SF.shape[1]), np.nan)
    for e in range(n_classes):
        pos = y_S == e
        n_p, n_n = pos.sum(), (~pos).sum()
        if n_p and n_n:
            out[e] = (ranks[pos].sum(0) - n_p * (n_p + 1) / 2) / (n_p * n_n)
    return out


def dprime_matrix(x_SF: np.ndarray, y_S: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.full((n_classes, x_SF.shape[1]), np.nan)
    for e in range(n_classes):
        pos = y_S == e
        a, b = x_SF[pos], x_SF[~pos]
        pooled = np.sqrt((a.var(0, ddof=1) + b.var(0, ddof=1)) / 2) + 1e-8
        out[e] = (a.mean(0) - b.mean(0)) / pooled
    return out


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


def assign_labels(
    scores: dict[str, np.ndarray], emotions: list[str], clusters: list[str], cfg: LabelConfig
) -> dict[str, Any]:
    """Labels per feature and the best feature per emotion."""
    passes = (
        (scores["heldout_auroc"] >= cfg.min_auroc)
        & (scores["heldout_dprime"] >= cfg.min_dprime)
        & (scores["train_auroc"] >= cfg.min_train_auroc)
    )  # [E, F]
    features = {}
    for f in np.nonzero(passes.any(0))[0]:
        es = [int(e) for e in np.nonzero(passes[:, f])[0]]
        best_e = max(es, key=lambda e: scores["heldout_auroc"][e, f])
        cl = sorted({clusters[e] for e in es})
        kind = "emotion" if len(es) == 1 else ("cluster" if len(cl) == 1 else "ambiguous")
        features[int(f)] = {
            "feature": int(f),
            "kind": kind,
            "label": emotions[best_e]
            if kind == "emotion"
            else (cl[0] if kind == "cluster" else "+".join(emotions[e] for e in es)),
            "emotions": [emotions[e] for e in es],
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
        "emotion": sum(v["kind"] == "emotion" for v in features.values()),
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
        "emotions_with_label": sorted(
            {e for v in features.values() if v["kind"] == "emotion" for e in v["emotions"]}
        ),
        "features": features,
        "best_per_emotion": best,
    }


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
