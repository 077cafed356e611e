"""Freshness: how old the newest *data* of every checked source table and mart is, against a
declared maximum age, evaluated on every tick whether or not anything ran.

What is measured, per table, and compared to its maximum (the first that is known):

1. **Newest data**: ``now - max(time column)``. A raw table's time column is its declared
   ``event_time``; a mart's is its model's ``time_column`` (incremental models) or the column named
   by a ``'freshness_column:<column>'`` tag in its ``MODEL`` block. This is the age a reader of
   the table sees: a mart whose newest order is a year old is a year old, however recently it was
   rebuilt.
2. **Newest extraction**, for tables without a time column (or whose table is missing or empty):
   for a raw table, ``now - newest extracted_at`` of its batches that brought rows
   (``elt_meta.loaded_batches``), so a stalled source (loads succeed, bring nothing) still ages;
   for a mart, the newest such extraction among the raw tables it reads that its last prod build
   had loaded.
3. **Last build**, for a mart none of whose inputs are in the ledger
   (``elt_meta.transform_watermarks``).

A mart is also stale when a batch of a raw table it reads was loaded longer ago than its maximum
and no version of the mart has consumed it yet (``elt_meta.consumed_batches``; measure
``untransformed batch``). New days reach the marts through a bare ``sqlmesh run`` too, so their
newest data stays young; a late correction, a deletion or a late-arriving row reaches them only
through ``elt transform``, which turns raw batches into the days to restate (decision 0011). Without
this measure a schedule of ``sqlmesh run`` alone, or a transform that stopped consuming, would
leave those changes out of the marts for ever with every line fresh.

Beside it every line shows the last load (the newest batch's ``loaded_at`` and the source that
loaded it) or the last build, the source and the owner. A raw table's maximum is the table's
``freshness``, else its source's (tables without one are not checked); a mart's is its
``'freshness:26h'`` tag (metadata only: changing it rebuilds nothing), else ``ELT_MART_FRESHNESS``
(default 26h). ``unknown`` says why (never loaded, never built, table missing) and is not stale: a
new deployment does not page anyone. Works on the DuckDB and PostgreSQL gateways; on Spark no
time column is read (``not read on Spark``): the ledger measures apply as ``_warehouse`` sees it.

Which marts a source table feeds comes from the model files (``impact``), so an alert can say
what a stale or failed table breaks downstream.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlglot import exp, parse_one

from orchestrator.settings import Settings
from sources.config import load_source, parse_duration
from sources.errors import WarehouseUnreadable, unreadable_duckdb_file
from sources.logs import get_logger

log = get_logger("orchestrator.observe.freshness")


HEADER = ("Age = now - the newest data in the table's time column (raw: declared event_time; mart: its "
          "time_column or 'freshness_column:' tag; a mart built by the day: now - the end of its newest day, "
          "by the month or year: against the calendar); without one, now - the newest extraction that brought rows "
          "(a mart: among its sources, as of its last build). That age is compared to the max (source "
          "`freshness`; mart tag 'freshness:' or ELT_MART_FRESHNESS); the last load or build is shown beside.")


@dataclass(frozen=True)
class Freshness:
    subject: str  # raw_jaffle_shop.orders or marts.orders
    kind: str  # table | mart
    state: str  # fresh | stale | unknown
    max_age_s: int
    newest: datetime | None  # the time compared to max_age_s (see ``measure``)
    owner: str
    source: str | None = None  # a table's declaring source (its load job); None for a mart
    measure: str = "newest data"  # what ``newest`` is: newest data | newest extraction | last build
    why: str = ""  # why the state is unknown: never loaded, never built, table missing
    time_column: str | None = None
    newest_data: datetime | None = None  # max(time_column)
    data_note: str = ""  # why newest_data is unknown (no time column, table missing, no rows), or rows dated ahead
    last_loaded: datetime | None = None  # a table's newest batch (loaded_at); a mart's last build
    loaded_by: str | None = None  # the source that loaded that batch
    inputs: tuple[str, ...] = ()  # a mart: the sources that loaded the raw tables it reads
    # a mart: batches of its raw tables it has not consumed yet -> (batches, oldest loaded_at, raw tables)
    waiting: tuple[int, datetime, tuple[str, ...]] | None = None
    max_note: str = ""  # how the maximum was made, when it is more than the declared one (a cron's later run)

    def age_s(self, now: datetime) -> float | None:
        return None if self.newest is None else (now - self.newest).total_seconds()

    def describe(self, now: datetime) -> str:
        age = self.age_s(now)
        head = (f"unknown ({self.why}, max {_human(self.max_age_s)})" if age is None else
                f"{self.state} (newest day {self.newest_data:%Y-%m-%d} "
                + (f"over {_human(age)} ago" if age >= 0 else "not over yet") + f", max {_human(self.max_age_s)}"
                + (f" = {self.max_note})" if self.max_note else ")")
                if self.measure == "newest day" and self.newest_data else
                f"{self.state} ({self.measure} {_human(age)} old, max {_human(self.max_age_s)})")
        data = (f"{self.time_column} up to {self.newest_data:%Y-%m-%d %H:%M}"
                + (f" ({self.data_note})" if self.data_note else "") if self.newest_data else
                f"newest data unknown ({self.data_note})")
        if self.kind == "table":
            last = (f"last loaded {_human((now - self.last_loaded).total_seconds())} ago by {self.loaded_by}"
                    if self.last_loaded else "never loaded")
            whose = f"source {self.source}, owner {self.owner}"
        else:
            last = f"last built {_human((now - self.last_loaded).total_seconds())} ago" if self.last_loaded else "never built"
            if self.waiting:
                batches, oldest, tables = self.waiting
                last += (f"; {batches} batch(es) of {', '.join(tables)} waiting for `elt transform` since "
                         f"{_human((now - oldest).total_seconds())} ago (a bare `sqlmesh run` does not apply them)")
            whose = f"from {', '.join(self.inputs) or 'no loaded source'}, owner {self.owner}"
        return f"{self.subject}: {head}; {data}, {last}; {whose}"


def render(results: list[Freshness], now: datetime) -> str:
    """What ``elt freshness`` prints: the rule, a count by state, then one line per table and mart,
    the stale ones first (at 200 tables the 5 stale lines came at lines 196-205; a probe), then the
    unknown ones, each group in declaration order."""
    lines = [f"Freshness at {now:%Y-%m-%d %H:%M} UTC. {HEADER}"]
    if results:
        counts = {state: sum(1 for f in results if f.state == state) for state in ("stale", "unknown", "fresh")}
        lines.append(f"{len(results)} checked: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
                     + (", stale ones first" if counts["stale"] else ""))
    rank = {"stale": 0, "unknown": 1}
    lines += [f.describe(now) for f in sorted(results, key=lambda f: rank.get(f.state, 2))] or [
        "(no table declares a freshness and no mart exists)"]
    return "\n".join(lines)


def _human(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 0:
        return "-" + _human(-seconds)
    if seconds >= 365 * 86400:
        return f"{seconds / (365 * 86400):.1f}y"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds // 60}m"


_REF = re.compile(r"\b(raw_[a-z0-9_]+|staging|intermediate|marts)\.([a-z0-9_]+)\b", re.IGNORECASE)
_NAME = re.compile(r"MODEL\s*\(\s*name\s+([A-Za-z0-9_]+\.[A-Za-z0-9_]+)", re.IGNORECASE)
_TAGS = re.compile(r"(?:^|[,(])\s*tags\s*(\([^)]*\)|'[^']*')", re.IGNORECASE | re.MULTILINE)
_FRESHNESS_TAG = re.compile(r"'freshness:([^']*)'", re.IGNORECASE)
_COLUMN_TAG = re.compile(r"'freshness_column:([A-Za-z0-9_]+)(:day)?'", re.IGNORECASE)
_TIME_COLUMN = re.compile(r"\btime_column\s*\(?\s*([A-Za-z0-9_]+)", re.IGNORECASE)


def declared_max_ages(project_root: Path) -> dict[str, int]:
    """Each model's ``'freshness:<duration>'`` tag, in seconds (models without one are absent).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "models").mkdir()
    >>> _ = (root / "models" / "m.sql").write_text("MODEL (name marts.m, tags ('pii', 'freshness:2d')); SELECT 1")
    >>> declared_max_ages(root)
    {'marts.m': 172800}
    """
    ages: dict[str, int] = {}
    for file in sorted((project_root / "models").rglob("*.sql")):
        text = file.read_text()
        name, tags = _NAME.search(text), _TAGS.search(text)
        if not name or not tags:
            continue
        found = _FRESHNESS_TAG.search(tags.group(1))
        if found:
            try:
                ages[name.group(1).lower()] = parse_duration(found.group(1))
            except Exception as exc:  # noqa: BLE001 - a typo must not stop every other check
                log.error("bad freshness tag; using ELT_MART_FRESHNESS",
                          extra={"fields": {"model": name.group(1), "file": str(file), "error": str(exc)[:160]}})
    return ages


# a MODEL block's settings, each at the start of a property (after "(" or ","), read once comments
# are gone: a commented-out cron or a description that names one is not a setting
_INTERVAL_UNIT = re.compile(r"(?:^|[,(])\s*interval_unit\s+['\"]?(\w+)['\"]?", re.IGNORECASE)
_CRON = re.compile(r"(?:^|[,(])\s*cron\s+'([^']*)'", re.IGNORECASE)
_CRON_TZ = re.compile(r"(?:^|[,(])\s*cron_tz\s+['\"]([^'\"]*)['\"]", re.IGNORECASE)
_PARTIALS = re.compile(r"(?:^|[,(])\s*allow_partials\s+(true|false)\b", re.IGNORECASE)
_BY_TIME = re.compile(r"(?:^|[,(])\s*kind\s+INCREMENTAL_BY_TIME_RANGE\b", re.IGNORECASE)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_PERIODS = ("month", "year")


def _period_start(moment: datetime, unit: str, before: int = 0) -> datetime:
    """The first instant of the month (year) holding ``moment``, or of the ``before``-th one before it."""
    if unit == "year":
        return datetime(moment.year - before, 1, 1)
    months = moment.year * 12 + moment.month - 1 - before
    return datetime(months // 12, months % 12 + 1, 1)


@dataclass(frozen=True)
class Period:
    """How a model is scheduled: the unit of its intervals, its cron (read in ``tz``, its
    ``cron_tz``, as SQLMesh reads it; UTC without one) and whether it builds the current period so
    far (``allow_partials``). Intervals are whole UTC days, months, ... whatever the zone: the zone
    moves only when a run happens, and so which intervals are over by then."""

    unit: str
    cron: str
    partials: bool
    # INCREMENTAL_BY_TIME_RANGE's time column: such a model builds whole intervals, once they are over
    time_column: str | None = field(default=None, repr=False)
    tz: str | None = field(default=None, repr=False)  # the model's cron_tz (an IANA zone), None for UTC

    def _fire(self, moment: datetime, forward: bool) -> datetime:
        """The cron's next (``forward``) or previous run strictly after/before ``moment`` (naive
        UTC), as naive UTC: croniter fed the moment in the cron's zone, as SQLMesh's CroniterCache."""
        from zoneinfo import ZoneInfo

        from croniter import croniter

        start = moment.replace(tzinfo=UTC).astimezone(ZoneInfo(self.tz) if self.tz else UTC)
        runs = croniter(self.cron, start)
        return datetime.fromtimestamp(runs.get_next() if forward else runs.get_prev(), UTC).replace(tzinfo=None)

    def last_run(self, moment: datetime) -> datetime:
        """The cron's last run at or before ``moment`` (SQLMesh's ``cron_floor``)."""
        return self._fire(self._fire(moment, forward=True), forward=False)

    def first_run(self, moment: datetime) -> datetime:
        """The cron's first run at or after ``moment`` (runs fall on whole minutes)."""
        return self._fire(moment - timedelta(seconds=1), forward=True)

    def built_until(self, run_at: datetime) -> datetime:
        """Where the intervals end that a run at ``run_at`` builds (naive UTC): up to its cron's last
        run, cut to a whole interval unless the model builds partial ones. What SQLMesh's
        ``missing_intervals`` gives for that execution time (tests/orchestrator/test_freshness_schedules.py).

        >>> Period("day", "@daily", False).built_until(datetime(2018, 3, 10, 6))
        datetime.datetime(2018, 3, 10, 0, 0)
        >>> Period("day", "@daily", False, tz="America/Los_Angeles").built_until(datetime(2018, 3, 10, 6))
        datetime.datetime(2018, 3, 9, 0, 0)
        """
        from sqlmesh.core.node import IntervalUnit

        upper = self.last_run(run_at)
        if self.partials:
            return upper
        return _naive(IntervalUnit(self.unit).cron_floor(upper)) or upper

    def max_age_s(self, now: datetime, build_s: int) -> int:
        """How old its newest row (a period's first day) may be at ``now``. A run builds up to the
        start of its own day (SQLMesh's cron floor): whole periods ended by then, and with partials
        also the period holding the instant before it. Each run has ``build_s`` (the daily marts'
        maximum) to land, so the newest row must be the first day of the period before the one
        holding the cron's last run ``build_s`` ago (with partials, of the period holding the
        instant before that run). On November 2nd at 03:00 a ``@monthly`` mart must hold October
        (its November 1st run is 27 hours old), a day sooner than the fixed 62 days it had before
        said so, and on November 1st at 12:00 September is still enough. A month built so far by a
        daily run must hold November from the 3rd at 02:00 (the 2nd's run built November 1st).

        >>> p = Period("month", "@monthly", False)
        >>> [p.max_age_s(datetime(2018, 11, d, h), 26 * 3600) / 86400 for d, h in ((1, 12), (2, 3))]
        [61.5, 32.125]
        >>> so_far = Period("month", "@daily", True)
        >>> [so_far.max_age_s(datetime(2018, 10, 15), 26 * 3600) / 86400, so_far.max_age_s(datetime(2018, 11, 2, 3), 26 * 3600) / 86400]
        [14.0, 32.125]
        >>> Period("month", "@monthly", True).max_age_s(datetime(2018, 11, 20), 26 * 3600) / 86400
        50.0
        >>> Period("month", "0 0 15 * *", False).max_age_s(datetime(2018, 10, 17), 26 * 3600) / 86400
        46.0
        >>> Period("year", "@yearly", False).max_age_s(datetime(2019, 1, 3), 26 * 3600) / 86400
        367.0

        A cron in Los Angeles runs on November 1st at 07:00 UTC: at 08:00 on the 2nd that run is
        25 hours old and September is still enough (in UTC, October was due an hour before):

        >>> la = Period("month", "@monthly", False, tz="America/Los_Angeles")
        >>> [x.max_age_s(datetime(2018, 11, 2, 8), 26 * 3600) / 86400 for x in (p, la)]
        [32.333333333333336, 62.333333333333336]

        A mart holding exactly the due period is fresh at any instant, a clock's microseconds too:

        >>> now = datetime(2018, 10, 15, 12, 0, 0, 500000)
        >>> (now - datetime(2018, 9, 1)).total_seconds() <= p.max_age_s(now, 26 * 3600)
        True
        """
        now = _naive(now) or now
        # the newest period the cron's last run `build_s` ago has built: it ends where that run's
        # intervals end (with partials, the period holding the instant before that end)
        built = self.built_until(now.replace(microsecond=0) - timedelta(seconds=build_s))
        due = _period_start(built - timedelta(microseconds=1), self.unit)
        # rounded up: a mart holding exactly the due period is fresh at any fraction of a second
        # (truncated, a real clock's microseconds made such a mart stale nearly all month)
        return math.ceil((now - due).total_seconds())

    def day_run_delay_s(self, newest_end: datetime) -> int:
        """For a model built by the whole UTC day: how long after the day following its newest day
        is over (``newest_end`` + 1 day) its cron's run that builds it comes. 0 for ``@daily`` in
        UTC; 7 or 8 hours for ``@daily`` in Los Angeles (the day ends at 16:00 or 17:00 there);
        a cron of working days leaves the weekend's days to Monday.

        >>> Period("day", "@daily", False).day_run_delay_s(datetime(2018, 9, 5)) / 3600
        0.0
        >>> Period("day", "@daily", False, tz="America/Los_Angeles").day_run_delay_s(datetime(2018, 9, 5)) / 3600
        7.0
        >>> friday = Period("day", "0 6 * * 1-5", False)  # Saturday's day is over at 00:00 on Sunday
        >>> friday.day_run_delay_s(datetime(2018, 9, 8)) / 3600  # the newest day a Friday: Monday's run
        30.0
        """
        due = newest_end + timedelta(days=1)
        return int((self.first_run(due) - due).total_seconds())

    def describe(self) -> str:
        return f"cron '{self.cron}'" + (f" in {self.tz}" if self.tz else "")


# model_defaults in config.yaml: the keys a model's schedule inherits, at the block's first indentation
_DEFAULTS_BLOCK = re.compile(r"^model_defaults:[^\n]*\n((?:[ \t]+[^\n]*\n|[ \t]*\n)*)", re.MULTILINE)
_DEFAULT_KEY = re.compile(r"^([ \t]+)(cron|cron_tz|interval_unit|allow_partials):[ \t]*['\"]?([^'\"#\n]*?)['\"]?[ \t]*(?:#[^\n]*)?$",
                          re.MULTILINE)


def schedule_defaults(project_root: Path) -> dict[str, str]:
    """``cron``, ``cron_tz``, ``interval_unit`` and ``allow_partials`` from ``model_defaults`` in
    ``config.yaml``, as written (a value made by Jinja, or a ``config.py`` project, gives nothing:
    SQLMesh's own defaults then).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "config.yaml").write_text("model_defaults:\\n  dialect: duckdb\\n  cron: '@daily'  # daily\\n"
    ...                                       "  cron_tz: \\"Europe/Berlin\\"\\n  post_statements:\\n    - cron: x\\nlinter: {}\\n")
    >>> schedule_defaults(root)
    {'cron': '@daily', 'cron_tz': 'Europe/Berlin'}
    """
    try:
        text = (project_root / "config.yaml").read_text()
    except OSError:
        return {}
    block = _DEFAULTS_BLOCK.search(text)
    if not block:
        return {}
    first = min((len(line) - len(line.lstrip()) for line in block.group(1).splitlines()
                 if line.strip() and not line.lstrip().startswith("#")), default=0)
    return {key: value.strip() for indent, key, value in _DEFAULT_KEY.findall(block.group(1))
            if len(indent) == first and value.strip() and "{{" not in value}


def model_schedules(project_root: Path) -> dict[str, Period]:
    """Every model's schedule read from its MODEL block, else ``model_defaults``: the unit of its
    intervals (``interval_unit``, else its cron's, else SQLMesh's default ``@daily``), its cron,
    its ``cron_tz`` and whether it builds partial periods. A model whose cron or zone does not parse
    is left out (SQLMesh names it).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "models").mkdir()
    >>> def model(name, block): _ = (root / "models" / f"{name}.sql").write_text(f"MODEL (name marts.{name}, {block}\\n);")
    >>> model("a", "kind FULL"); model("b", "cron '@hourly'"); model("c", "cron '@monthly'")
    >>> model("d", "cron_tz 'Asia/Tokyo'"); model("e", "cron_tz 'Nowhere/Atlantis'")
    >>> model("f", "kind INCREMENTAL_BY_TIME_RANGE (time_column m), interval_unit 'month', allow_partials true")
    >>> model("g", "-- was cron '@monthly' before 2024\\n  cron '@daily', description 'not interval_unit month'")
    >>> model("h", 'interval_unit "year"'); model("i", "cron '0 0 15 * *'")
    >>> for name, period in model_schedules(root).items(): print(name, period.unit, period.describe(), period.partials)
    marts.a day cron '@daily' False
    marts.b hour cron '@hourly' False
    marts.c month cron '@monthly' False
    marts.d day cron '@daily' in Asia/Tokyo False
    marts.f month cron '@daily' True
    marts.g day cron '@daily' False
    marts.h year cron '@daily' False
    marts.i month cron '0 0 15 * *' False
    """
    from zoneinfo import ZoneInfo

    from croniter import croniter
    from sqlmesh.core.node import IntervalUnit

    defaults = schedule_defaults(project_root)
    schedules: dict[str, Period] = {}
    for file in sorted((project_root / "models").rglob("*.sql")):
        block = _COMMENTS.sub("", file.read_text()).split("\n)", 1)[0]  # the MODEL (...) block
        name, unit, cron, tz = _NAME.search(block), _INTERVAL_UNIT.search(block), _CRON.search(block), _CRON_TZ.search(block)
        if not name:
            continue
        schedule = cron.group(1) if cron else defaults.get("cron", "@daily")  # SQLMesh's default cron
        zone = tz.group(1) if tz else defaults.get("cron_tz")
        partials = _PARTIALS.search(block)
        try:
            found = (unit.group(1) if unit else defaults.get("interval_unit") or IntervalUnit.from_cron(schedule).value).lower()
            croniter(schedule)
            if zone and zone.upper() != "UTC":
                ZoneInfo(zone)
            else:
                zone = None
        except Exception:  # noqa: BLE001 - SQLMesh names a bad cron or zone when it loads the model
            continue
        timed = _TIME_COLUMN.search(block) if _BY_TIME.search(block) else None
        schedules[name.group(1).lower()] = Period(
            found, schedule, (partials.group(1) if partials else defaults.get("allow_partials", "false")).lower() == "true",
            timed.group(1).lower() if timed else None, zone)
    return schedules


def model_graph(project_root: Path) -> dict[str, set[str]]:
    """Each model's direct inputs (models and raw tables), read from the model files.

    A cheap text read, not a SQLMesh context load, because it runs every minute.
    """
    graph: dict[str, set[str]] = {}
    for file in sorted((project_root / "models").rglob("*.sql")):
        text = file.read_text()
        match = _NAME.search(text)
        if not match:
            continue
        name = match.group(1).lower()
        graph[name] = {f"{a}.{b}".lower() for a, b in _REF.findall(text)} - {name}
    return graph


def impact(project_root: Path, raw_tables: set[str]) -> list[str]:
    """The marts that read any of ``raw_tables`` (directly or through other models)."""
    graph = model_graph(project_root)
    hit: set[str] = set()
    changed = True
    reached = {t.lower() for t in raw_tables}
    while changed:
        changed = False
        for model, inputs in graph.items():
            if model not in reached and inputs & reached:
                reached.add(model)
                changed = True
    hit = {m for m in reached if m.startswith("marts.")}
    return sorted(hit)


@contextmanager
def _warehouse(settings: Settings) -> Iterator[Any]:
    """A short read-only look at the warehouse; ``None`` if it is busy (a load holds DuckDB)."""
    if settings.gateway == "postgres":
        from sources.connections import PostgresSettings

        conn = PostgresSettings.from_env(settings.pg_prefix).connect()
        try:
            import psycopg2

            def query(sql: str) -> list[tuple[Any, ...]]:
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql)
                        return cur.fetchall()
                except psycopg2.errors.UndefinedTable:  # nothing loaded / transformed yet
                    conn.rollback()
                    return []
            yield query
        finally:
            conn.close()
        return
    import duckdb

    if not settings.warehouse.exists():
        yield lambda sql: []
        return
    try:
        con = duckdb.connect(str(settings.warehouse), read_only=True)
    except duckdb.IOException as exc:
        unreadable = unreadable_duckdb_file(exc, settings.warehouse)
        if unreadable is not None:  # not busy: no later tick can read it either
            raise WarehouseUnreadable(unreadable) from exc
        log.info("warehouse busy: freshness not checked now", extra={"fields": {"error": str(exc)[:120]}})
        global last_busy
        last_busy = exc  # which process holds the file: `elt freshness` and the report name it
        yield None
        return
    try:
        con.execute("SET TimeZone = 'UTC'")  # as the models' sessions: a timestamptz column's age in UTC

        def query(sql: str) -> list[tuple[Any, ...]]:
            try:
                return con.execute(sql).fetchall()
            except duckdb.CatalogException:
                return []
        yield query
    finally:
        con.close()


# DuckDB's error when the last look at the warehouse found the file held (it names the process)
last_busy: BaseException | None = None


def busy_holder() -> str:
    """Who held the DuckDB file at the last busy look: ``PID n (program)``, or "another process"."""
    import re

    found = re.search(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)", str(last_busy or ""))
    if not found:
        return "another process"
    from sources.forks import command_line

    # its command line says what it is (a scheduled transform, a notebook); DuckDB gives the interpreter
    return f"PID {found['pid']} ({command_line(found['pid'], fallback=found['program'])})"


def time_columns(project_root: Path, days: set[str] | None = None) -> dict[str, str]:
    """Each model's time column: its ``'freshness_column:<column>'`` tag, else its ``time_column``.
    ``days`` (if given) gains the models whose tag says the column holds days
    (``'freshness_column:<column>:day'``: a day at midnight, as the newest order's day).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "models").mkdir()
    >>> _ = (root / "models" / "a.sql").write_text("MODEL (name marts.a, kind INCREMENTAL_BY_TIME_RANGE (time_column day)\\n);")
    >>> _ = (root / "models" / "b.sql").write_text("MODEL (name marts.b, tags ('freshness_column:last_at'), kind FULL\\n);")
    >>> _ = (root / "models" / "c.sql").write_text("MODEL (name marts.c, tags ('x', 'freshness_column:last_day:day'),\\n);")
    >>> days = set(); time_columns(root, days), days
    ({'marts.a': 'day', 'marts.b': 'last_at', 'marts.c': 'last_day'}, {'marts.c'})
    """
    columns: dict[str, str] = {}
    for file in sorted((project_root / "models").rglob("*.sql")):
        block = file.read_text().split("\n)", 1)[0]  # the MODEL (...) block
        name, tags = _NAME.search(block), _TAGS.search(block)
        tagged = tags and _COLUMN_TAG.search(tags.group(1))
        found = tagged or _TIME_COLUMN.search(block)
        if name and found:
            columns[name.group(1).lower()] = found.group(1).lower()
            if tagged and tagged.group(2) and days is not None:
                days.add(name.group(1).lower())
    return columns


def upstream_raw(graph: dict[str, set[str]], model: str) -> set[str]:
    """The raw tables ``model`` reads, directly or through other models."""
    seen: set[str] = set()
    todo = [model]
    while todo:
        for parent in graph.get(todo.pop(), set()) - seen:
            seen.add(parent)
            todo.append(parent)
    return {t for t in seen if t.startswith("raw_")}


@dataclass
class _Loads:
    """What the ledger knows about one raw table."""

    last_loaded: datetime | None = None  # the newest batch's loaded_at
    by: str | None = None  # ... and its source
    extracted: datetime | None = None  # the newest extracted_at of a batch that brought rows
    sources: set[str] = field(default_factory=set)


# Why the Spark gateway's warehouse is not read here. Its load ledger and marts are Spark tables: only
# a Spark session reads them, and a check that starts a JVM (10-30 s; in local mode it also takes
# the embedded metastore that a running load needs) cannot run in every tick or status check.
SPARK_NOT_READ = ("freshness is not checked on the spark gateway: the load ledger and the marts are Spark tables, "
                  "which only a Spark session reads, and a tick or report does not start one")
SPARK_BY_HAND = ("check it in Spark SQL: SELECT raw_table, max(loaded_at), max(extracted_at) FROM "
                 "elt_meta.loaded_batches WHERE rows > 0 GROUP BY raw_table "
                 "(docs/how-to/run-on-a-spark-cluster.md#freshness-and-the-report); job failures still alert")


def evaluate(settings: Settings, now: datetime, sources: list[str] | None = None) -> list[Freshness] | None:
    """Freshness of every checked table and mart; ``None`` when the warehouse could not be read.

    On the Spark gateway it raises ConfigError (SPARK_NOT_READ): it used to read the DuckDB file
    that the duckdb gateway would use, and reported that file's ages as Spark's."""
    from orchestrator.scheduling.jobs import all_jobs
    from sources.errors import ConfigError

    if settings.gateway == "spark":
        raise ConfigError(SPARK_NOT_READ, hint=SPARK_BY_HAND)

    if sources is None:
        sources = [j.source for j in all_jobs(settings).values() if j.kind == "load" and j.source]
    declared: dict[str, list[tuple[Any, Any, int]]] = {}  # raw table -> (source, table, max age) declaring it
    for name in sources:
        spec = load_source(name)
        for table in spec.tables.values():
            max_age = table.freshness_s or spec.freshness_s
            if max_age:
                declared.setdefault(f"{spec.raw_schema}.{table.name}".lower(), []).append((spec, table, max_age))
    graph = model_graph(settings.project_root)
    marts = sorted(m for m in graph if m.startswith("marts."))
    dialect = "postgres" if settings.gateway == "postgres" else "duckdb"
    with _warehouse(settings) as query:
        if query is None:
            return None
        loads: dict[str, _Loads] = defaultdict(_Loads)
        for raw, source, loaded, extracted in query(
                "SELECT lower(raw_table), source, max(loaded_at), max(CASE WHEN rows > 0 THEN extracted_at END) "
                "FROM elt_meta.loaded_batches GROUP BY 1, 2"):
            entry, loaded, extracted = loads[raw], _naive(loaded), _naive(extracted)
            entry.sources.add(source)
            if entry.last_loaded is None or loaded > entry.last_loaded:
                entry.last_loaded, entry.by = loaded, source
            if extracted and (entry.extracted is None or extracted > entry.extracted):
                entry.extracted = extracted
        built = query("SELECT max(finished_at) FROM elt_meta.transform_watermarks WHERE environment = 'prod'")
        seen = {raw: _naive(ts) for raw, ts in query(  # per raw table, the newest extraction the last build had
            "SELECT lower(raw_table), max(extracted_at) FROM elt_meta.loaded_batches WHERE rows > 0 AND loaded_at <= "
            "(SELECT max(finished_at) FROM elt_meta.transform_watermarks WHERE environment = 'prod') GROUP BY 1")}
        chosen = {raw: next((d for d in ds if d[0].name == loads[raw].by), ds[0]) if raw in loads else ds[0]
                  for raw, ds in declared.items()}  # the source that loads a table, else the first declaring it
        waiting = _waiting_batches(query)
        # tables and marts whose newest data is a day: a DATE column, or a mart's column tagged as days
        days: set[str] = set()
        columns = time_columns(settings.project_root, days)
        wanted = {**{raw: d[1].event_time for raw, d in chosen.items()}, **{m: columns.get(m) for m in marts}}
        data = ({n: (None, "not read on Spark") for n in wanted} if settings.gateway == "spark"
                else _newest_data(query, dialect, wanted, now, days))
    results = []
    for raw, (spec, table, max_age) in chosen.items():
        value, note = data[raw]
        load = loads.get(raw, _Loads())
        measure, newest = ("newest data", value) if value else ("newest extraction", load.extracted)
        if value and raw in days:  # a DATE: the day's data is whole at its end (as a daily mart's below)
            newest, measure = min(datetime.combine(value.date() + timedelta(days=1), time()), now), "newest day"
        why = "" if newest else "never loaded" if not load.last_loaded else "no batch brought rows"
        results.append(Freshness(raw, "table", _state(newest, max_age, now), max_age, newest, spec.owner, spec.name,
                                 measure, why, wanted[raw], value, note, load.last_loaded, load.by))
    default_max = parse_duration(os.environ.get("ELT_MART_FRESHNESS", "26h"))
    max_ages = declared_max_ages(settings.project_root)
    schedules = model_schedules(settings.project_root)
    periods = {name: period for name, period in schedules.items() if period.unit in _PERIODS}
    last_build = _naive(built[0][0]) if built else None
    owner = os.environ.get("ELT_TRANSFORM_OWNER", "data-team")
    for mart in marts:
        raws = upstream_raw(graph, mart)
        value, note = data[mart]
        extracted = max((seen[r] for r in raws if seen.get(r)), default=None)
        # built, but empty, from raw tables no batch ever reached (made empty from their
        # declarations by `elt transform`): its last build says nothing about its data. A mart
        # with rows keeps the last build as its age (raw written by another tool has no ledger).
        never_loaded = bool(raws) and not any(r in loads for r in raws) and note == "no rows"
        measure, newest = (("newest data", value) if value else ("newest extraction", extracted) if extracted
                           else ("newest extraction", None) if never_loaded else ("last build", last_build))
        schedule = schedules.get(mart)
        if value and mart not in periods and (mart in days or (
                schedule is not None and schedule.unit == "day" and not schedule.partials
                and schedule.time_column is not None and wanted[mart] == schedule.time_column)):
            # built by the day: SQLMesh builds a day once it is over, so the newest row of a healthy
            # mart is from yesterday, at midnight for a day column: its age ran from 24 to 48 hours
            # and the 26-hour default called such a mart stale from 02:00 every day (a probe).
            # The day counts from its end: stale once a day has been over for the maximum unbuilt.
            # Only a time model built whole days (no allow_partials): a FULL model, a VIEW or a
            # partial day can hold today's rows, and keep the row's own time (a review), unless its
            # column holds days: a DATE, or tagged 'freshness_column:<column>:day' (marts.customers'
            # last order day, from the daily staging orders, read stale 22 hours a day: a walkthrough)
            day_end = datetime.combine(value.date() + timedelta(days=1), time())
            newest, measure = min(day_end, now), "newest day"
        why = "" if newest else "inputs never loaded" if never_loaded else (
            "never built" + (", table missing" if note == "table missing" else ""))
        mart_max = (max_ages[mart] if mart in max_ages else periods[mart].max_age_s(now, default_max)
                    if mart in periods else default_max)
        max_note = ""
        if measure == "newest day" and schedule is not None:
            # the next day is built by the cron's first run after it is over: later than its end
            # for a cron in another zone than UTC (cron_tz) or at another hour, and the maximum
            # runs from that run (without it a Los Angeles cron was stale for 5-6 hours each day)
            delay = schedule.day_run_delay_s(day_end)
            if delay > 0:
                max_note = (f"{_human(mart_max)} + {_human(delay)} from the next day's end to the run of its "
                            f"{schedule.describe()}")
                mart_max += delay
        inputs = tuple(sorted({s for r in raws if r in loads for s in loads[r].sources}))
        state = _state(newest, mart_max, now)
        mine = {r: w for r, w in waiting.get(mart, {}).items() if r in raws}
        waits = (sum(n for n, _ in mine.values()), min(at for _, at in mine.values()), tuple(sorted(mine))) \
            if mine else None
        # a batch waits for the next `elt transform`, whatever the mart's cron: the daily maximum
        if waits and state != "stale" and _state(waits[1], max_ages.get(mart, default_max), now) == "stale":
            # its newest data may be young (new days still arrive): the batches are what is old
            state, measure, newest, why = "stale", "untransformed batch", waits[1], ""
        results.append(Freshness(mart, "mart", state, mart_max, newest, owner, None,
                                 measure, why, wanted[mart], value, note, last_build, None, inputs, waits, max_note))
    return results


def _waiting_batches(query: Any) -> dict[str, dict[str, tuple[int, datetime]]]:
    """model -> raw table -> (batches that brought rows and no version of the model has consumed,
    the oldest one's loaded_at). Only (model, raw table) pairs that have consumed a batch before
    count: a model not built yet consumes nothing, and its build takes every batch (0011).

    Any version's consumption counts: a batch consumed only by a dev version of a changed model
    is not reported for prod (prod's versions are in SQLMesh's state, which a tick does not open).
    The anti-join runs in the warehouse, on the consumed table's key (model, version, batch)."""
    rows = query(
        "SELECT m.model, m.raw_table, count(*), min(l.loaded_at) "
        "FROM (SELECT DISTINCT model, lower(raw_table) AS raw_table FROM elt_meta.consumed_batches) AS m "
        "JOIN elt_meta.loaded_batches AS l ON lower(l.raw_table) = m.raw_table "
        "WHERE l.rows > 0 AND NOT EXISTS (SELECT 1 FROM elt_meta.consumed_batches AS c "
        "WHERE c.model = m.model AND c.batch_id = l.batch_id) GROUP BY m.model, m.raw_table")
    out: dict[str, dict[str, tuple[int, datetime]]] = defaultdict(dict)
    for model, raw_table, batches, oldest in rows:
        out[str(model).lower()][str(raw_table)] = (int(batches), _naive(oldest))  # type: ignore[assignment]
    return out


def _newest_data(query: Any, dialect: str, wanted: dict[str, str | None],
                 now: datetime, dated: set[str] | None = None) -> dict[str, tuple[datetime | None, str]]:
    """``max(time column)`` of each table up to tomorrow (of ``now``: a replay with ``--now`` cuts
    where that day's check did), or ``None`` and why it is unknown; the note also says how many
    rows are dated later (left out). ``dated`` (if given) gains the tables whose column is a DATE."""
    tomorrow = now.date() + timedelta(days=1)
    later = datetime.combine(tomorrow + timedelta(days=1), time())  # the end of tomorrow
    schemas = sorted({t.split(".")[0] for t in wanted})
    found: dict[str, set[str]] = defaultdict(set)
    types: dict[tuple[str, str], str] = {}
    # the column's name as the warehouse spells it: a PostgreSQL raw table keeps a source's case
    # ("Order Date"), and the lower-cased name, quoted, named no column (a probe of identifiers)
    spelled: dict[tuple[str, str], str] = {}
    if schemas:
        names = ", ".join(exp.Literal.string(s).sql(dialect) for s in schemas)
        for schema, table, column, data_type, as_named in query(
                "SELECT lower(table_schema), lower(table_name), lower(column_name), lower(data_type), column_name "
                f"FROM information_schema.columns WHERE lower(table_schema) IN ({names})"):
            found[f"{schema}.{table}"].add(column)
            types[(f"{schema}.{table}", column)] = str(data_type)
            spelled[(f"{schema}.{table}", column)] = str(as_named)
    out: dict[str, tuple[datetime | None, str]] = {}
    for name, column in wanted.items():
        if name not in found:
            out[name] = (None, "table missing")
        elif not column:
            out[name] = (None, "no time column")
        elif column.lower() not in found[name]:
            out[name] = (None, f"no column {column}")
        else:
            schema, table = name.split(".")
            # rows dated past tomorrow (a typo, a source's clock) are left out: one order dated 2100
            # made its table "fresh (newest data -73.1y old)" for good, whatever stopped arriving
            col = exp.column(spelled.get((name, column.lower()), column), quoted=True).sql("duckdb")
            limit = f"CAST('{later:%Y-%m-%d %H:%M:%S}' AS TIMESTAMP)"
            # a date or a timestamp; any other column (text, a number) is "not a time", as before
            timed = any(t in types.get((name, column.lower()), "") for t in ("date", "timestamp"))
            select = (f"max({col}) FILTER (WHERE {col} < {limit}), count(*) FILTER (WHERE {col} >= {limit})" if timed
                      else f"max({col}), 0")
            sql = parse_one(f"SELECT {select} FROM {exp.table_(table, db=schema, quoted=True).sql('duckdb')}",
                            read="duckdb").sql(dialect)
            rows = query(sql)
            value, future = (rows[0][0], int(rows[0][1] or 0)) if rows else (None, 0)
            if isinstance(value, date) and not isinstance(value, datetime):
                value = datetime.combine(value, time())
                if dated is not None:
                    dated.add(name)
            ahead = f"{future} row(s) dated after {tomorrow} left out" if future else ""
            if isinstance(value, datetime):
                out[name] = (_naive(value), ahead)
            else:
                out[name] = (None, (ahead or "no rows") if value is None else f"{column} is not a time")
    return out


def _naive(ts: datetime | None) -> datetime | None:
    """UTC without zone, as everything in elt_meta is compared."""
    if ts is not None and ts.tzinfo is not None:
        return ts.replace(tzinfo=None) - (ts.utcoffset() or timedelta(0))
    return ts


def _state(newest: datetime | None, max_age_s: int, now: datetime) -> str:
    if newest is None:
        return "unknown"
    return "stale" if (now - newest).total_seconds() > max_age_s else "fresh"
