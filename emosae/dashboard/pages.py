"""The HTML of the dashboard: one static page per feature and an index, self-contained
(inline CSS, inline SVG, a few lines of inline JS; no network, no server). Every text
that comes from a model or a corpus is escaped.

A feature page, laid out like the feature pages of Anthropic's and Neuronpedia's
browsers: the density histogram (log10 of nonzero activations over the cache), the
logit lens of the decoder direction, AUROC for every concept, the probe vectors most
aligned with the decoder direction, the top-activating contexts and contexts sampled
from each activation band, each token coloured by its activation (hover: the value)."""

from __future__ import annotations

import html
from typing import Any, NamedTuple

from emosae.core.layout import DashboardFiles
from emosae.dashboard.data import FeatureData


class PageMeta(NamedTuple):
    """What every page says about where its features come from."""

    title: str
    model: str
    hook: str
    d_sae: int


_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px}.grid{display:flex;flex-wrap:wrap;gap:2em}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left}
tr:nth-child(even){background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{background:#e8e8e8;width:160px;height:10px}.bar div{background:#d2691e;height:10px}
code.tok{background:#eef;border-radius:3px;padding:0 3px;margin:1px;white-space:pre;display:inline-block}
.ctx{font-family:monospace;font-size:13px;white-space:pre-wrap;margin:3px 0;padding:3px 6px;
border-left:3px solid #ddd;line-height:1.8}.ctx span{border-radius:2px}
.ctx span.at{outline:1.5px solid #333}.act{color:#666;font-size:12px;margin-right:.6em}
.hit td:first-child{font-weight:bold}.hidden{display:none}
#filter{font-size:15px;padding:4px 8px;width:320px}
table.idx{width:100%;table-layout:fixed}table.idx th:nth-child(-n+7){width:10%}"""

_FILTER = """
const box = document.getElementById('filter'), shown = document.getElementById('shown');
function apply() {
  const q = box.value.trim().toLowerCase();
  let n = 0;
  document.querySelectorAll('section.group').forEach(sec => {
    let any = false;
    sec.querySelectorAll('tbody tr').forEach(tr => {
      const ok = !q || tr.dataset.text.includes(q) || sec.dataset.concept.includes(q);
      tr.classList.toggle('hidden', !ok);
      if (ok) { any = true; n++; }
    });
    sec.classList.toggle('hidden', !any);
  });
  shown.textContent = n;
}
box.addEventListener('input', apply);
apply();
"""


def _head(title: str) -> str:
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width'><link rel=icon href='data:,'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
    )


def _fmt_tok(t: str) -> str:
    """A token as text: newlines and tabs made visible, then escaped."""
    return html.escape(t.replace("\n", "\u21b5").replace("\t", "\u21e5"))


def token_colour(v: float, vmax: float) -> str:
    """Background of a token with activation `v` (orange, full at the feature's max)."""
    if v <= 0 or vmax <= 0:
        return "transparent"
    return f"rgba(255,140,0,{min(v / vmax, 1.0) * 0.9:.3f})"


def context_html(c: dict[str, Any], vmax: float) -> str:
    """One context: each token a span coloured by its activation, its value on hover."""
    spans = []
    for i, (t, v) in enumerate(zip(c["tokens"], c["values"], strict=True)):
        cls = " class=at" if i == c["at"] else ""
        spans.append(
            f"<span{cls} title='{v:.3f}' style='background:{token_colour(v, vmax)}'>"
            f"{_fmt_tok(t)}</span>"
        )
    src = html.escape(str(c.get("source", "")))
    return (
        f"<div class=ctx><span class=act title='{src}'>{c['activation']:.2f}</span>"
        f"{''.join(spans)}</div>"
    )


def histogram_svg(fd: FeatureData, width: int = 460, height: int = 150) -> str:
    """Inline SVG bar chart of log10(nonzero activation) counts."""
    label = f"fires on {fd.n_fired} of {fd.n_tokens} tokens ({100 * fd.density:.3g}%)"
    if not fd.hist_counts:
        return f"<p>Never fires on the cache's {fd.n_tokens} tokens.</p>"
    pad, n, top = 28, len(fd.hist_counts), max(fd.hist_counts)
    w = (width - 2 * pad) / n
    bars = "".join(
        f"<rect x='{pad + i * w:.2f}' y='{height - pad - (height - 2 * pad) * c / top:.2f}' "
        f"width='{max(w - 1, 0.5):.2f}' height='{(height - 2 * pad) * c / top:.2f}' "
        f"fill='#d2691e'><title>10^[{fd.hist_edges[i]:g}, {fd.hist_edges[i + 1]:g}): {c}</title>"
        f"</rect>"
        for i, c in enumerate(fd.hist_counts)
    )
    ticks = "".join(
        f"<text x='{pad + i * w:.2f}' y='{height - pad + 14}' font-size='11' "
        f"text-anchor='middle'>{fd.hist_edges[i]:g}</text>"
        for i in sorted({0, n // 2, n})
    )
    return (
        f"<svg class=hist width='{width}' height='{height}' role='img' "
        f"xmlns='http://www.w3.org/2000/svg' aria-label='activation density histogram'>"
        f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' "
        f"stroke='#555'/>{bars}{ticks}"
        f"<text x='{pad}' y='14' font-size='12'>{html.escape(label)}; tallest bar {top}</text>"
        f"<text x='{width / 2}' y='{height - 2}' font-size='11' text-anchor='middle'>"
        f"log10 activation</text></svg>"
    )


def _bar(x: float) -> str:
    pct = max(0.0, min(1.0, x)) * 100
    return f"<div class=bar><div style='width:{pct:.1f}%'></div></div>"


def auroc_table(fd: FeatureData, highlight: set[str]) -> str:
    rows = "".join(
        f"<tr{' class=hit' if r['concept'] in highlight else ''}>"
        f"<td>{html.escape(r['concept'])}</td><td>{_bar(r['heldout'])}</td>"
        f"<td class=num>{r['heldout']:.3f}</td><td class=num>{r['train']:.3f}</td></tr>"
        for r in fd.auroc
    )
    return (
        "<table class=auroc><thead><tr><th>concept</th><th></th><th>held-out AUROC</th>"
        f"<th>train AUROC</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def cosine_table(fd: FeatureData) -> str:
    if not fd.cosines:
        return "<p>No probe vectors at this layer.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(r['concept'])}</td><td class=num>{r['cosine']:+.3f}</td></tr>"
        for r in fd.cosines
    )
    return f"<table><thead><tr><th>probe vector</th><th>cosine</th></tr></thead>{rows}</table>"


def _tokens(ts: list[str]) -> str:
    return "".join(f"<code class=tok>{_fmt_tok(t)}</code>" for t in ts)


def _contexts(fd: FeatureData) -> str:
    vmax = fd.max_activation
    out = ["<h2>Top activations</h2>"]
    out += [context_html(c, vmax) for c in fd.top] or ["<p>None (the feature never fires).</p>"]
    out.append("<h2>Activation bands (random samples)</h2>")
    for b in reversed(fd.bands):
        out.append(f"<h3>({b['lo']:.3g}, {b['hi']:.3g}]: {len(b['contexts'])} sampled</h3>")
        ctxs = sorted(b["contexts"], key=lambda c: -c["activation"])
        out += [context_html(c, vmax) for c in ctxs]
    return "".join(out)


def transfer_text(fd: FeatureData) -> str:
    """Its label's outside-corpus AUROC beside the bundled held-out one, where checked."""
    if fd.outside_auroc is None:
        return ""
    v, lo, hi = fd.outside_auroc
    verdict = "transfers" if fd.transfers else "corpus-specific"
    return f" &middot; outside corpus AUROC {v:.3f} [{lo:.3f}, {hi:.3f}] ({verdict})"


def feature_page(fd: FeatureData, meta: PageMeta, files: DashboardFiles) -> str:
    """The page of one feature."""
    name = f"Feature {fd.index}" + (f": {fd.label}" if fd.label else "")
    return (
        _head(f"{name} ({meta.title})")
        + f"<p class=meta><a href='{files.index.name}'>&larr; all features</a> &middot; "
        f"{html.escape(meta.model)} &middot; <code>{html.escape(meta.hook)}</code> &middot; "
        f"{meta.d_sae} features</p><h1>{html.escape(name)}</h1>"
        f"<p class=meta>kind: {html.escape(fd.kind)} &middot; max activation "
        f"{fd.max_activation:.3f} &middot; density {fd.density:.4g}{transfer_text(fd)}</p>"
        f"<div class=grid><div><h2>Activation density</h2>{histogram_svg(fd)}</div>"
        f"<div><h2>Logit lens</h2><p>Promoted:<br>{_tokens(fd.logit_top)}</p>"
        f"<p>Suppressed:<br>{_tokens(fd.logit_bottom)}</p></div></div>"
        f"{_contexts(fd)}"
        f"<div class=grid><div><h2>Probe vectors (cosine with the decoder row)</h2>"
        f"{cosine_table(fd)}</div>"
        f"<div><h2>AUROC per concept</h2>{auroc_table(fd, set(fd.concepts))}</div></div>"
        "</body></html>"
    )


_LAST = {"corpus-specific": 1, "unspecific": 2, "style": 3, "unlabelled": 4}
"""Groups listed after the labels, in this order (kinds that are no label, then none)."""


def _group_key(fd: FeatureData) -> str:
    """A feature's section: its label, or its kind when that is no label."""
    return fd.kind if fd.kind in _LAST else (fd.label or "unlabelled")


def _label_and_runner_up(fd: FeatureData) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The feature's concept (the best on held-out stories of those it passes for, else
    of all) and the best other concept on held-out stories."""
    if not fd.auroc:
        return {"concept": "", "heldout": 0.0}, None
    top = next((r for r in fd.auroc if r["concept"] in fd.concepts), fd.auroc[0])
    return top, next((r for r in fd.auroc if r is not top), None)


def _index_row(fd: FeatureData, group: str, files: DashboardFiles) -> str:
    top, other = _label_and_runner_up(fd)
    kind = fd.kind + (
        f" ({fd.style_covariate})" if fd.kind == "style" and fd.style_covariate else ""
    )
    if fd.transfers is not None:
        kind += ", transfers" if fd.transfers else ", corpus-specific"
    text = " ".join([str(fd.index), group, fd.kind, *fd.concepts, *fd.logit_top[:5]]).lower()
    runner = (
        f"<td>{html.escape(other['concept'])}</td><td class=num>{other['heldout']:.3f}</td>"
        if other
        else "<td></td><td></td>"
    )
    return (
        f"<tr data-text='{html.escape(text)}'><td><a href='{files.feature(fd.index).name}'>"
        f"{fd.index}</a></td><td>{html.escape(kind)}</td>"
        f"<td>{html.escape(top['concept'])}</td><td class=num>{top['heldout']:.3f}</td>{runner}"
        f"<td class=num>{fd.density:.4g}</td><td>{_tokens(fd.logit_top[:5])}</td></tr>"
    )


def index_page(fds: list[FeatureData], meta: PageMeta, files: DashboardFiles) -> str:
    """All features grouped by label (features whose kind is no label, style or
    unspecific, in groups of their own), each with its concept and the runner-up
    concept on held-out stories, with a text filter."""
    groups: dict[str, list[FeatureData]] = {}
    for fd in fds:
        groups.setdefault(_group_key(fd), []).append(fd)
    order = sorted(groups, key=lambda g: (_LAST.get(g, 0), g.lower()))
    secs = []
    for g in order:
        feats = sorted(groups[g], key=lambda fd: -_label_and_runner_up(fd)[0]["heldout"])
        rows = "".join(_index_row(fd, g, files) for fd in feats)
        secs.append(
            f"<section class=group data-concept='{html.escape(g.lower())}'>"
            f"<h2>{html.escape(g)} ({len(groups[g])})</h2><table class=idx><thead><tr><th>feature</th>"
            "<th>kind</th><th>concept</th><th>held-out AUROC</th><th>runner-up</th>"
            "<th>runner-up AUROC</th><th>density</th>"
            f"<th>logit lens</th></tr></thead><tbody>{rows}</tbody></table></section>"
        )
    return (
        _head(meta.title)
        + f"<h1>{html.escape(meta.title)}</h1><p class=meta>{html.escape(meta.model)} &middot; "
        f"<code>{html.escape(meta.hook)}</code> &middot; {meta.d_sae} features &middot; "
        f"<a href='{files.neuronpedia.name}'>Neuronpedia export</a></p>"
        "<p><input id=filter type=search placeholder='filter: concept, feature, token' "
        f"aria-label=filter> <span id=shown>{len(fds)}</span> of {len(fds)} features</p>"
        f"{''.join(secs)}<script>{_FILTER}</script></body></html>"
    )
