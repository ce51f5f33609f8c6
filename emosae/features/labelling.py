"""Label the features of an SAE by story contrast, from the probe folder's story
activations, and describe each labelled feature (logit lens, top contexts, density).
Reads a probe folder, an SAE folder and an activation cache; writes a label folder
(file names from `emosae.core.layout.LabelFiles`: labels.json, scores.safetensors)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import CacheFiles, LabelFiles, ProbeFiles, SAEFiles
from emosae.core.provenance import code_version
from emosae.data.concepts import ConceptSet
from emosae.features.contexts import top_cache_contexts, top_story_contexts
from emosae.features.labels import LabelConfig, label_stories, logit_lens, story_feature_acts
from emosae.features.style import StyleCovariates, covariates_from_ids, story_topic
from emosae.lm.hooks import hook_layer
from emosae.probes.vectors import story_tokens
from emosae.sae.reader import ActivationCache
from emosae.sae.training import load_sae


def sae_hook(sae_files: SAEFiles, sae: Any = None) -> str:
    """The hook an SAE reads: from emosae's provenance json, else (an SAE made elsewhere
    with sae-lens) from its own config's metadata."""
    if sae_files.provenance.exists():
        hook = io.read_json(sae_files.provenance).get("hook")
    else:
        hook = getattr(getattr(getattr(sae, "cfg", None), "metadata", None), "hook_name", None)
    if not isinstance(hook, str):
        raise EmosaeError(f"{sae_files.dir}: the SAE's config names no hook (hook_name)")
    hook_layer(hook)  # one-line error if malformed
    return hook


def check_fits_model(sae: Any, hook: str, model: Any, where: Any) -> None:
    """One-line errors for an SAE that cannot read this model: hook or width."""
    if hook not in model.hook_dict:
        raise EmosaeError(f"{where}: the SAE reads {hook}, which {model.cfg.model_name} lacks")
    if sae.cfg.d_in != model.cfg.d_model:
        raise EmosaeError(
            f"{where}: the SAE is {sae.cfg.d_in} wide but {model.cfg.model_name}'s d_model "
            f"is {model.cfg.d_model} (an SAE of another model?)"
        )


def story_style(
    tensors: dict[str, Any], story_ids: list[str], concept_S: list[str], model: Any
) -> StyleCovariates:
    """Surface covariates of the read stories (`emosae.features.style`): their read
    tokens decoded with the model's tokenizer, lengths, and topics from the story ids."""
    topics = [story_topic(i, c) for i, c in zip(story_ids, concept_S, strict=True)]
    return covariates_from_ids(
        tensors["story_token_ids"].tolist(),
        tensors["story_token_lens"].tolist(),
        topics,
        model.tokenizer.decode,
    )


def _score_tensors(
    mean_SF: Tensor, scores: dict[str, np.ndarray], style: StyleCovariates
) -> dict[str, Tensor]:
    """scores.safetensors: story activations, every score, and the style covariates and
    topic codes of the stories (so the threshold grid can be redone without a model)."""
    tensors = {k: torch.from_numpy(np.nan_to_num(v)).float() for k, v in scores.items()}
    return {
        "story_feature_mean": mean_SF.contiguous(),
        **tensors,
        "style_covariates": torch.from_numpy(style.z_SK).float(),
        "story_topic": torch.from_numpy(style.topic_S).long(),
    }


def label_features(
    probes: ProbeFiles | None,
    sae_files: SAEFiles,
    cache_files: CacheFiles | None,
    out: LabelFiles,
    model: Any,
    cfg: LabelConfig,
    concepts: ConceptSet | None = None,
) -> dict[str, Any]:
    """Score every feature for every concept, label those that pass, describe them.

    The story tokens come from the probe folder, or, for `concepts` other than the set
    the probes were fitted on (or with no probe folder: an SAE made elsewhere), are read
    afresh with `model`. Without a cache, contexts come from the stories alone."""
    sae = load_sae(sae_files.dir)
    hook = sae_hook(sae_files, sae)
    check_fits_model(sae, hook, model, sae_files.dir)
    acts = story_tokens(probes, model, hook, concepts)
    t, meta = acts.tensors, acts.meta
    if sae.cfg.d_in != t["story_token_acts"].shape[1]:
        raise EmosaeError(
            f"SAE d_in {sae.cfg.d_in} does not match the activations' d_model {t['story_token_acts'].shape[1]}"
        )
    folders.claim(out.dir, "labels")
    lab = acts.labels
    groups = [lab.groups[g] for g in lab.group_of.tolist()]
    mean_SF, freq_SF = story_feature_acts(sae, t["story_token_acts"], t["story_token_lens"])
    style = story_style(t, meta["story_ids"], [lab.concepts[e] for e in lab.y.tolist()], model)
    result, scores = label_stories(
        mean_SF, freq_SF, lab.y, lab.heldout, lab.concepts, groups, cfg, style
    )
    feats = sorted(result["features"])
    lens = logit_lens(sae.W_dec.detach(), model, feats)
    ctxs = {}
    if cache_files is not None:
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
        hook=hook,
        sae=str(sae_files.dir),
        d_sae=int(sae.cfg.d_sae),
        mean_resid_norm=float(t["story_token_acts"].float().norm(dim=1).mean()),
        model=model.cfg.model_name,
        concepts=lab.concepts,
        concept_set=meta.get("concept_set", {"name": "emotions"}),
        code_version=code_version(),
    )
    io.save_tensors(out.scores, _score_tensors(mean_SF, scores, style))
    io.write_json(out.labels, result)
    folders.seal(out.dir, "labels")
    return result
