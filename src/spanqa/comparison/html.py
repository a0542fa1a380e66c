"""report.html: the comparison report in one self-contained file (no network, no server): report.md's text and tables,
its figures embedded, and an answer explorer over every evaluation question.

The explorer shows each question with its context, its gold answers and each group's answer highlighted in the
context, with per-question F1 and no-answer probability; filters (groups disagree, all wrong, one right and another
wrong, unanswerable, answerable, question word) and a search box narrow the list, which renders 50 rows at a time so
that a full dev set (12k questions) stays quick. The data sits in the page as JSON, the code is a few dozen lines of
plain JavaScript.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from spanqa.comparison.stats import QUESTION_WORDS

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3}blockquote{border-left:4px solid #d33;margin:1em 0;padding:.2em 1em;background:#fff4f4}
img{max-width:100%}code{background:#f3f3f3;padding:0 3px}
.controls{display:flex;gap:.6em;flex-wrap:wrap;align-items:center;margin:.5em 0}
#answers td{vertical-align:top}#answers .ctx{display:none;font-size:13px;max-width:1100px}
#answers tr.open .ctx{display:block}.none{color:#999}.f1{color:#666;font-size:12px}
mark.h0{background:#ffe08a}mark.h1{background:#9fd5ff}mark.h2{background:#b9f2b0}mark.h3{background:#f5b8f0}
"""

SCRIPT = r"""
const D = JSON.parse(document.getElementById('explorer-data').textContent);
const H = D.heads.length, PAGE = 50;
let shown = PAGE, rows = [];
const esc = s => s.replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function keep(q, filter, word, needle) {
  const a = q[5];
  if (word !== 'all' && q[4] !== word) return false;
  if (filter === 'disagree' && new Set(a.map(x => x[0])).size < 2) return false;
  if (filter === 'all_wrong' && !a.every(x => x[4] === 0)) return false;
  if (filter === 'one_right' && !(a.some(x => x[4] === 1) && a.some(x => x[4] === 0))) return false;
  if (filter === 'unanswerable' && q[3].length) return false;
  if (filter === 'answerable' && !q[3].length) return false;
  if (needle) {
    const text = [q[1], q[3].join(' '), q[2] >= 0 ? D.contexts[q[2]] : ''].concat(a.map(x => x[0])).join(' ');
    if (!text.toLowerCase().includes(needle)) return false;
  }
  return true;
}
function highlighted(q) {
  if (q[2] < 0) return '<span class="none">(no context recorded)</span>';
  const ctx = D.contexts[q[2]], marks = [];
  q[5].forEach((x, h) => { if (x[0] && x[1] >= 0) marks.push([x[1], x[1] + x[0].length, h]); });
  marks.sort((m, n) => m[0] - n[0]);
  let out = '', at = 0;
  for (const [s, e, h] of marks) {
    if (s < at) continue;  // overlapping answers: the first one marked
    out += esc(ctx.slice(at, s)) + '<mark class="h' + (h % 4) + '" title="' + esc(D.heads[h]) + '">' +
           esc(ctx.slice(s, e)) + '</mark>';
    at = e;
  }
  return out + esc(ctx.slice(at));
}
function render() {
  const body = document.querySelector('#answers tbody');
  body.innerHTML = rows.slice(0, shown).map(q =>
    '<tr data-id="' + esc(q[0]) + '"><td>' + esc(q[1]) + '<div class="ctx">' + highlighted(q) + '</div></td><td>' +
    (q[3].length ? q[3].map(esc).join('<br>') : '<span class="none">(unanswerable)</span>') + '</td>' +
    q[5].map(x => '<td>' + (x[0] ? esc(x[0]) : '<span class="none">""</span>') + '<div class="f1">F1 ' +
      (100 * x[4]).toFixed(0) + ' · P(no answer) ' + x[2].toFixed(2) + '</div></td>').join('') + '</tr>'
  ).join('');
  document.getElementById('count').textContent = rows.length + ' of ' + D.questions.length + ' questions';
  document.getElementById('more').style.display = rows.length > shown ? '' : 'none';
}
function update() {
  const filter = document.getElementById('filter').value, word = document.getElementById('word').value;
  const needle = document.getElementById('search').value.trim().toLowerCase();
  rows = D.questions.filter(q => keep(q, filter, word, needle));
  shown = PAGE;
  render();
}
document.getElementById('filter').onchange = update;
document.getElementById('word').onchange = update;
document.getElementById('search').oninput = update;
document.getElementById('more').onclick = () => { shown += PAGE; render(); };
document.querySelector('#answers tbody').onclick = e => {
  const tr = e.target.closest('tr');
  if (tr) tr.classList.toggle('open');
};
update();
"""


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(markdown: str, images: dict[str, str]) -> str:
    """The markdown report.md is written in (headings, tables, lists, quotes, images, bold, code) as HTML; `images`
    maps an image's file name to what its src becomes (a data URI)."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(_cells(lines[i]))
                i += 1
            head, body = block[0], [r for r in block[1:] if not all(set(c) <= {"-", ":"} for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        heading = re.match(r"^(#{1,4}) (.*)", line)
        image = re.match(r"^!\[([^\]]*)\]\(([^)]+)\)$", line)
        if heading:
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif image:
            src = images.get(Path(image.group(2)).name, image.group(2))
            out.append(f'<p><img alt="{html.escape(image.group(1))}" src="{src}"></p>')
        elif line.startswith("> "):
            out.append(f"<blockquote>{_inline(line[2:])}</blockquote>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html(report_markdown: str, figures: list[Path], explorer: dict[str, Any], title: str) -> str:
    """The whole page: the report, then the explorer (or a line saying why there is none)."""
    body = markdown_to_html(report_markdown, {f.name: data_uri(f) for f in figures})
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in explorer["heads"])
    words = "".join(f'<option value="{w}">{w}</option>' for w in QUESTION_WORDS)
    # JSON inside <script>: "</" would end the element early.
    data = json.dumps(explorer, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    if not explorer["questions"]:
        section = "<p>No run holds per-question records (W&B runs carry none): no answer explorer.</p>"
    else:
        section = f"""
<div class="controls">
<label>show <select id="filter">
<option value="all">all questions</option><option value="disagree">groups disagree</option>
<option value="all_wrong">all wrong (F1 0)</option><option value="one_right">one right, another wrong</option>
<option value="unanswerable">unanswerable</option><option value="answerable">answerable</option></select></label>
<label>question word <select id="word"><option value="all">any</option>{words}</select></label>
<input id="search" type="search" placeholder="search questions, contexts, answers" size="36">
<span id="count"></span></div>
<p class="f1">Click a question to see its context with each group's answer marked. A group's answer is its first
run's (lowest seed); F1 is the mean over its runs.</p>
<table id="answers"><thead><tr><th>question</th><th>gold</th>{heads}</tr></thead><tbody></tbody></table>
<button id="more">show more</button>
<script type="application/json" id="explorer-data">{data}</script>
<script>{SCRIPT}</script>"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
{body}
<h2 id="explorer">Answer explorer</h2>
{section}
</body></html>
"""
