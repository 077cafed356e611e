"""The HTML status report in a real headless browser (Debian's Chromium, driven by Playwright).

A known history and a small warehouse written by the test itself: the page must load with no
console error and no request but its own, and its charts must carry exactly that history. A
full-page screenshot is written to test-artifacts/report.png for a person (and CI) to look at.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from orchestrator.observe.freshness import declared_max_ages
from orchestrator.observe.history import RunRecord
from tests.conftest import ROOT, copy_project, project_env
from orchestrator.scheduling.runner import utcnow
from tests.orchestrator.conftest import Project
from tests.orchestrator.conftest import test_jobs as command_jobs  # not collected as a test

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOT = ROOT / "test-artifacts" / "report.png"
RAW_LOADS = (1_000, 1_500, 2_500)  # rows of raw_jaffle_shop.orders per load, a day apart
AUDIT_FAILURES = [{"model": "staging.stg_jaffle_shop__orders", "audit": "unique_values", "count": 3},
                  {"model": "marts.orders", "audit": "not_null", "count": 1_204}]


@dataclass
class Known:
    page: Path
    now: datetime
    runs: list[RunRecord]


# rows per layer as each day's build recorded them (the transform job writes this after a build)
BUILT_ROWS = [{"raw": 900 * (d + 1), "staging": 1_000 * (d + 1), "intermediate": 10, "marts": 2_000 * (d + 1)}
              for d in range(5)]


def _history(now: datetime) -> list[RunRecord]:
    """Five days of a load, the transform, an hourly command and a job that always fails."""
    day0 = (now - timedelta(days=5)).replace(hour=0, minute=0, second=0, microsecond=0)  # all in the past
    runs: list[RunRecord] = []

    def add(job: str, status: str, at: datetime, **extra: Any) -> None:
        runs.append(RunRecord(run_id=f"r{len(runs):04d}", attempt=1, job=job, trigger="schedule", status=status,
                              started_at=at, finished_at=at + timedelta(minutes=2), max_attempts=3, **extra))

    for d in range(5):
        day = day0 + timedelta(days=d)
        if d == 2:
            add("jaffle_shop", "retrying", day + timedelta(hours=1), error="connection reset by peer")
        add("jaffle_shop", "succeeded", day + timedelta(hours=1, minutes=5), rows_loaded=12_345)
        add("transform", "succeeded", day + timedelta(hours=2),
            audits_json=json.dumps({"run": 57, "passed": 57, "restated": [], "failed": []}),
            tables_json=json.dumps({"restated": [], "rows_by_layer": BUILT_ROWS[d]}))
        if d == 3:
            add("transform", "skipped_locked", day + timedelta(hours=2, minutes=1))
        for h in range(0, 24, 2 if d < 4 else 4):
            add("quick", "failed" if (d, h) in ((1, 6), (3, 14)) else "succeeded", day + timedelta(hours=h, minutes=30))
        if d >= 3:
            add("bad", "failed", day + timedelta(hours=3), error="bad input: row 7, field amount is not a number")
    latest = max(r.started_at for r in runs) + timedelta(minutes=5)
    add("transform", "failed", latest, error="transform failed during audits: 2 audit(s) failed",
        audits_json=json.dumps({"failed": AUDIT_FAILURES, "skipped": []}))
    return runs


def _warehouse(path: Path, now: datetime) -> None:
    """raw (loaded three times), staging, intermediate and marts tables with known row counts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    for schema in ("raw_jaffle_shop", "staging", "intermediate", "marts", "elt_meta"):
        con.execute(f"CREATE SCHEMA {schema}")
    con.execute("CREATE TABLE raw_jaffle_shop.orders (id VARCHAR, ordered_at TIMESTAMP, _loaded_at TIMESTAMP)")
    for k, n in enumerate(RAW_LOADS):
        at = now - timedelta(days=3 - k, hours=-1)
        con.execute("INSERT INTO raw_jaffle_shop.orders SELECT 'o' || i, ?, ? FROM range(?) AS t(i)", [at, at, n])
    con.execute("CREATE TABLE raw_jaffle_shop.customers AS SELECT 'c' || i AS id, ?::TIMESTAMP AS _loaded_at "
                "FROM range(935) AS t(i)", [now - timedelta(days=3, hours=-1)])
    con.execute("CREATE TABLE staging.stg_jaffle_shop__orders AS SELECT 'o' || i AS order_id FROM range(4800) AS t(i)")
    con.execute("CREATE TABLE staging.stg_jaffle_shop__customers AS SELECT 'c' || i AS customer_id FROM range(935) AS t(i)")
    con.execute("CREATE TABLE intermediate.int_supplies_summed_to_products AS SELECT i AS product_id FROM range(10) AS t(i)")
    con.execute("CREATE TABLE marts.orders AS SELECT 'o' || i AS order_id, ?::TIMESTAMP AS ordered_at "
                "FROM range(4800) AS t(i)", [now - timedelta(hours=54)])
    # stale: a mart built by the day is measured from the end of its newest day, which ended 30 to
    # 54 hours ago whatever the time of day now (more than its 26 hours)
    con.execute("CREATE TABLE marts.order_items AS SELECT i AS order_item_id, ?::TIMESTAMP AS ordered_at "
                "FROM range(11234) AS t(i)", [now - timedelta(hours=5)])
    con.execute("CREATE TABLE marts.customers AS SELECT 'c' || i AS customer_id FROM range(935) AS t(i)")
    con.execute("CREATE TABLE elt_meta.transform_watermarks (environment VARCHAR, finished_at TIMESTAMP)")
    con.execute("INSERT INTO elt_meta.transform_watermarks VALUES ('prod', ?)", [now - timedelta(hours=2)])
    con.close()


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> Known:
    """`elt report` on a copied project with a known history and warehouse (no pipeline run)."""
    tmp = tmp_path_factory.mktemp("report-browser")
    root = copy_project(tmp / "project")
    jobs_file = tmp / "jobs.yaml"
    jobs_file.write_text(json.dumps(command_jobs(tmp)))  # JSON is YAML
    project = Project(root, project_env(root, ELT_JOBS_FILE=str(jobs_file), ELT_JOBS="jaffle_shop,transform,quick,bad"))
    now = utcnow().replace(microsecond=0)
    runs = _history(now)
    history = project.history()
    for r in runs:
        history.insert(r)
    _warehouse(project.settings().warehouse, now)
    page = tmp / "site" / "status.html"
    proc = project.elt("report", "--out", str(page))
    assert proc.returncode == 0, proc.stderr
    return Known(page, now, runs)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def served(known: Known) -> Iterator[str]:
    """The page over HTTP on 127.0.0.1, as `elt serve` or any static server hands it out."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(known.page.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{known.page.name}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser_page(served: str, tmp_path_factory: pytest.TempPathFactory,
                 request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The page opened in Chromium, with every console error, page error and request recorded."""
    assert CHROMIUM.exists(), (f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install chromium` "
                               "(CI installs it); the browser check never downloads a browser")
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {"errors": [], "requests": []}
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=ARGS, viewport={"width": 1100, "height": 900}, device_scale_factor=1,
            env={**os.environ, "HOME": str(tmp_path_factory.mktemp("chromium-home"))})
        try:
            context.on("request", lambda request: seen["requests"].append(request.url))
            page = context.new_page()
            page.on("console", lambda msg: seen["errors"].append(f"console: {msg.text}") if msg.type == "error" else None)
            page.on("pageerror", lambda exc: seen["errors"].append(f"page error: {exc}"))
            response = page.goto(served, wait_until="load")
            assert response is not None and response.ok, response
            page.wait_for_timeout(300)  # anything late (a lazy font, a favicon) would be recorded by now
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
                print(f"\nreport screenshot: {SCREENSHOT}")  # shown without -s too
            seen["page"] = page
            seen["url"] = served
            yield seen
        finally:
            context.close()


def _attrs(page: Any, selector: str, *names: str) -> list[tuple[str, ...]]:
    return [tuple(x) for x in page.eval_on_selector_all(
        selector, "(els, names) => els.map(e => names.map(n => e.getAttribute(n)))", list(names))]


def test_page_loads_with_no_console_error_and_no_request_but_its_own(browser_page: dict[str, Any]) -> None:
    assert browser_page["errors"] == []
    assert browser_page["requests"] == [browser_page["url"]]
    assert SCREENSHOT.stat().st_size > 10_000, SCREENSHOT


def test_runs_chart_counts_every_attempt_per_job_and_status(browser_page: dict[str, Any], known: Known) -> None:
    page = browser_page["page"]
    shown: Counter[tuple[str, str]] = Counter()
    for job, status, value, color in _attrs(page, "#runs-chart rect.bar", "data-job", "data-status", "data-value", "fill"):
        shown[(job, status)] += int(value)
        assert color == {"succeeded": "#2e7d32", "failed": "#c62828"}.get(status, color)
    assert shown == Counter((r.job, r.status) for r in known.runs)
    assert [j for (j,) in _attrs(page, "#runs-chart g.lane", "data-job")] == ["bad", "jaffle_shop", "quick", "transform"]
    assert page.locator("#runs-chart .tick").count() > 8  # a count axis per lane and a day axis
    assert page.locator("#runs-chart title").first.text_content().startswith("Attempts per day per job")


def test_freshness_chart_shows_each_marts_age_against_its_limit(browser_page: dict[str, Any]) -> None:
    rows = _attrs(browser_page["page"], "#freshness-chart g.freshness-row[data-kind=mart]", "data-subject",
                  "data-state", "data-limit-s", "data-age-s")
    limits = {s: int(limit) for s, _, limit, _ in rows}
    assert limits == declared_max_ages(ROOT)  # every mart, at its 'freshness:' tag
    assert limits["marts.orders"] == 26 * 3600 and limits["marts.locations"] == 7 * 86400
    states = {s: state for s, state, _, _ in rows}
    assert states["marts.orders"] == "stale" and states["marts.order_items"] == "fresh", states
    age = {s: int(a) for s, _, _, a in rows}
    assert 30 * 3600 <= age["marts.orders"] <= 54 * 3600
    assert browser_page["page"].locator("#freshness-limit").count() == 1


def test_layers_chart_is_in_pipeline_order_with_raw_over_time(browser_page: dict[str, Any]) -> None:
    page = browser_page["page"]
    layers = _attrs(page, "#layers-chart g.layer", "data-layer", "data-order", "data-rows")
    assert [(layer, int(order)) for layer, order, _ in layers] == [
        ("raw", 0), ("staging", 1), ("intermediate", 2), ("marts", 3)]
    assert {layer: int(rows) for layer, _, rows in layers} == {
        "raw": sum(RAW_LOADS) + 935, "staging": 4_800 + 935, "intermediate": 10, "marts": 4_800 + 11_234 + 935}
    raw = [int(v) for (v,) in _attrs(page, "#layers-chart circle.point[data-layer=raw]", "data-value")]
    assert raw == [1_000 + 935, 2_500 + 935, 5_000 + 935]  # cumulative, one point per load
    # the modelled layers: as each build recorded them, then as counted now at the last build
    staging = [int(v) for (v,) in _attrs(page, "#layers-chart circle.point[data-layer=staging]", "data-value")]
    assert staging == [1_000, 2_000, 3_000, 4_000, 5_000, 4_800 + 935]
    marts = [int(v) for (v,) in _attrs(page, "#layers-chart circle.point[data-layer=marts]", "data-value")]
    assert marts == [2_000, 4_000, 6_000, 8_000, 10_000, 4_800 + 11_234 + 935]
    tops = [page.locator(f"#layers-chart g.layer[data-layer={layer}]").bounding_box()["y"]  # type: ignore[index]
            for layer in ("raw", "staging", "intermediate", "marts")]
    assert tops == sorted(tops)  # drawn top to bottom in pipeline order
    table = page.locator("#layers table td:first-child").all_text_contents()
    assert table == sorted(table, key=["raw", "staging", "intermediate", "marts"].index)
    assert "16,969" in page.locator("#layers").inner_text()  # thousands separators


def test_audits_chart_and_headline_say_what_is_wrong(browser_page: dict[str, Any]) -> None:
    page = browser_page["page"]
    tiles = _attrs(page, "#audits-chart g.audit-layer", "data-layer", "data-failed", "data-rows")
    assert tiles == [("raw", "0", "0"), ("staging", "1", "3"), ("intermediate", "0", "0"), ("marts", "1", "1204")]
    assert "1,204" in page.locator("#audits table").inner_text()
    summary = page.locator("#summary")
    assert summary.get_attribute("data-state") == "problems"
    text = summary.inner_text()
    assert "Job bad" in text and "Job transform" in text and "marts.orders" in text, text
    assert "Job quick" not in text and "Job jaffle_shop" not in text, text  # their latest attempts succeeded
