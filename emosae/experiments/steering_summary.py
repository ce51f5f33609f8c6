"""The headline of a folder's calibrations: one row per calibrated vector (layer,
strength, held-out readout shift, success rate, valence shift, perplexity ratio, KL)
and the counts the targets are stated in, each with its interval. Reads the json
`save_calibrations` writes; draws nothing (the report's plot is
`emosae.pipeline.plots.steering_summary`).

The readout shift is the vector's own direction read back from the reply: not
independent of the vector, and labelled so. The judged table (`judged_markdown`) puts
beside it the judges no vector was fitted on (VADER, NRC, Warriner; see
emosae.experiments.judges), each as `SteeredReplies.judged` reports it: the shift at +r
against 0 and the success rate, where the held-out report carries a "judged" entry
(calibrations made before the judges existed show n/a)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def summary_rows(calibration: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """One row per vector of `kind` with a held-out report (others: strength None)."""
    rows = []
    for concept, c in sorted(calibration.get(kind, {}).items()):
        h = c.get("heldout") or {}
        ro, su, va = (h.get(k) or {} for k in ("readout_shift", "success", "valence_shift"))
        rows.append(
            {
                "concept": concept,
                "layer": c.get("layer"),
                "strength": c.get("recommended"),
                "readout_shift": ro.get("mean", math.nan),
                "readout_ci95": ro.get("ci95"),
                "success": su.get("rate", math.nan),
                "success_ci95": su.get("ci95"),
                "valence_shift": va.get("mean", math.nan),
                "valence_ci95": va.get("ci95"),
                "ppl_ratio": (h.get("ppl_ratio") or {}).get("+r", math.nan),
                "kl_per_token": (h.get("kl_per_token") or {}).get("+r", math.nan),
                "n_prompts": h.get("n_prompts", 0),
                "judged": h.get("judged"),
            }
        )
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts over vectors: calibrated (a strength within budget), readout shift in the
    steered direction with an interval above 0, success rate with a lower bound above
    one half; median perplexity ratio and per-token KL at the default strengths."""
    cal = [r for r in rows if r["strength"] is not None]

    def above(ci: Any, x: float) -> bool:
        return bool(ci) and ci[0] > x

    return {
        "vectors": len(rows),
        "calibrated": len(cal),
        "readout_up_ci_excludes_0": sum(above(r["readout_ci95"], 0) for r in cal),
        "success_ci_above_half": sum(above(r["success_ci95"], 0.5) for r in cal),
        "median_success": _median([r["success"] for r in cal]),
        "median_ppl_ratio": _median([r["ppl_ratio"] for r in cal]),
        "median_kl_per_token": _median([r["kl_per_token"] for r in cal]),
        "layers": {
            str(k): sum(r["layer"] == k for r in cal)
            for k in sorted({r["layer"] for r in cal}, key=str)
        },
    }


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if isinstance(x, int | float) and math.isfinite(x)]
    return float(np.median(xs)) if xs else math.nan


def _ci(mean: float, ci: Any, fmt: str = "+.2f") -> str:
    if not isinstance(mean, int | float) or not math.isfinite(mean):
        return "n/a"
    return f"{mean:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (intervals in brackets)."""
    out = [
        "| concept | layer | strength | own readout shift +r vs 0 (not independent) | success (own readout, not independent) | Warriner valence +r minus -r | ppl ratio | KL/token |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["strength"] is None:
            out.append(f"| {r['concept']} | {r['layer']} | none within budget | | | | | |")
            continue
        out.append(
            f"| {r['concept']} | {r['layer']} | {r['strength']:+.3g} | "
            f"{_ci(r['readout_shift'], r['readout_ci95'])} | {_ci(r['success'], r['success_ci95'], '.2f')} | "
            f"{_ci(r['valence_shift'], r['valence_ci95'])} | {r['ppl_ratio']:.2f} | {r['kl_per_token']:.3f} |"
        )
    return "\n".join(out)


JUDGE_COLUMNS = (
    ("vader", "VADER"),
    ("nrc", "NRC"),
    ("valence", "Warriner valence"),
    ("readout", "own readout (not independent)"),
)
"""The judged table's columns: `SteeredReplies.judged` keys and their headings."""


def _judged_cell(j: dict[str, Any] | None) -> str:
    """Direction, shift [CI] and success rate [Wilson CI] (k/n) of one judge."""
    if not j:
        return "n/a"
    sh, su = j["shift"], j["success"]
    arrow = {1: "up", -1: "down"}[j["direction"]]
    cat = f" {j['category']}" if j.get("category") else ""
    return (
        f"{arrow}{cat}: {_ci(sh['mean'], sh['ci95'], '+.2f')}; "
        f"{su['k']}/{su['n']} {_ci(su['rate'], su['ci95'], '.2f')}"
    )


def judged_markdown(rows: list[dict[str, Any]]) -> str:
    """Rows carrying `judged` (a `SteeredReplies.judged` dict) as a markdown table: per
    judge the expected direction, the shift at +r against 0 [bootstrap 95%] and the
    success rate k/n [Wilson 95%], a reply with distinct-2 ratio < 0.7 never a success;
    n/a where the concept expects no direction from that judge (or has no NRC category).
    Then the median distinct-2 ratio and the count of degenerate replies."""
    heads = " | ".join(h for _, h in JUDGE_COLUMNS)
    out = [
        f"| concept | strength | {heads} | distinct-2 ratio (degenerate) |",
        "|---|---|" + "---|" * (len(JUDGE_COLUMNS) + 1),
    ]
    for r in rows:
        j = r.get("judged")
        if not j:
            continue
        d2 = j["distinct2_ratio"]
        cells = " | ".join(_judged_cell(j.get(k)) for k, _ in JUDGE_COLUMNS)
        out.append(
            f"| {r['concept']} | {j['strength']:+.3g} | {cells} | "
            f"{d2['median']:.2f} ({d2['degenerate']}/{d2['n']}) |"
        )
    return "\n".join(out)


def _toward(j: dict[str, Any]) -> bool:
    """The judge's shift interval lies wholly on the concept's side of 0."""
    ci = j["shift"]["ci95"]
    return bool(ci) and (ci[0] > 0 if j["direction"] > 0 else ci[1] < 0)


def judged_headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per judge over the rows that carry it: how many vectors shift the judge the
    concept's way with a 95% interval excluding 0, and how many have a success rate whose
    Wilson interval lies above one half; and the median distinct-2 ratio."""
    judged = [r["judged"] for r in rows if r.get("judged")]
    out: dict[str, Any] = {"judged_vectors": len(judged)}
    for key, _ in JUDGE_COLUMNS:
        js = [j[key] for j in judged if key in j]
        out[key] = {
            "vectors": len(js),
            "shift_ci_excludes_0_concepts_way": sum(_toward(j) for j in js),
            "success_ci_above_half": sum(j["success"]["ci95"][0] > 0.5 for j in js),
        }
    out["median_distinct2_ratio"] = _median([j["distinct2_ratio"]["median"] for j in judged])
    return out
