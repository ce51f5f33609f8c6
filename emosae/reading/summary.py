"""The summary page of a dataset read (`emosae read --input ... --html`), and the end of
its traces folder (`index.json`, a trace page per record the summary shows, the seal).

The page is one static HTML file with no external assets: a menu picks a concept; it shows
that concept's distribution over the records (a histogram, with mean, quantiles and max)
and its top records with their text, each linked to its per-token trace page when the
read kept traces. Every piece of data reaches the page as JSON in a script element and
is put into the document with `textContent` only, so no record can inject markup.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import torch

from emosae.core import folders, io
from emosae.reading.batch import Record
from emosae.reading.page import script_json, trace_page
from emosae.reading.trace import Basis, Reading

TRACES_KIND = "traces"
"""The kind of a `--traces` folder (its `.emosae.json`)."""
INDEX_NAME = "index.json"
"""A traces folder's index: concepts, hook, and where each record's trace is."""
BINS = 24
SNIPPET = 400
"""Characters of a record's text shown on the summary page."""
SAFE_INTEGER = 2**53 - 1
"""The largest integer a browser's JSON numbers hold exactly (Number.MAX_SAFE_INTEGER)."""


def page_id(rid: str | int) -> str | int:
    """A record's id as the page holds it: integers a browser would round, as strings."""
    return str(rid) if isinstance(rid, int) and abs(rid) > SAFE_INTEGER else rid


def snippet(rec: Record) -> str:
    """A record's text for display: the text, or its messages as `role: content` lines."""
    if isinstance(rec.what, str):
        text = rec.what
    else:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in rec.what)
    return text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"


def top_positions(rows: list[dict[str, Any]], concepts: list[str], k: int) -> dict[str, list[int]]:
    """Per concept, the positions of its k highest-scoring records."""
    s_NC = torch.tensor([[r["scores"][c] for c in concepts] for r in rows])
    idx = s_NC.topk(min(k, len(rows)), dim=0).indices.T.tolist()
    return dict(zip(concepts, idx, strict=True))


def _distribution(v: torch.Tensor) -> dict[str, Any]:
    lo, hi = float(v.min()), float(v.max())
    counts = torch.histc(v, bins=BINS, min=lo, max=hi if hi > lo else lo + 1).long().tolist()
    q = torch.quantile(v, torch.tensor([0.05, 0.5, 0.95])).tolist()
    r = 3
    return {
        "lo": round(lo, r),
        "hi": round(hi, r),
        "counts": counts,
        "mean": round(float(v.mean()), r),
        "sd": round(float(v.std()), r) if len(v) > 1 else 0.0,
        "q05": round(q[0], r),
        "median": round(q[1], r),
        "q95": round(q[2], r),
    }


def summary_data(
    rows: list[dict[str, Any]],
    recs: list[Record],
    concepts: list[str],
    k: int,
    links: dict[int, str],
) -> dict[str, Any]:
    """What the page shows, as JSON-able data."""
    tops = top_positions(rows, concepts, k)
    shown = sorted({n for ns in tops.values() for n in ns})
    kinds = [r["kind"] for r in rows]
    return {
        "n": len(rows),
        "kinds": {kd: kinds.count(kd) for kd in sorted(set(kinds))},
        "concepts": concepts,
        "dist": {c: _distribution(torch.tensor([r["scores"][c] for r in rows])) for c in concepts},
        "top": {c: [[n, round(rows[n]["scores"][c], 3)] for n in ns] for c, ns in tops.items()},
        "records": {
            str(n): {
                "id": page_id(rows[n]["id"]),
                "kind": rows[n]["kind"],
                "text": snippet(recs[n]),
                "href": links.get(n),
            }
            for n in shown
        },
    }


_STYLE = """body{font-family:sans-serif;max-width:1000px;margin:2em auto;line-height:1.5;color:#222}
#hist{display:flex;align-items:flex-end;height:140px;gap:2px;border-bottom:1px solid #888;
margin:8px 0 2px}
#hist div{flex:1;background:#c0392b;min-height:1px}
.axis{display:flex;justify-content:space-between;font-size:12px;color:#555}
.stats{font-size:13px;color:#333;margin:6px 0 14px}
.rec{border:1px solid #ddd;border-radius:4px;padding:6px 10px;margin:8px 0}
.rec .head{font-size:13px;color:#555}
.rec .text{white-space:pre-wrap;font-family:monospace;font-size:13px;margin-top:4px}
select{font-size:15px}"""

_SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const sel = document.getElementById('concept');
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
D.concepts.forEach(c => sel.appendChild(el('option', '', c)));
function draw() {
  const c = sel.value, d = D.dist[c];
  const hist = document.getElementById('hist'), top = document.getElementById('top');
  hist.replaceChildren(); top.replaceChildren();
  const m = Math.max(1, ...d.counts), w = (d.hi - d.lo) / d.counts.length;
  d.counts.forEach((n, i) => {
    const b = el('div');
    b.style.height = (100 * n / m) + '%';
    b.title = `${n} records in [${(d.lo + i * w).toFixed(2)}, ${(d.lo + (i + 1) * w).toFixed(2)})`;
    hist.appendChild(b);
  });
  document.getElementById('lo').textContent = d.lo.toFixed(2);
  document.getElementById('hi').textContent = d.hi.toFixed(2);
  document.getElementById('stats').textContent =
    `mean ${d.mean.toFixed(2)}, sd ${d.sd.toFixed(2)}, 5% ${d.q05.toFixed(2)}, ` +
    `median ${d.median.toFixed(2)}, 95% ${d.q95.toFixed(2)}, max ${d.hi.toFixed(2)}`;
  D.top[c].forEach(([n, s], rank) => {
    const r = D.records[n], box = el('div', 'rec'), head = el('div', 'head');
    head.appendChild(el('b', '', `#${rank + 1}  ${c} ${s >= 0 ? '+' : ''}${s.toFixed(2)}`));
    head.appendChild(document.createTextNode(`  id ${JSON.stringify(r.id)} (${r.kind})  `));
    if (r.href) { const a = el('a', '', 'per-token trace'); a.href = r.href; head.appendChild(a); }
    box.appendChild(head);
    box.appendChild(el('div', 'text', r.text));
    top.appendChild(box);
  });
}
sel.addEventListener('change', draw);
draw();
"""


def summary_page(data: dict[str, Any], title: str) -> str:
    """The summary page for `summary_data(...)`."""
    blob = script_json(data)
    kinds = ", ".join(f"{n} {kd}s" for kd, n in data["kinds"].items())
    return f"""<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{data["n"]} records ({html.escape(kinds)}). Scores at each record's read position: plain
text in story units (0 = the average concept), conversations as z-scores against neutral
prompts before the reply (0 = an emotionally flat request).</p>
<p><label>Concept <select id=concept></select></label></p>
<div id=hist></div><div class=axis><span id=lo></span><span id=hi></span></div>
<div class=stats id=stats></div>
<h3>Top records</h3><div id=top></div>
<script id=data type="application/json">{blob}</script>
<script>{_SCRIPT}</script></body></html>"""


def _finish_traces(
    model: Any, folder: Path, basis: Basis, n: int, chunk: int, pages: set[int]
) -> dict[int, Path]:
    """index.json, a trace page for each position of `pages`, stale shards removed."""
    from safetensors import safe_open

    shards = [folder / f"shard-{k:05d}.safetensors" for k in range((n + chunk - 1) // chunk)]
    for p in folder.glob("shard-*.safetensors"):
        if p not in shards:
            p.unlink()  # left by an earlier read of more records
    index, out = [], {}
    for shard in shards:
        with safe_open(str(shard), "pt") as f:
            entries = json.loads(f.metadata()["index"])
            for e in entries:
                e["shard"] = shard.name
                if e["position"] in pages:
                    out[e["position"]] = _trace_page(model, folder, basis, f, e)
        index += entries
    meta = {"concepts": basis.concepts, "hook": basis.hook, "scores_dtype": "float16"}
    io.write_json(folder / INDEX_NAME, {**meta, "records": index})
    return out


def _trace_page(model: Any, folder: Path, basis: Basis, f: Any, e: dict[str, Any]) -> Path:
    n = e["position"]
    ids = f.get_tensor(f"{n}.tokens").long()
    reading = Reading(
        [model.tokenizer.decode([int(i)]) for i in ids],
        ids,
        basis.concepts,
        f.get_tensor(f"{n}.scores").float(),
        e["kind"],
        e["read_from"],
        basis.hook,
    )
    page = folder / "pages" / f"{n}.html"
    page.parent.mkdir(exist_ok=True)
    return io.write_text(page, trace_page(reading.to_json(), title=f"emosae read: id {e['id']}"))


def finish_outputs(
    model: Any,
    job: Any,
    basis: Basis,
    recs: list[Record],
    rows: list[dict[str, Any]],
    traces: Path | None,
) -> Path | None:
    """The traces folder's index and pages (sealed), and the summary page; its path."""
    pages = {n for ns in top_positions(rows, basis.concepts, job.top).values() for n in ns}
    links: dict[int, str] = {}
    if traces is not None:
        made = _finish_traces(
            model, traces, basis, len(rows), job.chunk, pages if job.html else set()
        )
        base = Path(job.html).parent if job.html else Path(".")
        links = {n: Path(os.path.relpath(p, base)).as_posix() for n, p in made.items()}
        folders.seal(traces, TRACES_KIND)
    if not job.html:
        return None
    data = summary_data(rows, recs, basis.concepts, job.top, links)
    page = summary_page(data, f"emosae read: {Path(job.input).name}")
    return folders.write_output_text(job.html, page, job.force)
