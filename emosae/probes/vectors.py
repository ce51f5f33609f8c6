"""Emotion vectors from stories: read every story and neutral dialogue once, fit both
probe families at every layer, validate them on held-out topics, and save vectors and
results into a probe folder (file names from `emosae.core.layout.ProbeFiles`):

  story_acts.safetensors  story means per layer [S, H, D], neutral token samples,
                          per-token activations at `token_layer` (for feature labels)
  vectors.safetensors     `diffmean.L{l}` and `logistic.L{l}` [E, D] per layer, and
                          `center.L{l}` [D]: the point the vectors are measured from
  vectors.json            concepts (under "concepts"; 0.1: "emotions"), groups, hooks, layers, mean
                          residual norm and readout scale per layer, best layer,
                          the concept set, provenance

The stories are those of a concept set (`emosae.data.concepts`; default: the bundled
emotions). The centre is the mean over concepts of each concept's mean training-story
activation, the same centre the difference of means subtracts. A reading of concept c
at activation x is `(x - center) . unit(v_c) / read_scale`: one scale per layer (the
within-concept spread of training-story projections), so readings keep the
probe's ranking of concepts and 1.0 means one within-concept standard deviation of
story readings.
  results.json            per-layer accuracies, geometry, cluster recovery, cosines

Shape letters: S stories, H hooks (layers), D d_model, E emotions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from emosae.core import compat, folders, io
from emosae.core.errors import EmosaeError
from emosae.core.finite import check_finite, max_abs, storage_dtype
from emosae.core.layout import ProbeFiles
from emosae.core.provenance import code_version
from emosae.data.concepts import ConceptSet, bundled, load_concept_set
from emosae.lm.chat import dialogue_text
from emosae.lm.hooks import hook_layer, resid_hook, resid_hooks, stop_layer
from emosae.probes.fit import (
    ProbeConfig,
    cluster_accuracy,
    cluster_recovery,
    cosine_matrix,
    diff_of_means,
    emotion_center,
    fit_logistic,
    geometry,
    neutral_basis,
    projection_scores,
    read_scale,
    topk_accuracy,
    topk_accuracy_ci,
)
from emosae.probes.reading import ReadConfig, TextActs, read_texts
from emosae.probes.stories import StoryLabels, labels_meta, story_labels, subset_stories


@dataclass(frozen=True)
class VectorsConfig:
    """How emotion vectors are read and fitted (what `emosae run` composes)."""

    layers: tuple[int, ...] = ()
    """Layers to sweep (default: every `layer_stride`-th layer, plus the token layer)."""
    layer_stride: int = 3
    read: ReadConfig = field(default_factory=ReadConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    neutral_samples: int = 16
    """Token activations sampled per neutral dialogue for the neutral PCA."""
    max_stories_per_concept: int = 0
    """0: all stories; else at most this many per concept (split kept proportional)."""
    max_dialogues: int = 0
    """0: all training-split neutral dialogues; else at most this many."""

    def __post_init__(self):
        if self.layer_stride < 1 or self.neutral_samples < 1:
            raise EmosaeError("layer_stride and neutral_samples must be >= 1")


@dataclass(frozen=True)
class ProbeJob:
    """`emosae probes`: fit and validate emotion vectors into a probe folder."""

    out: str = "runs/default/probes"
    concepts: str | None = None
    """Concept-set folder (default: the bundled 48 emotions)."""
    model: str | None = None
    token_layer: int = 15
    """Layer whose per-token story activations are kept (the SAE's layer)."""
    device: str | None = None
    probes: VectorsConfig = field(default_factory=VectorsConfig)


def sweep_layers(cfg: VectorsConfig, token_layer: int, n_layers: int) -> list[int]:
    layers = list(cfg.layers) or list(range(cfg.layer_stride - 1, n_layers, cfg.layer_stride))
    return sorted(set(layers) | {token_layer})


def neutral_texts(cs: ConceptSet, tokenizer: Any, max_texts: int = 0) -> list[str]:
    """The set's neutral texts (conversations rendered as dialogue text), thinned evenly
    to at most `max_texts` (0: all)."""
    recs = cs.neutral_records("train")
    if max_texts > 0:
        recs = recs[:: max(1, len(recs) // max_texts)][:max_texts]
    return [r if isinstance(r, str) else dialogue_text(tokenizer, *r) for r in recs]


def neutral_reply_acts(
    cs: ConceptSet, model: Any, hooks: list[str], max_n: int = 0
) -> torch.Tensor:
    """[N, H, D] activations at the token before the assistant's reply, for the set's
    neutral texts as user turns (conversations: their user turn): the reference that
    conversation readings are z-scored against."""
    from emosae.lm.chat import render_chat
    from emosae.lm.readout import last_position

    recs = cs.neutral_records("train")
    if max_n > 0:
        recs = recs[:: max(1, len(recs) // max_n)][:max_n]
    seqs = [render_chat(model, r if isinstance(r, str) else r[0]).tokens for r in recs]
    return last_position(model, seqs, hooks, stop_at_layer=stop_layer(hooks))


def read_stories(
    cfg: VectorsConfig,
    model: Any,
    token_layer: int,
    files: ProbeFiles,
    cs: ConceptSet | None = None,
) -> Path:
    """Read a concept set's stories (default: the bundled emotions) and the neutral
    texts; write the story activations (atomically)."""
    cs = cs if cs is not None else load_concept_set(None)
    layers = sweep_layers(cfg, token_layer, model.cfg.n_layers)
    hooks = resid_hooks(model, layers)
    folders.claim(files.dir, "probes")
    tok_hook = resid_hook(token_layer)
    stories = subset_stories(cs, cfg.max_stories_per_concept)
    st = read_texts(
        model, [s.text for s in stories], hooks, cfg.read, keep_tokens_of=tok_hook, desc="stories"
    )
    texts = neutral_texts(cs, model.tokenizer, cfg.max_dialogues)
    dl = read_texts(
        model, texts, hooks, cfg.read, sample_per_text=cfg.neutral_samples, desc="dialogues"
    )
    tensors = {
        "story_means": st.means.contiguous(),
        "neutral_samples": dl.samples.contiguous(),
        "neutral_reply": neutral_reply_acts(cs, model, hooks, cfg.max_dialogues).contiguous(),
        **_token_tensors(st, cfg.read.skip),
    }
    meta = {
        "layers": layers,
        "hooks": hooks,
        "token_hook": tok_hook,
        **labels_meta(cs, stories),
        "model": model.cfg.model_name,
        "read": asdict(cfg.read),
    }
    return io.save_tensors(files.story_acts, tensors, metadata={"emosae": json.dumps(meta)})


def _token_tensors(st: TextActs, skip: int) -> dict[str, torch.Tensor]:
    """Per-token story activations (float16 where every value fits, else bfloat16 or
    float32), their lengths and token ids, from `skip` on."""
    acts = torch.cat(st.tokens_acts)
    check_finite(acts, "the stories' activations", hint="the model itself makes them")
    return {
        "story_token_acts": acts.to(getattr(torch, storage_dtype(max_abs(acts), headroom=1))),
        "story_token_lens": torch.tensor([len(t) for t in st.tokens_acts]),
        "story_token_ids": torch.cat(
            [ids[min(skip, max(len(ids) - 1, 0)) :] for ids in st.token_ids]
        ),
    }


class StoryActs(NamedTuple):
    """The probe folder's story activations, as written by `read_stories`."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def labels(self) -> StoryLabels:
        return story_labels(self.meta)


def load_story_acts(files: ProbeFiles) -> StoryActs:
    from safetensors import safe_open

    path = files.story_acts
    if not path.exists():
        raise EmosaeError(f"{path} is missing; run the probe stage first")
    folders.verify(files.dir, [path.name])
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["emosae"])
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise EmosaeError(f"{path} is corrupt ({str(e).splitlines()[0]})") from None
    tensors = io.load_tensors(path)
    for k, v in tensors.items():
        check_finite(v, f"{path}: {k}", hint="rerun the probe stage")
    return StoryActs(tensors, meta)


def story_tokens(
    files: ProbeFiles | None, model: Any, hook: str, cs: ConceptSet | None = None
) -> StoryActs:
    """Per-token story activations at `hook`: the probe folder's when it read the set
    `cs` (None: whichever it read) at that hook, else the stories of `cs` read now with
    the probe folder's reading settings."""
    read_cfg = ReadConfig()
    if files is None:  # an SAE without a probe folder: the set's (default bundled) stories
        cs = cs if cs is not None else bundled()
    elif files.story_acts.exists() or cs is None:
        acts = load_story_acts(files)
        made_on = acts.meta.get("concept_set", {}).get("fingerprint") or bundled().fingerprint
        if (cs is None or cs.fingerprint == made_on) and acts.meta["token_hook"] == hook:
            return acts
        if cs is None:
            raise EmosaeError(
                f"the SAE is on {hook} but {files.dir} kept story tokens for {acts.meta['token_hook']}"
            )
        read_cfg = ReadConfig(**acts.meta["read"])
    st = read_texts(
        model, [s.text for s in cs.stories], [hook], read_cfg, keep_tokens_of=hook, desc="stories"
    )
    meta = {
        "token_hook": hook,
        **labels_meta(cs, list(cs.stories)),
        "model": model.cfg.model_name,
        "read": asdict(read_cfg),
    }
    return StoryActs(_token_tensors(st, read_cfg.skip), meta)


def _fit_layer(cfg: VectorsConfig, x, neutral, lab: StoryLabels, geo_norms) -> tuple[dict, dict]:
    """Both probe families at one layer: their vectors, centre, readout scale and
    held-out scores."""
    E, train, test = len(lab.concepts), lab.train, lab.heldout
    basis = neutral_basis(neutral, cfg.probe.neutral_var)
    dm = diff_of_means(x[train], lab.y[train], E, basis)
    center = emotion_center(x[train], lab.y[train], E)
    lp = fit_logistic(x[train], lab.y[train], E, cfg.probe)
    vecs = {"diffmean": dm.contiguous(), "logistic": lp.directions().contiguous()}
    vecs["center"] = center.contiguous()
    row: dict[str, Any] = {"n_neutral_pcs": int(basis.shape[0])}
    row["read_scale"] = read_scale(projection_scores(x[train], dm, center), lab.y[train], E)
    yt = lab.y[test]
    for name, s in (
        ("diffmean", projection_scores(x[test], dm, center)),
        ("logistic", lp.logits(x[test])),
    ):
        row[f"{name}_top1"] = topk_accuracy(s, yt, 1)
        row[f"{name}_top1_ci95"] = topk_accuracy_ci(s, yt, 1)
        row[f"{name}_top3"] = topk_accuracy(s, yt, 3)
        row[f"{name}_cluster"] = cluster_accuracy(s, yt, lab.group_of)
    geo = geometry(dm, *geo_norms)
    row["diffmean_geometry"] = geo and {k: v for k, v in geo.items() if k != "pc_scores"}
    return vecs, row


def chat_reference(reply_ND: torch.Tensor, dm_ED: torch.Tensor) -> dict[str, torch.Tensor]:
    """Centre and per-concept spread of neutral prompts' readings at the reply position."""
    center = reply_ND.mean(0)
    unit = dm_ED / dm_ED.norm(dim=1, keepdim=True).clamp_min(1e-8)
    spread = ((reply_ND - center) @ unit.T).std(0).clamp_min(1e-6)
    return {"chat_center": center.contiguous(), "chat_scale": spread.contiguous()}


def fit_vectors(cfg: VectorsConfig, files: ProbeFiles) -> dict[str, Any]:
    """Fit and validate both probe families at every layer; save vectors and results."""
    acts = load_story_acts(files)
    t, meta, lab = acts.tensors, acts.meta, acts.labels
    concepts = lab.concepts
    val = np.array(meta.get("valence", []) or [np.nan] * len(concepts), dtype=float)
    aro = np.array(meta.get("arousal", []) or [np.nan] * len(concepts), dtype=float)
    per_layer, vec_tensors, mean_norms, scales = [], {}, {}, {}
    for j, layer in enumerate(meta["layers"]):
        neutral = t["neutral_samples"][:, j]
        mean_norms[str(layer)] = float(neutral.norm(dim=1).mean())
        vecs, row = _fit_layer(cfg, t["story_means"][:, j], neutral, lab, (val, aro))
        if "neutral_reply" in t:  # emosae 0.1 folders lack it
            vecs.update(chat_reference(t["neutral_reply"][:, j], vecs["diffmean"]))
        vec_tensors.update({f"{k}.L{layer}": v for k, v in vecs.items()})
        scales[str(layer)] = row["read_scale"]
        per_layer.append({"layer": layer, **row})
    best = max(per_layer, key=lambda r: r["diffmean_top1"])["layer"]
    best_dm = vec_tensors[f"diffmean.L{best}"]
    results = {
        "concepts": concepts,
        "concept_set": meta.get("concept_set", {"name": "emotions"}),
        "groups": lab.groups,
        "concept_group": [lab.groups[g] for g in lab.group_of.tolist()],
        "chance_top1": 1 / len(concepts),
        "chance_top3": min(1.0, 3 / len(concepts)),
        "per_layer": per_layer,
        "best_layer": best,
        "geometry_best_layer": geometry(best_dm, val, aro),
        "cluster_recovery_best_layer": cluster_recovery(best_dm, lab.group_of.numpy()),
        "cosine_best_layer": cosine_matrix(best_dm).tolist(),
        "n_train_stories": int(lab.train.sum()),
        "n_heldout_stories": int(lab.heldout.sum()),
        "heldout_topics": sorted(meta["heldout_topics"]),
    }
    vmeta = {
        "model": meta["model"],
        "concepts": concepts,
        "concept_set": results["concept_set"],
        "clusters": results["concept_group"],
        "layers": meta["layers"],
        "hooks": {str(layer): resid_hook(layer) for layer in meta["layers"]},
        "methods": {
            "diffmean": "difference of means, neutral PCs projected out",
            "logistic": "multinomial logistic regression on story means",
            "center": "mean over concepts of the mean training-story activation",
        },
        "mean_resid_norm": mean_norms,
        "read_scale": scales,
        "best_layer": best,
        "token_layer": hook_layer(meta["token_hook"]),
        "config": asdict(cfg),
        "code_version": code_version(),
    }
    io.save_tensors(files.vectors, vec_tensors)
    io.write_json(files.vectors_meta, vmeta)
    io.write_json(files.results, results)
    folders.seal(files.dir, "probes")
    return results


def load_vectors(files: ProbeFiles) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A probe folder's vectors and their json, verified: the seal, the tensor names and
    shapes against the json, finite values, finite positive mean residual norms."""
    if not files.vectors_meta.exists():
        raise EmosaeError(
            f"no probe vectors in {files.dir} (need {files.vectors_meta.name} + {files.vectors.name})"
        )
    folders.verify(files.dir, [files.vectors.name, files.vectors_meta.name])
    meta, t = io.read_json(files.vectors_meta), io.load_tensors(files.vectors)
    try:
        n_e, layers, norms = (
            len(compat.key(meta, "concepts", "emotions")),
            meta["layers"],
            meta["mean_resid_norm"],
        )
    except (KeyError, TypeError):
        raise EmosaeError(
            f"{files.vectors_meta} lacks emotions, layers or mean_resid_norm"
        ) from None
    for name, v in t.items():
        if name.startswith(("center.", "chat_center.", "chat_scale.")):
            if v.ndim != 1 or not torch.isfinite(v).all():
                raise EmosaeError(f"{files.vectors}: {name} must be a finite 1-D vector")
            continue
        if v.ndim != 2 or v.shape[0] != n_e or not torch.isfinite(v).all():
            raise EmosaeError(
                f"{files.vectors}: {name} must be finite [{n_e} emotions, d_model], got {tuple(v.shape)}"
            )
    for layer in layers:
        x = norms.get(str(layer))
        if not isinstance(x, int | float) or not 0 < x < float("inf"):
            raise EmosaeError(f"{files.vectors_meta}: mean_resid_norm of layer {layer} is {x!r}")
    return t, meta


def run_probe_job(job: ProbeJob, model: Any = None) -> dict[str, Any]:
    """`emosae probes`: check everything that can be checked, then read and fit."""
    from emosae.lm.models import check_layers_early, load_model

    cs = load_concept_set(job.concepts)  # checked whole before anything is written
    folders.check_claimable(job.out, "probes")
    io.check_creatable(job.out)
    check_layers_early(job.model, [job.token_layer, *job.probes.layers])
    model = model if model is not None else load_model(job.model, device=job.device)
    files = ProbeFiles(Path(job.out))
    with folders.lock(job.out):
        read_stories(job.probes, model, job.token_layer, files, cs)
        return fit_vectors(job.probes, files)
