"""Report: plots (PNG), tables (JSON) and one static HTML page per run, and the same
tables and plots logged to wandb (offline by default) for browsing features."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from emosae import data

PAPER = {
    "pc1_valence_r": "0.81",
    "arousal_r": "0.66",
    "blissful_elo_r": "0.71",
    "hostile_elo_r": "-0.74",
}


def _load(p: Path) -> Any:
    return json.loads(p.read_text()) if p.exists() else None


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def headline_rows(out: Path) -> list[dict[str, str]]:
    """(what, paper, here, command) rows from whatever stages have finished."""
    out = Path(out)
    rows: list[dict[str, str]] = []
    cmd = "emosae run"
    sae = _load(out / "sae" / "metrics.json")
    if sae:
        rows += [
            {
                "what": "SAE explained variance (held-out tokens)",
                "paper": "no SAE",
                "here": _fmt(sae["explained_variance"]),
            },
            {"what": "SAE L0", "paper": "no SAE", "here": _fmt(sae["l0"], 1)},
            {"what": "SAE dead features", "paper": "no SAE", "here": _fmt(sae["dead_fraction"], 3)},
            {
                "what": "SAE CE-loss recovered",
                "paper": "no SAE",
                "here": _fmt(sae.get("ce_loss_recovered")),
            },
        ]
    pr = _load(out / "probes" / "results.json")
    if pr:
        best = next(r for r in pr["per_layer"] if r["layer"] == pr["best_layer"])
        g = pr["geometry_best_layer"]
        rows += [
            {
                "what": f"held-out top-1 accuracy, diff-of-means (layer {pr['best_layer']}, chance {pr['chance_top1']:.3f})",
                "paper": "n/a",
                "here": _fmt(best["diffmean_top1"]),
            },
            {
                "what": "held-out top-1 accuracy, logistic probe (same layer)",
                "paper": "n/a",
                "here": _fmt(best["logistic_top1"]),
            },
            {
                "what": "held-out cluster accuracy, diff-of-means",
                "paper": "n/a",
                "here": _fmt(best["diffmean_cluster"]),
            },
            {
                "what": "PC1 of emotion vectors vs human valence, Pearson r",
                "paper": PAPER["pc1_valence_r"],
                "here": _fmt(g["pc1_valence_r"]),
            },
            {
                "what": f"PC{g['arousal_pc']} vs human arousal, abs(r)",
                "paper": PAPER["arousal_r"] + " (PC2)",
                "here": _fmt(g["arousal_r"]),
            },
            {
                "what": f"best of PC1-3 vs human valence (here PC{g.get('valence_best_pc', 1)}), abs(r)",
                "paper": "0.81 (PC1)",
                "here": _fmt(g.get("valence_best_r")),
            },
            {
                "what": "k-means (10) vs the paper's clusters, ARI",
                "paper": "n/a",
                "here": _fmt(pr["cluster_recovery_best_layer"]["kmeans_ari"]),
            },
        ]
    lab = _load(out / "labels" / "labels.json")
    if lab:
        c = lab["counts"]
        rows.append(
            {
                "what": "SAE features labelled emotion / cluster / ambiguous",
                "paper": "no SAE",
                "here": f"{c['emotion']} / {c['cluster']} / {c['ambiguous']} (of {lab['d_sae']})",
            }
        )
    cmp_ = _load(out / "compare" / "compare.json")
    if cmp_:
        s = cmp_["summary"]
        rows.append(
            {
                "what": "probe vs SAE: mean best abs(cosine) with a decoder direction",
                "paper": "no SAE",
                "here": _fmt(s["mean_best_cosine"]),
            }
        )
        rows.append(
            {
                "what": "probe norm reconstructed by top-1 / 4 / 16 decoder directions",
                "paper": "no SAE",
                "here": f"{s['mean_recon_k1']:.2f} / {s['mean_recon_k4']:.2f} / {s['mean_recon_k16']:.2f}",
            }
        )
    ex = out / "experiments"
    sc = _load(ex / "scenarios.json")
    if sc:
        rows.append(
            {
                "what": f"implicit scenarios: intended emotion top-1 / top-3 (n={sc['n']}, chance {sc['chance_top1']:.2f})",
                "paper": "qualitative match",
                "here": f"{sc['top1']:.2f} / {sc['top3']:.2f}",
            }
        )
    it = _load(ex / "intensity.json")
    if it and "tylenol_dose" in it:
        t = it["tylenol_dose"]["spearman"]
        rows.append(
            {
                "what": "Tylenol dose: Spearman rho of afraid / calm",
                "paper": "afraid rises, calm falls",
                "here": f"{_fmt(t.get('afraid'))} / {_fmt(t.get('calm'))}",
            }
        )
    pf = _load(ex / "preferences.json")
    if pf:
        rows += [
            {
                "what": "blissful readout on activity vs the model's own Elo, r",
                "paper": PAPER["blissful_elo_r"],
                "here": _fmt(pf["readout_vs_elo_r"].get("blissful")),
            },
            {
                "what": "hostile readout on activity vs the model's own Elo, r",
                "paper": PAPER["hostile_elo_r"],
                "here": _fmt(pf["readout_vs_elo_r"].get("hostile")),
            },
            {
                "what": "the model's Elo vs Sonnet 4.5's Elo (paper), r",
                "paper": "n/a",
                "here": _fmt(pf["elo_vs_paper_r"]),
            },
        ]
        for name, sh in pf["steering"]["shifts"].items():
            rows.append(
                {
                    "what": f"Elo shift of steered activities, {name} (strength {pf['steering']['strength']})",
                    "paper": "blissful raises, hostile lowers",
                    "here": _fmt(sh["mean_elo_shift_steered"], 1),
                }
            )
    gen = _load(ex / "generation.json")
    if gen:
        for emo, c in gen["curves"].items():
            rows.append(
                {
                    "what": f"steered text valence at strength {gen['strengths'][0]:+g} -> {gen['strengths'][-1]:+g}, {emo}",
                    "paper": "n/a (Warriner-scored)",
                    "here": f"{c['valence'][0]:.2f} -> {c['valence'][-1]:.2f}",
                }
            )
    ps = _load(ex / "pressure.json")
    if ps:
        for emo, r in ps["results"].items():
            rows.append(
                {
                    "what": f"P(shortcut) at strength {r['strengths'][0]:+g} -> {r['strengths'][-1]:+g}, {emo}",
                    "paper": "desperate raises, calm lowers",
                    "here": f"{r['p_shortcut'][0]:.2f} -> {r['p_shortcut'][-1]:.2f}",
                }
            )
    for r in rows:
        r["command"] = cmd
    return rows


def _plots(out: Path, fig_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    made = []

    def save(fig, name):
        p = fig_dir / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(p)

    pr = _load(out / "probes" / "results.json")
    if pr:
        L = [r["layer"] for r in pr["per_layer"]]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for k, st in (
            ("diffmean_top1", "-o"),
            ("logistic_top1", "-s"),
            ("diffmean_cluster", "--o"),
        ):
            ax.plot(L, [r[k] for r in pr["per_layer"]], st, label=k.replace("_", " "))
        ax.axhline(pr["chance_top1"], color="grey", lw=0.8, ls=":", label="chance (top-1)")
        ax.set_xlabel("layer")
        ax.set_ylabel("held-out accuracy")
        ax.set_title("Emotion probes by layer (held-out topics)")
        ax.legend(fontsize=7)
        save(fig, "probe_accuracy_by_layer.png")
        g = pr["geometry_best_layer"]
        sc = np.array(g["pc_scores"])
        emos = [e for e in pr["emotions"]]
        cl = [e.cluster for e in data.load_emotions()]
        cls = data.clusters()
        cmap = plt.get_cmap("tab10")
        fig, ax = plt.subplots(figsize=(7, 5.5))
        ap = g["arousal_pc"] - 1
        for i, e in enumerate(emos):
            c = cmap(cls.index(cl[i]))
            ax.scatter(sc[i, 0], sc[i, ap], color=c, s=18)
            ax.annotate(e, (sc[i, 0], sc[i, ap]), fontsize=6, color=c)
        for j, c in enumerate(cls):
            ax.scatter([], [], color=cmap(j), label=c)
        ax.legend(fontsize=6, loc="best")
        ax.set_xlabel(f"PC1 (valence r = {g['pc1_valence_r']:.2f})")
        ax.set_ylabel(f"PC{g['arousal_pc']} (arousal |r| = {g['arousal_r']:.2f})")
        ax.set_title(f"Emotion vectors, layer {pr['best_layer']}, coloured by the paper's clusters")
        save(fig, "emotion_pca.png")
        cos = np.array(pr["cosine_best_layer"])
        order = np.argsort([cls.index(c) for c in cl], kind="stable")
        fig, ax = plt.subplots(figsize=(7.5, 6.5))
        im = ax.imshow(cos[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(emos)), [emos[i] for i in order], rotation=90, fontsize=5)
        ax.set_yticks(range(len(emos)), [emos[i] for i in order], fontsize=5)
        fig.colorbar(im, ax=ax, shrink=0.7)
        ax.set_title("Cosine similarity of emotion vectors")
        save(fig, "cosine_heatmap.png")
    cmp_ = _load(out / "compare" / "compare.json")
    if cmp_:
        pe = cmp_["per_emotion"]
        fig, ax = plt.subplots(figsize=(9, 3.6))
        x = np.arange(len(pe))
        ax.bar(
            x - 0.2, [abs(p["best_cosine"]) for p in pe], 0.4, label="best |cos| with a decoder row"
        )
        ax.bar(
            x + 0.2, [p["recon_k16"] for p in pe], 0.4, label="norm reconstructed by top-16 rows"
        )
        ax.set_xticks(x, [p["emotion"] for p in pe], rotation=90, fontsize=6)
        ax.legend(fontsize=7)
        ax.set_title("Probe vectors vs SAE decoder directions")
        save(fig, "probe_vs_sae.png")
    ex = out / "experiments"
    sc_ = _load(ex / "scenarios.json")
    if sc_ and pr:
        z = np.array(sc_["matrix_z"])
        fig, ax = plt.subplots(figsize=(9, 6))
        im = ax.imshow(z, aspect="auto", cmap="RdBu_r", vmin=-3, vmax=3)
        ax.set_yticks(
            range(len(z)),
            [f"{t}: {p[:30]}" for t, p in zip(sc_["targets"], sc_["prompts"], strict=True)],
            fontsize=4,
        )
        ax.set_xticks(range(len(pr["emotions"])), pr["emotions"], rotation=90, fontsize=5)
        fig.colorbar(im, ax=ax)
        ax.set_title("Scenario x emotion readout (z-scored per emotion)")
        save(fig, "scenarios.png")
    it = _load(ex / "intensity.json")
    if it:
        n = len(it)
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3))
        for ax, (tid, t) in zip(np.atleast_1d(axes), it.items(), strict=True):
            for e, ys in sorted(t["curves"].items()):
                ax.plot(t["values"], ys, "-o", ms=3, label=e)
            ax.set_xscale("log")
            ax.set_title(tid, fontsize=8)
            ax.legend(fontsize=6)
        save(fig, "intensity.png")
    pf = _load(ex / "preferences.json")
    if pf and pr:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
        # readout per activity is not stored per emotion; plot Elo ours vs paper and category means
        axes[0].scatter(pf["elo_paper"], pf["elo"], s=10)
        axes[0].set_xlabel("Sonnet 4.5 Elo (paper)")
        axes[0].set_ylabel("SmolLM2 Elo (here)")
        axes[0].set_title(f"r = {pf['elo_vs_paper_r']:.2f}", fontsize=9)
        r = pf["readout_vs_elo_r"]
        top = sorted(r, key=r.get)
        sel = top[:5] + top[-5:]
        axes[1].barh(sel, [r[e] for e in sel])
        axes[1].set_title("readout vs own Elo, r (extremes)", fontsize=9)
        save(fig, "preferences.png")
    gen = _load(ex / "generation.json")
    if gen:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for emo, c in gen["curves"].items():
            for ax, k in zip(axes, ("valence", "readout", "perplexity"), strict=True):
                ax.plot(gen["strengths"], c[k], "-o", ms=3, label=emo)
                ax.set_title(k, fontsize=9)
                ax.set_xlabel("relative strength")
        axes[0].legend(fontsize=6)
        save(fig, "steered_generation.png")
    ps = _load(ex / "pressure.json")
    if ps:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for emo, r in ps["results"].items():
            ax.plot(r["strengths"], r["p_shortcut"], "-o", label=emo)
        ax.set_xlabel("relative strength")
        ax.set_ylabel("P(shortcut)")
        ax.legend()
        ax.set_title("Choice under pressure")
        save(fig, "pressure.png")
    return made


def _feature_html(lab: dict[str, Any], limit: int = 60) -> str:
    rows = []
    feats = sorted(lab["features"].values(), key=lambda f: -f["heldout_auroc"])[:limit]
    for f in feats:
        ctx = "<br>".join(
            f"<span class=src>{html.escape(c['source'])}</span> {html.escape(c['before'])}<mark>{html.escape(c['token'])}</mark>{html.escape(c['after'])}"
            for c in (f.get("top_story_contexts", [])[:3] + f.get("top_contexts", [])[:3])
        )
        ll = html.escape(" ".join(f.get("logit_lens", {}).get("top", [])))
        rows.append(
            f"<tr><td>{f['feature']}</td><td>{html.escape(f['label'])} ({f['kind']})</td>"
            f"<td>{f['heldout_auroc']:.2f}</td><td>{f['heldout_dprime']:.2f}</td><td>{f.get('density', 0):.3f}</td>"
            f"<td class=ctx>{ctx}</td><td>{ll}</td></tr>"
        )
    return (
        "<table><tr><th>feature</th><th>label</th><th>held-out AUROC</th><th>d'</th><th>density</th>"
        "<th>top contexts (stories, then general text)</th><th>logit lens</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def write_report(out: Path, cfg: Any = None) -> list[Path]:
    out = Path(out)
    rep = out / "report"
    figs = _plots(out, rep)
    rows = headline_rows(out)
    (rep / "headline.json").write_text(json.dumps(rows, indent=1))
    table = "".join(
        f"<tr><td>{html.escape(r['what'])}</td><td>{html.escape(r['paper'])}</td><td><b>{html.escape(r['here'])}</b></td>"
        f"<td><code>{html.escape(r['command'])}</code></td></tr>"
        for r in rows
    )
    lab = _load(out / "labels" / "labels.json")
    best = ""
    if lab:
        best = "".join(
            f"<tr><td>{e}</td><td>{b['feature']}</td><td>{b['train_auroc']:.2f}</td><td>{b['heldout_auroc']:.2f}</td><td>{'yes' if b['passes'] else 'no'}</td></tr>"
            for e, b in lab["best_per_emotion"].items()
        )
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>emosae report: {html.escape(str(out))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}} td,th{{border-bottom:1px solid #ddd;padding:3px 6px;font-size:13px;vertical-align:top}}
table{{border-collapse:collapse}} mark{{background:#ffb}} .src{{color:#888;font-size:11px}} .ctx{{font-size:12px}} img{{max-width:100%}}</style></head><body>
<h1>emosae report</h1><p>Run folder <code>{html.escape(str(out))}</code>. Numbers measured here next to the paper's (Sofroniew et al., 2026).</p>
<h2>Headline</h2><table><tr><th>what</th><th>paper</th><th>here</th><th>command</th></tr>{table}</table>
<h2>Plots</h2>{"".join(f'<h3>{p.stem.replace("_", " ")}</h3><img src="{p.name}">' for p in figs)}
<h2>Best feature per emotion</h2><table><tr><th>emotion</th><th>feature</th><th>train AUROC</th><th>held-out AUROC</th><th>labelled</th></tr>{best}</table>
<h2>Labelled features</h2>{_feature_html(lab) if lab else "<p>no labels yet</p>"}
</body></html>"""
    tmp = rep / "index.html.tmp"
    tmp.write_text(page)
    os.replace(tmp, rep / "index.html")
    _log_wandb(out, cfg, rows, figs, lab)
    return [rep / "index.html", rep / "headline.json", *figs]


def _log_wandb(
    out: Path, cfg: Any, rows: list[dict[str, str]], figs: list[Path], lab: dict[str, Any] | None
) -> None:
    """Feature table, emotion-vector table and plots, to wandb (offline by default)."""
    from emosae.tracking import WandbConfig, finish, init_wandb

    wcfg = getattr(cfg, "wandb", None) or WandbConfig()
    run = init_wandb(wcfg, f"report-{out.name}", {"out": str(out)}, "report")
    if run is None:
        return
    try:
        import wandb

        run.log(
            {
                "headline": wandb.Table(
                    columns=["what", "paper", "here", "command"],
                    data=[[r["what"], r["paper"], r["here"], r["command"]] for r in rows],
                )
            }
        )
        for p in figs:
            run.log({f"plots/{p.stem}": wandb.Image(str(p))})
        if lab:
            t = wandb.Table(
                columns=[
                    "feature",
                    "label",
                    "kind",
                    "heldout_auroc",
                    "heldout_dprime",
                    "density",
                    "contexts",
                    "logit_lens",
                ]
            )
            for f in lab["features"].values():
                ctx = "<br>".join(
                    f"{html.escape(c['before'])}<mark>{html.escape(c['token'])}</mark>{html.escape(c['after'])}"
                    for c in f.get("top_story_contexts", [])[:3] + f.get("top_contexts", [])[:3]
                )
                t.add_data(
                    f["feature"],
                    f["label"],
                    f["kind"],
                    f["heldout_auroc"],
                    f["heldout_dprime"],
                    f.get("density", 0.0),
                    wandb.Html(ctx),
                    " ".join(f.get("logit_lens", {}).get("top", [])),
                )
            run.log({"features": t})
        pr = _load(out / "probes" / "results.json")
        if pr:
            g = pr["geometry_best_layer"]
            norms = data.emotion_norms()
            t = wandb.Table(
                columns=["emotion", "cluster", "pc1", "pc_arousal", "valence", "arousal"]
            )
            for i, e in enumerate(pr["emotions"]):
                n = norms.get(e)
                t.add_data(
                    e,
                    data.load_emotions()[i].cluster,
                    g["pc_scores"][i][0],
                    g["pc_scores"][i][g["arousal_pc"] - 1],
                    n.valence if n else None,
                    n.arousal if n else None,
                )
            run.log({"emotion_vectors": t})
    finally:
        finish(run)
