"""``elt report --out status.html``: one static HTML page a person opens in a browser.

Sections (each an element with a stable id, checked by the tests): ``summary`` (all good, or what is
wrong), ``runs`` (attempts per day per job by status, and the latest attempts), ``freshness`` (the age
of every checked table and mart against its maximum), ``layers`` (rows per layer over time, in
pipeline order raw, staging, intermediate, marts), ``audits`` (the latest transform's audit results
per layer), and ``set-aside`` (landed batches set aside with ``elt set-aside``) when there is one.
Each chart is inline SVG drawn here and in templates/report.html.j2, with a plain table below it; its
marks carry ``data-*`` attributes (job, status, value...) that the browser test reads. No JavaScript,
no external assets, no request: it can be mailed or served as is (docs/decisions/0018).

Rows per layer over time are derived, not recorded: raw from each row's ``_loaded_at`` (raw tables
are append-only), the modelled layers counted when the report is made and drawn at the last build.

The data is gathered here; the markup is rendered by jinja2 with autoescaping on, so a value from
the history or the warehouse (a run's error, a table name) is text.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from sqlglot import exp

from orchestrator.observe.freshness import Freshness, _human, _naive, _warehouse, evaluate
from orchestrator.observe.history import History, RunRecord
from orchestrator.scheduling.runner import utcnow
from orchestrator.settings import Settings
from orchestrator.observe.status import set_aside_batches
from sources.logs import redact_userinfo

LAYERS = ("raw", "staging", "intermediate", "marts")  # pipeline order, everywhere on the page
GREEN, RED, GREY = "#2e7d32", "#c62828", "#9e9e9e"
# stacked bottom to top in this order; succeeded green, failures red/orange, skipped and other grey
COLORS = {"succeeded": GREEN, "retrying": "#ef6c00", "failed": RED, "timed_out": "#8e0000",
          "abandoned": "#616161", "skipped_locked": GREY, "stopped": GREY, "running": "#1565c0"}
STATE_COLORS = {"fresh": GREEN, "stale": RED, "unknown": GREY}
PROBLEM_STATUSES = ("failed", "timed_out", "abandoned")
TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def num(value: Any) -> str:
    """A count with thousands separators, as every number on the page is shown.

    >>> num(1234567), num(None), num("?")
    ('1,234,567', '', '?')
    """
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


TEMPLATES.filters["num"] = num


def _at(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "never"


def _layer(name: str) -> str:
    """``raw_jaffle_shop.orders`` -> raw, ``staging.stg_x`` -> staging."""
    schema = name.split(".")[0].strip('"').lower()
    return "raw" if schema.startswith("raw_") else schema


def _ticks(top: float, count: int = 4) -> list[int]:
    """Round axis ticks from 0 to at least ``top``.

    >>> _ticks(7), _ticks(1234)
    ([0, 2, 4, 6, 8], [0, 500, 1000, 1500])
    """
    top = max(top, 1)
    raw_step = top / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    step = max(int(step), 1)
    return list(range(0, int(math.ceil(top / step)) * step + 1, step))


# --- runs ---------------------------------------------------------------------------------------
RUN_CHART_DAYS = 30
WARNED_DAYS = 7  # failed non-blocking audits stay in the report this long after the transform that ran them


def _runs_chart(runs: list[RunRecord]) -> dict[str, Any] | None:
    """Attempts per day per job (the last RUN_CHART_DAYS days with a run), stacked by status, one lane
    per job with its own count axis; ``None`` without runs."""
    if not runs:
        return None
    last = max(r.started_at.date() for r in runs)
    first = max(min(r.started_at.date() for r in runs), last - timedelta(days=RUN_CHART_DAYS - 1))
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    counts: dict[str, dict[date, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for r in runs:
        if r.started_at.date() >= first:
            counts[r.job][r.started_at.date()][r.status] += 1
    left, plot_w, lane_h, gap, top = max(130, 7 * max(map(len, counts)) + 50), 560, 54, 22, 24  # ~7px a letter
    slot = plot_w / len(days)
    bar_w = max(min(slot * 0.7, 28), 2)
    order = list(COLORS)
    lanes = []
    for j, job in enumerate(sorted(counts)):
        y0 = top + j * (lane_h + gap)
        ticks = _ticks(max(sum(c.values()) for c in counts[job].values()), 2)
        scale = lane_h / ticks[-1]
        bars = []
        for i, day in enumerate(days):
            base = float(y0 + lane_h)
            for status in sorted(counts[job][day], key=lambda s: (order.index(s) if s in order else len(order), s)):
                n = counts[job][day][status]
                base -= n * scale
                bars.append({"x": left + i * slot + (slot - bar_w) / 2, "y": base, "h": n * scale,
                             "color": COLORS.get(status, GREY), "job": job, "day": day.isoformat(),
                             "status": status, "value": n, "title": f"{job}, {day}: {num(n)} {status}"})
        totals = Counter[str]()
        for c in counts[job].values():
            totals.update(c)
        lanes.append({"job": job, "y0": y0, "base": y0 + lane_h, "mid": y0 + lane_h / 2, "bars": bars,
                      "ticks": [{"y": y0 + lane_h - t * scale, "label": num(t)} for t in ticks],
                      "total": sum(totals.values()),
                      "summary": ", ".join(f"{num(totals[s])} {s.replace('_', ' ')}" for s in
                                           sorted(totals, key=lambda s: (order.index(s) if s in order else 99, s)))})
    axis_y = top + len(lanes) * (lane_h + gap) - gap + 6
    every = math.ceil(len(days) / 12)
    return {"width": left + plot_w + 260, "height": axis_y + 40, "left": left, "right": left + plot_w,
            "bar_w": bar_w, "lanes": lanes, "axis_y": axis_y, "first": days[0].isoformat(),
            "last": days[-1].isoformat(), "statuses": [s for s in COLORS if any(s in c for d in counts.values()
                                                                                   for c in d.values())],
            "days": [{"x": left + i * slot + slot / 2, "label": f"{day:%m-%d}"}
                     for i, day in enumerate(days) if i % every == 0 or i == len(days) - 1]}


def _recent_warnings(runs: list[Any], now: datetime) -> list[list[Any]]:
    """[model, audit, rows, when] of each non-blocking audit that failed in a transform of the last
    ``WARNED_DAYS`` days, the latest failure of each (a data-quality probe: the report showed only
    the latest transform's, so the warning vanished at the next transform with nothing to do)."""
    seen: dict[tuple[str, str], list[Any]] = {}
    since = now - timedelta(days=WARNED_DAYS)
    for r in sorted(runs, key=lambda r: r.started_at):
        if r.job != "transform" or not r.audits_json or r.started_at < since:
            continue
        try:
            warned = json.loads(r.audits_json).get("warned", [])
        except ValueError:
            continue
        for a in warned:
            seen[(a.get("model"), a.get("audit"))] = [a.get("model"), a.get("audit"), a.get("count"),
                                                       f"{r.started_at:%Y-%m-%d %H:%M} UTC"]
    return list(seen.values())


def _headline(runs: list[RunRecord], freshness: list[Freshness] | None, audits: dict[str, Any],
              aside: list[tuple[Any, ...]] | None, now: datetime, *, spark: bool = False) -> dict[str, Any]:
    """What is wrong, one line each with the section that shows it; no line is the 'all good' headline."""
    latest: dict[str, RunRecord] = {}
    for r in runs:  # newest first
        if r.status != "skipped_locked":
            latest.setdefault(r.job, r)
    problems = [("runs", f"Job {r.job}: its latest attempt {r.status.replace('_', ' ')} at {_at(r.started_at)} UTC"
                 + (f": {redact_userinfo(r.error).splitlines()[0]}" if r.error else ""))
                for r in latest.values() if r.status in PROBLEM_STATUSES]
    if spark:
        pass  # not read on Spark: said in the 'good' line and the freshness section, not a problem
    elif freshness is None:
        from orchestrator.observe.freshness import busy_holder

        problems.append(("freshness", f"The warehouse's DuckDB file was held by {redact_userinfo(busy_holder())} (a "
                                      "load or transform, or a BI tool or notebook with a read-write connection): "
                                      "freshness and rows were not checked; rerun the report when it is free."))
    else:
        stale = [f"{f.subject} ({_human(f.age_s(now) or 0)} old, max {_human(f.max_age_s)})"
                 for f in freshness if f.state == "stale"]
        if stale:
            problems.append(("freshness", f"{len(stale)} stale: {', '.join(stale)}"))
    if audits["failed"]:
        problems.append(("audits", f"{len(audits['failed'])} audit(s) failed in the latest transform: "
                                   + ", ".join(f"{a} on {m} ({num(c)} rows)" for m, a, c in audits["failed"])))
    if audits.get("warned"):
        # a non-blocking audit runs on the days a transform processes: the next transform with other
        # days (or none) passes it while the rows stay served, so the report keeps a week of them
        problems.append(("audits", f"{len(audits['warned'])} non-blocking audit(s) failed in the transforms of the last "
                                   f"{WARNED_DAYS} days (nothing was stopped; the rows may still be served until the "
                                   "source is fixed and reloaded): "
                                   + ", ".join(f"{a} on {m} ({num(c)} rows, {at})" for m, a, c, at in audits["warned"])))
    if aside:
        problems.append(("set-aside", f"{len(aside)} landed batch(es) set aside: their rows are not in raw"))
    fresh = sum(1 for f in freshness or () if f.state == "fresh")
    checked = "freshness not checked on the Spark gateway" if spark else f"{fresh} table(s) and mart(s) fresh"
    passed = f"; {num(audits['passed'])} of {num(audits['run'])} audits passed" if audits["run"] else ""
    good = f"The latest attempt of each of {len(latest)} job(s) succeeded or is under way; {checked}{passed}"
    return {"problems": [{"section": k, "text": t} for k, t in problems], "good": good}


# --- freshness ----------------------------------------------------------------------------------
def _freshness_chart(results: list[Freshness], now: datetime) -> dict[str, Any] | None:
    """Each table's age as a share of its maximum age: a bar per table, the limit a line at 100%."""
    if not results:
        return None
    ratios = [f.age_s(now) / f.max_age_s for f in results if f.age_s(now) is not None and f.max_age_s]
    cap = 1.5 if not ratios or max(ratios) <= 1.5 else 2 if max(ratios) <= 2 else 3
    left, plot_w, row_h, top = max(160, 7 * max(len(f.subject) for f in results) + 20), 420, 24, 26

    def x(ratio: float) -> float:
        return left + min(max(ratio, 0), cap) / cap * plot_w

    rows = []
    for i, f in enumerate(results):
        age = f.age_s(now)
        ratio = None if age is None else age / f.max_age_s
        label = (f"unknown: {f.why or f.data_note or 'not measured'}" if age is None else
                 f"{_human(age)} of max {_human(f.max_age_s)}" + (" (beyond the chart)" if ratio and ratio > cap else ""))
        rows.append({"y": top + i * row_h, "subject": f.subject, "state": f.state, "kind": f.kind,
                     "age_s": None if age is None else int(age), "limit_s": f.max_age_s,
                     "w": 0 if ratio is None else x(ratio) - left, "color": STATE_COLORS.get(f.state, GREY),
                     "label": label, "title": f"{f.subject}: {f.state}, {label} ({f.measure})"})
    ticks = [t / 2 for t in range(0, int(cap * 2) + 1)]
    return {"width": left + plot_w + 230, "height": top + len(rows) * row_h + 40, "left": left,
            "right": left + plot_w, "rows": rows, "limit_x": x(1), "axis_y": top + len(rows) * row_h + 4,
            "ticks": [{"x": x(t), "label": f"{t:.0%}"} for t in ticks], "top": top}


# --- rows per layer -----------------------------------------------------------------------------
def _layer_data(settings: Settings, over_time: bool = True) -> dict[str, Any] | None:
    """Rows per table now, raw rows over time (from ``_loaded_at``; skipped unless ``over_time``:
    a scan of every raw table) and the last build; ``None`` when the warehouse is busy."""
    with _warehouse(settings) as query:
        if query is None:
            return None
        tables = query(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE 'raw_%' "
            "OR table_schema IN ('staging', 'intermediate', 'marts') ORDER BY 1, 2")
        stamped = {(s, t) for s, t in query("SELECT table_schema, table_name FROM information_schema.columns "
                                            "WHERE table_schema LIKE 'raw_%' AND column_name = '_loaded_at'")}
        rows, loads = [], Counter[datetime]()
        for schema, table in tables:
            name = exp.table_(table, db=schema, quoted=True).sql(dialect="postgres")  # quoted by sqlglot
            count = query(f"SELECT count(*) FROM {name}")
            rows.append({"layer": _layer(schema), "table": f"{schema}.{table}", "rows": count[0][0] if count else None})
            if over_time and (schema, table) in stamped:
                for at, n in query(f'SELECT "_loaded_at", count(*) FROM {name} GROUP BY 1'):
                    if at is not None:  # one point per minute: a load applies its tables seconds apart
                        loads[_naive(at).replace(second=0, microsecond=0)] += n
        built = query("SELECT max(finished_at) FROM elt_meta.transform_watermarks WHERE environment = 'prod'")
    rows.sort(key=lambda r: (LAYERS.index(r["layer"]) if r["layer"] in LAYERS else len(LAYERS), r["table"]))
    return {"rows": rows, "loads": sorted(loads.items()), "built": _naive(built[0][0]) if built else None}


def rows_by_layer(settings: Settings) -> dict[str, int] | None:
    """Rows per layer now (raw, staging, intermediate, marts); ``None`` when the warehouse is busy.
    The transform job records it after each build, which gives the report its rows over time.
    Not on Spark: ``_layer_data`` would count the duckdb gateway's file (freshness.SPARK_NOT_READ)."""
    if settings.gateway == "spark":
        return None
    data = _layer_data(settings, over_time=False)  # counts only: this runs after every scheduled build
    if data is None or not data["rows"]:  # busy, or a warehouse this report cannot read (Spark)
        return None
    return {layer: sum(r["rows"] or 0 for r in data["rows"] if r["layer"] == layer) for layer in LAYERS}


def _layers_chart(data: dict[str, Any], builds: list[datetime], now: datetime,
                  recorded: list[tuple[datetime, dict[str, int]]] | None = None) -> dict[str, Any]:
    """One panel per layer, in pipeline order, sharing a time axis: raw rows as loaded over time; the
    modelled layers' rows as each build recorded them (``recorded``), and as counted now at the
    last build."""
    totals = {layer: sum(r["rows"] or 0 for r in data["rows"] if r["layer"] == layer) for layer in LAYERS}
    present = {r["layer"] for r in data["rows"]}
    series: dict[str, list[tuple[datetime, int]]] = {}
    running = 0
    series["raw"] = []
    for at, n in data["loads"]:
        running += n
        series["raw"].append((at, running))
    # the run chart's window: older loads become one point holding their total, so the chart (one
    # point per load minute) stays the same size however long the history (0048)
    cutoff = now - timedelta(days=RUN_CHART_DAYS)
    older = [point for point in series["raw"] if point[0] < cutoff]
    if older:
        series["raw"] = [(cutoff, older[-1][1]), *(point for point in series["raw"] if point[0] >= cutoff)]
    if "raw" in present and not series["raw"]:
        series["raw"] = [(now, totals["raw"])]
    at_build = data["built"] or (builds[-1] if builds else now)
    for layer in LAYERS[1:]:
        earlier = [(at, rows[layer]) for at, rows in recorded or [] if layer in rows and at < at_build]
        series[layer] = [*earlier, (at_build, totals[layer])] if layer in present else []
    times = [t for s in series.values() for t, _ in s] + builds
    start, end = (min(times), max([*times, now])) if times else (now - timedelta(hours=1), now)
    if end - start < timedelta(hours=2):
        start, end = start - timedelta(hours=1), end + timedelta(hours=1)
    pad = (end - start) * 0.03
    start, end = start - pad, end + pad
    left, plot_w, panel_h, gap, top = 130, 600, 64, 26, 24
    span = (end - start).total_seconds()

    def x(at: datetime) -> float:
        return left + (at - start).total_seconds() / span * plot_w

    panels = []
    for i, layer in enumerate(LAYERS):
        y0 = top + i * (panel_h + gap)
        ticks = _ticks(max((v for _, v in series[layer]), default=0), 2)
        scale = panel_h / ticks[-1]
        # the last point of each pixel column (600 over the chart's span): what the step line shows
        # there. A build every 5 minutes for 30 days drew 26,000 points, 8.5 MB of page (a
        # long-history probe); now at most 600 per layer
        points = [{"x": x(at), "y": y0 + panel_h - v * scale, "value": v, "at": _at(at),
                   "title": f"{layer}: {num(v)} rows at {_at(at)} UTC"}
                  for at, v in (column[-1] for column in _by_column(series[layer], x))]
        path = ""
        for k, p in enumerate(points):  # a step line: rows stay until the next load
            path += f"M{p['x']:.1f},{p['y']:.1f}" if k == 0 else f"H{p['x']:.1f}V{p['y']:.1f}"
        if points:
            path += f"H{x(end):.1f}"
        panels.append({"layer": layer, "order": i, "y0": y0, "base": y0 + panel_h, "mid": y0 + panel_h / 2,
                       "rows": totals[layer], "present": layer in present, "points": points, "path": path,
                       "ticks": [{"y": y0 + panel_h - t * scale, "label": num(t)} for t in ticks],
                       "last": points[-1] if points else None})
    axis_y = top + len(LAYERS) * (panel_h + gap) - gap + 6
    if span > 2 * 86400:  # midnights, at most 8 of them
        day = datetime.combine(start.date() + timedelta(days=1), datetime.min.time())
        every = math.ceil(span / 86400 / 8)
        marks = [(day + timedelta(days=k * every), "%Y-%m-%d") for k in range(9)]
    else:  # whole hours
        hour = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        every = math.ceil(span / 3600 / 8)
        marks = [(hour + timedelta(hours=k * every), "%m-%d %H:%M") for k in range(9)]
    return {"width": left + plot_w + 120, "height": axis_y + 40, "left": left, "right": left + plot_w,
            "panels": panels, "axis_y": axis_y,
            "builds": _build_marks(builds, start, end, x),
            "times": [{"x": x(at), "label": f"{at:{fmt}}"} for at, fmt in marks if at <= end]}


def _by_column(points: list[tuple[datetime, Any]], x: Callable[[datetime], float]) -> list[list[tuple[datetime, Any]]]:
    """``points`` (time order) grouped by the pixel column they fall in, left to right."""
    columns: dict[int, list[tuple[datetime, Any]]] = defaultdict(list)
    for point in points:
        columns[round(x(point[0]))].append(point)
    return list(columns.values())


def _build_marks(builds: list[datetime], start: datetime, end: datetime,
                 x: Callable[[datetime], float]) -> list[dict[str, Any]]:
    """A build mark per pixel column holding builds (one per build was 10,000 marks in 30 days of
    builds every few minutes), titled with how many finished there and the last one's time."""
    shown = [(b, None) for b in sorted(builds) if start <= b <= end]
    return [{"x": x(c[-1][0]), "at": _at(c[-1][0]), "count": len(c)} for c in _by_column(shown, x)]


# --- audits -------------------------------------------------------------------------------------
def _audits_chart(audits: dict[str, Any]) -> dict[str, Any]:
    """A tile per layer in pipeline order: green without a failed audit, red with the failures."""
    failed: dict[str, list[Any]] = {layer: [] for layer in LAYERS}
    for model, audit, count in audits["failed"]:
        failed.setdefault(_layer(str(model)), []).append((model, audit, count))
    tiles = []
    for i, layer in enumerate(failed):
        rows = sum(c or 0 for _, _, c in failed[layer])
        tiles.append({"layer": layer, "x": 10 + i * 190, "failed": len(failed[layer]), "rows": rows,
                      "color": RED if failed[layer] else GREEN,
                      "text": f"{len(failed[layer])} failed, {num(rows)} rows" if failed[layer] else "none failed"})
    run, passed = audits["run"], audits["passed"]
    return {"width": 20 + len(tiles) * 190, "height": 112 if run else 70, "tiles": tiles, "run": run, "passed": passed,
            "bar_w": len(tiles) * 190 - 20, "passed_w": 0 if not run else passed / run * (len(tiles) * 190 - 20)}


def render(settings: Settings, now: datetime | None = None) -> str:
    now = now or utcnow()
    history = History.open(settings, interactive=True)
    # every attempt of the chart's 30 days: the 1,000 newest were 7 days of the default schedules
    runs = history.since(now - timedelta(days=RUN_CHART_DAYS)) or history.recent(1000)
    latest = [[r.run_id, r.job, f"{r.attempt}/{r.max_attempts or '-'}", r.status, r.trigger,
               f"{r.started_at:%Y-%m-%d %H:%M}", num(r.rows_loaded), redact_userinfo(r.error or "")] for r in runs[:20]]
    spark = settings.gateway == "spark"  # its warehouse is not read here (freshness.SPARK_NOT_READ)
    freshness = None if spark else evaluate(settings, now)
    transform = history.last_with_status("transform", ("succeeded", "failed"))
    recorded = json.loads(transform.audits_json) if transform and transform.audits_json else {}
    audits = {"passed": recorded.get("passed", 0), "run": recorded.get("run", 0),
              "failed": [[a.get("model"), a.get("audit"), a.get("count")] for a in recorded.get("failed", [])],
              "warned": _recent_warnings(runs, now)}
    aside = set_aside_batches(settings)
    layers = None if spark else _layer_data(settings)
    built = sorted((r.finished_at, r) for r in runs if r.job == "transform" and r.status == "succeeded" and r.finished_at)
    builds = [at for at, _ in built]
    # rows per modelled layer as each build left them (recorded by the transform job since it does)
    recorded_rows = [(at, r.tables["rows_by_layer"]) for at, r in built if r.tables.get("rows_by_layer")]
    return TEMPLATES.get_template("report.html.j2").render(
        colors=COLORS, state_colors=STATE_COLORS, now=now, gateway=settings.gateway,
        headline=_headline(runs, freshness, audits, aside, now, spark=spark), spark=spark, chart=_runs_chart(runs), latest=latest,
        freshness=None if freshness is None else [
            [f.subject, f.state, f.measure, _at(f.newest), _human(f.max_age_s), _at(f.last_loaded), f.owner]
            for f in freshness],
        freshness_chart=_freshness_chart(freshness or [], now),
        layers=None if layers is None else [[r["layer"], r["table"], num(r["rows"])] for r in layers["rows"]],
        layers_chart=None if layers is None else _layers_chart(layers, builds, now, recorded_rows),
        transform=transform, audits=audits, audit_rows=[[m, a, num(c)] for m, a, c in audits["failed"]],
        audits_chart=_audits_chart(audits) if transform else None,
        held_rows=[[h.get("table"), num(h.get("rows")), h.get("why"), "warn" if h.get("warn") else "fail"]
                   for h in recorded.get("held", [])],
        aside=[[f"{a[0]}.{a[1]}", a[2], num(a[3]), a[4], f"{a[5]:%Y-%m-%d %H:%M}", a[6]] for a in aside or []])


def write(settings: Settings, out: Path, now: datetime | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(render(settings, now))
    tmp.replace(out)  # a browser never sees half a page
    return out
