"""The headline table (what, paper, here, command) as data: one `Row` spec per line of
the table, each naming the artifact it reads and how it formats the number. A row whose
artifact is missing (its stage has not run) is left out; a spec with `each` expands into
one row per item (per steered vector, per emotion)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emosae.core.layout import RunLayout
from emosae.features.labels import upgrade_labels

PAPER = {
    "pc1_valence_r": "0.81",
    "arousal_r": "0.66",
    "blissful_elo_r": "0.71",
    "hostile_elo_r": "-0.74",
}
COMMAND = "emosae run"


def fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def fmt_ci(x: Any, ci: list[float] | None, nd: int = 2) -> str:
    """A number with its bootstrap 95% interval, when there is one."""
    if ci is None or x is None:
        return fmt(x, nd)
    return f"{fmt(x, nd)} [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


@dataclass(frozen=True)
class Row:
    """One line of the headline table (or one per item of `each`)."""

    source: Callable[[RunLayout], Path]
    """The artifact the row reads."""
    what: Callable[[Any], str] | str
    paper: str
    here: Callable[[Any], str]
    each: Callable[[dict], list[Any]] | None = None
    """Expand into one row per item; `what` and `here` then take (artifact, item)."""
    when: Callable[[dict], bool] = lambda a: True


def _calibrated(c: dict) -> str:
    r = c["recommended"]
    if r is None:
        return "none within budget"
    return f"{r:+g} (readout {c['readout'][c['strengths'].index(r)]:+.2f})"


def _best(pr: dict) -> dict:
    return next(r for r in pr["per_layer"] if r["layer"] == pr["best_layer"])


def _geo(pr: dict, key: str) -> str:
    g = pr["geometry_best_layer"]
    return fmt_ci(g.get(key), g.get(f"{key}_ci95"))


def _sae(L: RunLayout) -> Path:
    return L.sae.metrics


def _pr(L: RunLayout) -> Path:
    return L.probes.results


def _ex(name: str) -> Callable[[RunLayout], Path]:
    return lambda L: L.experiments.result(name)


ROWS: tuple[Row, ...] = (
    Row(
        _sae,
        "SAE explained variance (held-out tokens)",
        "no SAE",
        lambda a: fmt(a["explained_variance"]),
    ),
    Row(_sae, "SAE L0", "no SAE", lambda a: fmt(a["l0"], 1)),
    Row(_sae, "SAE dead features", "no SAE", lambda a: fmt(a["dead_fraction"], 3)),
    Row(_sae, "SAE CE-loss recovered", "no SAE", lambda a: fmt(a.get("ce_loss_recovered"))),
    Row(
        _pr,
        lambda a: (
            f"held-out top-1 accuracy [bootstrap 95% CI], diff-of-means (layer {a['best_layer']}, chance {a['chance_top1']:.3f})"
        ),
        "n/a",
        lambda a: fmt_ci(_best(a)["diffmean_top1"], _best(a).get("diffmean_top1_ci95")),
    ),
    Row(
        _pr,
        "held-out top-1 accuracy, logistic probe (same layer)",
        "n/a",
        lambda a: fmt_ci(_best(a)["logistic_top1"], _best(a).get("logistic_top1_ci95")),
    ),
    Row(
        _pr,
        "held-out cluster accuracy, diff-of-means",
        "n/a",
        lambda a: fmt(_best(a)["diffmean_cluster"]),
    ),
    Row(
        _pr,
        "PC1 of emotion vectors vs human valence, Pearson r",
        PAPER["pc1_valence_r"],
        lambda a: _geo(a, "pc1_valence_r"),
        when=lambda a: a.get("geometry_best_layer") is not None,
    ),
    Row(
        _pr,
        lambda a: f"PC{a['geometry_best_layer']['arousal_pc']} vs human arousal, abs(r)",
        PAPER["arousal_r"] + " (PC2)",
        lambda a: _geo(a, "arousal_r"),
        when=lambda a: a.get("geometry_best_layer") is not None,
    ),
    Row(
        _pr,
        lambda a: (
            f"best of PC1-3 vs human valence (here PC{a['geometry_best_layer'].get('valence_best_pc', 1)}), abs(r)"
        ),
        "0.81 (PC1)",
        lambda a: _geo(a, "valence_best_r"),
        when=lambda a: a.get("geometry_best_layer") is not None,
    ),
    Row(
        _pr,
        lambda a: f"k-means ({len(a.get('groups', range(10)))}) vs the concept groups, ARI",
        "n/a",
        lambda a: fmt(a["cluster_recovery_best_layer"]["kmeans_ari"]),
        when=lambda a: a.get("cluster_recovery_best_layer") is not None,
    ),
    Row(
        lambda L: L.labels.labels,
        "SAE features labelled concept / cluster / ambiguous",
        "no SAE",
        lambda a: (
            f"{a['counts']['concept']} / {a['counts']['cluster']} / {a['counts']['ambiguous']} (of {a['d_sae']})"
        ),
    ),
    Row(
        lambda L: L.labels.labels,
        lambda a: f"concepts with a labelled feature (of {len(a['best_per_concept'])})",
        "no SAE",
        lambda a: str(len(a["concepts_with_label"])),
    ),
    Row(
        lambda L: L.labels.labels,
        lambda a: (
            f"label false-discovery rate ({a['null']['permutations']} label shuffles): "
            "expected false / observed labelled features"
        ),
        "no SAE",
        lambda a: "{:.3f} ({:.1f} / {})".format(
            a["null"]["fdr"],
            a["null"]["expected_false_labels"],
            a["null"]["observed_labelled_features"],
        ),
        when=lambda a: "null" in a,
    ),
    Row(
        lambda L: L.compare.compare,
        "probe vs SAE: mean best abs(cosine) with a decoder direction",
        "no SAE",
        lambda a: fmt(a["summary"]["mean_best_cosine"]),
    ),
    Row(
        lambda L: L.compare.compare,
        "probe norm reconstructed by top-1 / 4 / 16 decoder directions",
        "no SAE",
        lambda a: "{mean_recon_k1:.2f} / {mean_recon_k4:.2f} / {mean_recon_k16:.2f}".format(
            **a["summary"]
        ),
    ),
    Row(
        _ex("scenarios"),
        lambda a: (
            f"implicit scenarios: intended emotion top-1 / top-3 (n={a['n']}, chance {a['chance_top1']:.2f})"
        ),
        "qualitative match",
        lambda a: f"{a['top1']:.2f} / {a['top3']:.2f}",
    ),
    Row(
        _ex("intensity"),
        "Tylenol dose: Spearman rho of afraid / calm",
        "afraid rises, calm falls",
        lambda a: "{} / {}".format(
            *(fmt(a["tylenol_dose"]["spearman"].get(e)) for e in ("afraid", "calm"))
        ),
        when=lambda a: "tylenol_dose" in a,
    ),
    Row(
        _ex("preferences"),
        "blissful readout on activity vs the model's own Elo, r",
        PAPER["blissful_elo_r"],
        lambda a: fmt(a["readout_vs_elo_r"].get("blissful")),
    ),
    Row(
        _ex("preferences"),
        "hostile readout on activity vs the model's own Elo, r",
        PAPER["hostile_elo_r"],
        lambda a: fmt(a["readout_vs_elo_r"].get("hostile")),
    ),
    Row(
        _ex("preferences"),
        "the model's Elo vs Sonnet 4.5's Elo (paper), r",
        "n/a",
        lambda a: fmt(a["elo_vs_paper_r"]),
    ),
    Row(
        _ex("preferences"),
        lambda a, name: (
            f"Elo shift of steered activities, {name} (strength {a['steering']['strength']})"
        ),
        "blissful raises, hostile lowers",
        lambda a, name: fmt(a["steering"]["shifts"][name]["mean_elo_shift_steered"], 1),
        each=lambda a: list(a["steering"]["shifts"]),
    ),
    Row(
        _ex("generation"),
        lambda a, emo: (
            f"steered text valence at strength {a['strengths'][0]:+g} -> {a['strengths'][-1]:+g}, {emo}"
        ),
        "n/a (Warriner-scored)",
        lambda a, emo: "{:.2f} -> {:.2f}".format(
            a["curves"][emo]["valence"][0], a["curves"][emo]["valence"][-1]
        ),
        each=lambda a: list(a["curves"]),
    ),
    Row(
        lambda L: L.calibrate.calibration,
        lambda a, ke: (
            "calibrated strength (reply perplexity <= {}x), {}:{}; readout shift there".format(
                a[ke[0]][ke[1]]["budget"], *ke
            )
        ),
        "n/a",
        lambda a, ke: _calibrated(a[ke[0]][ke[1]]),
        each=lambda a: [(k, e) for k in ("probe", "sae") for e in a.get(k, {})],
    ),
    Row(
        _ex("generation"),
        lambda a, emo: f"steered text valence at calibrated strength -r -> +r, {emo}",
        "n/a (Warriner-scored)",
        lambda a, emo: (
            "{valence_minus:.2f} -> {valence_plus:.2f} (r = {strength:g}); +r - -r {d}".format(
                **a["calibrated"][emo],
                d=fmt_ci(
                    a["calibrated"][emo]["difference"], a["calibrated"][emo].get("difference_ci95")
                ),
            )
        ),
        each=lambda a: list(a.get("calibrated", {})),
    ),
    Row(
        _ex("pressure"),
        lambda a, emo: "P(shortcut) at strength {:+g} -> {:+g}, {}".format(
            a["results"][emo]["strengths"][0], a["results"][emo]["strengths"][-1], emo
        ),
        "desperate raises, calm lowers",
        lambda a, emo: "{:.2f} -> {:.2f}".format(
            a["results"][emo]["p_shortcut"][0], a["results"][emo]["p_shortcut"][-1]
        ),
        each=lambda a: list(a["results"]),
    ),
)


def _render(spec: Row, art: dict, *item: Any) -> dict[str, str]:
    what = spec.what(art, *item) if callable(spec.what) else spec.what
    return {"what": what, "paper": spec.paper, "here": spec.here(art, *item), "command": COMMAND}


def headline_rows(layout: RunLayout | str | Path) -> list[dict[str, str]]:
    """(what, paper, here, command) rows from whatever stages have finished."""
    import json

    layout = layout if isinstance(layout, RunLayout) else RunLayout(layout)
    rows, cache = [], {}
    for spec in ROWS:
        path = spec.source(layout)
        if path not in cache:
            cache[path] = json.loads(path.read_text()) if path.exists() else None
            if cache[path] and path == layout.labels.labels:
                cache[path] = upgrade_labels(cache[path])  # a run labelled by emosae 0.1
        art = cache[path]
        if not art or "skipped" in art or not spec.when(art):
            continue
        items = spec.each(art) if spec.each else [None]
        rows += [_render(spec, art, *([] if spec.each is None else [i])) for i in items]
    return rows
