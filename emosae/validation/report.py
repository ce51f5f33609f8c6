"""validation.md: the figures of `emosae validate` as tables, outside corpus first."""

from __future__ import annotations

from typing import Any


def _ci(x: list[float] | None) -> str:
    if not x or x[0] != x[0]:
        return "n/a"
    return f"{x[0]:.3f} [{x[1]:.3f}, {x[2]:.3f}]"


def readout_table(res: dict[str, Any]) -> list[str]:
    """One row per figure, a column per text set (outside corpus, bundled held-out)."""
    sets = [k for k in ("outside", "bundled_heldout") if k in res]
    names = {"outside": "outside corpus", "bundled_heldout": "bundled held-out stories"}
    head = ["figure", *(f"{names[k]} (n={res[k]['n_texts']})" for k in sets)]
    rows = [
        ("top-1 over concepts", "top1"),
        ("top-3 over concepts", "top3"),
        ("valence AUROC", "valence_auroc"),
        ("valence AUROC, short texts (n short)", "valence_auroc_short"),
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for what, key in rows:
        cells = []
        for k in sets:
            extra = f" ({res[k]['n_short']})" if key == "valence_auroc_short" else ""
            cells.append(_ci(res[k][key]) + extra)
        out.append(f"| {what} | " + " | ".join(cells) + " |")
    c = res["outside"]
    out.append(f"| chance top-1 / top-3 | {c['chance_top1']:.3f} / {c['chance_top3']:.3f} |")
    return out


def labels_table(lab: dict[str, Any]) -> list[str]:
    th, sc = lab["threshold"], lab["single_concept"]
    out = [
        f"Labels that transfer: outside AUROC >= {th['threshold']:.2f}, chosen at estimated "
        f"FDR {th['fdr']:.3f} (<= {th['q']}{'' if th['met'] else ', not met: the strictest'}; "
        f"{th['expected_false']:.1f} of {th['observed']} expected by chance).",
        "",
        f"- single-concept labels: {sc['n']}, transfer {sc['transfer']}, outside AUROC < 0.7: "
        f"{sc['below_0.7']}",
        f"- cluster and ambiguous labels (texts of any of their concepts): "
        f"{lab.get('shared', {}).get('n', 0)}, at or above the threshold "
        f"{lab.get('shared', {}).get('transfer', 0)}",
        f"- mean outside AUROC of each concept's best feature: {_ci(lab['best_mean_auroc'])}; "
        f"of those the rule chose without the corpus's help (not re-picked): "
        f"{_ci(lab.get('best_mean_auroc_not_repicked'))}",
        f"- corpus-specific (pass on the stories, not on the corpus): "
        f"{', '.join(sc['corpus_specific']) or 'none'}",
        "",
        "| concept | best feature | kind | bundled held-out AUROC | outside AUROC | transfers |",
        "|---|---|---|---|---|---|",
    ]
    for c, r in lab["best_per_concept"].items():
        out.append(
            f"| {c} | {r['feature']} | {r['kind']}{' (re-picked)' if r.get('repicked') else ''} "
            f"| {r['heldout_auroc']:.3f} | "
            f"{_ci(r['outside_auroc'])} | {'yes' if r['transfers'] else 'no'} |"
        )
    return out


def markdown(res: dict[str, Any]) -> str:
    if "skipped" in res:
        return f"# Validation on text emosae was not built from\n\nSkipped: {res['skipped']}.\n"
    lines = [
        "# Validation on text emosae was not built from",
        "",
        f"Directions: `{res['directions']}`; {len(res['concepts'])} concepts; 95% bootstrap "
        "intervals over texts.",
        "",
        *readout_table(res),
        "",
        "Top-3 by register (outside corpus): "
        + ", ".join(f"{r} {_ci(v)}" for r, v in res["outside"]["registers"].items()),
        "",
    ]
    if "labels" in res:
        lines += ["## SAE labels", "", *labels_table(res["labels"]), ""]
    return "\n".join(lines)
