"""The sweep's ``report.html``: one self-contained page (figures embedded as base64 PNG, no
external file, script or font) that MLflow shows inline among the parent run's artifacts.

Besides what people read, the page carries what it shows as JSON in
``<script type="application/json" id="kerasyard-report">`` so a program (the tests) can check
it without reading pixels.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from service.jobspec.sweep import fmt_value, short_name
from worker.sweeps.report.insight import grid_title

SORT_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc';
    th.closest('tr').querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      if (x === '' && y !== '') return 1;
      if (y === '' && x !== '') return -1;
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
.lede { color: #57606a; } figure { margin: 0.6em 0; } figure img { max-width: 100%; }
figcaption { color: #57606a; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
th { background: #f6f8fa; cursor: pointer; white-space: nowrap; }
td.text, th.text { text-align: left; } tr.best td { background: #dafbe1; font-weight: 600; }
table.grid { display: inline-table; margin: 0 1.5em 1em 0; vertical-align: top; }
.grid td.cell { min-width: 5em; } .note { background: #fff8c5; padding: 0.4em 0.8em; }
.headline { font-size: 1.15em; background: #ddf4ff; padding: 0.5em 0.8em; }
table.grid caption { caption-side: top; text-align: left; max-width: 28em; }
"""


def img(path: Path, alt: str, name: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img data-figure="{html.escape(name)}" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{data}">')


def render(*, title: str, lede: str, data: dict, figures: dict[str, Path],
           trials_rows: list[dict], params: list[str], metric: str, goal: str,
           notes: list[str], texts: dict | None = None) -> str:
    """The page. ``figures``: name -> PNG (overview, importance, factors, curves);
    ``trials_rows``: one dict per trial (see write.py); ``data``: the JSON block; ``texts``:
    the words (:mod:`.words`): ``headline``, ``model`` (HTML: the registered model's link, or
    why there is none), ``overtraining`` and ``update_lesson``."""
    e = html.escape
    texts = texts or {}
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}"
             f"</title><style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if texts.get("headline"):
        parts.append(f"<p class='headline' id='headline'>{e(texts['headline'])}</p>")
    parts.append(f"<p class='lede'>{lede}</p>")
    if texts.get("model"):
        parts.append(f"<p class='lede' id='model'>{texts['model']}</p>")
    for note in notes:
        parts.append(f"<p class='note'>{note}</p>")
    if data.get("overview"):
        parts.append(_overview(data, figures, metric, goal))
    if "importance" in figures:
        parts.append(_importance(data["importance"], figures, metric))
    if "factors" in figures:
        parts.append("<h2 id='factors'>Each factor's effect</h2><figure>"
                     f"{img(figures['factors'], 'objective by factor', 'factors')}"
                     "<figcaption>One series per combination of the other factors (not "
                     "averaged over them), listed in their order; error bars are the spread "
                     "over seeds only; batch size and learning rate on log axes."
                     "</figcaption></figure>")
    if "curves" in figures:
        parts.append(_curves(figures, texts))
    parts.append(f"<h2 id='trials'>Trials</h2><p class='lede'>Click a column to sort. "
                 f"{e(metric)}: mean over seeds ± their standard deviation.</p>")
    parts.append(_trials_table(trials_rows, params, metric))
    parts.append("<script type='application/json' id='kerasyard-report'>"
                 + json.dumps(data).replace("</", "<\\/") + "</script>")
    parts.append(f"<script>{SORT_JS}</script></body></html>")
    return "\n".join(parts)


def _overview(data: dict, figures: dict[str, Path], metric: str, goal: str) -> str:
    e = html.escape
    better = "lower is better" if goal == "minimize" else "higher is better"
    parts = [f"<h2 id='overview'>Overview: {e(metric)} for each pair of factors "
             f"({better})</h2>"]
    parts += [_grid_table(g, metric) for g in data["overview"]]
    if "overview" in figures:
        parts.append(f"<figure>{img(figures['overview'], 'overview heatmaps', 'overview')}"
                     "<figcaption>Each title says what its cells average over. One colour "
                     "scale for every heatmap; chance is marked on the colour bar. ★ and the "
                     "frame mark the cell that holds the best configuration (the headline's), "
                     "in every grid; a grid that averages over a factor may have a better "
                     "cell than that one, since its cells are averages.</figcaption></figure>")
    return "".join(parts)


def _importance(imp: dict, figures: dict[str, Path], metric: str) -> str:
    e = html.escape
    main = sum(v for _, v in imp["main"])
    shares = ", ".join(f"{e(short_name(p))} {v:.0%}" for p, v in imp["main"])
    return (f"<h2 id='importance'>Which factor matters</h2><figure>"
            f"{img(figures['importance'], 'parameter importance', 'importance')}"
            f"<figcaption>The variance of {e(metric)} across the trials, split into each "
            f"factor's main effect ({shares}: {main:.0%} together) and what is left to "
            f"interactions ({imp['interactions']:.0%}): a factor whose best value depends on "
            f"another's. Method: {e(imp['method'])}. Logged as the parent run's "
            "<code>importance.&lt;factor&gt;</code> and <code>importance.interactions</code> "
            "metrics.</figcaption></figure>")


def _curves(figures: dict[str, Path], texts: dict) -> str:
    e = html.escape
    over = f"<p id='overtraining'>{e(texts['overtraining'])}</p>" \
        if texts.get("overtraining") else ""
    lesson = f"<p id='update-lesson'>Per update: {e(texts['update_lesson'])}</p>" \
        if texts.get("update_lesson") else ""
    return ("<h2 id='curves'>Learning curves on three clocks</h2><figure>"
            f"{img(figures['curves'], 'learning curves on three clocks', 'curves')}"
            "<figcaption>The same trainings against epochs, against updates (epochs × "
            "steps per epoch) and against wall-clock seconds (the first epoch includes "
            "building and compiling the model). ★: each line's best epoch. Open circles: "
            f"shorter trials, the same training stopped earlier.</figcaption></figure>"
            f"{over}{lesson}")


def _grid_table(g: dict, metric: str) -> str:
    e = html.escape
    head = "".join(f"<th data-col='{e(fmt_value(c))}'>{e(fmt_value(c))}</th>"
                   for c in g["col_values"])
    rows = []
    for i, (r, row) in enumerate(zip(g["row_values"], g["values"])):
        cells = "".join(
            f"<td class='cell' data-row='{e(fmt_value(r))}' data-col='{e(fmt_value(c))}' "
            f"data-v='{'' if v is None else repr(v)}'"
            + (" data-best='1'>" if g.get("best_cell") == [i, j] else ">")
            + ("–" if v is None else (f"<b>★ {v:.4g}</b>" if g.get("best_cell") == [i, j]
                                      else f"{v:.4g}"))
            + "</td>" for j, (c, v) in enumerate(zip(g["col_values"], row)))
        rows.append(f"<tr><th class='text'>{e(fmt_value(r))}</th>{cells}</tr>")
    return (f"<table class='grid' data-rows='{e(g['rows'])}' data-cols='{e(g['cols'])}'>"
            f"<caption>{e(grid_title(g, metric))}</caption><thead><tr><th class='text'>"
            f"{e(short_name(g['rows']))} \\ {e(short_name(g['cols']))}</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _trials_table(rows: list[dict], params: list[str], metric: str) -> str:
    e = html.escape
    cols = ["trial", *[short_name(p) for p in params], "state", metric, "sd", "seeds",
            "epochs", "updates", "fit s", "MLflow run"]
    head = "".join(f"<th class='{'text' if c in ('trial', 'state', 'MLflow run') else ''}'>"
                   f"{e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = [(r["name"], e(r["name"]), "text")]
        cells += [(fmt_value(r["params"].get(p)), e(fmt_value(r["params"].get(p))), "")
                  for p in params]
        cells.append((r["state"], e(r["state"]), "text"))
        for key, fmt in (("objective", ".4g"), ("sd", ".2g"), ("seeds", "d"), ("epochs", "d"),
                         ("updates", "d"), ("fit_s", ".3g")):
            v = r.get(key)
            cells.append(("" if v is None else repr(v), "" if v is None else format(v, fmt), ""))
        links = " ".join(f"<a href='{e(u)}' target='_blank' rel='noopener'>{e(label)}</a>"
                         for label, u in r["links"])
        cells.append((r["name"], links or "–", "text"))
        tds = "".join(f"<td class='{cls}' data-v='{e(str(v))}'>{shown}</td>"
                      for v, shown, cls in cells)
        body.append(f"<tr class='{'best' if r.get('best') else ''}' data-trial='{r['number']}'>"
                    f"{tds}</tr>")
    return (f"<table class='sortable' id='trials'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
