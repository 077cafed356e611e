"""A row dated after today (a typo of 2029 for 2019, or a 9999-12-31 "end of time" placeholder) is
in no mart until its day comes: SQLMesh builds a day once it has ended. The transform must not try
to restate such days (there is no interval to remove; 9999-12-31 has no next day in Python, and
every transform crashed on it), must not say it restated them, and names the rows on every
transform while they wait, as it names rows dated before the models' start (decision 0051,
docs/runbook.md#rows-without-an-event-time). When the day comes, SQLMesh builds it with the row.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import time_machine

from orchestrator.transform.restate import whole_intervals
from orchestrator.transform.run import transform
from orchestrator.transform.windows import Windows
from tests.orchestrator.conftest import Project
from tests.orchestrator.test_incremental_transform import START, Gateway, Shop, _clean_build, _load, _settings

MONTHLY = """MODEL (
  name marts.orders_by_month,
  kind INCREMENTAL_BY_TIME_RANGE (time_column month_start),
  cron '@monthly'
);

SELECT DATE_TRUNC('month', orders.ordered_at) AS month_start, COUNT(*) AS orders
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY 1
"""


def test_days_after_the_last_built_day_are_dropped_before_any_date_arithmetic() -> None:
    """9999-12-31 has no next day: ``ranges`` and a monthly model's whole months (croniter) raised
    OverflowError or ValueError on it, and on any day of December 9999."""
    from sqlmesh.core.node import IntervalUnit

    from orchestrator.transform.restate import to_ms

    today = date(2026, 12, 6)
    w = Windows({date(2019, 3, 1), date(2029, 3, 1), date(9999, 12, 15), date(9999, 12, 31)},
                later={date(9999, 12, 31)}, later_values={date.max})
    assert w.until(today) == {date(2029, 3, 1), date(9999, 12, 15), date(9999, 12, 31)}
    assert w.ranges() == [(date(2019, 3, 1), date(2019, 3, 2))]
    assert w.describe() == "1 day(s): 2019-03-01"
    assert not w.later and not w.later_values
    spans = [(to_ms(a), to_ms(b)) for a, b in w.restated()]
    assert whole_intervals(spans, IntervalUnit.MONTH) == [(to_ms(date(2019, 3, 1)), to_ms(date(2019, 4, 1)))]
    # a model that restates the next days of each touched day computes none past its end
    near_max = Windows({date(9999, 12, 30)})
    near_max.following(3, date(2020, 1, 1))
    assert near_max.days == {date(9999, 12, 30)}
    only_future = Windows({date(9999, 12, 31)})
    only_future.until(today)
    assert not only_future and only_future.ranges() == []


@pytest.mark.slow
def test_an_end_of_time_order_waits_named_and_its_correction_reaches_the_marts(
        project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: one order dated 9999-12-31T10:00:00 made every `elt transform` exit 1 with
    `OverflowError: date value out of range` (windows.ranges), naming no row, and kept doing so
    after the source corrected it: its batch stayed pending, and new days never reached the marts.
    A monthly model crashed on any day of December 9999 (whole_intervals)."""
    (project.root / "models" / "marts" / "orders_by_month.sql").write_text(MONTHLY)
    shop = Shop(random.Random(11))
    for n in range(4):
        shop.add_order(START + timedelta(days=n))
    files = project.root / "data" / "jaffle-data"
    shop.write(files)

    def load_and_transform() -> str:
        loaded = project.elt("load", "jaffle_shop", timeout=300)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        done = project.elt("transform", timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout + done.stderr

    load_and_transform()
    fresh = shop.add_order(START + timedelta(days=5))
    placeholder = shop.add_order(START + timedelta(days=5))
    shop.orders[placeholder]["ordered_at"] = "9999-12-31T10:00:00"
    shop.write(files)
    today = datetime.now(UTC).date()
    for run in range(2):  # named again by the next transform, which has nothing new
        said = load_and_transform() if run == 0 else project.elt("transform", timeout=600).stderr
        assert (f"1 key(s) of raw_jaffle_shop.orders not in staging.stg_jaffle_shop__orders yet: their latest version "
                f"is dated after {today} (today in UTC): it reaches the marts on its day") in said, said
        assert f"id='{placeholder}'" in said and "9999-12-31 10:00:00" in said, said
        assert "if the date is a typo, correct it at the source" in said.lower(), said
        assert "rows dated before the models' start" not in said, said
        orders = {r[0] for r in Gateway("duckdb").rows(project.settings(), "SELECT order_id FROM marts.orders")}
        assert fresh in orders and placeholder not in orders
    # corrected at the source: the next load and transform place it on its day, and name it no more
    shop.orders[placeholder]["ordered_at"] = f"{(START + timedelta(days=2)).isoformat()}T09:00:00"
    shop.write(files)
    said = load_and_transform()
    assert "dated after" not in said, said
    monkeypatch.delenv("ELT_DUCKDB_PATH", raising=False)  # Gateway.settings sets it for the clean build
    clean = _clean_build(tmp_path, shop)
    assert Gateway("duckdb").marts(project.settings()) == clean
    with_month = Gateway("duckdb").rows(project.settings(), "SELECT month_start, orders FROM marts.orders_by_month")
    assert with_month == [(datetime(2018, 9, 1), len(shop.orders))]


@pytest.mark.slow
def test_an_order_dated_tomorrow_is_named_not_restated_and_reaches_the_marts_on_its_day(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Found by a probe: an order dated in the future passed in silence, and the log claimed a
    restatement of its day (`restating staging.stg_jaffle_shop__orders: 2 day(s): 2019-03-01,
    2029-03-01`). The clock is moved (time_machine) so that its day comes a few days later."""
    monkeypatch.delenv("ELT_DUCKDB_PATH", raising=False)
    shop = Shop(random.Random(13))
    for n in range(3):
        shop.add_order(START + timedelta(days=n))
    settings = _settings(tmp_path, "tomorrow")
    folder = tmp_path / "files"
    with time_machine.travel(datetime(2018, 9, 6, 12, tzinfo=UTC), tick=True):
        shop.write(folder)
        _load(settings, folder)
        transform(settings, quiet=True)
        late = shop.add_order(START + timedelta(days=4))  # yesterday: restated
        tomorrow = shop.add_order(START + timedelta(days=6))
        typo = shop.add_order(START + timedelta(days=4))
        shop.orders[typo]["ordered_at"] = "2029-09-05T12:00:00"
        shop.write(folder)
        _load(settings, folder)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            summary = transform(settings, quiet=True)
        restating = [r.getMessage() for r in caplog.records if r.getMessage().startswith("restating staging.")]
        assert restating and all(m.endswith(": 1 day(s): 2018-09-05") for m in restating), restating
        assert "2 key(s) of raw_jaffle_shop.orders not in staging.stg_jaffle_shop__orders yet" in summary.warned, \
            summary.warned
        assert "dated after 2018-09-06 (today in UTC)" in summary.warned, summary.warned
        assert [c["why"] for c in summary.held_counts] == ["ordered_at after 2018-09-06"]
        served = {r[0] for r in Gateway("duckdb").rows(settings, "SELECT order_id FROM marts.orders")}
        assert late in served and tomorrow not in served and typo not in served
    with time_machine.travel(datetime(2018, 9, 8, 6, tzinfo=UTC), tick=True):
        # the day has come and ended: SQLMesh builds it, with the row; only the typo is named
        summary = transform(settings, quiet=True)
        assert "1 key(s) of raw_jaffle_shop.orders not in" in summary.warned, summary.warned
        assert f"id='{typo}'" in summary.warned and f"id='{tomorrow}'" not in summary.warned, summary.warned
        served = {r[0] for r in Gateway("duckdb").rows(settings, "SELECT order_id FROM marts.orders")}
        assert tomorrow in served and typo not in served
        shop.delete_order(typo)  # the clean build of the same source without the 2029 order
        assert Gateway("duckdb").marts(settings) == _clean_build(tmp_path, shop)
