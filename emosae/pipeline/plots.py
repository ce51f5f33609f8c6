"""The report's plots, one function each, drawn from whatever artifacts exist. Each
plot function takes the run layout and returns a figure, or None when its inputs are
missing; `draw_all` saves them as `report/<name>.png`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from emosae import data
from emosae.core import compat
from emosae.core.layout import RunLayout


def _load(p: Path) -> Any:
    """An artifact's json; None when missing or an experiment skipped for its concepts."""
    d = json.loads(p.read_text()) if p.exists() else None
    return None if isinstance(d, dict) and "skipped" in d else d


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def probe_accuracy_by_layer(L: RunLayout) -> Any:
    pr = _load(L.probes.results)
    if not pr:
        return None
    layers = [r["layer"] for r in pr["per_layer"]]
    fig, ax = _plt().subplots(figsize=(6, 3.6))
    for k, st in (("diffmean_top1", "-o"), ("logistic_top1", "-s"), ("diffmean_cluster", "--o")):
        ax.plot(layers, [r[k] for r in pr["per_layer"]], st, label=k.replace("_", " "))
    ax.axhline(pr["chance_top1"], color="grey", lw=0.8, ls=":", label="chance (top-1)")
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Emotion probes by layer (held-out topics)")
    ax.legend(fontsize=7)
    return fig


def _groups(pr: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Each concept's group, and the groups in order (0.1 results: the bundled clusters)."""
    if "concept_group" in pr:
        return pr["concept_group"], pr["groups"]
    return [e.cluster for e in data.load_emotions()], data.clusters()


def emotion_pca(L: RunLayout) -> Any:
    pr = _load(L.probes.results)
    if not pr:
        return None
    plt = _plt()
    g = pr["geometry_best_layer"]
    if g is None:  # a concept set without human norms
        return None
    sc = np.array(g["pc_scores"])
    cl, cls = _groups(pr)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(7, 5.5))
    ap = g["arousal_pc"] - 1
    for i, e in enumerate(compat.key(pr, "concepts", "emotions")):
        c = cmap(cls.index(cl[i]))
        ax.scatter(sc[i, 0], sc[i, ap], color=c, s=18)
        ax.annotate(e, (sc[i, 0], sc[i, ap]), fontsize=6, color=c)
    for j, c in enumerate(cls):
        ax.scatter([], [], color=cmap(j), label=c)
    ax.legend(fontsize=6, loc="best")
    ax.set_xlabel(f"PC1 (valence r = {g['pc1_valence_r']:.2f})")
    ax.set_ylabel(f"PC{g['arousal_pc']} (arousal |r| = {g['arousal_r']:.2f})")
    ax.set_title(f"Emotion vectors, layer {pr['best_layer']}, coloured by group")
    return fig


def cosine_heatmap(L: RunLayout) -> Any:
    pr = _load(L.probes.results)
    if not pr:
        return None
    emos = compat.key(pr, "concepts", "emotions")
    cl, cls = _groups(pr)
    cos = np.array(pr["cosine_best_layer"])
    order = np.argsort([cls.index(c) for c in cl], kind="stable")
    fig, ax = _plt().subplots(figsize=(7.5, 6.5))
    im = ax.imshow(cos[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(emos)), [emos[i] for i in order], rotation=90, fontsize=5)
    ax.set_yticks(range(len(emos)), [emos[i] for i in order], fontsize=5)
    fig.colorbar(im, ax=ax, shrink=0.7)
    ax.set_title("Cosine similarity of emotion vectors")
    return fig


def probe_vs_sae(L: RunLayout) -> Any:
    cmp_ = _load(L.compare.compare)
    if not cmp_:
        return None
    pe = compat.key(cmp_, "per_concept", "per_emotion")
    fig, ax = _plt().subplots(figsize=(9, 3.6))
    x = np.arange(len(pe))
    ax.bar(x - 0.2, [abs(p["best_cosine"]) for p in pe], 0.4, label="best |cos| with a decoder row")
    ax.bar(x + 0.2, [p["recon_k16"] for p in pe], 0.4, label="norm reconstructed by top-16 rows")
    ax.set_xticks(x, [compat.key(p, "concept", "emotion") for p in pe], rotation=90, fontsize=6)
    ax.legend(fontsize=7)
    ax.set_title("Probe vectors vs SAE decoder directions")
    return fig


def scenarios(L: RunLayout) -> Any:
    sc, pr = _load(L.experiments.result("scenarios")), _load(L.probes.results)
    if not (sc and pr):
        return None
    z = np.array(sc["matrix_z"])
    fig, ax = _plt().subplots(figsize=(9, 6))
    im = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
    labels = [f"{t}: {p[:30]}" for t, p in zip(sc["targets"], sc["prompts"], strict=True)]
    ax.set_yticks(range(len(z)), labels, fontsize=4)
    names = compat.key(pr, "concepts", "emotions")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
    fig.colorbar(im, ax=ax)
    ax.set_title("Scenario x emotion readout (z-scored per emotion)")
    return fig


def intensity(L: RunLayout) -> Any:
    it = _load(L.experiments.result("intensity"))
    if not it:
        return None
    fig, axes = _plt().subplots(1, len(it), figsize=(3.2 * len(it), 3))
    for ax, (tid, t) in zip(np.atleast_1d(axes), it.items(), strict=True):
        for e, ys in sorted(t["curves"].items()):
            ax.plot(t["values"], ys, "-o", ms=3, label=e)
        ax.set_xscale("log")
        ax.set_title(tid, fontsize=8)
        ax.legend(fontsize=6)
    return fig


def preferences(L: RunLayout) -> Any:
    pf, pr = _load(L.experiments.result("preferences")), _load(L.probes.results)
    if not (pf and pr):
        return None
    fig, axes = _plt().subplots(1, 2, figsize=(8, 3.4))
    axes[0].scatter(pf["elo_paper"], pf["elo"], s=10)
    axes[0].set_xlabel("Sonnet 4.5 Elo (paper)")
    axes[0].set_ylabel("SmolLM2 Elo (here)")
    axes[0].set_title(f"r = {pf['elo_vs_paper_r']:.2f}", fontsize=9)
    r = pf["readout_vs_elo_r"]
    top = sorted(r, key=r.get)
    sel = top[:5] + top[-5:]
    axes[1].barh(sel, [r[e] for e in sel])
    axes[1].set_title("readout vs own Elo, r (extremes)", fontsize=9)
    return fig


def steered_generation(L: RunLayout) -> Any:
    gen = _load(L.experiments.result("generation"))
    if not gen:
        return None
    fig, axes = _plt().subplots(1, 3, figsize=(11, 3.2))
    for emo, c in gen["curves"].items():
        for ax, k in zip(axes, ("valence", "readout", "perplexity"), strict=True):
            ax.plot(gen["strengths"], c[k], "-o", ms=3, label=emo)
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("relative strength")
    axes[0].legend(fontsize=6)
    return fig


def pressure(L: RunLayout) -> Any:
    ps = _load(L.experiments.result("pressure"))
    if not ps:
        return None
    fig, ax = _plt().subplots(figsize=(4.5, 3.2))
    for emo, r in ps["results"].items():
        ax.plot(r["strengths"], r["p_shortcut"], "-o", label=emo)
    ax.set_xlabel("relative strength")
    ax.set_ylabel("P(shortcut)")
    ax.legend()
    ax.set_title("Choice under pressure")
    return fig


def steering_calibration(L: RunLayout) -> Any:
    cal = _load(L.calibrate.calibration)
    curves = [(f"{k}:{e}", c) for k in ("probe", "sae") for e, c in (cal or {}).get(k, {}).items()]
    if not curves:
        return None
    fig, axes = _plt().subplots(1, 2, figsize=(10, 3.6))
    for name, c in curves:
        line = axes[0].plot(c["strengths"], c["readout"], "-o", ms=3, label=name)[0]
        axes[1].plot(c["strengths"], c["ppl_ratio"], "-o", ms=3, color=line.get_color())
        if c["recommended"] is not None:
            axes[0].axvline(c["recommended"], color=line.get_color(), ls=":", lw=0.8)
    axes[1].axhline(curves[0][1]["budget"], color="grey", ls="--", lw=0.8, label="budget")
    axes[0].set_title("effect: own readout of the reply (vs unsteered)", fontsize=9)
    axes[1].set_title("coherence: reply perplexity / unsteered", fontsize=9)
    for ax in axes:
        ax.set_xlabel("relative strength")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    return fig


def steering_summary_figure(cal: dict[str, Any], kind: str = "probe") -> Any:
    """Per calibrated vector, on held-out prompts: readout shift at +r with its interval,
    and success rate with its interval; the layer and strength in the labels."""
    from emosae.experiments.steering_summary import summary_rows

    rows = [r for r in summary_rows(cal, kind) if r["strength"] is not None]
    if not rows:
        return None
    rows.sort(key=lambda r: r["readout_shift"])
    y = np.arange(len(rows))
    fig, axes = _plt().subplots(1, 2, figsize=(10, 0.2 * len(rows) + 1.4), sharey=True)
    for ax, key, title, ref in (
        (axes[0], "readout", "readout shift, +r vs unsteered (z)", 0.0),
        (axes[1], "success", "success rate (+r reply reads higher)", 0.5),
    ):
        mean = np.array([r["readout_shift" if key == "readout" else "success"] for r in rows])
        ci = np.array([r[f"{key}_ci95"] or [m, m] for r, m in zip(rows, mean, strict=True)])
        ax.errorbar(mean, y, xerr=[mean - ci[:, 0], ci[:, 1] - mean], fmt="o", ms=3, lw=0.8)
        ax.axvline(ref, color="grey", ls="--", lw=0.8)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(
        y, [f"{r['concept']} L{r['layer']} {r['strength']:+.2g}" for r in rows], fontsize=6
    )
    fig.suptitle(
        f"{kind} vectors at their calibrated layer and strength, held-out prompts", fontsize=9
    )
    fig.tight_layout()
    return fig


def steering_summary(L: RunLayout) -> Any:
    cal = _load(L.calibrate.calibration)
    return steering_summary_figure(cal, "probe") if cal else None


def concept_traces(L: RunLayout) -> Any:
    tr = _load(L.experiments.result("traces"))
    if not tr:
        return None
    fig, axes = _plt().subplots(len(tr), 1, figsize=(10, 2.6 * len(tr)))
    for ax, (name, t) in zip(np.atleast_1d(axes), tr.items(), strict=True):
        sc = np.array(t["scores"])
        for c in t["top"][:4]:
            ax.plot(sc[:, t["concepts"].index(c)], lw=1, label=c)
        ax.axvline(t["read_from"], color="grey", ls=":", lw=0.8)
        ax.axhline(0, color="k", lw=0.4)
        ax.set_title(f"{name}: z vs neutral prompts; dotted: read position", fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    np.atleast_1d(axes)[-1].set_xlabel("token")
    return fig


PLOTS: tuple[Callable[[RunLayout], Any], ...] = (
    probe_accuracy_by_layer,
    emotion_pca,
    cosine_heatmap,
    probe_vs_sae,
    scenarios,
    intensity,
    preferences,
    steered_generation,
    steering_calibration,
    steering_summary,
    pressure,
    concept_traces,
)


def draw_all(L: RunLayout) -> list[Path]:
    """Draw every plot whose inputs exist into the report folder; returns the files."""
    plt = _plt()
    L.report.dir.mkdir(parents=True, exist_ok=True)
    made = []
    for plot in PLOTS:
        fig = plot(L)
        if fig is None:
            continue
        p = L.report.plot(plot.__name__)
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)
    return made
