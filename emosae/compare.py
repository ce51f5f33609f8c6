"""Side-by-side comparison of SAE features and probe vectors, per emotion:

best_cosine      max |cos| between the probe vector and any decoder direction
recon_k{1,4,16}  fraction of the probe vector's norm reconstructed by least squares
                 from the k decoder directions most aligned with it
token_r          Pearson r over held-out story tokens between the probe projection
                 and the summed activation of the features labelled with the emotion
accuracy         held-out top-1 accuracy of a logistic classifier on the labelled
                 features' story activations alone, vs the probe's
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from emosae.probes import ProbeConfig, fit_logistic, topk_accuracy


def decoder_alignment(
    v_ED: Tensor, W_dec_FD: Tensor, ks: tuple[int, ...] = (1, 4, 16)
) -> list[dict[str, Any]]:
    u = v_ED / v_ED.norm(dim=1, keepdim=True)
    W = W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True)
    cos = u @ W.T  # [E, F]
    out = []
    for e in range(len(u)):
        order = cos[e].abs().argsort(descending=True)
        row: dict[str, Any] = {
            "best_cosine": float(cos[e, order[0]]),
            "best_features": order[:5].tolist(),
            "best_cosines": cos[e, order[:5]].tolist(),
        }
        for k in ks:
            B = W[order[:k]].T.double()  # [D, k]
            coef = torch.linalg.lstsq(B, u[e].double()[:, None]).solution
            row[f"recon_k{k}"] = float((B @ coef).norm())  # |proj| / |u|, u unit
        out.append(row)
    return out


def token_correlations(
    v_ED: Tensor, center_D: Tensor, tok_TD: Tensor, feats_TF: Tensor, labelled: dict[int, list[int]]
) -> list[float | None]:
    """Per emotion: r between probe projection and summed labelled-feature activation."""
    proj = (tok_TD - center_D) @ (v_ED / v_ED.norm(dim=1, keepdim=True)).T
    out: list[float | None] = []
    for e in range(len(v_ED)):
        fs = labelled.get(e, [])
        if not fs:
            out.append(None)
            continue
        a = feats_TF[:, fs].sum(1).numpy()
        p = proj[:, e].numpy()
        out.append(float(np.corrcoef(p, a)[0, 1]) if a.std() > 0 else None)
    return out


def feature_classifier_accuracy(
    story_feats_SF: Tensor, feats: list[int], y: Tensor, test: Tensor, n_classes: int
) -> dict[str, float] | None:
    if not feats:
        return None
    x = story_feats_SF[:, feats]
    lp = fit_logistic(x[~test], y[~test], n_classes, ProbeConfig())
    s = lp.logits(x[test])
    return {
        "top1": topk_accuracy(s, y[test], 1),
        "top3": topk_accuracy(s, y[test], 3),
        "n_features": len(feats),
    }
