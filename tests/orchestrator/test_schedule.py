"""Cron parsing, due slots, the catch-up policy and retry delays (pure functions, fake clock)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest
from sqlglot import parse_one
from sqlmesh.core.model import SqlModel, create_sql_model

from orchestrator.scheduling.schedule import Cron, CronError, due_runs, retry_delay


def test_fields_ranges_steps_lists_and_aliases() -> None:
    cron = Cron.parse("0,30 8-10 * * 1-5")
    assert cron.minutes == {0, 30} and cron.hours == {8, 9, 10} and cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("*/20 * * * *").minutes == {0, 20, 40}
    assert Cron.parse("5-20/5 * * * *").minutes == {5, 10, 15, 20}
    assert Cron.parse("10/15 * * * *").minutes == {10, 25, 40, 55}
    assert (Cron.parse("@daily").minutes, Cron.parse("@daily").hours) == ({0}, {0})
    assert Cron.parse("@hourly").minutes == {0} and len(Cron.parse("@hourly").hours) == 24
    assert Cron.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too


@pytest.mark.parametrize("text", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "@often", "0 0 * * * 30"])
def test_bad_cron_is_refused_with_the_field(text: str) -> None:
    with pytest.raises(CronError, match="cron"):
        Cron.parse(text)


def _sqlmesh_model(cron: str) -> SqlModel:
    """A real SQLMesh model with this cron: SQLMesh's own reading of the string."""
    return create_sql_model("db.cron_probe", parse_one("select 1 as x"), cron=cron)


def test_names_last_day_nth_weekday_and_ranges_with_steps() -> None:
    assert Cron.parse("0 9 * * MON-FRI").next(datetime(2026, 11, 27, 10, 0)) == datetime(2026, 11, 30, 9, 0)  # Fri
    assert Cron.parse("0 0 1 JAN *").previous(datetime(2026, 11, 25)) == datetime(2026, 1, 1)
    assert Cron.parse("0 0 L * *").previous(datetime(2024, 3, 15)) == datetime(2024, 2, 29)
    assert Cron.parse("0 7 * * 1#2").next(datetime(2026, 11, 25)) == datetime(2026, 12, 14, 7, 0)
    steps = Cron.parse("0-30/10 8-18/2 * * *")
    assert steps.minutes == {0, 10, 20, 30} and steps.hours == {8, 10, 12, 14, 16, 18}
    assert Cron.parse("0 22-2 * * *").hours == {22, 23, 0, 1, 2}  # through midnight, as SQLMesh reads it
    # a weekday job missed over a weekend: Monday's and Tuesday's slots, not Saturday's or Sunday's
    cron, friday, tuesday = Cron.parse("0 9 * * MON-FRI"), datetime(2026, 11, 27, 9, 0), datetime(2026, 12, 1, 10, 0)
    [due] = due_runs(cron, friday, tuesday)
    assert (due.slot, due.interval_start, due.missed) == (datetime(2026, 12, 1, 9, 0), friday, 2)
    assert [d.slot.day for d in due_runs(cron, friday, tuesday, "each")] == [30, 1]


@pytest.mark.parametrize("text", ["0 9 * * MON-FRI", "30 6 1 JAN,JUL *", "0 0 L * *", "0 7 * * 1#2", "0 0 * * L5",
                                  "0-30/10 8-18/2 * * *", "15 3 * JAN-MAR/2 SUN", "0 12 1-7 * MON", "0 22-2 * * *",
                                  "0 6 15W * *", "@weekly"])
def test_slots_are_the_ones_sqlmesh_computes_for_a_model_cron(text: str) -> None:
    cron, model = Cron.parse(text), _sqlmesh_model(text)
    start, theirs = datetime(2026, 1, 1, 0, 0, 30), []
    while len(theirs) < 60:  # SQLMesh walks forward from start ...
        theirs.append(model.cron_next(theirs[-1] if theirs else start).replace(tzinfo=None))
    # ... the schedule walks back from the last one, counts, and finds each slot on its own
    assert cron.slots_between(start, theirs[-1], 1000) == theirs
    assert cron.count_between(start, theirs[-1]) == len(theirs)
    for slot in theirs[::5]:
        assert cron.previous(slot) == cron.previous(slot + timedelta(seconds=59)) == slot and cron.matches(slot)
        assert cron.next(slot) == model.cron_next(slot).replace(tzinfo=None)
        assert cron.previous(slot - timedelta(seconds=1)) == model.cron_prev(slot).replace(tzinfo=None)


@pytest.mark.parametrize(("text", "field"), [
    ("61 * * * *", "minute"), ("*/0 * * * *", "minute"), ("0 24 * * *", "hour"), ("0 0 32 * *", "day of month"),
    ("0 0 LW * *", "day of month"), ("0 0 * FOO *", "month"), ("0 0 * * 1#6", "day of week"),
    ("0 0 * * MON-FRY", "day of week"),
])
def test_invalid_cron_names_the_field_and_sqlmesh_refuses_it_too(text: str, field: str) -> None:
    with pytest.raises(CronError) as refused:
        Cron.parse(text)
    bad = text.split()[list(("minute", "hour", "day of month", "month", "day of week")).index(field)]
    assert str(refused.value).startswith(f"cron {text!r}: {field} {bad!r} is not valid; use "), refused.value
    with pytest.raises(ValueError, match="Invalid cron expression"):
        _sqlmesh_model(text)


def test_a_job_with_an_invalid_schedule_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.scheduling.jobs import all_jobs
    from orchestrator.settings import Settings
    from sources.errors import ConfigError

    monkeypatch.delenv("ELT_JOBS_FILE", raising=False)
    monkeypatch.delenv("ELT_JOBS", raising=False)
    monkeypatch.delenv("ELT_JOB_TRANSFORM_SCHEDULE", raising=False)
    monkeypatch.setenv("ELT_TRANSFORM_SCHEDULE", "0 6 * * MON-FRI")
    assert all_jobs(Settings.from_env())["transform"].cron.next(datetime(2026, 11, 28)) == datetime(2026, 11, 30, 6)
    monkeypatch.setenv("ELT_TRANSFORM_SCHEDULE", "0 6 * * 1#6")
    with pytest.raises(ConfigError, match=r"job transform: cron '0 6 \* \* 1#6': day of week '1#6' is not valid"):
        all_jobs(Settings.from_env())


def test_matches_and_day_or_weekday_rule() -> None:
    # both day fields restricted: either matches (Vixie cron); 2026-11-25 is a Wednesday
    cron = Cron.parse("0 12 1 * 3")
    assert cron.matches(datetime(2026, 11, 25, 12, 0))
    assert cron.matches(datetime(2026, 12, 1, 12, 0))  # a Tuesday, but the 1st
    assert not cron.matches(datetime(2026, 11, 24, 12, 0))
    # only weekdays restricted: day-of-month '*' does not widen it
    assert not Cron.parse("0 12 * * 3").matches(datetime(2026, 11, 24, 12, 0))


def test_previous_slot() -> None:
    cron = Cron.parse("30 6 * * *")
    assert cron.previous(datetime(2026, 11, 25, 6, 30, 59)) == datetime(2026, 11, 25, 6, 30)
    assert cron.previous(datetime(2026, 11, 25, 6, 29)) == datetime(2026, 11, 24, 6, 30)
    assert Cron.parse("0 0 29 2 *").previous(datetime(2026, 11, 25)) == datetime(2024, 2, 29)
    assert Cron.parse("0 0 31 2 *").previous(datetime(2026, 11, 25)) is None  # never matches


def test_missed_slots_give_one_combined_run_and_never_twice() -> None:
    cron = Cron.parse("@hourly")
    last = datetime(2026, 11, 25, 0, 0)
    now = datetime(2026, 11, 25, 5, 30)
    [due] = due_runs(cron, last, now)
    assert (due.slot, due.interval_start, due.missed) == (datetime(2026, 11, 25, 5, 0), last, 5)
    assert due_runs(cron, due.slot, now) == []  # that slot ran: nothing until 06:00
    assert due_runs(cron, due.slot, datetime(2026, 11, 25, 6, 0))[0].missed == 1


def test_catch_up_policies_each_and_latest() -> None:
    cron = Cron.parse("@hourly")
    last, now = datetime(2026, 11, 25, 0, 0), datetime(2026, 11, 25, 5, 30)
    each = due_runs(cron, last, now, "each")
    assert [d.slot.hour for d in each] == [1, 2, 3, 4, 5]
    assert [d.interval_start.hour for d in each if d.interval_start] == [0, 1, 2, 3, 4]
    assert len(due_runs(cron, last, now, "each", each_limit=2)) == 2
    [latest] = due_runs(cron, last, now, "latest")
    assert latest.interval_start == datetime(2026, 11, 25, 4, 0)
    with pytest.raises(CronError, match="catch-up policy"):
        due_runs(cron, last, now, "sometimes")


def test_first_tick_runs_the_latest_slot_once() -> None:
    [due] = due_runs(Cron.parse("*/15 * * * *"), None, datetime(2026, 11, 25, 6, 7))
    assert due.slot == datetime(2026, 11, 25, 6, 0) and due.interval_start is None


def test_retry_delays_stay_within_jitter_bounds_and_cap() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 * 2 ** (attempt - 1))
        samples = [retry_delay(attempt, base=2.0, cap=60.0, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples), attempt
        assert max(samples) - min(samples) > ceiling / 10  # it is jittered, not constant
    assert max(retry_delay(50, base=2.0, cap=60.0, rng=rng) for _ in range(200)) <= 60.0
