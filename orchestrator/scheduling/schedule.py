"""Cron expressions, due slots, the catch-up policy and retry delays: pure functions of ``now``.

Cron is read by croniter with the options SQLMesh reads a model's ``cron`` with, so a job's
``schedule`` is written as a model's ``cron`` is: names (``MON-FRI``, ``JAN``), ``L`` (last day of
the month), ``1#2`` (second Monday), ranges with steps, ``@daily`` and friends. A job's schedule is
always in UTC (a model's cron may have a ``cron_tz``; a job's has no zone), so no daylight-saving
change skips or repeats a job's slot.
Nothing here reads the clock; callers pass ``now`` (a naive UTC ``datetime``), so tests drive time
with a fake clock.

>>> cron = Cron.parse("*/15 * * * *")
>>> cron.previous(datetime(2026, 11, 25, 6, 7))
datetime.datetime(2026, 11, 25, 6, 0)
>>> cron.count_between(datetime(2026, 11, 25, 5, 0), datetime(2026, 11, 25, 6, 7))
4
>>> Cron.parse("0 9 * * MON-FRI").next(datetime(2026, 11, 27, 10, 0))  # a Friday
datetime.datetime(2026, 11, 30, 9, 0)
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice, takewhile

from croniter import CroniterBadDateError, croniter

_FIELDS = {  # what each field takes besides lists (1,3), ranges (1-5) and steps (*/15, 8-18/2)
    "minute": "0-59",
    "hour": "0-23",
    "day of month": "1-31, L (the last day), 15W (the weekday nearest the 15th)",
    "month": "1-12 or JAN-DEC",
    "day of week": "0-7 or SUN-SAT (0 and 7 are Sunday), 1#2 (the second Monday), L5 (the last Friday)",
}


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    """Five-field cron (minute hour day-of-month month day-of-week) in UTC, plus @daily and friends.

    As in Vixie cron (and SQLMesh), when both day fields are restricted a day matches if either does.
    A seconds or year field (croniter's 6th and 7th) is refused: ``elt tick`` runs once a minute.
    """

    text: str

    @classmethod
    def parse(cls, text: str) -> Cron:
        expr = text.strip()
        parts = expr.split()
        if len(parts) in (1, 5) and croniter.is_valid(expr):
            return cls(expr)
        if len(parts) != 5:
            raise CronError(f"cron {text!r} must have 5 fields (minute hour day month weekday) or be "
                            "@hourly/@daily/@weekly/@monthly/@yearly")
        for (name, allowed), part in zip(_FIELDS.items(), parts):
            if not croniter.is_valid(" ".join(part if f == name else "*" for f in _FIELDS)):
                raise CronError(f"cron {text!r}: {name} {part!r} is not valid; use {allowed}, "
                                "lists (1,3), ranges (1-5) and steps (*/15, 8-18/2)")
        raise CronError(f"cron {text!r} is not valid (croniter refuses it, as SQLMesh would for a model cron)")

    def _field(self, index: int) -> frozenset[int]:
        values = croniter.expand(self.text)[0][index]
        low, high = croniter.RANGES[index]
        return frozenset(range(low, high + 1) if values == ["*"] else values)

    @property
    def minutes(self) -> frozenset[int]:
        return self._field(0)

    @property
    def hours(self) -> frozenset[int]:
        return self._field(1)

    @property
    def weekdays(self) -> frozenset[int]:  # 0 = Sunday (7 is folded into 0)
        return self._field(4)

    def _slots(self, start: datetime, *, backwards: bool = False) -> Iterator[datetime]:
        """Slots after ``start`` (backwards: at or before it, seconds ignored), nearest first."""
        if backwards:
            start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
        it = croniter(self.text, start)
        step = it.get_prev if backwards else it.get_next
        while True:
            try:
                yield step(datetime)
            except CroniterBadDateError:  # no match in croniter's 50 years: never due
                return

    def matches(self, when: datetime) -> bool:
        return self.previous(when) == when.replace(second=0, microsecond=0)

    def previous(self, now: datetime) -> datetime | None:
        """The latest slot at or before ``now`` (seconds ignored), or None."""
        return next(self._slots(now, backwards=True), None)

    def next(self, now: datetime) -> datetime | None:
        """The first slot after ``now``, or None."""
        return next(self._slots(now), None)

    def count_between(self, after: datetime, until: datetime, cap: int = 100_000) -> int:
        """Slots in ``(after, until]``, counted up to ``cap``."""
        return sum(1 for _ in islice(takewhile(lambda s: s <= until, self._slots(after)), cap))

    def slots_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The last ``limit`` slots in ``(after, until]``, oldest first."""
        return list(islice(takewhile(lambda s: s > after, self._slots(until, backwards=True)), limit))[::-1]


CATCHUP_POLICIES = ("combined", "each", "latest")


@dataclass(frozen=True)
class Due:
    """A run to start: the slot it stands for and the interval of time it covers."""

    slot: datetime
    interval_start: datetime | None  # the previous slot that ran (None: never ran)
    missed: int  # slots covered by this run (1 = on time)


def due_runs(cron: Cron, last_slot: datetime | None, now: datetime, policy: str = "combined",
             each_limit: int = 24) -> list[Due]:
    """What a tick must start for one job.

    ``combined`` (default): one run for the latest slot covering every missed one.
    ``each``: one run per missed slot, oldest first (at most ``each_limit``, the oldest are dropped).
    ``latest``: like combined, but the interval starts at the latest slot (missed ones are skipped).
    A slot at or before ``last_slot`` is never due again.

    >>> cron = Cron.parse("@hourly")
    >>> due_runs(cron, datetime(2026, 1, 1, 0, 0), datetime(2026, 1, 1, 3, 30))[0].missed
    3
    >>> due_runs(cron, datetime(2026, 1, 1, 3, 0), datetime(2026, 1, 1, 3, 30))
    []
    """
    if policy not in CATCHUP_POLICIES:
        raise CronError(f"catch-up policy {policy!r}: use one of {', '.join(CATCHUP_POLICIES)}")
    latest = cron.previous(now)
    if latest is None or (last_slot is not None and latest <= last_slot):
        return []
    if last_slot is None:
        return [Due(latest, None, 1)]
    missed = cron.count_between(last_slot, now)
    if policy == "each":
        slots = cron.slots_between(last_slot, now, each_limit)
        starts = [last_slot, *slots[:-1]]
        return [Due(s, start, 1) for s, start in zip(slots, starts)]
    if policy == "latest":
        return [Due(latest, cron.previous(latest - timedelta(minutes=1)), missed)]
    return [Due(latest, last_slot, missed)]


def retry_delay(attempt: int, *, base: float = 2.0, cap: float = 300.0, rng: random.Random | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: full jitter over an exponential, capped.

    The delay is uniform in ``[0.5, 1] * min(cap, base * 2 ** (attempt - 1))``: never zero (a
    retry storm after an outage spreads out) and never above ``cap``.

    >>> 1.0 <= retry_delay(1, base=2, cap=60) <= 2.0
    True
    >>> retry_delay(30, base=2, cap=60) <= 60
    True
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)
