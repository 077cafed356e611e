"""What `elt freshness` expects a mart to hold at an instant, checked against SQLMesh itself.

Freshness reads a model's schedule from its file (a tick must not load a SQLMesh context) and
computes which intervals a run at a given instant has built. These tests ask SQLMesh's own
``Snapshot.missing_intervals`` the same question, for crons in UTC and in other zones
(``cron_tz``), across the 2018 daylight-saving changes and month ends, so the two cannot drift
apart. Before ``cron_tz`` was read, a ``@daily`` mart in Los Angeles was expected to hold a day
that SQLMesh builds only at 07:00 or 08:00 UTC, and was called stale for hours every day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmesh.core import dialect as d
from sqlmesh.core.model import load_sql_based_model
from sqlmesh.core.snapshot import Snapshot
from sqlmesh.utils.date import to_datetime

from orchestrator.observe.freshness import Period, model_schedules

SCHEDULES = [  # (cron, cron_tz, interval_unit, allow_partials)
    ("@daily", None, "day", False),
    ("@daily", "America/Los_Angeles", "day", False),
    ("@daily", "Asia/Tokyo", "day", False),
    ("@daily", "Asia/Kolkata", "day", False),  # a half-hour offset
    ("0 6 * * 1-5", "Europe/Berlin", "day", False),  # working days at 06:00 in Berlin
    ("@monthly", None, "month", False),
    ("@monthly", "America/Los_Angeles", "month", False),
    ("@daily", "Australia/Sydney", "month", True),  # this month so far, by a daily run in Sydney
    ("@hourly", "Asia/Kolkata", "hour", False),
]

# every half hour of two days around each 2018 daylight-saving change of Los Angeles, Berlin and
# Sydney, a weekend and the month and year ends
INSTANTS = [start + timedelta(minutes=30 * k) for start in
            (datetime(2018, 3, 10, 12), datetime(2018, 3, 24, 12), datetime(2018, 3, 31), datetime(2018, 10, 27, 12),
             datetime(2018, 11, 3, 12), datetime(2018, 12, 31))
            for k in range(2 * 48)]


def _snapshot(cron: str, tz: str | None, unit: str, partials: bool) -> Snapshot:
    settings = (f", cron_tz '{tz}'" if tz else "") + f", interval_unit '{unit}'" + (", allow_partials true" if partials else "")
    model = load_sql_based_model(d.parse(
        f"MODEL (name marts.m, kind INCREMENTAL_BY_TIME_RANGE (time_column t), cron '{cron}'{settings}, "
        "start '2018-01-01'); SELECT CAST('2018-01-01' AS DATE) AS t"))
    return Snapshot.from_node(model, nodes={}, ttl="in 1 week")


def _built_by_sqlmesh(snapshot: Snapshot, at: datetime) -> datetime:
    """The end of the newest interval a run of an empty model at ``at`` would build, per SQLMesh."""
    since = at - timedelta(days={"hour": 1, "day": 10}.get(snapshot.node.interval_unit.value, 70))
    intervals = snapshot.missing_intervals(since, at, execution_time=at)
    assert intervals, at
    return to_datetime(intervals[-1][1]).astimezone(UTC).replace(tzinfo=None)


@pytest.mark.parametrize("cron, tz, unit, partials", SCHEDULES)
def test_what_a_run_has_built_is_what_sqlmesh_builds(cron: str, tz: str | None, unit: str, partials: bool) -> None:
    snapshot = _snapshot(cron, tz, unit, partials)
    period = Period(unit, cron, partials, "t", tz)
    built = {at: _built_by_sqlmesh(snapshot, at) for at in INSTANTS}
    differ = [(at, period.built_until(at), built[at]) for at in INSTANTS if period.built_until(at) != built[at]]
    assert not differ, differ[:5]
    # and the zone matters: the same cron read in UTC differs somewhere (a check that can fail)
    if tz:
        in_utc = Period(unit, cron, partials, "t")
        assert any(in_utc.built_until(at) != built[at] for at in INSTANTS)


@pytest.mark.parametrize("cron, tz", [(c, z) for c, z, unit, partials in SCHEDULES if unit == "day"])
def test_a_day_is_expected_from_the_run_that_builds_it(cron: str, tz: str | None) -> None:
    """The daily marts' maximum counts from the run that builds the next day: SQLMesh has not
    built that day a minute before it, and has built it at that run."""
    snapshot, period = _snapshot(cron, tz, "day", False), Period("day", cron, False, "t", tz)
    for newest_end in (datetime(2018, 3, 9) + timedelta(days=k) for k in range(12)):
        next_end = newest_end + timedelta(days=1)
        run = next_end + timedelta(seconds=period.day_run_delay_s(newest_end))
        assert _built_by_sqlmesh(snapshot, run) >= next_end, (newest_end, run)
        assert _built_by_sqlmesh(snapshot, run - timedelta(minutes=1)) < next_end, (newest_end, run)


def test_the_schedule_comes_from_the_model_else_model_defaults(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "config.yaml").write_text(
        "gateways: {}\nmodel_defaults:\n  dialect: duckdb\n  cron: \"@daily\"\n  cron_tz: America/Los_Angeles  # the shop's day\n"
        "  post_statements:\n    - \"@analyze_written_table()\"\nformat:\n  indent: 2\n")
    (tmp_path / "models" / "a.sql").write_text(
        "MODEL (name marts.a, kind INCREMENTAL_BY_TIME_RANGE (time_column d)\n);\nSELECT 1")
    (tmp_path / "models" / "b.sql").write_text(
        "MODEL (name marts.b, cron '@monthly', cron_tz 'UTC', -- not cron_tz 'Asia/Tokyo'\n"
        "  kind INCREMENTAL_BY_TIME_RANGE (time_column d)\n);\nSELECT 1")
    (tmp_path / "models" / "c.sql").write_text("MODEL (name marts.c, cron_tz 'Europe/Nowhere'\n);\nSELECT 1")
    schedules = model_schedules(tmp_path)
    assert (schedules["marts.a"].unit, schedules["marts.a"].cron, schedules["marts.a"].tz) == (
        "day", "@daily", "America/Los_Angeles")
    assert (schedules["marts.b"].unit, schedules["marts.b"].cron, schedules["marts.b"].tz) == ("month", "@monthly", None)
    assert "marts.c" not in schedules  # SQLMesh refuses the zone when it loads the model
