"""Read an outside corpus (and the bundled held-out stories) with a model and score the
probes' readout and the SAE labels on it; `emosae validate` writes the result folder.

Each text is run once to the readout's hook; its probe scores are read as `emosae.read`
reads a plain text (the mean from `text_read_start` on), and where the directions' folder
has labels and an SAE, each labelled feature's activation is averaged over the same
tokens. Figures (each with a 95% bootstrap interval over texts):

  top1, top3        the text's concept among the highest readout scores
  valence_auroc     texts of positive vs negative concepts (Warriner valence of the name,
                    > 5 or < 5) along sum_c (v_c - mean v) * score_c; also for the short
                    register (texts of at most `short_tokens` tokens)
  labels            per labelled feature, its AUROC for its concept on the corpus beside
                    the bundled held-out AUROC labels.json records; a feature transfers when
                    its corpus AUROC reaches the threshold chosen, like the labels' own, at
                    an estimated FDR <= 0.05 against shuffles of the corpus's concepts

Shape letters: N texts, C concepts, F labelled features.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import LabelFiles, RunLayout, ValidationFiles, shipped_checkpoint
from emosae.core.log import logger
from emosae.core.stats import mean_ci
from emosae.validation import measures as M
from emosae.validation.report import markdown
from emosae.validation.transfer import CORPUS_SPECIFIC, SHARED_KINDS

GRID = np.round(np.arange(0.5, 0.991, 0.01), 2)
"""AUROC thresholds tried for labels that transfer."""


@dataclass(frozen=True)
class ValidateConfig:
    """The pipeline's validate stage: which outside texts it reads and what it compares."""

    corpus: str | None = None
    """An outside corpus (default: the bundled one)."""
    bundled: bool = True
    """Also score the bundled held-out stories, for comparison."""
    per_concept: int = 0
    """Read at most this many texts of each concept (0: all; the smoke preset reads 2)."""
    permutations: int = 20
    """Shuffles of the corpus's concepts for the labels' false-discovery rate."""

    def __post_init__(self) -> None:
        if self.per_concept < 0 or self.permutations < 1:
            raise EmosaeError("per_concept must be >= 0 and permutations >= 1")

    def texts(self) -> list[Any]:
        """The corpus's texts, at most `per_concept` of each concept."""
        from emosae.data.outside import load_outside

        texts, seen = [], Counter[str]()
        for t in load_outside(self.corpus, min_texts=0):
            seen[t.concept] += 1
            if not self.per_concept or seen[t.concept] <= self.per_concept:
                texts.append(t)
        return texts


@dataclass(frozen=True)
class ValidateJob:
    """What `emosae validate` reads and where it writes."""

    out: str
    """The folder to write (validation.json, validation.md)."""
    directions: str | None = None
    """A run or checkpoint folder (default: the shipped checkpoint)."""
    corpus: str | None = None
    """An outside corpus, JSON lines of {concept, register, text} (default: the bundled one)."""
    concepts: str | None = None
    """The concept-set folder whose forbidden words the corpus is checked against
    (default: the bundled emotions)."""
    model: str | None = None
    """The model (default: the one the directions record)."""
    bundled: bool = True
    """Also score the bundled held-out stories, for comparison."""
    permutations: int = 20
    """Shuffles of the corpus's concepts for the labels' false-discovery rate."""
    short_tokens: int = 40
    """Texts of at most this many tokens make the short register."""
    q: float = 0.05
    """False-discovery rate at which labels that transfer are chosen."""

    def __post_init__(self) -> None:
        if self.permutations < 1 or self.short_tokens < 1 or not 0 < self.q < 1:
            raise EmosaeError("--permutations and --short-tokens must be >= 1, --q in (0, 1)")


@dataclass(frozen=True)
class Labelled:
    """The features a labels.json names, with the SAE that encodes them."""

    sae: Any
    hook: str
    feature_F: np.ndarray
    concept_F: list[str]
    kind_F: list[str]
    heldout_F: np.ndarray
    best: dict[str, int]
    repicked: frozenset[str]
    """Concepts whose best feature was re-picked among features that transfer (their
    outside AUROC passed a gate on this corpus: optimistic there)."""


def load_labelled(root: Path) -> Labelled | None:
    """Single-concept labels and every concept's best feature of the labels beside the
    directions (None where the folder has no labels or no SAE)."""
    from emosae.features.labels import load_labels
    from emosae.sae.training import load_sae

    lab = LabelFiles(root) if LabelFiles(root).labels.exists() else RunLayout(root).labels
    if not lab.labels.exists():
        return None
    labels = load_labels(lab.labels)
    sae_at = RunLayout(lab.dir.parent).sae.dir
    sae = load_sae(sae_at if sae_at.exists() else labels["sae"])
    rows: dict[tuple[int, str], tuple[str, float]] = {}
    for f in labels["features"].values():
        if f.get("kind") in ("concept", CORPUS_SPECIFIC):  # single-concept labels
            rows[(int(f["feature"]), f["concepts"][0])] = ("concept", float(f["heldout_auroc"]))
        elif f.get("kind") in SHARED_KINDS:  # texts of any of its concepts are positive
            rows[(int(f["feature"]), "+".join(f["concepts"]))] = (
                f["kind"],
                float(f["heldout_auroc"]),
            )
    best = {}
    for c, b in labels["best_per_concept"].items():
        best[c] = int(b["feature"])
        rows.setdefault((best[c], c), ("best:" + b.get("kind", "?"), float(b["heldout_auroc"])))
    keys = sorted(rows)
    return Labelled(
        sae,
        labels["hook"],
        np.array([k[0] for k in keys]),
        [k[1] for k in keys],
        [rows[k][0] for k in keys],
        np.array([rows[k][1] for k in keys]),
        best,
        frozenset(c for c, b in labels["best_per_concept"].items() if "rule_feature" in b),
    )


@torch.no_grad()
def read_texts(
    model: Any,
    texts: list[str],
    directions: dict[str, Any],
    lab: Labelled | None,
    what: str,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Probe scores [N, C], labelled-feature means [N, F] (None without labels) and token
    counts [N] of plain texts, each read as `emosae.read` reads it (from its read start to
    its end), in padded batches: one forward for both hooks."""
    from emosae.lm.hooks import padded_hook_acts
    from emosae.reading.trace import Basis, tokens_to_read

    basis = Basis.of(directions)
    dev = torch.device(model.cfg.device)
    plans = [tokens_to_read(model, t, basis.skip) for t in texts]
    hooks = sorted({basis.hook, *([lab.hook] if lab else [])})
    scores: list[Any] = [None] * len(texts)
    feats: list[Any] = [None] * len(texts)
    seqs = [ids for ids, _, _ in plans]
    cols = torch.as_tensor(lab.feature_F) if lab is not None else None
    bar = tqdm(total=len(texts), desc=f"validate: {what}", unit="text", leave=False)
    for i, acts in padded_hook_acts(model, seqs, hooks, batch_size):
        pos = plans[i][2]
        scores[i] = basis.score(acts[basis.hook][pos:].float().cpu()).mean(0)
        if lab is not None:
            f = lab.sae.encode(acts[lab.hook][pos:].float().to(dev))
            feats[i] = f[:, cols].float().mean(0).cpu()
        bar.update()
    bar.close()
    f_NF = torch.stack(feats).numpy() if lab is not None else None
    return torch.stack(scores).numpy(), f_NF, np.array([len(s) for s in seqs])


def score_set(
    concepts: list[str],
    s_NC: np.ndarray,
    y_N: np.ndarray,
    n_tok: np.ndarray,
    short_tokens: int,
) -> dict[str, Any]:
    """The readout's figures on one set of texts."""
    v_C = M.concept_valences(concepts)
    short = n_tok <= short_tokens
    return {
        "n_texts": len(y_N),
        "n_short": int(short.sum()),
        "top1": M.share_ci(M.topk_hits(s_NC, y_N, 1)),
        "top3": M.share_ci(M.topk_hits(s_NC, y_N, 3)),
        "chance_top1": 1 / len(concepts),
        "chance_top3": min(3, len(concepts)) / len(concepts),
        "valence_auroc": M.valence_auroc(s_NC, y_N, v_C),
        "valence_auroc_short": M.valence_auroc(s_NC, y_N, v_C, short),
    }


def score_labels(
    lab: Labelled,
    concepts: list[str],
    f_NF: np.ndarray,
    y_N: np.ndarray,
    permutations: int,
    q: float,
) -> dict[str, Any]:
    """Per labelled feature, its AUROC for its concept on the corpus (with interval), and
    which features transfer at the threshold chosen at FDR <= q."""
    idx = {c: i for i, c in enumerate(concepts)}
    present = {concepts[i] for i in np.unique(y_N)}  # concepts the corpus has texts of
    member_CF = np.zeros((len(concepts), len(lab.concept_F)), bool)
    for i, name in enumerate(lab.concept_F):
        for c in name.split("+"):
            if c in idx:
                member_CF[idx[c], i] = True
    keep = np.array([any(c in present for c in n.split("+")) for n in lab.concept_F])
    ci_F3 = np.full((len(keep), 3), math.nan)
    ci_F3[keep] = M.feature_auroc_cis(f_NF[:, keep], y_N, member_CF[:, keep])
    a_F = ci_F3[:, 0]
    # the threshold is chosen on single-concept labels and best features (shared labels
    # are scored at it, not counted in its false-discovery rate)
    core = keep & np.array([k not in SHARED_KINDS for k in lab.kind_F])
    null = M.permutation_null(f_NF[:, core], y_N, member_CF[:, core], GRID, permutations)
    choice = M.transfer_threshold(a_F[core], null, GRID, q)
    rows = []
    for i in np.flatnonzero(keep):
        ci = [float(x) for x in ci_F3[i]]
        rows.append(
            {
                "feature": int(lab.feature_F[i]),
                "concept": lab.concept_F[i],
                "kind": lab.kind_F[i],
                "heldout_auroc": float(lab.heldout_F[i]),
                "outside_auroc": ci,
                "transfers": bool(a_F[i] >= choice["threshold"]),
            }
        )
    best = {
        c: {**r, "repicked": c in lab.repicked}
        for r in rows
        for c in [r["concept"]]
        if lab.best.get(c) == r["feature"]
    }
    best_a = np.array([best[c]["outside_auroc"][0] for c in sorted(best)])
    rule_a = np.array([best[c]["outside_auroc"][0] for c in sorted(best) if c not in lab.repicked])
    single = [r for r in rows if r["kind"] == "concept"]
    shared = [r for r in rows if r["kind"] in SHARED_KINDS]
    return {
        "threshold": choice,
        "features": rows,
        "best_per_concept": {c: best[c] for c in sorted(best)},
        "best_mean_auroc": [float(best_a.mean()), *mean_ci(best_a)] if len(best_a) else [],
        "best_mean_auroc_not_repicked": [float(rule_a.mean()), *mean_ci(rule_a)]
        if len(rule_a)
        else [],
        "shared": {"n": len(shared), "transfer": sum(r["transfers"] for r in shared)},
        "single_concept": {
            "n": len(single),
            "transfer": sum(r["transfers"] for r in single),
            "corpus_specific": sorted(
                f"{r['concept']}:{r['feature']}" for r in single if not r["transfers"]
            ),
            "below_0.7": sum(r["outside_auroc"][0] < 0.7 for r in single),
        },
    }


def validate(
    model: Any,
    root: str | Path | None,
    texts: list[Any],
    *,
    bundled: bool = True,
    permutations: int = 20,
    short_tokens: int = 40,
    q: float = 0.05,
) -> dict[str, Any]:
    """Figures of the directions (and labels) of `root` on `texts` (`OutsideText`s), and
    with `bundled` on the bundled held-out stories: a json-able dict."""
    from emosae.data.concepts import bundled as bundled_set
    from emosae.steering.directions import reading_directions

    root = Path(root) if root is not None else shipped_checkpoint()
    dirs = reading_directions(root)
    concepts = list(dirs)
    idx = {c: i for i, c in enumerate(concepts)}
    out: dict[str, Any] = {"directions": str(root), "concepts": concepts}
    texts = [t for t in texts if t.concept in idx]
    if not texts:  # a run on its own concept set, checked against the bundled corpus
        logger.info("validate: the outside corpus has no texts of these concepts; skipped")
        return {**out, "skipped": "the outside corpus has no texts of these concepts"}
    lab = load_labelled(root)
    s, f, n = read_texts(model, [t.text for t in texts], dirs, lab, "outside corpus")
    y = np.array([idx[t.concept] for t in texts])
    out["outside"] = score_set(concepts, s, y, n, short_tokens)
    out["outside"]["registers"] = {
        r: score_set(concepts, s[m], y[m], n[m], short_tokens)["top3"]
        for r in sorted({t.register for t in texts})
        for m in [np.array([t.register == r for t in texts])]
    }
    if lab is not None and f is not None:
        out["labels"] = score_labels(lab, concepts, f, y, permutations, q)
    if bundled:
        cs = bundled_set()
        held = [x for x in cs.stories if cs.is_heldout(x) and x.concept in idx]
        if held:
            s2, _, n2 = read_texts(model, [x.text for x in held], dirs, None, "held-out stories")
            y2 = np.array([idx[x.concept] for x in held])
            out["bundled_heldout"] = score_set(concepts, s2, y2, n2, short_tokens)
    return io.round_floats(out, 6)


def run_validate_job(job: ValidateJob, model: Any = None) -> dict[str, Any]:
    """Check every input before the model loads, then validate and write `job.out`."""
    from emosae.data.concepts import load_concept_set
    from emosae.data.outside import load_outside
    from emosae.lm.models import load_model
    from emosae.steering.directions import reading_directions

    folders.check_claimable(job.out, "validation")
    io.check_creatable(job.out)
    root = Path(job.directions) if job.directions else shipped_checkpoint()
    dirs = reading_directions(root)
    cs = load_concept_set(job.concepts) if job.concepts else None
    # a concept the directions lack is one line naming file and line, before the model loads
    texts = load_outside(job.corpus, cs, allowed=set(dirs), min_texts=0)
    if model is None:
        model = load_model(job.model or next(iter(dirs.values())).model)
    res = validate(
        model,
        root,
        texts,
        bundled=job.bundled,
        permutations=job.permutations,
        short_tokens=job.short_tokens,
        q=job.q,
    )
    res["job"] = asdict(job)
    write_validation(ValidationFiles(Path(job.out)), res)
    return res


def corpus_identity(path: str | Path | None, texts: list[Any]) -> dict[str, Any]:
    """What labels.json records of the corpus its labels were checked on."""
    from emosae.data.outside import DEFAULT_PATH

    p = Path(path) if path is not None else DEFAULT_PATH
    return {
        "corpus": "bundled outside corpus" if path is None else str(p),
        "corpus_sha256": io.sha256_file(p),
        "n_texts": len(texts),
    }


def transfer_run_labels(
    model: Any,
    root: str | Path,
    corpus: str | Path | None = None,
    permutations: int = 20,
    q: float = 0.05,
) -> Path | None:
    """Score the labels of the run (or checkpoint copy) at `root` on the outside corpus and
    rewrite its labels.json with labels that transfer (`transfer.annotate_labels`). None,
    with a message, where the corpus covers none of the run's concepts."""
    from emosae.data.outside import load_outside
    from emosae.steering.directions import reading_directions
    from emosae.validation.transfer import annotate_labels

    root = Path(root)
    dirs = reading_directions(root)
    lab = load_labelled(root)
    texts = [t for t in load_outside(corpus, min_texts=0) if t.concept in dirs]
    if lab is None or not texts:
        logger.info("labels that transfer: no outside texts of this run's concepts; skipped")
        return None
    concepts = list(dirs)
    idx = {c: i for i, c in enumerate(concepts)}
    _, f, _ = read_texts(model, [t.text for t in texts], dirs, lab, "labels on outside corpus")
    y = np.array([idx[t.concept] for t in texts])
    scored = score_labels(lab, concepts, f, y, permutations, q)
    files = LabelFiles(root) if LabelFiles(root).labels.exists() else RunLayout(root).labels
    return annotate_labels(files, scored, corpus_identity(corpus, texts))


def write_validation(files: ValidationFiles, res: dict[str, Any]) -> None:
    """validation.json and validation.md, in an emosae `validation` folder."""
    with folders.lock(files.dir):
        folders.claim(files.dir, "validation")
        io.write_json(files.json, res)
        io.write_text(files.markdown, markdown(res))
        folders.seal(files.dir, "validation")
    logger.info("validation written to %s", files.dir)
