"""Emotion vectors two ways, per layer: the paper's difference of means and a
multinomial logistic-regression probe; plus their held-out validation.

Difference of means (as in the emotions paper): each emotion's mean story activation
minus the mean over emotions, then the top principal components of neutral-dialogue
activations explaining `neutral_var` (50%) of their variance are projected out.

The logistic probe is fitted on story-mean activations of the training topics
(standardised, L2-regularised, L-BFGS) and evaluated on the held-out topics.

Shape letters: E emotions, S stories, D d_model, K kept neutral PCs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from scipy.cluster.vq import kmeans2
from torch import Tensor

from emosae.core.stats import mean_ci, pearson_ci


@dataclass(frozen=True)
class ProbeConfig:
    """Emotion-vector fitting."""

    neutral_var: float = 0.5
    """Project out the neutral PCs that together explain this fraction of variance."""
    l2: float = 1e-2
    """L2 penalty of the logistic probe (on standardised inputs)."""
    max_iter: int = 200


def neutral_basis(neutral_SD: Tensor, frac: float) -> Tensor:
    """Orthonormal top PCs [K, D] of neutral activations explaining `frac` of variance."""
    if frac <= 0:
        return torch.zeros(0, neutral_SD.shape[1])
    x = neutral_SD.double() - neutral_SD.double().mean(0)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    ev = (s**2) / (s**2).sum()
    k = int(torch.searchsorted(ev.cumsum(0), torch.tensor(frac, dtype=ev.dtype)).item()) + 1
    return vt[:k].float()


def diff_of_means(story_SD: Tensor, labels_S: Tensor, n_emotions: int, basis_KD: Tensor) -> Tensor:
    """Emotion vectors [E, D]: per-emotion mean minus the mean over emotions, with the
    neutral basis projected out."""
    means = torch.stack([story_SD[labels_S == e].mean(0) for e in range(n_emotions)])
    v = means - means.mean(0)
    return v - (v @ basis_KD.T) @ basis_KD


@dataclass
class LogisticProbe:
    W_ED: Tensor
    b_E: Tensor
    mu_D: Tensor
    sd_D: Tensor

    def logits(self, x_SD: Tensor) -> Tensor:
        return ((x_SD - self.mu_D) / self.sd_D) @ self.W_ED.T + self.b_E

    def directions(self) -> Tensor:
        """Per-emotion directions in activation space (weights mapped back through the scaling)."""
        return self.W_ED / self.sd_D


def fit_logistic(x_SD: Tensor, y_S: Tensor, n_classes: int, cfg: ProbeConfig) -> LogisticProbe:
    torch.manual_seed(0)
    mu, sd = x_SD.mean(0), x_SD.std(0) + 1e-6
    z = ((x_SD - mu) / sd).double()
    W = torch.zeros(n_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=cfg.max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ W.T + b, y_S) + cfg.l2 * (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogisticProbe(W.detach().float(), b.detach().float(), mu, sd)


def emotion_center(x_SD: Tensor, labels_S: Tensor, n_emotions: int) -> Tensor:
    """The mean over emotions of each emotion's mean activation [D]: the point the
    difference-of-means vectors are measured from."""
    return torch.stack([x_SD[labels_S == e].mean(0) for e in range(n_emotions)]).mean(0)


def projection_scores(x_SD: Tensor, vecs_ED: Tensor, center_D: Tensor) -> Tensor:
    """Projection of centred activations onto each unit emotion vector: [S, E]."""
    unit = vecs_ED / vecs_ED.norm(dim=1, keepdim=True).clamp_min(1e-8)
    return (x_SD - center_D) @ unit.T


def read_scale(proj_SE: Tensor, y_S: Tensor, n_concepts: int) -> float:
    """One readout unit at a layer: the within-concept spread of story projections
    (square root of the within-concept variance, pooled over concepts and directions)."""
    resid = proj_SE - torch.stack([proj_SE[y_S == e].mean(0) for e in range(n_concepts)])[y_S]
    return float(resid.double().pow(2).mean().sqrt().clamp_min(1e-8))


def topk_hits(scores_SE: Tensor, y_S: Tensor, k: int) -> np.ndarray:
    """Per story: is its concept among its k highest scores."""
    top = scores_SE.topk(min(k, scores_SE.shape[1]), dim=1).indices
    return (top == y_S[:, None]).any(1).numpy()


def topk_accuracy(scores_SE: Tensor, y_S: Tensor, k: int) -> float:
    return float(topk_hits(scores_SE, y_S, k).mean())


def topk_accuracy_ci(scores_SE: Tensor, y_S: Tensor, k: int) -> list[float]:
    """Bootstrap 95% interval of top-k accuracy over stories."""
    return mean_ci(topk_hits(scores_SE, y_S, k).astype(float))


def cluster_accuracy(scores_SE: Tensor, y_S: Tensor, cluster_of_E: Tensor) -> float:
    return (cluster_of_E[scores_SE.argmax(1)] == cluster_of_E[y_S]).float().mean().item()


def pca(vecs_ED: Tensor, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Scores [E, n] on the top principal components and their explained-variance ratios."""
    x = vecs_ED.double().numpy()
    x = x - x.mean(0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return u[:, :n] * s[:n], (s**2 / (s**2).sum())[:n]


MIN_NORMED = 6
"""Concepts with valence and arousal norms the geometry analysis needs."""


def geometry(vecs_ED: Tensor, valence: np.ndarray, arousal: np.ndarray) -> dict[str, Any] | None:
    """PC1 vs human valence, best of PC2/PC3 vs arousal (Pearson r over emotions with
    norms), as the paper reports them; also r of each of the top five PCs with both, and
    the PC among the top three that tracks valence best. None when fewer than
    `MIN_NORMED` concepts have both norms (a concept set without norms).

    PC signs are arbitrary; PC1 is oriented so that its r with valence is positive.
    """
    ok = ~np.isnan(valence) & ~np.isnan(arousal)
    if ok.sum() < MIN_NORMED:
        return None
    sc, evr = pca(vecs_ED, 5)
    r1 = stats.pearsonr(sc[ok, 0], valence[ok])
    if r1.statistic < 0:
        sc[:, 0] *= -1
        r1 = stats.pearsonr(sc[ok, 0], valence[ok])
    ra = [stats.pearsonr(sc[ok, j], arousal[ok]) for j in (1, 2)]
    best = int(np.argmax([abs(r.statistic) for r in ra]))
    per_pc_v = [float(stats.pearsonr(sc[ok, j], valence[ok]).statistic) for j in range(sc.shape[1])]
    per_pc_a = [float(stats.pearsonr(sc[ok, j], arousal[ok]).statistic) for j in range(sc.shape[1])]
    vbest = int(np.argmax(np.abs(per_pc_v[:3])))

    def ci(j: int, norm: np.ndarray, r: float) -> list[float]:
        """Bootstrap interval over concepts of |r| of PC j with a norm (the PCs fixed)."""
        return pearson_ci(np.sign(r) * sc[ok, j], norm[ok])

    return {
        "valence_best_pc": vbest + 1,
        "valence_best_r": abs(per_pc_v[vbest]),
        "valence_best_r_ci95": ci(vbest, valence, per_pc_v[vbest]),
        "pc1_valence_r_ci95": ci(0, valence, 1.0),
        "arousal_r_ci95": ci(best + 1, arousal, per_pc_a[best + 1]),
        "valence_r_by_pc": per_pc_v,
        "arousal_r_by_pc": per_pc_a,
        "pc1_valence_r": float(r1.statistic),
        "pc1_valence_p": float(r1.pvalue),
        "arousal_pc": best + 2,
        "arousal_r": float(abs(ra[best].statistic)),
        "arousal_p": float(ra[best].pvalue),
        "pc2_arousal_r": float(abs(ra[0].statistic)),
        "explained_variance_ratio": evr.tolist(),
        "pc_scores": sc[:, :3].tolist(),
        "n_with_norms": int(ok.sum()),
    }


def adjusted_rand(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index between two labelings."""
    from scipy.special import comb

    ca, cb = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    table = np.zeros((ca.max() + 1, cb.max() + 1))
    np.add.at(table, (ca, cb), 1)
    sum_ij = comb(table, 2).sum()
    sa, sb = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum()
    expected = sa * sb / comb(len(a), 2)
    return float((sum_ij - expected) / (0.5 * (sa + sb) - expected))


def cluster_recovery(
    vecs_ED: Tensor, clusters_E: np.ndarray, seed: int = 0
) -> dict[str, float] | None:
    """k-means (cosine, k = the number of groups) on the concept vectors vs the groups
    (the paper's ten clusters for the bundled emotions): ARI, averaged over seeds. None
    when the groups cannot be recovered (one group, or one concept per group)."""
    k = len(np.unique(clusters_E))
    if not 2 <= k < len(clusters_E):
        return None
    x = (vecs_ED / vecs_ED.norm(dim=1, keepdim=True)).double().numpy()
    aris = []
    for s in range(5):
        _, lab = kmeans2(x, k, seed=seed + s, minit="++")
        aris.append(adjusted_rand(lab, clusters_E))
    return {"kmeans_ari": float(np.mean(aris)), "kmeans_ari_sd": float(np.std(aris))}


def cosine_matrix(vecs_ED: Tensor) -> Tensor:
    u = vecs_ED / vecs_ED.norm(dim=1, keepdim=True)
    return u @ u.T
