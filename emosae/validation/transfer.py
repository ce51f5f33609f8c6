"""Labels that transfer: a feature keeps its concept label's trust only if it also
separates that concept on the outside corpus.

`transfer_labels` is pure: given labels.json and the per-feature outside AUROCs that
`run.score_labels` measured, it records on every single-concept label and every best
feature its outside AUROC (with interval) and whether it reaches the threshold chosen at
an estimated FDR <= q against shuffles of the corpus's concepts, and re-picks each
concept's best feature: the rule's choice where it transfers, else the concept-only
feature that transfers with the highest *training* AUROC (the rule's own criterion: the
outside corpus only gates, so the outside AUROC of a re-picked feature is optimistic by
that gate alone, not by a choice of the best), else the rule's choice, marked
`transfers: false` (its entry keeps the rule's kind, so the vector it steers with and its
calibration stay the same). A concept label that fails the corpus loses it: its feature's
kind becomes "corpus-specific" (counted as such; `concepts_with_label` counts only labels
that transfer). `annotate_labels` applies it to a label folder the caller may write.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from emosae.core import folders, io
from emosae.core.errors import EmosaeError
from emosae.core.layout import LabelFiles
from emosae.core.log import logger

SHARED_KINDS = ("cluster", "ambiguous")
"""Labels that stand for several concepts: scored on texts of any of them, never demoted."""
CORPUS_SPECIFIC = "corpus-specific"
"""The kind a single-concept label becomes when it fails the outside corpus."""

SCORE_KEYS = (
    "train_auroc",
    "train_dprime",
    "train_freq_in",
    "train_freq_out",
    "heldout_auroc",
    "heldout_dprime",
    "heldout_freq_in",
    "heldout_freq_out",
)


def _best_entry(feat: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """best_per_concept's entry for a concept-only feature (its scores are the concept's)."""
    return {
        "feature": int(feat["feature"]),
        "passes": True,
        "kind": "concept",
        "heldout_rank": feat["heldout_rank"],
        **{k: feat[k] for k in SCORE_KEYS if k in feat},
        "rule_feature": old["feature"],
    }


def transfer_labels(
    labels: dict[str, Any], scored: dict[str, Any], corpus: dict[str, Any]
) -> dict[str, Any]:
    """A copy of `labels` with outside AUROCs, `transfers` flags, the transfer summary,
    and best features that transfer where a concept has one (see the module doc)."""
    out = untransfer(labels)
    rule_best = copy.deepcopy(out["best_per_concept"])
    by = {(r["feature"], r["concept"]): r for r in scored["features"]}
    feats = out["features"]
    for f in feats.values():
        name = f["label"] if f.get("kind") == "concept" else "+".join(f.get("concepts", []))
        r = by.get((int(f["feature"]), name)) if f.get("kind") != CORPUS_SPECIFIC else None
        if r is not None:
            f["outside_auroc"], f["transfers"] = r["outside_auroc"], r["transfers"]
    repicked = []
    for c, b in out["best_per_concept"].items():
        r = by.get((int(b["feature"]), c))
        if r is not None and r["transfers"]:
            b["outside_auroc"], b["transfers"] = r["outside_auroc"], True
            continue
        pool = [
            f
            for f in feats.values()
            if f.get("kind") == "concept" and f["label"] == c and f.get("transfers")
        ]
        if pool:
            new = max(pool, key=lambda f: f["train_auroc"])
            entry = _best_entry(new, b)
            entry["outside_auroc"], entry["transfers"] = new["outside_auroc"], True
            out["best_per_concept"][c] = entry
            repicked.append(c)
        else:
            b["outside_auroc"] = r["outside_auroc"] if r else None
            b["transfers"] = False
    singles = [f for f in feats.values() if "transfers" in f and f.get("kind") == "concept"]
    shared = [f for f in feats.values() if "transfers" in f and f.get("kind") in SHARED_KINDS]
    for f in singles:  # a concept label that fails the corpus is kept as corpus-specific
        if not f["transfers"]:
            f["kind"], f["label"] = CORPUS_SPECIFIC, f"{CORPUS_SPECIFIC}: {f['label']}"
            out["counts"]["concept"] -= 1
            out["counts"][CORPUS_SPECIFIC] = out["counts"].get(CORPUS_SPECIFIC, 0) + 1
    out["concepts_with_label"] = sorted(
        {f["label"] for f in feats.values() if f.get("kind") == "concept"}
    )
    out["transfer"] = {
        **corpus,
        "threshold": scored["threshold"],
        "single_concept_labels": len(singles),
        "transfer": sum(f["transfers"] for f in singles),
        "corpus_specific": sorted(int(f["feature"]) for f in singles if not f["transfers"]),
        "best_transfers": sum(b["transfers"] for b in out["best_per_concept"].values()),
        "shared_labels": len(shared),
        "shared_transfer": sum(f["transfers"] for f in shared),
        "repicked": sorted(repicked),
        "rule_best_per_concept": rule_best,
    }
    return out


def untransfer(labels: dict[str, Any]) -> dict[str, Any]:
    """A copy of `labels` as the label rule wrote it, before any outside corpus: demoted
    labels restored, outside figures dropped, the rule's best features back (so labels
    can be checked again on another corpus)."""
    out = copy.deepcopy(labels)
    t = out.pop("transfer", None)
    if t is None:
        return out
    if "rule_best_per_concept" not in t:
        raise EmosaeError(
            "these labels were checked on an outside corpus by an older emosae; label again"
        )
    for f in out["features"].values():
        f.pop("outside_auroc", None)
        if f.pop("transfers", None) is False and f.get("kind") == CORPUS_SPECIFIC:
            f["kind"], f["label"] = "concept", f["concepts"][0]
            out["counts"]["concept"] += 1
            out["counts"][CORPUS_SPECIFIC] -= 1
    if not out["counts"].get(CORPUS_SPECIFIC):
        out["counts"].pop(CORPUS_SPECIFIC, None)
    out["best_per_concept"] = t["rule_best_per_concept"]
    out["concepts_with_label"] = sorted(
        {f["label"] for f in out["features"].values() if f.get("kind") == "concept"}
    )
    return out


def annotate_labels(lab: LabelFiles, scored: dict[str, Any], corpus: dict[str, Any]) -> Path:
    """Rewrite `lab`'s labels.json with `transfer_labels` (atomically) and reseal the
    folder. The caller owns the folder (a run's labels stage, `emosae labels`, or the
    maintainer's checkpoint tool); user commands never write a shipped checkpoint."""
    from emosae.features.labels import load_labels

    new = transfer_labels(load_labels(lab.labels), scored, corpus)
    with folders.lock(lab.dir):
        io.write_json(lab.labels, new)
        folders.seal(lab.dir, "labels")
    t = new["transfer"]
    logger.info(
        "labels that transfer: %d of %d single-concept labels (outside AUROC >= %.2f); "
        "%d of %d best features; re-picked %s",
        t["transfer"],
        t["single_concept_labels"],
        t["threshold"]["threshold"],
        t["best_transfers"],
        len(new["best_per_concept"]),
        ", ".join(t["repicked"]) or "none",
    )
    return lab.labels
