"""Label the features of an SAE by story contrast, from the probe folder's story
activations, and describe each labelled feature (logit lens, top contexts, density).
Reads a probe folder, an SAE folder and an activation cache; writes a label folder
(file names from `emosae.core.layout.LabelFiles`: labels.json, scores.safetensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emosae import data
from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import CacheFiles, LabelFiles, ProbeFiles, SAEFiles
from emosae.core.provenance import code_version
from emosae.features.contexts import top_cache_contexts, top_story_contexts
from emosae.features.labels import (
    LabelConfig,
    assign_labels,
    logit_lens,
    score_features,
    story_feature_acts,
)
from emosae.lm.hooks import hook_layer
from emosae.probes.vectors import load_story_acts
from emosae.sae.reader import ActivationCache
from emosae.sae.training import load_sae


def sae_hook(sae_files: SAEFiles) -> str:
    """The hook an SAE checkpoint was trained on (from emosae's provenance json)."""
    hook = io.read_json(sae_files.provenance).get("hook")
    hook_layer(hook if isinstance(hook, str) else repr(hook))  # one-line error if malformed
    return hook


def label_features(
    probes: ProbeFiles,
    sae_files: SAEFiles,
    cache_files: CacheFiles,
    out: LabelFiles,
    model: Any,
    cfg: LabelConfig,
) -> dict[str, Any]:
    """Score every feature for every emotion, label those that pass, describe them."""
    acts = load_story_acts(probes)
    t, meta = acts.tensors, acts.meta
    sae = load_sae(sae_files.dir)
    hook = sae_hook(sae_files)
    if hook != meta["token_hook"]:
        raise EmosaeError(
            f"the SAE is on {hook} but story tokens were kept for {meta['token_hook']}"
        )
    if sae.cfg.d_in != t["story_token_acts"].shape[1]:
        raise EmosaeError(
            f"SAE d_in {sae.cfg.d_in} does not match the activations' d_model {t['story_token_acts'].shape[1]}"
        )
    folders.claim(out.dir, "labels")
    lab = acts.labels
    clusters = [e.cluster for e in data.load_emotions()]
    mean_SF, freq_SF = story_feature_acts(sae, t["story_token_acts"], t["story_token_lens"])
    scores = score_features(mean_SF, freq_SF, lab.y, lab.heldout, len(lab.emotions))
    result = assign_labels(scores, lab.emotions, clusters, cfg)
    feats = sorted(result["features"])
    lens = logit_lens(sae.W_dec.detach(), model, feats)
    cache = ActivationCache.open(cache_files.dir)
    ctxs = top_cache_contexts(sae, cache, hook, feats, model.tokenizer, cfg)
    story_ctx = top_story_contexts(
        sae,
        t["story_token_acts"],
        t["story_token_lens"],
        t["story_token_ids"],
        meta["story_ids"],
        feats,
        model.tokenizer,
        cfg,
    )
    for f in feats:
        result["features"][f].update(
            logit_lens=lens[f],
            top_contexts=ctxs.get(f, []),
            top_story_contexts=story_ctx[f],
            density=float(freq_SF[:, f].mean()),
        )
    result["features"] = {str(k): v for k, v in result["features"].items()}
    result.update(
        hook=hook, sae=str(sae_files.dir), d_sae=int(sae.cfg.d_sae), code_version=code_version()
    )
    tensors = {k: torch.from_numpy(np.nan_to_num(v)).float() for k, v in scores.items()}
    io.save_tensors(out.scores, {"story_feature_mean": mean_SF.contiguous(), **tensors})
    io.write_json(out.labels, result)
    folders.seal(out.dir, "labels")
    return result
