"""``elt report --out status.html``: one static HTML page a person opens in a browser.

Sections (each an element with a stable id, checked by the tests): ``runs`` (attempts per day by
status, as inline SVG bars, and the latest attempts), ``freshness`` (every checked table and mart),
``layers`` (rows per table in raw, staging, intermediate and marts), ``audits`` (the latest
transform's audit results), and ``set-aside`` (landed batches set aside with ``elt set-aside``) when
there is one. No JavaScript, no external assets: it can be mailed or served as is.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.freshness import _human, _warehouse, evaluate
from orchestrator.history import History
from orchestrator.runner import utcnow
from orchestrator.settings import Settings
from orchestrator.status import set_aside_batches
from sources.logs import redact_userinfo

COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "timed_out": "#ad1457", "abandoned": "#6a1b9a",
          "retrying": "#f9a825", "skipped_locked": "#90a4ae", "running": "#1565c0"}
STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}th{background:#f3f3f3}.stale,.failed{color:#c62828}
.fresh,.succeeded{color:#2e7d32}.unknown{color:#777}"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr class=\"{_e(classes[i] if classes else '')}\">" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _runs_svg(per_day: dict[str, Counter[str]]) -> str:
    days = sorted(per_day)[-30:]
    if not days:
        return "<p>No runs recorded yet.</p>"
    top = max(sum(c.values()) for c in per_day.values()) or 1
    bar_w, height = 18, 120
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{len(days) * (bar_w + 4) + 10}" height="{height + 20}" '
             'role="img" aria-label="attempts per day by status">']
    for i, day in enumerate(days):
        y = height
        for status, count in sorted(per_day[day].items()):
            h = count / top * height
            y -= h
            parts.append(f'<rect x="{i * (bar_w + 4) + 5}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" '
                         f'fill="{COLORS.get(status, "#555")}"><title>{_e(day)}: {count} {_e(status)}</title></rect>')
        parts.append(f'<text x="{i * (bar_w + 4) + 5}" y="{height + 15}" font-size="8">{_e(day[5:])}</text>')
    parts.append("</svg>")
    legend = " ".join(f'<span style="color:{c}">&#9632; {s}</span>' for s, c in COLORS.items())
    return "".join(parts) + f"<p>{legend}</p>"


def _layer_rows(settings: Settings) -> list[list[Any]] | None:
    with _warehouse(settings) as query:
        if query is None:
            return None
        tables = query(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE 'raw_%' "
            "OR table_schema IN ('staging', 'intermediate', 'marts') ORDER BY 1, 2")
        rows = []
        for schema, table in tables:
            count = query(f'SELECT count(*) FROM "{schema}"."{table}"')  # names from the catalog, quoted
            layer = "raw" if schema.startswith("raw_") else schema
            rows.append([layer, f"{schema}.{table}", count[0][0] if count else "?"])
        return rows


def render(settings: Settings, now: datetime | None = None) -> str:
    now = now or utcnow()
    history = History.open(settings)
    runs = history.recent(1000)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    for r in runs:
        per_day[r.started_at.date().isoformat()][r.status] += 1
    latest = [[r.run_id, r.job, f"{r.attempt}/{r.max_attempts or '-'}", r.status, r.trigger,
               f"{r.started_at:%Y-%m-%d %H:%M}", r.rows_loaded if r.rows_loaded is not None else "", redact_userinfo(r.error or "")]
              for r in runs[:30]]
    freshness = evaluate(settings, now)
    layers = _layer_rows(settings)
    transform = history.last_with_status("transform", ("succeeded", "failed"))
    audits = json.loads(transform.audits_json) if transform and transform.audits_json else {}
    aside = set_aside_batches(settings)

    sections = [
        f"<h1>ELT status</h1><p>Generated {now:%Y-%m-%d %H:%M} UTC from the run history and the warehouse "
        f"({_e(settings.gateway)}).</p>",
        '<section id="runs"><h2>Runs over time</h2>' + _runs_svg(per_day)
        + _table(["run", "job", "attempt", "status", "trigger", "started (UTC)", "rows", "error"], latest,
                 [row[3] for row in latest]) + "</section>",
        '<section id="freshness"><h2>Freshness</h2>' + (
            "<p>The warehouse was busy (a load holds it); rerun the report.</p>" if freshness is None else _table(
                ["table or mart", "state", "measured by", "as of (UTC)", "max age", "last load or build (UTC)", "owner"],
                [[f.subject, f.state, f.measure, f"{f.newest:%Y-%m-%d %H:%M}" if f.newest else "never",
                  _human(f.max_age_s), f"{f.last_loaded:%Y-%m-%d %H:%M}" if f.last_loaded else "never", f.owner]
                 for f in freshness], [f.state for f in freshness]))
        + "</section>",
        '<section id="layers"><h2>Rows per layer</h2>' + (
            "<p>The warehouse was busy; rerun the report.</p>" if layers is None else
            _table(["layer", "table", "rows"], layers)) + "</section>",
        '<section id="audits"><h2>Audit results (latest transform)</h2>' + (
            "<p>No transform recorded yet.</p>" if not transform else
            f"<p>Run {_e(transform.run_id)} {_e(transform.status)} at {transform.started_at:%Y-%m-%d %H:%M}: "
            f"{_e(audits.get('passed', 0))} of {_e(audits.get('run', 0))} audits passed.</p>"
            + _table(["model", "audit", "failing rows"],
                     [[a.get("model"), a.get("audit"), a.get("count")] for a in audits.get("failed", [])]))
        + "</section>",
    ]
    if aside:  # only when there is one: a set-aside batch's rows are missing from raw until it is resolved
        sections.append(
            '<section id="set-aside"><h2>Set-aside batches</h2>'
            f"<p>{len(aside)} landed batch(es) never applied: their rows are not in raw. Later batches of their "
            "tables apply. Bring one back with <code>elt set-aside SOURCE TABLE BATCH --undo</code> "
            "(docs/runbook.md#a-batch-blocks-its-table).</p>"
            + _table(["table", "batch", "rows", "set aside by", "at (UTC)", "reason"],
                     [[f"{a[0]}.{a[1]}", a[2], a[3], a[4], f"{a[5]:%Y-%m-%d %H:%M}", a[6]] for a in aside],
                     ["failed"] * len(aside)) + "</section>")
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ELT status</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")


def write(settings: Settings, out: Path, now: datetime | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(settings, now))
    tmp.replace(out)  # a browser never sees half a page
    return out
