"""Emotion vectors from stories: read every story and neutral dialogue once, fit both
probe families at every layer, validate them on held-out topics, and save vectors and
results into a probe folder (file names from `emosae.core.layout.ProbeFiles`):

  story_acts.safetensors  story means per layer [S, H, D], neutral token samples,
                          per-token activations at `token_layer` (for feature labels)
  vectors.safetensors     `diffmean.L{l}` and `logistic.L{l}` [E, D] per layer
  vectors.json            emotions, clusters, hooks, layers, mean residual norm per
                          layer, best layer, provenance
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

from emosae import data
from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import ProbeFiles
from emosae.core.provenance import code_version
from emosae.lm.chat import dialogue_text
from emosae.lm.hooks import hook_layer, resid_hook, resid_hooks
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
    topk_accuracy,
)
from emosae.probes.reading import ReadConfig, read_texts
from emosae.probes.stories import StoryLabels, story_labels, subset_stories


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
    max_stories_per_emotion: int = 0
    """0: all stories; else at most this many per emotion (split kept proportional)."""
    max_dialogues: int = 0
    """0: all training-split neutral dialogues; else at most this many."""

    def __post_init__(self):
        if self.layer_stride < 1 or self.neutral_samples < 1:
            raise EmosaeError("layer_stride and neutral_samples must be >= 1")


@dataclass(frozen=True)
class ProbeJob:
    """`emosae probes`: fit and validate emotion vectors into a probe folder."""

    out: str = "runs/default/probes"
    model: str | None = None
    token_layer: int = 15
    """Layer whose per-token story activations are kept (the SAE's layer)."""
    device: str | None = None
    probes: VectorsConfig = field(default_factory=VectorsConfig)


def sweep_layers(cfg: VectorsConfig, token_layer: int, n_layers: int) -> list[int]:
    layers = list(cfg.layers) or list(range(cfg.layer_stride - 1, n_layers, cfg.layer_stride))
    return sorted(set(layers) | {token_layer})


def read_stories(cfg: VectorsConfig, model: Any, token_layer: int, files: ProbeFiles) -> Path:
    """Read stories and neutral dialogues; write the story activations (atomically)."""
    layers = sweep_layers(cfg, token_layer, model.cfg.n_layers)
    hooks = resid_hooks(model, layers)
    folders.claim(files.dir, "probes")
    tok_hook = resid_hook(token_layer)
    stories = subset_stories(data.load_stories("all"), cfg.max_stories_per_emotion)
    dialogues = data.load_dialogues("train")
    if cfg.max_dialogues > 0:
        dialogues = dialogues[:: max(1, len(dialogues) // cfg.max_dialogues)][: cfg.max_dialogues]
    st = read_texts(
        model, [s.text for s in stories], hooks, cfg.read, keep_tokens_of=tok_hook, desc="stories"
    )
    texts = [dialogue_text(model.tokenizer, d.user, d.assistant) for d in dialogues]
    dl = read_texts(
        model, texts, hooks, cfg.read, sample_per_text=cfg.neutral_samples, desc="dialogues"
    )
    skip = cfg.read.skip
    tensors = {
        "story_means": st.means.contiguous(),
        "neutral_samples": dl.samples.contiguous(),
        "story_token_acts": torch.cat(st.tokens_acts).to(torch.float16),
        "story_token_lens": torch.tensor([len(t) for t in st.tokens_acts]),
        "story_token_ids": torch.cat(
            [ids[min(skip, max(len(ids) - 1, 0)) :] for ids in st.token_ids]
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
    return io.save_tensors(files.story_acts, tensors, metadata={"emosae": json.dumps(meta)})


class StoryActs(NamedTuple):
    """The probe folder's story activations, as written by `read_stories`."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def labels(self) -> StoryLabels:
        return story_labels(self.meta["story_ids"])


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
    return StoryActs(io.load_tensors(path), meta)


def _fit_layer(cfg: VectorsConfig, x, neutral, lab: StoryLabels, geo_norms) -> tuple[dict, dict]:
    """Both probe families at one layer: their vectors and held-out scores."""
    E, train, test = len(lab.emotions), lab.train, lab.heldout
    basis = neutral_basis(neutral, cfg.probe.neutral_var)
    dm = diff_of_means(x[train], lab.y[train], E, basis)
    center = emotion_center(x[train], lab.y[train], E)
    lp = fit_logistic(x[train], lab.y[train], E, cfg.probe)
    vecs = {"diffmean": dm.contiguous(), "logistic": lp.directions().contiguous()}
    row: dict[str, Any] = {"n_neutral_pcs": int(basis.shape[0])}
    yt = lab.y[test]
    for name, s in (
        ("diffmean", projection_scores(x[test], dm, center)),
        ("logistic", lp.logits(x[test])),
    ):
        row[f"{name}_top1"] = topk_accuracy(s, yt, 1)
        row[f"{name}_top3"] = topk_accuracy(s, yt, 3)
        row[f"{name}_cluster"] = cluster_accuracy(s, yt, lab.cluster_of)
    row["diffmean_geometry"] = {
        k: v for k, v in geometry(dm, *geo_norms).items() if k != "pc_scores"
    }
    return vecs, row


def fit_vectors(cfg: VectorsConfig, files: ProbeFiles) -> dict[str, Any]:
    """Fit and validate both probe families at every layer; save vectors and results."""
    acts = load_story_acts(files)
    t, meta, lab = acts.tensors, acts.meta, acts.labels
    emotions = lab.emotions
    norms = data.emotion_norms()
    val = np.array([norms[e].valence if norms[e] else np.nan for e in emotions])
    aro = np.array([norms[e].arousal if norms[e] else np.nan for e in emotions])
    per_layer, vec_tensors, mean_norms = [], {}, {}
    for j, layer in enumerate(meta["layers"]):
        neutral = t["neutral_samples"][:, j]
        mean_norms[str(layer)] = float(neutral.norm(dim=1).mean())
        vecs, row = _fit_layer(cfg, t["story_means"][:, j], neutral, lab, (val, aro))
        vec_tensors.update({f"{k}.L{layer}": v for k, v in vecs.items()})
        per_layer.append({"layer": layer, **row})
    best = max(per_layer, key=lambda r: r["diffmean_top1"])["layer"]
    best_dm = vec_tensors[f"diffmean.L{best}"]
    results = {
        "emotions": emotions,
        "chance_top1": 1 / len(emotions),
        "chance_top3": 3 / len(emotions),
        "per_layer": per_layer,
        "best_layer": best,
        "geometry_best_layer": geometry(best_dm, val, aro),
        "cluster_recovery_best_layer": cluster_recovery(best_dm, lab.cluster_of.numpy()),
        "cosine_best_layer": cosine_matrix(best_dm).tolist(),
        "n_train_stories": int(lab.train.sum()),
        "n_heldout_stories": int(lab.heldout.sum()),
        "heldout_topics": sorted(data.load_topics().heldout),
    }
    vmeta = {
        "model": meta["model"],
        "emotions": emotions,
        "clusters": [e.cluster for e in data.load_emotions()],
        "layers": meta["layers"],
        "hooks": {str(layer): resid_hook(layer) for layer in meta["layers"]},
        "methods": {
            "diffmean": "difference of means, neutral PCs projected out",
            "logistic": "multinomial logistic regression on story means",
        },
        "mean_resid_norm": mean_norms,
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
        n_e, layers, norms = len(meta["emotions"]), meta["layers"], meta["mean_resid_norm"]
    except (KeyError, TypeError):
        raise EmosaeError(
            f"{files.vectors_meta} lacks emotions, layers or mean_resid_norm"
        ) from None
    for name, v in t.items():
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

    folders.check_claimable(job.out, "probes")
    io.check_creatable(job.out)
    check_layers_early(job.model, [job.token_layer, *job.probes.layers])
    model = model if model is not None else load_model(job.model, device=job.device)
    files = ProbeFiles(Path(job.out))
    with folders.lock(job.out):
        read_stories(job.probes, model, job.token_layer, files)
        return fit_vectors(job.probes, files)
