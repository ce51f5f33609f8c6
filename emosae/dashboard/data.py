"""Everything a feature page shows, collected from an SAE, its activation cache, its
label folder and a probe folder: the density histogram, top and band-sampled contexts
with per-token activations, logit lens, AUROC per concept and cosines to probe vectors.

Two passes over the cache, one shard in memory at a time: the first keeps each
feature's top rows (`emosae.features.contexts.top_k_rows`), its firing count and a
histogram of log10 of its nonzero activations in fixed bins; the second, knowing each
feature's maximum, samples rows uniformly within each activation band (B equal slices
of (0, max], as the band-sampled "subsample intervals" of Anthropic's feature browser)
by keeping the rows with the smallest random keys. Contexts never cross a context
boundary of the cache.

Shape letters: N rows (cache tokens), F features asked for, K contexts kept per
feature, B activation bands, H histogram bins, E concepts, D d_model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from emosae.core import compat, io
from emosae.core.errors import EmosaeError
from emosae.features.contexts import cache_batches, row_window, top_k_rows
from emosae.features.labels import load_labels, logit_lens

LOG_LO, LOG_HI = -6.0, 4.0
"""Range of the log10 activation histogram; activations outside go to the end bins."""


@dataclass(frozen=True)
class DashboardConfig:
    """How much each feature page shows."""

    top_contexts: int = 10
    """Top-activating contexts per feature."""
    bands: int = 4
    """Activation bands sampled: equal slices of (0, max activation]."""
    per_band: int = 3
    """Contexts sampled at random from each band."""
    context_window: int = 12
    """Tokens shown either side of the activating token."""
    logit_tokens: int = 10
    """Top and bottom logit-lens tokens listed."""
    top_cosines: int = 6
    """Probe vectors listed by |cosine| with the decoder direction."""
    bin_width: float = 0.1
    """Width of the density histogram's bins, in log10 units."""
    batch: int = 8192
    """Cache rows encoded at once."""
    seed: int = 0
    """Seed of the band sampling."""

    def __post_init__(self):
        for name in ("top_contexts", "bands", "per_band", "logit_tokens", "batch"):
            if getattr(self, name) < 1:
                raise EmosaeError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.context_window < 0 or self.top_cosines < 0:
            raise EmosaeError("context_window and top_cosines must be >= 0")
        if not 0 < self.bin_width <= LOG_HI - LOG_LO:
            raise EmosaeError(f"bin_width must be in (0, {LOG_HI - LOG_LO}], not {self.bin_width}")


@dataclass
class FeatureData:
    """One feature's page, as data (JSON-able lists and numbers)."""

    index: int
    label: str | None = None
    kind: str = "unlabelled"
    """concept, cluster, ambiguous, unspecific, style (labels.json) or unlabelled."""
    concepts: list[str] = field(default_factory=list)
    """The concepts whose thresholds the feature passes (labels.json)."""
    style_covariate: str | None = None
    """The surface covariate explaining most of its story activations (labels.json)."""
    outside_auroc: list[float] | None = None
    """Its label's AUROC on the outside corpus [value, lo, hi] (labels that transfer)."""
    transfers: bool | None = None
    """Whether the label holds on the outside corpus (None: not checked)."""
    n_tokens: int = 0
    n_fired: int = 0
    max_activation: float = 0.0
    hist_edges: list[float] = field(default_factory=list)
    """log10 bin edges, one more than hist_counts (cropped to the occupied bins)."""
    hist_counts: list[int] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)
    """Contexts: activation, source, tokens, values (per token), at (the activating token)."""
    bands: list[dict[str, Any]] = field(default_factory=list)
    """Per band: lo, hi (activation bounds), contexts (as in `top`)."""
    logit_top: list[str] = field(default_factory=list)
    logit_bottom: list[str] = field(default_factory=list)
    auroc: list[dict[str, Any]] = field(default_factory=list)
    """Per concept: concept, train, heldout; sorted by held-out AUROC, highest first."""
    cosines: list[dict[str, Any]] = field(default_factory=list)
    """Top probe vectors: concept, cosine; sorted by |cosine|."""

    @property
    def density(self) -> float:
        """Fraction of the cache's tokens on which the feature fires."""
        return self.n_fired / self.n_tokens if self.n_tokens else 0.0


class Sweep(NamedTuple):
    """The first pass over the cache."""

    top_values_KF: Tensor
    top_rows_KF: Tensor
    hist_FH: Tensor
    """Counts of log10(nonzero activation) in bins of `bin_width` from LOG_LO."""
    fired_F: Tensor
    n_rows: int


def n_bins(cfg: DashboardConfig) -> int:
    return int(round((LOG_HI - LOG_LO) / cfg.bin_width))


def log_histogram(acts_NF: Tensor, cfg: DashboardConfig) -> Tensor:
    """[F, H] counts of log10 of the positive entries of each column."""
    H, F = n_bins(cfg), acts_NF.shape[1]
    pos = acts_NF > 0
    col = torch.arange(F).expand_as(acts_NF)[pos]
    b = ((acts_NF[pos].double().log10() - LOG_LO) / cfg.bin_width).floor().long().clamp(0, H - 1)
    return torch.bincount(col * H + b, minlength=F * H).view(F, H)


def sweep(encode: Any, batches: Any, n_feats: int, cfg: DashboardConfig) -> Sweep:
    """Pass 1: top rows, firing counts and histogram. `encode(batch)` gives [N, F]."""
    hist = torch.zeros(n_feats, n_bins(cfg), dtype=torch.long)
    fired = torch.zeros(n_feats, dtype=torch.long)
    n = 0

    def acts_of(x: Tensor) -> Tensor:
        nonlocal hist, fired, n
        a = encode(x)
        hist += log_histogram(a, cfg)
        fired += (a > 0).sum(0)
        n += len(a)
        return a

    v, r = top_k_rows(acts_of, batches, list(range(n_feats)), cfg.top_contexts)
    return Sweep(v, r, hist, fired, n)


def band_of(acts_NF: Tensor, max_F: Tensor, n_bands: int) -> Tensor:
    """Band of each activation: b for b/B < a/max <= (b+1)/B; -1 where a <= 0."""
    frac = acts_NF / max_F.clamp_min(1e-12)
    b = (frac * n_bands).ceil().long().clamp(1, n_bands) - 1
    return torch.where(acts_NF > 0, b, torch.full_like(b, -1))


def sample_bands(
    encode: Any, batches: Any, max_F: Tensor, cfg: DashboardConfig
) -> list[list[list[int]]]:
    """Pass 2: rows drawn uniformly at random within each band, [F][B] lists of at most
    `per_band` rows (bottom-k of a uniform key per row, so one pass suffices)."""
    F, B = len(max_F), cfg.bands
    g = torch.Generator().manual_seed(cfg.seed)

    def keys_of(x: Tensor) -> Tensor:
        band = band_of(encode(x), max_F, B)  # [N, F]
        neg_key = -torch.rand(band.shape, generator=g)  # in (-1, 0]: beats top_k_rows' -1
        cols = [torch.where(band == b, neg_key, -torch.inf) for b in range(B)]
        return torch.stack(cols, 2).reshape(len(x), F * B)  # column f * B + b

    v, r = top_k_rows(keys_of, batches, list(range(F * B)), cfg.per_band)
    out: list[list[list[int]]] = [[[] for _ in range(B)] for _ in range(F)]
    for col in range(F * B):
        rows = [int(i) for k, i in zip(v[:, col], r[:, col], strict=True) if k > -1]
        out[col // B][col % B] = sorted(rows)
    return out


def context_rows(r: int, ctx_N: Tensor, width: int) -> list[int]:
    """Rows within `width` of row `r` in the same context (contexts are contiguous)."""
    lo, hi = row_window(r, 0, len(ctx_N), width)
    return (lo + torch.nonzero(ctx_N[lo:hi] == ctx_N[r]).flatten()).tolist()


def _read_rows(cache: Any, hook: str, rows: list[int], encode: Any) -> dict[int, Tensor]:
    """Encoded activations [F] of the given global cache rows, one shard at a time."""
    ends = np.cumsum([s["rows"] for s in cache.manifest["shards"]])
    rows_arr = np.asarray(sorted(set(rows)), dtype=np.int64)
    shard_of = np.searchsorted(ends, rows_arr, side="right")
    out: dict[int, Tensor] = {}
    for s in np.unique(shard_of):
        mine = rows_arr[shard_of == s]
        local = mine - (ends[s - 1] if s else 0)
        acts = encode(cache.shard_rows(int(s), hook, local))
        out.update(zip(mine.tolist(), acts, strict=True))
    return out


class Tokens:
    """Decodes token ids one at a time (memoised) for per-token highlighting."""

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.memo = tokenizer, {}

    def __call__(self, i: int) -> str:
        if i not in self.memo:
            self.memo[i] = self.tokenizer.decode([i])
        return self.memo[i]


def build_contexts(
    cache: Any, hook: str, encode: Any, wanted: list[list[int]], tokens: Tokens, width: int
) -> list[list[dict[str, Any]]]:
    """For each feature j, the contexts of its cache rows `wanted[j]`: the tokens around
    each row and feature j's activation on every one of them."""
    toks, ctx, doc_ids = cache.meta("tokens"), cache.meta("context_ids"), cache.meta("doc_ids")
    docs = cache.documents()
    windows = {r: context_rows(r, ctx, width) for rows in wanted for r in rows}
    acts = _read_rows(cache, hook, [i for w in windows.values() for i in w], encode)
    out = []
    for j, rows in enumerate(wanted):
        found = []
        for r in rows:
            w, d = windows[r], int(doc_ids[r])
            found.append(
                {
                    "activation": float(acts[r][j]),
                    "source": docs[d]["source"] if d < len(docs) else "?",
                    "tokens": [tokens(int(toks[i])) for i in w],
                    "values": [round(float(acts[i][j]), 4) for i in w],
                    "at": w.index(r),
                }
            )
        out.append(found)
    return out


def concept_scores(scores: dict[str, Tensor], concepts: list[str], f: int) -> list[dict[str, Any]]:
    """Train and held-out AUROC of feature f for each concept, best held-out first."""
    tr, he = scores["train_auroc"][:, f].tolist(), scores["heldout_auroc"][:, f].tolist()
    if len(tr) != len(concepts):
        raise EmosaeError(f"scores have {len(tr)} concepts but {len(concepts)} concept names")
    rows = [
        {"concept": c, "train": a, "heldout": b} for c, a, b in zip(concepts, tr, he, strict=True)
    ]
    return sorted(rows, key=lambda r: -r["heldout"])


def probe_cosines(
    vecs_ED: Tensor | None, names: list[str], W_dec_FD: Tensor, f: int, k: int
) -> list[dict[str, Any]]:
    """The k probe vectors most aligned (by |cosine|) with feature f's decoder row."""
    if vecs_ED is None or k == 0:
        return []
    cos = torch.nn.functional.cosine_similarity(vecs_ED.float(), W_dec_FD[f].float()[None], dim=1)
    order = cos.abs().argsort(descending=True)[:k].tolist()
    return [{"concept": names[e], "cosine": float(cos[e])} for e in order]


def crop_histogram(counts_H: Tensor, cfg: DashboardConfig) -> tuple[list[float], list[int]]:
    """Edges and counts of the occupied bins (first to last nonzero)."""
    nz = torch.nonzero(counts_H).flatten()
    if not len(nz):
        return [], []
    a, b = int(nz[0]), int(nz[-1]) + 1
    edges = [round(LOG_LO + i * cfg.bin_width, 6) for i in range(a, b + 1)]
    return edges, counts_H[a:b].tolist()


class Inputs(NamedTuple):
    """What the pages are made from, loaded and checked (`load_inputs`)."""

    sae: Any
    cache: Any
    hook: str
    labels: dict[str, Any]
    scores: dict[str, Tensor]
    concepts: list[str]
    """Names of the scores' rows (labels.json's concepts, else the probes')."""
    probe_vecs: Tensor | None
    """[E, D] difference-of-means vectors at the SAE's layer (None: no probe folder)."""
    probe_names: list[str]
    model_name: str

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)


def load_inputs(sae_files: Any, label_files: Any, probe_files: Any, cache_files: Any) -> Inputs:
    """Load an SAE folder, its label folder, a probe folder (optional: without it the
    pages have no cosines) and the activation cache, all verified."""
    from emosae.core import folders
    from emosae.features.labelling import sae_hook
    from emosae.lm.hooks import hook_layer
    from emosae.probes.vectors import load_vectors
    from emosae.sae.reader import ActivationCache
    from emosae.sae.training import load_sae

    sae, hook = load_sae(sae_files.dir), sae_hook(sae_files)
    folders.verify(label_files.dir)
    labels, scores = load_labels(label_files.labels), io.load_tensors(label_files.scores)
    vecs, names = None, []
    if probe_files.vectors_meta.exists():
        t, meta = load_vectors(probe_files)
        names = list(compat.key(meta, "concepts", "emotions"))
        vecs = t.get(f"diffmean.L{hook_layer(hook)}")
    concepts = labels.get("concepts") or names
    for k in ("train_auroc", "heldout_auroc"):
        if k not in scores or scores[k].shape != (len(concepts), sae.cfg.d_sae):
            raise EmosaeError(
                f"{label_files.scores} needs {k} of shape [{len(concepts)} concepts, "
                f"{sae.cfg.d_sae} features] for this SAE"
            )
    cache = ActivationCache.open(cache_files.dir)
    cache.check_hook(hook)
    model = io.read_json(sae_files.provenance).get("model") or cache.manifest.get("model", "")
    return Inputs(sae, cache, hook, labels, scores, concepts, vecs, names, str(model))


def check_features(feats: list[int], d_sae: int) -> list[int]:
    """Sorted unique feature indices, each in range (one-line error if not)."""
    for f in feats:
        if not 0 <= f < d_sae:
            raise EmosaeError(f"feature {f} is out of range: the SAE has {d_sae} (0-{d_sae - 1})")
    return sorted(set(feats))


def collect(inp: Inputs, feats: list[int], model: Any, cfg: DashboardConfig) -> list[FeatureData]:
    """Every page's data for the features `feats` of `inp.sae`."""
    feats = check_features(feats, inp.d_sae)
    if int(inp.sae.cfg.d_in) != int(model.cfg.d_model):
        raise EmosaeError(
            f"the SAE reads d_model {inp.sae.cfg.d_in} but the model has {model.cfg.d_model}; "
            "pass the model the run used (--model)"
        )
    dev = next(inp.sae.parameters()).device
    fidx = torch.tensor(feats)

    @torch.no_grad()
    def encode(x: Tensor) -> Tensor:
        return inp.sae.encode(x.to(dev)).float().cpu()[:, fidx]

    def batches():
        return cache_batches(inp.cache, inp.hook, cfg.batch)

    s = sweep(encode, batches(), len(feats), cfg)
    bands = sample_bands(encode, batches(), s.top_values_KF[0].clamp_min(0), cfg)
    top = [
        [int(r) for v, r in zip(s.top_values_KF[:, j], s.top_rows_KF[:, j], strict=True) if v > 0]
        for j in range(len(feats))
    ]
    wanted = [top[j] + [r for b in bands[j] for r in b] for j in range(len(feats))]
    ctxs = build_contexts(
        inp.cache, inp.hook, encode, wanted, Tokens(model.tokenizer), cfg.context_window
    )
    W_dec = inp.sae.W_dec.detach().float().cpu()
    lens = logit_lens(W_dec, model, feats, cfg.logit_tokens)
    out = []
    for j, f in enumerate(feats):
        info = inp.labels.get("features", {}).get(str(f), {})
        mx = float(s.top_values_KF[0, j].clamp_min(0))
        edges, counts = crop_histogram(s.hist_FH[j], cfg)
        rest = iter(ctxs[j][len(top[j]) :])
        out.append(
            FeatureData(
                index=f,
                label=info.get("label"),
                kind=info.get("kind", "unlabelled"),
                concepts=list(info.get("concepts", [])),
                style_covariate=info.get("style_covariate"),
                outside_auroc=info.get("outside_auroc"),
                transfers=info.get("transfers"),
                n_tokens=s.n_rows,
                n_fired=int(s.fired_F[j]),
                max_activation=mx,
                hist_edges=edges,
                hist_counts=counts,
                top=ctxs[j][: len(top[j])],
                bands=[
                    {
                        "lo": mx * b / cfg.bands,
                        "hi": mx * (b + 1) / cfg.bands,
                        "contexts": [next(rest) for _ in bands[j][b]],
                    }
                    for b in range(cfg.bands)
                ],
                logit_top=lens[f]["top"],
                logit_bottom=lens[f]["bottom"],
                auroc=concept_scores(inp.scores, inp.concepts, f),
                cosines=probe_cosines(inp.probe_vecs, inp.probe_names, W_dec, f, cfg.top_cosines),
            )
        )
    return out
