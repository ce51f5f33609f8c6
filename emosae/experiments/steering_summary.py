"""The headline of a folder's calibrations: one row per calibrated vector (layer,
strength, held-out readout shift, success rate, valence shift, perplexity ratio, KL)
and the counts the targets are stated in, each with its interval. Reads the json
`save_calibrations` writes; draws nothing (the report's plot is
`emosae.pipeline.plots.steering_summary`)."""

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
        "| concept | layer | strength | readout shift +r vs 0 | success | valence +r minus -r | ppl ratio | KL/token |",
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
