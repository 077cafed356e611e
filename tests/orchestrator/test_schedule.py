"""Cron parsing, due slots, the catch-up policy and retry delays (pure functions, fake clock)."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from orchestrator.schedule import Cron, CronError, due_runs, retry_delay


def test_fields_ranges_steps_lists_and_aliases() -> None:
    cron = Cron.parse("0,30 8-10 * * 1-5")
    assert cron.minutes == {0, 30} and cron.hours == {8, 9, 10} and cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("*/20 * * * *").minutes == {0, 20, 40}
    assert Cron.parse("5-20/5 * * * *").minutes == {5, 10, 15, 20}
    assert Cron.parse("10/15 * * * *").minutes == {10, 25, 40, 55}
    assert (Cron.parse("@daily").minutes, Cron.parse("@daily").hours) == ({0}, {0})
    assert Cron.parse("@hourly").minutes == {0} and len(Cron.parse("@hourly").hours) == 24
    assert Cron.parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday too


@pytest.mark.parametrize("text", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *", "@often"])
def test_bad_cron_is_refused_with_the_field(text: str) -> None:
    with pytest.raises(CronError, match="cron"):
        Cron.parse(text)


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
