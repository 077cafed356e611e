"""``elt report --out status.html``: one static HTML page a person opens in a browser.

Sections (each an element with a stable id, checked by the tests): ``runs`` (attempts per day by
status, as inline SVG bars, and the latest attempts), ``freshness`` (every checked table and mart),
``layers`` (rows per table in raw, staging, intermediate and marts), ``audits`` (the latest
transform's audit results), and ``set-aside`` (landed batches set aside with ``elt set-aside``) when
there is one. No JavaScript, no external assets: it can be mailed or served as is.

The data is gathered here; the markup is templates/report.html.j2, rendered by jinja2 with
autoescaping on, so a value from the history or the warehouse (a run's error, a table name) is text.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from orchestrator.freshness import _human, _warehouse, evaluate
from orchestrator.history import History
from orchestrator.runner import utcnow
from orchestrator.settings import Settings
from orchestrator.status import set_aside_batches
from sources.logs import redact_userinfo

COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "timed_out": "#ad1457", "abandoned": "#6a1b9a",
          "retrying": "#f9a825", "skipped_locked": "#90a4ae", "running": "#1565c0"}
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _runs_chart(per_day: dict[str, Counter[str]]) -> dict[str, Any] | None:
    """Stacked bars of the last 30 days' attempts by status, as SVG coordinates; ``None`` without runs."""
    days = sorted(per_day)[-30:]
    if not days:
        return None
    top = max(sum(c.values()) for c in per_day.values()) or 1
    bar_w, height = 18, 120
    columns = []
    for i, day in enumerate(days):
        x, y, bars = i * (bar_w + 4) + 5, float(height), []
        for status, count in sorted(per_day[day].items()):
            h = count / top * height
            y -= h
            bars.append({"y": y, "h": h, "color": COLORS.get(status, "#555"), "title": f"{day}: {count} {status}"})
        columns.append({"x": x, "label": day[5:], "bars": bars})
    return {"width": len(days) * (bar_w + 4) + 10, "height": height + 20, "bar_w": bar_w, "label_y": height + 15,
            "columns": columns}


def _at(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "never"


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
               f"{r.started_at:%Y-%m-%d %H:%M}", r.rows_loaded, redact_userinfo(r.error or "")] for r in runs[:30]]
    freshness = evaluate(settings, now)
    transform = history.last_with_status("transform", ("succeeded", "failed"))
    audits = json.loads(transform.audits_json) if transform and transform.audits_json else {}
    return TEMPLATES.get_template("report.html.j2").render(
        colors=COLORS, now=now, gateway=settings.gateway, chart=_runs_chart(per_day), latest=latest,
        freshness=None if freshness is None else [
            [f.subject, f.state, f.measure, _at(f.newest), _human(f.max_age_s), _at(f.last_loaded), f.owner]
            for f in freshness],
        layers=_layer_rows(settings), transform=transform,
        audits={"passed": audits.get("passed", 0), "run": audits.get("run", 0),
                "failed": [[a.get("model"), a.get("audit"), a.get("count")] for a in audits.get("failed", [])]},
        aside=[[f"{a[0]}.{a[1]}", a[2], a[3], a[4], f"{a[5]:%Y-%m-%d %H:%M}", a[6]]
               for a in set_aside_batches(settings)])


def write(settings: Settings, out: Path, now: datetime | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(settings, now))
    tmp.replace(out)  # a browser never sees half a page
    return out
