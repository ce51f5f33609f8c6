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

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import CompareFiles, LabelFiles, ProbeFiles, SAEFiles
from emosae.features.labels import load_labels
from emosae.lm.hooks import hook_layer
from emosae.probes.fit import ProbeConfig, emotion_center, fit_logistic, topk_accuracy


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


def _labelled_by_emotion(labels: dict[str, Any], emotions: list[str]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for f, info in labels["features"].items():
        if info["kind"] == "concept":
            out.setdefault(emotions.index(info["label"]), []).append(int(f))
    return out


def _per_emotion(emotions, align, labelled, r_tok, labels, vecs, W_dec) -> list[dict[str, Any]]:
    rows = []
    for e, name in enumerate(emotions):
        best = labels["best_per_concept"][name]
        cos = torch.nn.functional.cosine_similarity(vecs[e], W_dec[best["feature"]], dim=0)
        rows.append(
            {
                "concept": name,
                **{k: align[e][k] for k in ("best_cosine", "recon_k1", "recon_k4", "recon_k16")},
                "best_aligned_features": align[e]["best_features"],
                "labelled_features": labelled.get(e, []),
                "token_r": r_tok[e],
                "best_story_feature": best["feature"],
                "best_story_feature_heldout_auroc": best["heldout_auroc"],
                "best_story_feature_cosine_with_probe": float(cos),
            }
        )
    return rows


def _summary(layer: int, per_emotion: list[dict[str, Any]], acc_feat, row) -> dict[str, Any]:
    token_r = [p["token_r"] for p in per_emotion if p["token_r"] is not None]
    return {
        "layer": layer,
        "mean_best_cosine": float(np.mean([abs(p["best_cosine"]) for p in per_emotion])),
        "mean_recon_k1": float(np.mean([p["recon_k1"] for p in per_emotion])),
        "mean_recon_k4": float(np.mean([p["recon_k4"] for p in per_emotion])),
        "mean_recon_k16": float(np.mean([p["recon_k16"] for p in per_emotion])),
        "mean_token_r": float(np.mean(token_r)) if token_r else None,
        "concepts_with_labelled_feature": sum(bool(p["labelled_features"]) for p in per_emotion),
        "labelled_feature_accuracy": acc_feat,
        "probe_accuracy": {
            "diffmean_top1": row["diffmean_top1"],
            "logistic_top1": row["logistic_top1"],
        },
        "split_concepts": [p["concept"] for p in per_emotion if len(p["labelled_features"]) > 1],
        "missed_concepts": [p["concept"] for p in per_emotion if not p["labelled_features"]],
    }


def compare_features(
    probes: ProbeFiles, sae_files: SAEFiles, label_files: LabelFiles, out: CompareFiles
) -> dict[str, Any]:
    """Probe vectors vs SAE features at the SAE's layer; writes compare.json."""
    from emosae.probes.vectors import load_story_acts, load_vectors
    from emosae.sae.training import load_sae

    folders.claim(out.dir, "compare")
    acts = load_story_acts(probes)
    t, meta, lab = acts.tensors, acts.meta, acts.labels
    t_vec, vmeta = load_vectors(probes)
    results = io.read_json(probes.results)
    folders.verify(label_files.dir)
    labels = load_labels(label_files.labels)
    scores = io.load_tensors(label_files.scores)
    sae = load_sae(sae_files.dir)
    W_dec = sae.W_dec.detach().float()
    layer = hook_layer(labels["hook"])
    vecs = t_vec[f"diffmean.L{layer}"]
    emotions, y, test = lab.concepts, lab.y, lab.heldout
    made_on = labels.get("concept_set", {}).get("fingerprint")
    if made_on and made_on != meta.get("concept_set", {}).get("fingerprint", made_on):
        raise EmosaeError(
            f"{label_files.labels} labels the concept set {labels['concept_set']['name']!r} "
            f"but {probes.dir} was fitted on {meta['concept_set']['name']!r}; fit probes and "
            "labels on the same concept set"
        )
    x = t["story_means"][:, meta["layers"].index(layer)]
    center = emotion_center(x[~test], y[~test], len(emotions))
    labelled = _labelled_by_emotion(labels, emotions)
    # held-out story tokens
    lens = t["story_token_lens"]
    held_tok = test[torch.repeat_interleave(torch.arange(len(lens)), lens)]
    tok_acts = t["story_token_acts"][held_tok].float()
    with torch.no_grad():
        feats_TF = sae.encode(tok_acts)
    r_tok = token_correlations(vecs, center, tok_acts, feats_TF, labelled)
    all_labelled = sorted({f for fs in labelled.values() for f in fs})
    acc_feat = feature_classifier_accuracy(
        scores["story_feature_mean"], all_labelled, y, test, len(emotions)
    )
    align = decoder_alignment(vecs, W_dec)
    per_emotion = _per_emotion(emotions, align, labelled, r_tok, labels, vecs, W_dec)
    row = next(r for r in results["per_layer"] if r["layer"] == layer)
    res = {
        "summary": _summary(layer, per_emotion, acc_feat, row),
        "per_concept": per_emotion,
        "mean_resid_norm": vmeta["mean_resid_norm"][str(layer)],
    }
    io.write_json(out.compare, io.round_floats(res))
    folders.seal(out.dir, "compare")
    return res
