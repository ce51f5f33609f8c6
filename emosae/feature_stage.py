"""Stages that need the SAE: label features by story contrast, inspect them, and
compare them with the probe vectors. Inputs: the probe stage's `story_acts` and
`vectors`, the SAE checkpoint and the activation cache. Outputs JSON + safetensors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emosae import data
from emosae.activations import ActivationCache
from emosae.compare import decoder_alignment, feature_classifier_accuracy, token_correlations
from emosae.emotion_vectors import load_story_acts
from emosae.errors import EmosaeError
from emosae.labels import (
    LabelConfig,
    assign_labels,
    logit_lens,
    score_features,
    story_feature_acts,
    top_cache_contexts,
)
from emosae.provenance import code_version
from emosae.training import load_sae


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def _story_setup(meta: dict[str, Any]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    emotions = data.emotion_names()
    idx = {e: i for i, e in enumerate(emotions)}
    stories = {s.id: s for s in data.load_stories("all")}
    sts = [stories[i] for i in meta["story_ids"]]
    held = set(data.load_topics().heldout)
    y = torch.tensor([idx[s.emotion] for s in sts])
    test = torch.tensor([s.topic in held for s in sts])
    return emotions, y, test


def label_stage(
    probe_dir: Path, sae_dir: Path, cache_dir: Path, out: Path, model: Any, cfg: LabelConfig
) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    t, meta = load_story_acts(probe_dir / "story_acts.safetensors")
    sae = load_sae(sae_dir)
    hook = json.loads((sae_dir / "emosae.json").read_text())["hook"]
    if hook != meta["token_hook"]:
        raise EmosaeError(
            f"the SAE is on {hook} but story tokens were kept for {meta['token_hook']}"
        )
    if sae.cfg.d_in != t["story_token_acts"].shape[1]:
        raise EmosaeError(
            f"SAE d_in {sae.cfg.d_in} does not match the activations' d_model {t['story_token_acts'].shape[1]}"
        )
    emotions, y, test = _story_setup(meta)
    clusters = [e.cluster for e in data.load_emotions()]
    mean_SF, freq_SF = story_feature_acts(sae, t["story_token_acts"], t["story_token_lens"])
    scores = score_features(mean_SF, freq_SF, y, test, len(emotions))
    result = assign_labels(scores, emotions, clusters, cfg)
    feats = sorted(result["features"])
    lens = logit_lens(sae.W_dec.detach(), model, feats)
    cache = ActivationCache.open(cache_dir, verify=False)
    ctxs = top_cache_contexts(sae, cache, hook, feats, model.tokenizer, cfg)
    story_ctx = _top_story_contexts(sae, t, meta, feats, model.tokenizer, cfg)
    for f in feats:
        result["features"][f].update(
            logit_lens=lens[f],
            top_contexts=ctxs.get(f, []),
            top_story_contexts=story_ctx[f],
            density=float(freq_SF[:, f].mean()),
        )
    result["features"] = {str(k): v for k, v in result["features"].items()}
    result.update(
        hook=hook, sae=str(sae_dir), d_sae=int(sae.cfg.d_sae), code_version=code_version()
    )
    save_file(
        {
            "story_feature_mean": mean_SF.contiguous(),
            **{k: torch.from_numpy(np.nan_to_num(v)).float() for k, v in scores.items()},
        },
        str(out / "scores.safetensors.tmp"),
    )
    os.replace(out / "scores.safetensors.tmp", out / "scores.safetensors")
    _write_json(out / "labels.json", result)
    return result


@torch.no_grad()
def _top_story_contexts(
    sae: Any,
    t: dict[str, torch.Tensor],
    meta: dict[str, Any],
    feats: list[int],
    tok: Any,
    cfg: LabelConfig,
) -> dict[int, list[dict[str, Any]]]:
    if not feats:
        return {}
    acts = sae.encode(t["story_token_acts"].float())[:, feats]
    ids = t["story_token_ids"]
    starts = torch.cumsum(t["story_token_lens"], 0) - t["story_token_lens"]
    story_of = torch.repeat_interleave(torch.arange(len(starts)), t["story_token_lens"])
    out = {}
    for j, f in enumerate(feats):
        top = acts[:, j].topk(min(cfg.top_contexts, len(acts)))
        rows = []
        for v, r in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if v <= 0:
                continue
            s = int(story_of[r])
            lo, hi = (
                max(r - cfg.context_window, int(starts[s])),
                min(r + cfg.context_window + 1, int(starts[s] + t["story_token_lens"][s])),
            )
            rows.append(
                {
                    "activation": v,
                    "source": f"story:{meta['story_ids'][s]}",
                    "before": tok.decode(ids[lo:r].tolist()),
                    "token": tok.decode(ids[r : r + 1].tolist()),
                    "after": tok.decode(ids[r + 1 : hi].tolist()),
                }
            )
        out[f] = rows
    return out


def compare_stage(probe_dir: Path, sae_dir: Path, label_dir: Path, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    t, meta = load_story_acts(probe_dir / "story_acts.safetensors")
    vmeta = json.loads((probe_dir / "vectors.json").read_text())
    results = json.loads((probe_dir / "results.json").read_text())
    labels = json.loads((label_dir / "labels.json").read_text())
    scores = load_file(str(label_dir / "scores.safetensors"))
    sae = load_sae(sae_dir)
    layer = int(labels["hook"].split(".")[1])
    vecs = load_file(str(probe_dir / "vectors.safetensors"))[f"diffmean.L{layer}"]
    emotions, y, test = _story_setup(meta)
    j = meta["layers"].index(layer)
    x = t["story_means"][:, j]
    center = torch.stack([x[~test][y[~test] == e].mean(0) for e in range(len(emotions))]).mean(0)
    align = decoder_alignment(vecs, sae.W_dec.detach().float())
    labelled: dict[int, list[int]] = {}
    for f, info in labels["features"].items():
        if info["kind"] == "emotion":
            labelled.setdefault(emotions.index(info["label"]), []).append(int(f))
    # held-out story tokens
    lens = t["story_token_lens"]
    tok_story = torch.repeat_interleave(torch.arange(len(lens)), lens)
    held_tok = test[tok_story]
    tok_acts = t["story_token_acts"][held_tok].float()
    with torch.no_grad():
        feats_TF = sae.encode(tok_acts)
    r_tok = token_correlations(vecs, center, tok_acts, feats_TF, labelled)
    all_labelled = sorted({f for fs in labelled.values() for f in fs})
    acc_feat = feature_classifier_accuracy(
        scores["story_feature_mean"], all_labelled, y, test, len(emotions)
    )
    row = next(r for r in results["per_layer"] if r["layer"] == layer)
    per_emotion = []
    for e, name in enumerate(emotions):
        best = labels["best_per_emotion"][name]
        per_emotion.append(
            {
                "emotion": name,
                **{k: align[e][k] for k in ("best_cosine", "recon_k1", "recon_k4", "recon_k16")},
                "best_aligned_features": align[e]["best_features"],
                "labelled_features": labelled.get(e, []),
                "token_r": r_tok[e],
                "best_story_feature": best["feature"],
                "best_story_feature_heldout_auroc": best["heldout_auroc"],
                "best_story_feature_cosine_with_probe": float(
                    torch.nn.functional.cosine_similarity(
                        vecs[e], sae.W_dec[best["feature"]].detach().float(), dim=0
                    )
                ),
            }
        )
    summary = {
        "layer": layer,
        "mean_best_cosine": float(np.mean([abs(p["best_cosine"]) for p in per_emotion])),
        "mean_recon_k1": float(np.mean([p["recon_k1"] for p in per_emotion])),
        "mean_recon_k4": float(np.mean([p["recon_k4"] for p in per_emotion])),
        "mean_recon_k16": float(np.mean([p["recon_k16"] for p in per_emotion])),
        "mean_token_r": float(
            np.mean([p["token_r"] for p in per_emotion if p["token_r"] is not None])
        )
        if any(p["token_r"] is not None for p in per_emotion)
        else None,
        "emotions_with_labelled_feature": sum(bool(p["labelled_features"]) for p in per_emotion),
        "labelled_feature_accuracy": acc_feat,
        "probe_accuracy": {
            "diffmean_top1": row["diffmean_top1"],
            "logistic_top1": row["logistic_top1"],
        },
        "split_emotions": [p["emotion"] for p in per_emotion if len(p["labelled_features"]) > 1],
        "missed_emotions": [p["emotion"] for p in per_emotion if not p["labelled_features"]],
    }
    res = {
        "summary": summary,
        "per_emotion": per_emotion,
        "mean_resid_norm": vmeta["mean_resid_norm"][str(layer)],
    }
    _write_json(out / "compare.json", res)
    return res
