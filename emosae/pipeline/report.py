"""The report of a run: its headline table (`headline`), plots (`plots`) and one static
HTML page, plus the same tables and plots logged to wandb (offline by default) for
browsing features. Written into the run's `report/` folder."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from emosae.core import compat, folders, io
from emosae.core.layout import RunLayout
from emosae.core.tracking import WandbConfig, finish, init_wandb
from emosae.features.labels import load_labels
from emosae.pipeline.headline import headline_rows
from emosae.pipeline.plots import PLOTS, draw_all

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:auto} td,th{border-bottom:1px solid #ddd;padding:3px 6px;font-size:13px;vertical-align:top}
table{border-collapse:collapse} mark{background:#ffb} .src{color:#888;font-size:11px} .ctx{font-size:12px} img{max-width:100%}"""


def _contexts_html(f: dict[str, Any], with_source: bool = True) -> str:
    """The first three story and cache contexts of a feature, activating token marked."""
    rows = f.get("top_story_contexts", [])[:3] + f.get("top_contexts", [])[:3]
    src = (
        (lambda c: f"<span class=src>{html.escape(c['source'])}</span> ")
        if with_source
        else (lambda c: "")
    )
    return "<br>".join(
        f"{src(c)}{html.escape(c['before'])}<mark>{html.escape(c['token'])}</mark>{html.escape(c['after'])}"
        for c in rows
    )


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _feature_html(lab: dict[str, Any], limit: int = 60) -> str:
    feats = sorted(lab["features"].values(), key=lambda f: -f["heldout_auroc"])[:limit]
    rows = [
        [
            f"<td>{f['feature']}</td>",
            f"<td>{html.escape(f['label'])} ({html.escape(f['kind'])})</td>",
            f"<td>{f['heldout_auroc']:.2f}</td>",
            f"<td>{f['heldout_dprime']:.2f}</td>",
            f"<td>{f.get('density', 0):.3f}</td>",
            f"<td class=ctx>{_contexts_html(f)}</td>",
            f"<td>{html.escape(' '.join(f.get('logit_lens', {}).get('top', [])))}</td>",
        ]
        for f in feats
    ]
    head = ["feature", "label", "held-out AUROC", "d'", "density"]
    return _table([*head, "top contexts (stories, then general text)", "logit lens"], rows)


def _page(
    L: RunLayout, rows: list[dict[str, str]], figs: list[Path], lab: dict | None, pages: list[Path]
) -> str:
    out = html.escape(str(L.root))
    table = "".join(
        f"<tr><td>{html.escape(r['what'])}</td><td>{html.escape(r['paper'])}</td><td><b>{html.escape(r['here'])}</b></td>"
        f"<td><code>{html.escape(r['command'])}</code></td></tr>"
        for r in rows
    )
    best = "".join(
        f"<tr><td>{html.escape(e)}</td><td>{b['feature']}</td><td>{b['train_auroc']:.2f}</td><td>{b['heldout_auroc']:.2f}</td><td>{'yes' if b['passes'] else 'no'}</td></tr>"
        for e, b in (lab["best_per_concept"].items() if lab else [])
    )
    plots = "".join(f'<h3>{p.stem.replace("_", " ")}</h3><img src="{p.name}">' for p in figs)
    dash = os.path.relpath(L.dashboard.index, L.report.dir)
    traces = " | ".join(
        f'<a href="{html.escape(p.name)}">{html.escape(p.stem.removeprefix("trace_"))}</a>'
        for p in pages
    )
    return f"""<!doctype html><html><head><meta charset=utf-8><title>emosae report: {out}</title>
<style>{STYLE}</style></head><body>
<h1>emosae report</h1><p>Run folder <code>{out}</code>. Numbers measured here next to the paper's (Sofroniew et al., 2026).</p>
<h2>Headline</h2><table><tr><th>what</th><th>paper</th><th>here</th><th>command</th></tr>{table}</table>
<h2>Plots</h2>{plots}
<h2>Per-token traces</h2><p>{traces or "no traces in this run"}</p>
<h2>Feature dashboard</h2><p><a href="{dash}">a page per labelled feature</a>: density,
top and quantile contexts, logit lens, AUROC per concept, cosine to the probe vectors (more
features: <code>emosae dashboard --run {out} --features ...</code>)</p>
<h2>Best feature per emotion</h2><table><tr><th>emotion</th><th>feature</th><th>train AUROC</th><th>held-out AUROC</th><th>labelled</th></tr>{best}</table>
<h2>Labelled features</h2>{_feature_html(lab) if lab else "<p>no labels yet</p>"}
</body></html>"""


def write_report(L: RunLayout, wandb_cfg: WandbConfig | None = None) -> list[Path]:
    """Plots, headline.json and index.html in the report folder; the same to wandb."""
    folders.claim(L.report.dir, "report")
    figs = draw_all(L)
    rows = headline_rows(L)
    io.write_json(L.report.headline, rows)
    lab = load_labels(L.labels.labels) if L.labels.labels.exists() else None
    pages = _trace_pages(L)
    io.write_text(L.report.index, _page(L, rows, figs, lab, pages))
    folders.seal(L.report.dir, "report")
    _log_wandb(L, wandb_cfg or WandbConfig(), rows, figs, lab)
    return report_outputs(L)


def _traces(L: RunLayout) -> dict[str, Any]:
    p = L.experiments.result("traces")
    d = io.read_json(p) if p.exists() else {}
    return {} if "skipped" in d else d


def _trace_pages(L: RunLayout) -> list[Path]:
    """One heatmap page per traced conversation."""
    from emosae.reading.page import write_trace_page

    return [
        write_trace_page(L.report.trace(name), t, f"emosae trace: {name}")
        for name, t in _traces(L).items()
    ]


def report_outputs(L: RunLayout) -> list[Path]:
    plots = [L.report.plot(p.__name__) for p in PLOTS]
    pages = [L.report.trace(name) for name in _traces(L)]
    return [L.report.index, L.report.headline, *(p for p in plots if p.exists()), *pages]


def _log_wandb(
    L: RunLayout, wcfg: WandbConfig, rows: list[dict[str, str]], figs: list[Path], lab: dict | None
) -> None:
    """Headline, feature table, emotion-vector table and plots, to wandb."""
    run = init_wandb(wcfg, f"report-{L.root.name}", {"out": str(L.root)}, "report")
    if run is None:
        return
    try:
        import wandb

        cols = ["what", "paper", "here", "command"]
        run.log({"headline": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])})
        for p in figs:
            run.log({f"plots/{p.stem}": wandb.Image(str(p))})
        if lab:
            run.log({"features": _feature_table(wandb, lab)})
        if L.probes.results.exists():
            run.log({"emotion_vectors": _vector_table(wandb, io.read_json(L.probes.results))})
    finally:
        finish(run)


def _feature_table(wandb: Any, lab: dict[str, Any]) -> Any:
    cols = ["feature", "label", "kind", "heldout_auroc", "heldout_dprime", "density"]
    t = wandb.Table(columns=[*cols, "contexts", "logit_lens"])
    for f in lab["features"].values():
        t.add_data(
            *[f.get(c, 0.0) for c in cols],
            wandb.Html(_contexts_html(f, with_source=False)),
            " ".join(f.get("logit_lens", {}).get("top", [])),
        )
    return t


def _vector_table(wandb: Any, pr: dict[str, Any]) -> Any:
    from emosae.pipeline.plots import _groups

    g, groups = pr["geometry_best_layer"], _groups(pr)[0]
    t = wandb.Table(columns=["concept", "group", "pc1", "pc_arousal"])
    for i, e in enumerate(compat.key(pr, "concepts", "emotions")):
        sc = g["pc_scores"][i] if g else [None, None, None]
        t.add_data(e, groups[i], sc[0], sc[g["arousal_pc"] - 1] if g else None)
    return t
