"""A per-token heatmap page of a reading: one static HTML file, no server and no
network. Tokens are coloured by one concept's score (a menu picks the concept; red
above the centre, blue below, full colour at the largest |score| after token 0, the
attention sink); hovering a
token shows its top concepts and values. The read position (or the read span of a
plain text) is underlined, and the top concepts there are listed above the text."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from emosae.core import io

_STYLE = """body{font-family:sans-serif;max-width:960px;margin:2em auto;line-height:1.9}
#text{white-space:pre-wrap;font-family:monospace;font-size:14px;border:1px solid #ddd;padding:10px}
#text span{border-radius:3px;padding:1px 0}
#text span.read{border-bottom:3px solid #333}
#tip{position:fixed;display:none;background:#fff;border:1px solid #888;padding:4px 8px;
font-size:12px;pointer-events:none;box-shadow:2px 2px 6px #aaa;line-height:1.4}
table{border-collapse:collapse} td{padding:1px 8px;font-size:13px}
.legend{font-size:12px;color:#555}"""

_SCRIPT = """
const D = JSON.parse(document.getElementById('data').textContent);
const box = document.getElementById('text'), tip = document.getElementById('tip');
const sel = document.getElementById('concept');
function colour(v, m) {
  const a = Math.min(Math.abs(v) / m, 1) * 0.85;
  return v >= 0 ? `rgba(220,40,40,${a})` : `rgba(40,90,220,${a})`;
}
function draw() {
  const c = +sel.value;
  // the colour scale leaves out token 0: an attention sink whose outsized activation
  // would wash out every other token
  const m = Math.max(1e-6, ...D.scores.slice(D.scores.length > 1 ? 1 : 0).map(r => Math.abs(r[c])));
  box.querySelectorAll('span').forEach((s, i) => {
    s.style.background = colour(D.scores[i][c], m);
  });
}
D.tokens.forEach((t, i) => {
  const s = document.createElement('span');
  s.textContent = t;
  if (D.kind === 'conversation' ? i === D.read_from : i >= D.read_from) s.className = 'read';
  s.addEventListener('mousemove', e => {
    const row = D.scores[i].map((v, j) => [v, D.concepts[j]]).sort((a, b) => b[0] - a[0]);
    const c = +sel.value;
    // text nodes only: concept names and tokens come from other people's files
    const head = document.createElement('b');
    head.textContent = `token ${i}`;
    tip.replaceChildren(head, ' ' + JSON.stringify(t));
    [[D.scores[i][c], D.concepts[c]], ...row.slice(0, 5)].forEach(([v, n]) => {
      tip.append(document.createElement('br'), `${n}: ${v.toFixed(2)}`);
    });
    tip.style.display = 'block';
    tip.style.left = (e.clientX + 14) + 'px';
    tip.style.top = (e.clientY + 14) + 'px';
  });
  s.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  box.appendChild(s);
});
sel.addEventListener('change', draw);
draw();
"""


def script_json(data: Any) -> str:
    """`data` as JSON to embed in a `<script type="application/json">` element: `<`, `>`
    and `&` are written as `\\u003c`, `\\u003e`, `\\u0026` (JSON.parse reads them back), so
    no text can close the element or open a comment (`<!--<script>`) that swallows the
    rest of the page."""
    blob = json.dumps(data, separators=(",", ":"))
    return blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_UNITS = {
    "text": "Scores: centred projections on each concept's unit vector, over the "
    "within-concept spread of story readings (0 = the average concept).",
    "conversation": "Scores: z-scores against neutral prompts read before the reply, "
    "per concept (0 = an emotionally flat request).",
}


def trace_page(reading: dict[str, Any], title: str = "emosae reading", top: int = 8) -> str:
    """The page for a reading's json (`Reading.to_json()`)."""
    concepts, at = reading["concepts"], reading["at_read"]
    order = sorted(range(len(concepts)), key=lambda j: -at[j])
    options = "".join(
        f"<option value={j}{' selected' if j == order[0] else ''}>{html.escape(concepts[j])}</option>"
        for j in order
    )
    rows = "".join(
        f"<tr><td>{html.escape(concepts[j])}</td><td>{at[j]:+.2f}</td></tr>" for j in order[:top]
    )
    where = (
        "the token before the assistant's reply"
        if reading["kind"] == "conversation"
        else f"the mean from token {reading['read_from']} on"
    )
    blob = script_json(reading)
    return f"""<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Hook <code>{html.escape(reading["hook"])}</code>. {_UNITS[reading["kind"]]}
Read at {where} (underlined).</p>
<h3>Top concepts at the read position</h3><table>{rows}</table>
<p><label>Colour tokens by <select id=concept>{options}</select></label>
<span class=legend>red: above the centre, blue: below; hover a token for values</span></p>
<div id=text></div><div id=tip></div>
<script id=data type="application/json">{blob}</script>
<script>{_SCRIPT}</script></body></html>"""


def write_trace_page(path: str | Path, reading: dict[str, Any], title: str) -> Path:
    return io.write_text(Path(path), trace_page(reading, title))
