"""Stage: read every story and neutral dialogue once, fit emotion vectors per layer,
validate on held-out topics, save vectors + metrics + plots.

Artifacts in `out/`:
  story_acts.safetensors  story means per layer [S, H, D], neutral token samples,
                          per-token activations at `token_layer` (for feature labels)
  vectors.safetensors     `diffmean.L{l}` and `logistic.L{l}` [E, D] per layer
  vectors.json            emotions, clusters, hooks, layers, mean residual norm per
                          layer, best layer, provenance
  results.json            per-layer accuracies, geometry, cluster recovery, cosines
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from emosae import data
from emosae.chat import dialogue_text
from emosae.errors import EmosaeError
from emosae.probes import (
    ProbeConfig,
    cluster_accuracy,
    cluster_recovery,
    cosine_matrix,
    diff_of_means,
    fit_logistic,
    geometry,
    neutral_basis,
    projection_scores,
    topk_accuracy,
)
from emosae.provenance import code_version
from emosae.story_acts import ReadConfig, read_texts


@dataclass(frozen=True)
class VectorsConfig:
    """Emotion-vector stage."""

    out: str = "runs/default/probes"
    model: str | None = None
    layers: tuple[int, ...] = ()
    """Layers to sweep (default: every `layer_stride`-th layer, plus the token layer)."""
    layer_stride: int = 3
    token_layer: int = 15
    """Layer whose per-token story activations are kept (the SAE's layer)."""
    read: ReadConfig = field(default_factory=ReadConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    neutral_samples: int = 16
    """Token activations sampled per neutral dialogue for the neutral PCA."""
    device: str | None = None


def sweep_layers(cfg: VectorsConfig, n_layers: int) -> list[int]:
    layers = list(cfg.layers) or list(range(cfg.layer_stride - 1, n_layers, cfg.layer_stride))
    layers = sorted(set(layers) | {cfg.token_layer})
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise EmosaeError(f"layer {bad} out of range: valid layers are 0..{n_layers - 1}")
    return layers


def dialogue_texts(model: Any, dialogues: list[data.Dialogue]) -> list[str]:
    return [dialogue_text(model.tokenizer, d.user, d.assistant) for d in dialogues]


def subset_stories(stories: list[data.Story], max_per_emotion: int) -> list[data.Story]:
    """At most `max_per_emotion` stories per emotion, a third of them held-out (0: all)."""
    if max_per_emotion <= 0:
        return stories
    held = set(data.load_topics().heldout)
    n_held = max(1, -(-max_per_emotion // 3))
    out, seen = [], {}
    for s in stories:
        h = s.topic in held
        k = (s.emotion, h)
        cap = n_held if h else max_per_emotion - n_held
        if seen.get(k, 0) < cap:
            seen[k] = seen.get(k, 0) + 1
            out.append(s)
    return out


def read_stage(
    cfg: VectorsConfig, model: Any, max_per_emotion: int = 0, max_dialogues: int = 0
) -> Path:
    """Read stories and neutral dialogues; write story_acts.safetensors (atomically)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    layers = sweep_layers(cfg, model.cfg.n_layers)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    tok_hook = f"blocks.{cfg.token_layer}.hook_resid_post"
    stories = subset_stories(data.load_stories("all"), max_per_emotion)
    dialogues = data.load_dialogues("train")
    if max_dialogues > 0:
        dialogues = dialogues[:: max(1, len(dialogues) // max_dialogues)][:max_dialogues]
    st = read_texts(
        model, [s.text for s in stories], hooks, cfg.read, keep_tokens_of=tok_hook, desc="stories"
    )
    dl = read_texts(
        model,
        dialogue_texts(model, dialogues),
        hooks,
        cfg.read,
        sample_per_text=cfg.neutral_samples,
        desc="dialogues",
    )
    lens = torch.tensor([len(t) for t in st.tokens_acts])
    tensors = {
        "story_means": st.means.contiguous(),
        "neutral_samples": dl.samples.contiguous(),
        "story_token_acts": torch.cat(st.tokens_acts).to(torch.float16),
        "story_token_lens": lens,
        "story_token_ids": torch.cat(
            [ids[min(cfg.read.skip, max(len(ids) - 1, 0)) :] for ids in st.token_ids]
        ),
    }
    meta = {
        "layers": layers,
        "hooks": hooks,
        "token_hook": tok_hook,
        "story_ids": [s.id for s in stories],
        "model": model.cfg.model_name,
        "read": asdict(cfg.read),
    }
    tmp = out / "story_acts.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"emosae": json.dumps(meta)})
    os.replace(tmp, out / "story_acts.safetensors")
    return out / "story_acts.safetensors"


def load_story_acts(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    if not path.exists():
        raise EmosaeError(f"{path} is missing; run the probe stage first")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["emosae"])
    return load_file(str(path)), meta


def fit_stage(cfg: VectorsConfig, acts_path: Path) -> dict[str, Any]:
    """Fit and validate both probe families at every layer; save vectors and results."""
    t, meta = load_story_acts(acts_path)
    out = Path(cfg.out)
    emotions = data.emotion_names()
    emo_idx = {e: i for i, e in enumerate(emotions)}
    clusters = data.clusters()
    cl_of = torch.tensor([clusters.index(e.cluster) for e in data.load_emotions()])
    stories = {s.id: s for s in data.load_stories("all")}
    sts = [stories[i] for i in meta["story_ids"]]
    y = torch.tensor([emo_idx[s.emotion] for s in sts])
    held = set(data.load_topics().heldout)
    test = torch.tensor([s.topic in held for s in sts])
    train = ~test
    norms = data.emotion_norms()
    val = np.array([norms[e].valence if norms[e] else np.nan for e in emotions])
    aro = np.array([norms[e].arousal if norms[e] else np.nan for e in emotions])
    per_layer = []
    vec_tensors: dict[str, torch.Tensor] = {}
    mean_norms = {}
    E = len(emotions)
    for j, layer in enumerate(meta["layers"]):
        x = t["story_means"][:, j]
        neutral = t["neutral_samples"][:, j]
        mean_norms[layer] = float(neutral.norm(dim=1).mean())
        basis = neutral_basis(neutral, cfg.probe.neutral_var)
        dm = diff_of_means(x[train], y[train], E, basis)
        center = torch.stack([x[train][y[train] == e].mean(0) for e in range(E)]).mean(0)
        s_dm = projection_scores(x[test], dm, center)
        lp = fit_logistic(x[train], y[train], E, cfg.probe)
        s_lr = lp.logits(x[test])
        vec_tensors[f"diffmean.L{layer}"] = dm.contiguous()
        vec_tensors[f"logistic.L{layer}"] = lp.directions().contiguous()
        row = {"layer": layer, "n_neutral_pcs": int(basis.shape[0])}
        for name, s in (("diffmean", s_dm), ("logistic", s_lr)):
            row[f"{name}_top1"] = topk_accuracy(s, y[test], 1)
            row[f"{name}_top3"] = topk_accuracy(s, y[test], 3)
            row[f"{name}_cluster"] = cluster_accuracy(s, y[test], cl_of)
        row["diffmean_geometry"] = {
            k: v for k, v in geometry(dm, val, aro).items() if k != "pc_scores"
        }
        per_layer.append(row)
    best = max(per_layer, key=lambda r: r["diffmean_top1"])["layer"]
    best_dm = vec_tensors[f"diffmean.L{best}"]
    geo = geometry(best_dm, val, aro)
    rec = cluster_recovery(best_dm, cl_of.numpy())
    results = {
        "emotions": emotions,
        "chance_top1": 1 / E,
        "chance_top3": 3 / E,
        "per_layer": per_layer,
        "best_layer": best,
        "geometry_best_layer": geo,
        "cluster_recovery_best_layer": rec,
        "cosine_best_layer": cosine_matrix(best_dm).tolist(),
        "n_train_stories": int(train.sum()),
        "n_heldout_stories": int(test.sum()),
        "heldout_topics": sorted(held),
    }
    vmeta = {
        "model": meta["model"],
        "emotions": emotions,
        "clusters": [e.cluster for e in data.load_emotions()],
        "layers": meta["layers"],
        "hooks": {str(layer): f"blocks.{layer}.hook_resid_post" for layer in meta["layers"]},
        "methods": {
            "diffmean": "difference of means, neutral PCs projected out",
            "logistic": "multinomial logistic regression on story means",
        },
        "mean_resid_norm": {str(k): v for k, v in mean_norms.items()},
        "best_layer": best,
        "config": asdict(cfg),
        "code_version": code_version(),
    }
    for name, obj in (("vectors.json", vmeta), ("results.json", results)):
        (out / f"{name}.tmp").write_text(json.dumps(obj, indent=1))
    save_file(vec_tensors, str(out / "vectors.safetensors.tmp"))
    for name in ("vectors.safetensors", "vectors.json", "results.json"):
        os.replace(out / f"{name}.tmp", out / name)
    return results
