"""The HTML status report (parsed, every section present with real content)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path

from orchestrator.observe.history import RunRecord
from tests.orchestrator.conftest import Project


class Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.text: list[str] = []
        self.svg = 0
        self.tags: set[str] = set()
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "section":
            self.ids.append(dict(attrs).get("id") or "")
        if tag == "rect":
            self.svg += 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self.lasttag == "td":
            self.cells.append(data)


def test_report_renders_runs_freshness_layers_and_audits(project: Project, small_jaffle: Path, tmp_path: Path) -> None:
    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    env = {"ELT_JOBS": "jaffle_shop,transform,bad"}
    tick = project.elt("tick", "--now", "2026-11-25T00:05", timeout=600, **env)
    assert "transform: succeeded" in tick.stdout, tick.stdout + tick.stderr
    out = tmp_path / "site" / "status.html"
    proc = project.elt("report", "--out", str(out), **env)
    assert proc.returncode == 0, proc.stderr
    page = Sections()
    page.feed(out.read_text())
    assert page.ids == ["summary", "runs", "freshness", "layers", "audits"]
    text = " ".join(page.text)
    assert page.svg >= 2  # bars of succeeded and failed attempts
    assert "jaffle_shop" in text and "failed" in text and "bad" in text
    assert "raw_jaffle_shop.orders" in text and "marts.orders" in text and "staging" in text
    assert "audits passed" in text
    assert "Job bad" in text  # the headline names what is wrong
    layers = [t for t in page.cells if t in ("raw", "staging", "intermediate", "marts")]
    assert layers == sorted(layers, key=["raw", "staging", "intermediate", "marts"].index)  # pipeline order


def test_report_escapes_markup_in_a_runs_error(project: Project, tmp_path: Path) -> None:
    error = '<script>alert("x")</script> & <b>bold</b>'
    project.history().insert(RunRecord(run_id="r-markup", attempt=1, job="bad", trigger="manual", status="failed",
                                       started_at=datetime(2026, 11, 24, 10), error=error))
    out = tmp_path / "status.html"
    proc = project.elt("report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    page = Sections()
    page.feed(out.read_text())
    assert "script" not in page.tags and "b" not in page.tags, page.tags  # text, not markup
    assert error in "".join(page.text)  # shown as it was recorded
    assert "&lt;script&gt;" in out.read_text()


def test_report_says_all_good_and_plainly_when_no_audit_failed(project: Project, tmp_path: Path) -> None:
    started = datetime(2026, 11, 24, 10)
    project.history().insert(RunRecord(
        run_id="r-ok", attempt=1, job="transform", trigger="schedule", status="succeeded", started_at=started,
        audits_json=json.dumps({"run": 1234, "passed": 1234, "restated": [], "failed": []})))
    out = tmp_path / "status.html"
    proc = project.elt("report", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    summary = html.split('id="summary"', 1)[1].split("</section>", 1)[0]
    assert 'data-state="ok"' in summary and "All good" in summary and "1,234 of 1,234 audits passed" in summary
    audits = html.split('id="audits"', 1)[1].split("</section>", 1)[0]
    assert "No audit failed." in audits and "<table" not in audits  # no table with a lone header
    assert 'data-layer="staging" data-failed="0"' in audits


def test_report_says_when_a_transform_recorded_no_audit_results(project: Project, tmp_path: Path) -> None:
    project.history().insert(RunRecord(run_id="r-none", attempt=1, job="transform", trigger="schedule",
                                       status="succeeded", started_at=datetime(2026, 11, 24, 10)))
    out = tmp_path / "status.html"
    assert project.elt("report", "--out", str(out)).returncode == 0
    audits = out.read_text().split('id="audits"', 1)[1].split("</section>", 1)[0]
    assert "no audit results recorded" in audits and "<table" not in audits


def test_on_spark_freshness_and_rows_say_they_are_not_checked_instead_of_reading_the_duckdb_file(
        project: Project, small_jaffle: Path, tmp_path: Path) -> None:
    """On the Spark gateway freshness and the report read the duckdb gateway's file and showed its ages
    and rows as Spark's (found by a walkthrough). They now say they do not read Spark's warehouse,
    with no JVM started; a tick skips the check."""
    from orchestrator.scheduling.tick import check_freshness

    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    loaded = project.elt("load", "jaffle_shop", timeout=300)  # a DuckDB warehouse with a ledger beside the Spark settings
    assert loaded.returncode == 0, loaded.stderr
    assert "raw_jaffle_shop.orders" in project.elt("freshness").stdout  # read on DuckDB

    fresh = project.elt("freshness", ELT_GATEWAY="spark")
    assert fresh.returncode == 2, fresh.stdout + fresh.stderr
    assert "freshness is not checked on the spark gateway" in fresh.stderr and "elt_meta.loaded_batches" in fresh.stderr
    assert "raw_jaffle_shop.orders" not in fresh.stdout

    out = tmp_path / "status.html"
    proc = project.elt("report", "--out", str(out), ELT_GATEWAY="spark")
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    freshness = html.split('id="freshness"', 1)[1].split("</section>", 1)[0]
    layers = html.split('id="layers"', 1)[1].split("</section>", 1)[0]
    assert "Not checked on the Spark gateway" in freshness and "raw_jaffle_shop" not in freshness
    assert "Not counted on the Spark gateway" in layers and "raw_jaffle_shop" not in layers
    assert "freshness not checked on the Spark gateway" in html.split('id="summary"', 1)[1].split("</section>", 1)[0]

    spark = dataclasses.replace(project.settings(), gateway="spark")
    assert check_freshness(spark, project.history(), datetime(2026, 11, 25)) is None
    # nor does a Spark transform job record the DuckDB file's rows per layer as its own
    from orchestrator.observe.report import rows_by_layer

    assert (rows_by_layer(project.settings()) or {}).get("raw")  # the DuckDB file has raw rows
    assert rows_by_layer(spark) is None


def test_the_runs_chart_covers_its_30_days_however_many_attempts_they_hold(project: Project, tmp_path: Path) -> None:
    """The chart took the 1,000 newest attempts, which the default schedules make in a week, under a
    note saying "the last 30 days" (found by a walkthrough with six years of run history)."""
    from datetime import timedelta

    from orchestrator.scheduling.runner import utcnow

    from orchestrator.observe.history import RUN_COLUMNS

    history = project.history()
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    with history._cursor() as cur:  # one connection for 1,200 rows (insert() opens one per row)
        for day in range(1, 13):  # 12 days of 100 attempts: more than 1,000
            for n in range(100):
                record = RunRecord(run_id=f"r-{day}-{n}", attempt=1, job="jaffle_app", trigger="schedule",
                                   status="succeeded", started_at=today - timedelta(days=day) + timedelta(minutes=n))
                cur.execute(f"INSERT INTO elt_meta.job_runs ({', '.join(RUN_COLUMNS)}) "
                            f"VALUES ({', '.join('?' for _ in RUN_COLUMNS)})", record.values())
    history.insert(RunRecord(run_id="r-old", attempt=1, job="jaffle_app", trigger="schedule", status="failed",
                             started_at=today - timedelta(days=45)))  # before the chart's 30 days
    out = tmp_path / "status.html"
    assert project.elt("report", "--out", str(out)).returncode == 0
    html = out.read_text()
    first, last = (today - timedelta(days=12)).date(), (today - timedelta(days=1)).date()
    assert f"Attempts per day (UTC), {first} to {last}," in html, html.split('id="runs"', 1)[1][:600]
    assert "1,200 succeeded" in html and "1 failed" not in html


def test_the_raw_rows_chart_keeps_its_30_days_and_carries_the_older_total() -> None:
    """The raw series had one point per load minute over all history (267 points, 190 KB of page
    after months of daily loads, found by a long-run probe); older loads now make one point."""
    from datetime import timedelta

    from orchestrator.observe.report import RUN_CHART_DAYS, _layers_chart

    now = datetime(2026, 12, 5, 12)
    loads = [(now - timedelta(days=400 - i, minutes=5), 10) for i in range(400)]  # a load a day for 400 days
    data = {"rows": [{"layer": "raw", "table": "raw_x.t", "rows": 4000}], "loads": loads, "built": None}
    (raw,) = [p for p in _layers_chart(data, [], now)["panels"] if p["layer"] == "raw"]
    # the 29 loads of the window (the 30th was 5 minutes before it) and one point carrying the 371 before
    assert len(raw["points"]) == RUN_CHART_DAYS, len(raw["points"])
    first, last = raw["points"][0], raw["points"][-1]
    assert first["at"] == f"{now - timedelta(days=RUN_CHART_DAYS):%Y-%m-%d %H:%M}" and first["value"] == 3710
    assert last["value"] == 4000  # the running total still ends at every row loaded


def test_the_layers_chart_draws_one_point_per_pixel_column_however_often_it_builds() -> None:
    """A build every 5 minutes for the chart's 30 days made 8,640 points per modelled layer (8.5 MB
    of page with the loads); each pixel column keeps its last point, which is what the step line
    shows there, so the page stays the same size however often the pipeline runs."""
    from datetime import timedelta

    from orchestrator.observe.report import RUN_CHART_DAYS, _layers_chart

    now = datetime(2026, 12, 5, 12)
    every = [now - timedelta(days=RUN_CHART_DAYS) + timedelta(minutes=5 * i) for i in range(RUN_CHART_DAYS * 288)]
    loads = [(at, 1) for at in every]
    # two records in a column of their own (no other build within 3 hours), the later with fewer
    # rows: the column shows the later one
    middle = now - timedelta(days=10)
    alone = [(at, {"staging": i, "marts": 2 * i}) for i, at in enumerate(every) if abs(at - middle) > timedelta(hours=3)]
    recorded = sorted([*alone, (middle, {"staging": 999_999}), (middle, {"staging": 999_998})], key=lambda r: r[0])
    data = {"rows": [{"layer": "raw", "table": "raw_x.t", "rows": len(every)},
                     {"layer": "staging", "table": "staging.t", "rows": 7},
                     {"layer": "marts", "table": "marts.t", "rows": 9}], "loads": loads, "built": now}
    chart = _layers_chart(data, every, now, recorded)
    panels = {p["layer"]: p for p in chart["panels"]}
    for layer in ("raw", "staging", "marts"):
        points = panels[layer]["points"]
        assert 300 < len(points) <= chart["right"] - chart["left"] + 1, (layer, len(points))
        xs = [round(p["x"]) for p in points]
        assert xs == sorted(set(xs))  # one per column, in time order
    # the running total and the counts now still end each series
    assert panels["raw"]["points"][-1]["value"] == len(every)
    assert panels["staging"]["points"][-1]["value"] == 7 and panels["marts"]["points"][-1]["value"] == 9
    # one build mark per column too, counting the builds it stands for
    marks = chart["builds"]
    assert len(marks) <= chart["right"] - chart["left"] + 1 and sum(m["count"] for m in marks) == len(every)
    # each kept point is the last of its column: the value the step line holds there
    staging = [p for p in panels["staging"]["points"] if p["value"] < 999_998]
    assert all(a["value"] < b["value"] for a, b in zip(staging[:-2], staging[1:-1]))
    values = {p["value"] for p in panels["staging"]["points"]}
    assert 999_998 in values and 999_999 not in values


def test_a_failed_non_blocking_audit_stays_in_the_report_for_a_week() -> None:
    """The report read only the latest transform: the next transform with nothing to do recorded no
    warning, and the failed non-blocking audit vanished while its rows stayed served (a probe)."""
    from datetime import UTC, timedelta

    from orchestrator.observe.report import _headline, _recent_warnings

    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def transform(hours_ago: float, warned: list[dict]) -> RunRecord:
        return RunRecord(run_id=f"r{hours_ago}", attempt=1, job="transform", trigger="schedule", status="succeeded",
                         started_at=now - timedelta(hours=hours_ago),
                         audits_json=json.dumps({"passed": 5, "run": 6, "failed": [], "warned": warned}))

    cost = {"model": "marts.order_items", "audit": "forall_non_blocking", "count": 106826}
    old = {"model": "marts.orders", "audit": "volume", "count": 1}
    runs = [transform(0.1, []), transform(1, []), transform(2, [cost]), transform(3, [dict(cost, count=5)]),
            transform(24 * 8, [old])]
    warned = _recent_warnings(runs, now)
    assert warned == [["marts.order_items", "forall_non_blocking", 106826, "2026-12-07 10:00 UTC"]]
    problems = _headline(runs, [], {"passed": 5, "run": 6, "failed": [], "warned": warned}, [], now)
    text = json.dumps(problems)
    assert "1 non-blocking audit(s) failed in the transforms of the last 7 days" in text, text
    assert "forall_non_blocking on marts.order_items (106,826 rows, 2026-12-07 10:00 UTC)" in text, text
