"""Cron expressions, due slots, the catch-up policy and retry delays: pure functions of ``now``.

Nothing here reads the clock; callers pass ``now`` (a naive UTC ``datetime``), so tests drive time
with a fake clock.

>>> cron = Cron.parse("*/15 * * * *")
>>> cron.previous(datetime(2026, 11, 25, 6, 7))
datetime.datetime(2026, 11, 25, 6, 0)
>>> cron.count_between(datetime(2026, 11, 25, 5, 0), datetime(2026, 11, 25, 6, 7))
4
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
MAX_LOOKBACK_DAYS = 366 * 5  # a cron that matched nothing in five years is treated as never due


class CronError(ValueError):
    pass


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()):
                raise CronError(f"{name}: {part!r} is not a range like 1-5")
            start, end = int(a), int(b)
        elif part.isdigit():
            start = int(part)
            end = high if step > 1 else start
        else:
            raise CronError(f"{name}: {part!r} is not a number, range, list or */step")
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise CronError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """Five-field cron (minute hour day-of-month month day-of-week) in UTC, plus @daily and friends.

    As in Vixie cron, when both day fields are restricted a day matches if either does.
    """

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    days_any: bool
    weekdays_any: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        expr = ALIASES.get(text.strip().lower(), text.strip())
        parts = expr.split()
        if len(parts) != 5:
            raise CronError(f"cron {text!r} must have 5 fields (minute hour day month weekday) or be @hourly/@daily/...")
        try:
            sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
        except CronError as exc:
            raise CronError(f"cron {text!r}: {exc}") from None
        weekdays = frozenset(0 if d == 7 else d for d in sets[4])
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_any or self.weekdays_any:
            return dom and dow
        return dom or dow

    def matches(self, when: datetime) -> bool:
        return when.minute in self.minutes and when.hour in self.hours and self.day_matches(when.date())

    def previous(self, now: datetime) -> datetime | None:
        """The latest slot at or before ``now`` (seconds ignored), or None."""
        now = now.replace(second=0, microsecond=0)
        times = sorted(((h, m) for h in self.hours for m in self.minutes), reverse=True)
        for offset in range(MAX_LOOKBACK_DAYS):
            day = now.date() - timedelta(days=offset)
            if not self.day_matches(day):
                continue
            for h, m in times:
                if offset == 0 and (h, m) > (now.hour, now.minute):
                    continue
                return datetime(day.year, day.month, day.day, h, m)
        return None

    def count_between(self, after: datetime, until: datetime, cap: int = 100_000) -> int:
        """Slots in ``(after, until]``, counted up to ``cap``."""
        count = 0
        per_day = sorted((h, m) for h in self.hours for m in self.minutes)
        day = after.date()
        while day <= until.date() and count < cap:
            if self.day_matches(day):
                for h, m in per_day:
                    slot = datetime(day.year, day.month, day.day, h, m)
                    if after < slot <= until:
                        count += 1
            day += timedelta(days=1)
        return min(count, cap)

    def slots_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The last ``limit`` slots in ``(after, until]``, oldest first."""
        slots: list[datetime] = []
        cursor = until
        while len(slots) < limit:
            slot = self.previous(cursor)
            if slot is None or slot <= after:
                break
            slots.append(slot)
            cursor = slot - timedelta(minutes=1)
        return list(reversed(slots))


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
