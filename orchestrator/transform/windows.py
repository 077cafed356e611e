"""Which time windows of which model versions new raw batches touch, and the record of what each
model version has consumed.

The transform does not restate whole models. For every model version (a physical table: SQLMesh's
model name and version) it finds the raw batches that the version has not consumed yet, turns them
into the days they touch, and removes those days' intervals from SQLMesh's state; ``sqlmesh run``
(or the plan) then recomputes exactly those intervals. The batches are recorded as consumed by the
version only after their intervals are removed, so at every instant a batch's effect is either
still pending here or a missing interval in SQLMesh's state: a kill loses nothing
(docs/decisions/0011-windowed-restatement.md).

The days a batch touches come from the batch's own rows, through its table's declaration:

- ``event_time: ordered_at`` - the days of that column over every version of the batch's keys
  (new and old, so an order that moves from Monday to Tuesday restates both days);
- ``event_time_from: {table: orders, key: order_id}`` - a child without a time column (items)
  touches the days of its parents (every version of them);
- ``sequence_key: customer`` - models number rows within a customer by time (an order's rank),
  so a row that appears, disappears or moves also touches its customer's later days (``later``),
  and any changed row does for models that aggregate the customer's earlier values
  (``later_values``): only in those models and the time models downstream of them; the others
  restate the row's own days (restate.numbers_rows and restate.Lineage);
- none of these: the table has no time (customers, products): models partitioned by time that
  read it are restated whole, models rebuilt in full are rebuilt.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from sqlglot import exp, parse_one

from sources.load.changes import DELETED, ORDER

CONSUMED = "elt_meta.consumed_batches"
# batches consumed with rows that staging holds out (orphans, rows without their event time): each
# transform checks them again, and fails while they still hold such rows (see restate)
HELD = "elt_meta.held_batches"
LEDGER = "elt_meta.loaded_batches"


@dataclass(frozen=True)
class WindowSpec:
    """How a raw table's rows map to days (see the module docstring)."""

    key: tuple[str, ...]
    event_time: str | None = None
    parent: tuple[str, str] | None = None  # (parent raw table "schema.table", column of this table)
    sequence_key: str | None = None
    # the declaration's held_rows: rows of this table held out of staging warn instead of failing
    warn_held: bool = False
    # held_rows_fail_after: seconds a warned row may stay held before it fails (None: for ever)
    fail_after_s: int | None = None


@dataclass
class Windows:
    """Days to restate, or everything (``whole``)."""

    days: set[date] = field(default_factory=set)
    whole: bool = False
    # days only a model that numbers rows within an entity by time must restate: the later days of
    # the entities whose rows appeared, went or moved (a sequence_key table's batches; see restate)
    later: set[date] = field(default_factory=set)
    # days only a model that aggregates an entity's earlier values must restate (a running total,
    # LAG): the later days of the entities with any changed row
    later_values: set[date] = field(default_factory=set)

    def __bool__(self) -> bool:
        return self.whole or bool(self.days)

    def merge(self, other: Windows, *, later: int = 0) -> None:
        """Add ``other``'s days, its ``later`` days for a model that numbers rows (``later`` >= 1,
        restate.NUMBERS) and its ``later_values`` for one that aggregates values (>= 2)."""
        self.whole = self.whole or other.whole
        self.days |= other.days | (other.later if later >= 1 else set()) | (other.later_values if later >= 2 else set())

    def following(self, n: int, end: date) -> None:
        """Also the ``n`` days after each day here, up to ``end`` (exclusive). No day at or after
        ``end`` is computed, so a day near ``date.max`` cannot overflow.

        >>> w = Windows({date(2020, 1, 2), date(2020, 1, 9)}); w.following(2, date(2020, 1, 10)); w.ranges()
        [(datetime.date(2020, 1, 2), datetime.date(2020, 1, 5)), (datetime.date(2020, 1, 9), datetime.date(2020, 1, 10))]
        >>> w = Windows({date(2020, 1, 2), date.max}); w.following(2, date(2020, 1, 4)); sorted(w.days)[:2]
        [datetime.date(2020, 1, 2), datetime.date(2020, 1, 3)]
        """
        self.days |= {day + timedelta(days=i) for day in self.days for i in range(1, min(n + 1, (end - day).days))}

    def through(self, end: date) -> None:
        """Every day from the first one here to ``end`` (exclusive).

        >>> w = Windows({date(2020, 1, 2)}); w.through(date(2020, 1, 5)); w.ranges()
        [(datetime.date(2020, 1, 2), datetime.date(2020, 1, 5))]
        """
        if self.days:
            first = min(self.days)
            self.days |= {first + timedelta(days=i) for i in range((end - first).days)}

    def until(self, last: date) -> set[date]:
        """Drop the days after ``last`` (own, ``later`` and ``later_values``); return the own days
        dropped. The transform drops the days after the last one SQLMesh can have built (restate:
        today in UTC, or the model's last built day if that is later): no interval of them exists
        to remove, and SQLMesh reads their rows when it builds them. An order dated 9999-12-31 (an
        "end of time" placeholder) has no next day in Python: ``ranges`` needs them dropped first.

        >>> w = Windows({date(2019, 3, 1), date(2029, 3, 1), date(9999, 12, 31)}, later={date.max})
        >>> [d.isoformat() for d in sorted(w.until(date(2026, 12, 6)))], w.describe(), w.later
        (['2029-03-01', '9999-12-31'], '1 day(s): 2019-03-01', set())
        >>> w.ranges()
        [(datetime.date(2019, 3, 1), datetime.date(2019, 3, 2))]
        >>> w = Windows({date(2029, 3, 1)}); w.until(date(2026, 12, 6)) and bool(w)
        False
        """
        dropped = {d for d in self.days if d > last}
        self.days -= dropped
        self.later = {d for d in self.later if d <= last}
        self.later_values = {d for d in self.later_values if d <= last}
        return dropped

    def ranges(self) -> list[tuple[date, date]]:
        """Contiguous [start, end) day ranges (no day may be ``date.max``: see ``until``).

        >>> Windows({date(2020, 1, 1), date(2020, 1, 2), date(2020, 1, 5)}).ranges()
        [(datetime.date(2020, 1, 1), datetime.date(2020, 1, 3)), (datetime.date(2020, 1, 5), datetime.date(2020, 1, 6))]
        """
        out: list[tuple[date, date]] = []
        for day in sorted(self.days):
            if out and out[-1][1] == day:
                out[-1] = (out[-1][0], day + timedelta(days=1))
            else:
                out.append((day, day + timedelta(days=1)))
        return out

    def restated(self, max_ranges: int | None = None) -> list[tuple[date, date]]:
        """The [start, end) ranges to restate: ``ranges()`` joined by ``join_ranges``."""
        return join_ranges(self.ranges(), max_ranges=max_ranges)

    def describe(self, max_ranges: int | None = None) -> str:
        if self.whole:
            return "all history"
        ranges = self.ranges()
        shown = ", ".join(f"{a}" if b - a == timedelta(days=1) else f"{a}..{b - timedelta(days=1)}" for a, b in ranges[:4])
        more = f" and {len(ranges) - 4} more ranges" if len(ranges) > 4 else ""
        restated = self.restated(max_ranges)
        if len(restated) < len(ranges):
            days = sum((b - a).days for a, b in restated)
            more += f", restated as {len(restated)} range(s) of {days} day(s)"
        return f"{len(self.days)} day(s): {shown}{more}"


# SQLMesh evaluates each separate range of a model as its own batch: rendering, insert, audits and
# state writes cost about 0.15 s a model whatever the range's size, while a day of data costs
# milliseconds. A range wider than macros/dedupe.py's NARROW_WINDOW_DAYS reads all of raw in
# staging (the key narrowing is off), so a wide range costs about a rebuild of the time models,
# which grows with the raw tables. Measured at 6 years (2.3M orders, 3.45M items; 40 scattered
# corrections): a separate one-day range costs each time model about 0.35 s, one wide range
# 3.6 s (staging orders) to 6 s (marts orders), so one wide range is cheaper from about 10-17
# ranges on; at 1 year from about 4. With 100,000 rows per range the item models kept 34 ranges
# separate: 49.7 s, against 29.8 s all joined and 58 s all separate. Hence: near ranges are always
# joined, and more ranges than one per ROWS_PER_RANGE rows of the model's largest raw table (at
# least MIN_RANGES) are restated as one range, from the first touched day to the last.
JOIN_GAP_DAYS = 7  # ranges this close are always joined (the days between cost less than a batch)
ROWS_PER_RANGE = 250_000  # raw rows whose rescan costs about one separate range
MIN_RANGES = 4


def max_ranges_for(raw_rows: int) -> int:
    """How many separate ranges a model whose largest raw table has ``raw_rows`` rows restates
    before one wide range is cheaper (ELT_RESTATE_MAX_RANGES fixes it).

    >>> max_ranges_for(73_433), max_ranges_for(2_308_298), max_ranges_for(3_454_775)
    (4, 9, 13)
    """
    fixed = os.environ.get("ELT_RESTATE_MAX_RANGES")
    return int(fixed) if fixed else max(MIN_RANGES, raw_rows // ROWS_PER_RANGE)


def join_ranges(ranges: list[tuple[date, date]], gap_days: int | None = None,
                max_ranges: int | None = None) -> list[tuple[date, date]]:
    """Sorted, disjoint [start, end) ``ranges`` joined: those at most ``gap_days`` apart, and all of
    them into one when more than ``max_ranges`` remain (default: ELT_RESTATE_MAX_RANGES, else
    MIN_RANGES). Restating a day nothing touched recomputes it unchanged, so joining changes cost,
    never results. ELT_RESTATE_JOIN_GAP_DAYS overrides the gap (0 days and a large maximum: every
    touched range on its own).

    >>> d = date(2020, 1, 1)
    >>> days = lambda *n: [(d + timedelta(days=i), d + timedelta(days=i + 1)) for i in n]
    >>> [(a.day, b.day) for a, b in join_ranges(days(0, 3, 20, 27), gap_days=7, max_ranges=4)]
    [(1, 5), (21, 29)]
    >>> [(a.day, b.day) for a, b in join_ranges(days(0, 10, 12, 25, 29), gap_days=2, max_ranges=4)]
    [(1, 2), (11, 14), (26, 27), (30, 31)]
    >>> [(a.day, b.day) for a, b in join_ranges(days(0, 10, 12, 25, 29), gap_days=0, max_ranges=3)]
    [(1, 31)]
    """
    if gap_days is None:
        gap_days = int(os.environ.get("ELT_RESTATE_JOIN_GAP_DAYS", JOIN_GAP_DAYS))
    if max_ranges is None:
        max_ranges = max_ranges_for(0)
    out: list[tuple[date, date]] = []
    for start, end in ranges:
        if out and (start - out[-1][1]).days <= gap_days:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    if len(out) > max(1, max_ranges):
        return [(out[0][0], out[-1][1])]
    return out


def raw_rows(adapter: Any, raw_table: str) -> int:
    """Rows of a raw table (asked only when a change touches more than MIN_RANGES ranges)."""
    row = adapter.fetchone(f"SELECT COUNT(*) FROM {parse_one(_t(raw_table), read='duckdb').sql(adapter.dialect)}")
    return int(row[0]) if row else 0


def window_specs() -> dict[str, WindowSpec]:
    """``raw_schema.table`` -> its WindowSpec, from every source declaration. Declarations of a
    shared raw table that disagree (``sources.config.windowed``, the rule the load checks too) stop
    the transform."""
    from sources.config import available_sources, load_source, windowed, windowed_words
    from sources.errors import ConfigError

    specs: dict[str, WindowSpec] = {}
    writer: dict[str, tuple[str, Any]] = {}  # raw table -> the source and table whose declaration gave its spec
    for name in available_sources():
        source = load_source(name)
        for table in source.tables.values():
            raw = f"{source.raw_schema}.{table.name}".lower()
            if raw in writer and (windowed(table) or windowed(writer[raw][1])) \
                    and windowed(table) != windowed(writer[raw][1]):
                raise ConfigError(f"{raw} is written by sources {writer[raw][0]} ({windowed_words(writer[raw][1])}) "
                                  f"and {name} ({windowed_words(table)})", source=name, table=table.name,
                                  hint="give every declaration of a shared raw table the same primary_key, event_time, "
                                       "event_time_from, sequence_key, held_rows and held_rows_fail_after")
            if raw not in specs or windowed(table):
                parent = (f"{source.raw_schema}.{table.event_time_from[0]}".lower(), table.event_time_from[1]) \
                    if table.event_time_from else None
                specs[raw] = WindowSpec(tuple(table.primary_key), table.event_time, parent, table.sequence_key,
                                        table.held_rows == "warn", table.held_rows_fail_after_s)
                writer[raw] = (name, table)
    return specs


# --- the consumption record ---------------------------------------------------------------------

def create_meta_table(adapter: Any, table: str, columns: str, key: str = "", *, replace: bool = False) -> None:
    """``CREATE TABLE [IF NOT EXISTS] table (columns[, PRIMARY KEY (key)])`` in ``adapter``'s
    dialect. ``columns`` are written as for DuckDB (``name TEXT NOT NULL, ...``). On Spark, whose
    Parquet tables have neither keys nor NOT NULL, the table is plain Parquet: its writers never
    repeat a key (mark_consumed inserts only missing rows)."""
    if replace:
        adapter.execute(f"DROP TABLE IF EXISTS {table}")
    exists = "" if replace else "IF NOT EXISTS "
    if adapter.dialect == "spark":
        plain = columns.replace(" NOT NULL", "").replace(" TEXT", " STRING")
        adapter.execute(f"CREATE TABLE {exists}{table} ({plain}) USING parquet")
        return
    keyed = f", PRIMARY KEY ({key})" if key else ""
    adapter.execute(f"CREATE TABLE {exists}{table} ({columns}{keyed})")


def ensure_tables(adapter: Any) -> None:
    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    create_meta_table(adapter, CONSUMED, "model TEXT NOT NULL, version TEXT NOT NULL, batch_id TEXT NOT NULL, "
                      "raw_table TEXT NOT NULL, consumed_at TIMESTAMP NOT NULL", "model, version, batch_id")
    create_meta_table(adapter, HELD, "raw_table TEXT NOT NULL, batch_id TEXT NOT NULL, held_at TIMESTAMP NOT NULL",
                      "raw_table, batch_id")


def held_batches(adapter: Any) -> dict[str, set[str]]:
    """raw table -> its batches recorded as holding rows out of staging (``HELD``)."""
    out: dict[str, set[str]] = {}
    for raw_table, batch_id in adapter.fetchall(f"SELECT raw_table, batch_id FROM {HELD}"):
        out.setdefault(str(raw_table), set()).add(str(batch_id))
    return out


def held_since(adapter: Any) -> dict[tuple[str, str], datetime]:
    """(raw table, batch) -> when a transform first held it (UTC): how long its rows have waited."""
    return {(str(t), str(b)): at for t, b, at in adapter.fetchall(f"SELECT raw_table, batch_id, held_at FROM {HELD}")}


def set_held(adapter: Any, held: dict[str, set[str]], before: dict[str, set[str]]) -> None:
    """Make ``HELD`` list exactly ``held`` (it listed ``before``), in one transaction; on Spark,
    whose Parquet tables cannot delete rows, by overwriting the (small) table. A batch held
    before keeps its ``held_at`` (held_rows_fail_after counts from it); a new one gets now."""
    held = {t: b for t, b in held.items() if b}
    if held == {t: b for t, b in before.items() if b}:
        return
    d = adapter.dialect
    since = held_since(adapter) if before else {}

    def at(table: str, batch: str) -> str:
        first = since.get((table, batch))
        return "CURRENT_TIMESTAMP" if first is None else f"CAST({_lit(str(first), d)} AS TIMESTAMP)"

    values = ", ".join(f"({_lit(t, d)}, {_lit(b, d)}, {at(t, b)})"
                       for t, batches in sorted(held.items()) for b in sorted(batches))
    rows = f"SELECT * FROM (VALUES {values}) AS v (raw_table, batch_id, held_at)"
    if d == "spark":
        adapter.execute(f"INSERT OVERWRITE TABLE {HELD} {rows}" if values else f"TRUNCATE TABLE {HELD}")
        return
    with adapter.transaction():
        adapter.execute(f"DELETE FROM {HELD}")
        if values:
            adapter.execute(f"INSERT INTO {HELD} (raw_table, batch_id, held_at) {rows}")


def _lit(value: object, dialect: str) -> str:
    """``value`` as a SQL literal. Plain text (no quote, no backslash: batch ids, model names,
    versions) is quoted directly: rendering each through sqlglot took 26 s of a deploy's
    transform at 150,000 batches (a probe of long histories: every batch is marked consumed by
    each new version, then as literals; mark_consumed now sends them as data)."""
    if isinstance(value, str) and "'" not in value and "\\" not in value:
        return f"'{value}'"
    return exp.convert(value).sql(dialect)


def pending_batches(adapter: Any, versions: dict[tuple[str, str], set[str]]) -> dict[tuple[str, str], dict[str, set[str]]]:
    """For each (model, version) and its upstream raw tables: raw table -> batch ids not consumed yet.

    The join to the version's own raw tables and the anti-join both run in the warehouse (the
    latter on the consumed table's primary key), so only pending batches of tables the version
    reads come back, however long the ledger grows. (Joined to every ledger row, each transform
    read back every batch of the tables a model does not read, as none is ever consumed by it:
    952k rows and 1.2 s for 100k old batches, found by a probe of months of daily runs.)"""
    out: dict[tuple[str, str], dict[str, set[str]]] = {mv: {} for mv in versions}
    pairs = sorted((m, v, t) for (m, v), tables in versions.items() for t in tables)
    if not pairs or not adapter.table_exists(LEDGER):
        return out
    rows = adapter.fetchall(
        f"SELECT t.model, t.version, t.raw_table, l.batch_id FROM {_values(pairs, 'model, version, raw_table', adapter.dialect)} "
        f"JOIN {LEDGER} AS l ON lower(l.raw_table) = t.raw_table WHERE NOT EXISTS (SELECT 1 FROM {CONSUMED} AS c "
        "WHERE c.model = t.model AND c.version = t.version AND c.batch_id = l.batch_id)"
    )
    for model, version, raw_table, batch_id in rows:
        out[(str(model), str(version))].setdefault(str(raw_table), set()).add(str(batch_id))
    return out


def consumed_versions(adapter: Any, versions: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (model, version) pairs of ``versions`` that have consumed at least one batch."""
    if not versions:
        return set()
    return {(str(m), str(v)) for m, v in adapter.fetchall(
        f"SELECT t.model, t.version FROM {_values(sorted(versions), 'model, version', adapter.dialect)} WHERE EXISTS "
        f"(SELECT 1 FROM {CONSUMED} AS c WHERE c.model = t.model AND c.version = t.version)")}


def _values(rows: Any, columns: str, dialect: str) -> str:
    """Tuples of values as a VALUES table ``t (<columns>)``, each value a quoted literal."""
    listed = ", ".join("(" + ", ".join(_lit(v, dialect) for v in row) + ")" for row in rows)
    return f"(VALUES {listed}) AS t ({columns})"


def batches_loaded_before(adapter: Any, moment: datetime, *, inclusive: bool = False) -> set[str]:
    """Ids of the ledger's batches loaded before ``moment`` (UTC, naive; or at it, ``inclusive``)."""
    at = _lit(str(moment), adapter.dialect)
    return {str(b) for (b,) in adapter.fetchall(
        f"SELECT batch_id FROM {LEDGER} WHERE loaded_at {'<=' if inclusive else '<'} CAST({at} AS TIMESTAMP)")}


def mark_consumed(adapter: Any, consumed: dict[tuple[str, str], dict[str, set[str]]]) -> int:
    """Record batches as consumed by model versions, in one transaction (idempotent): returns the
    number of (version, batch) pairs given, recorded now or before.

    The pairs reach the warehouse as data (``_rows_as_table``) and one anti-join inserts those not
    recorded yet. Rendered as literals into INSERTs of 500 rows, a deploy's first transform took
    33 s to mark 150,000 batches (probe-s7-scale: each statement parsed, then anti-joined to the
    whole record); as data, 150,000 pairs beside 900,000 recorded take 0.6 s on DuckDB (10 s as
    literals) and 1.1 s on PostgreSQL (1.2 s), and Spark runs one job instead of 300."""
    pairs = [(m, v, b, t) for (m, v), tables in consumed.items() for t, batches in tables.items() for b in sorted(batches)]
    if not pairs:
        return 0
    rows = pa.Table.from_arrays([pa.array(column, pa.string()) for column in zip(*pairs)],
                                names=["model", "version", "batch_id", "raw_table"])
    with adapter.transaction(), _rows_as_table(adapter, rows) as given:
        # the anti-join reads the record of the versions given only (a deploy's new versions have
        # none): beside 900,000 recorded pairs, PostgreSQL hashed them all for 10,000 new ones,
        # 0.33 s instead of 0.03 s
        adapter.execute(
            f"INSERT INTO {CONSUMED} (model, version, batch_id, raw_table, consumed_at) "
            f"SELECT v.model, v.version, v.batch_id, v.raw_table, CURRENT_TIMESTAMP FROM {given} AS v "
            f"WHERE NOT EXISTS (SELECT 1 FROM {CONSUMED} AS c JOIN (SELECT DISTINCT model, version FROM {given}) AS mv "
            "ON c.model = mv.model AND c.version = mv.version "
            "WHERE c.model = v.model AND c.version = v.version AND c.batch_id = v.batch_id)"
        )
    return len(pairs)


@contextmanager
def _rows_as_table(adapter: Any, rows: pa.Table) -> Iterator[str]:
    """The Arrow table ``rows`` (text columns) as a relation the adapter's statements can read,
    loaded in one go, in the adapter's open transaction: DuckDB scans it where it lies, PostgreSQL
    copies it (COPY, as sources/load/postgres_raw) into a temporary table, Spark makes it a
    temporary view of its session. (SQLMesh's own insert of a frame renders VALUES on PostgreSQL:
    17.6 s for 150,000 rows.) Yields the relation's name in the adapter's dialect."""
    d = adapter.dialect
    name = exp.to_identifier("_elt_rows").sql(d)
    if d == "duckdb":
        adapter.cursor.register("_elt_rows", rows)
        try:
            yield name
        finally:
            adapter.cursor.unregister("_elt_rows")
    elif d == "spark":
        adapter.spark.createDataFrame(rows).createOrReplaceTempView("_elt_rows")
        try:
            yield name
        finally:
            adapter.spark.catalog.dropTempView("_elt_rows")
    elif d == "postgres":
        columns = ", ".join(f"{exp.to_identifier(c).sql(d)} TEXT" for c in rows.column_names)
        adapter.execute(f"CREATE TEMPORARY TABLE {name} ({columns})")
        text = io.BytesIO()
        pacsv.write_csv(rows, text, pacsv.WriteOptions(include_header=False))  # strings quoted: '' stays ''
        text.seek(0)
        adapter.cursor.copy_expert(f"COPY {name} FROM STDIN WITH (FORMAT csv)", text)
        adapter.execute(f"ANALYZE {name}")  # its row count, for the planner
        yield name
        # a failure rolls the transaction back, and the table with it
        adapter.execute(f"DROP TABLE {name}")
    else:
        raise NotImplementedError(f"no bulk load of rows into a {d} warehouse (DuckDB, PostgreSQL, Spark)")


def prune_consumed(adapter: Any, live: set[tuple[str, str]], models: set[str]) -> tuple[int, int]:
    """Forget the batches consumed by model versions SQLMesh no longer has: ``live`` holds every
    (model, version) of ``models`` in its state, expired or not. Each deploy marks every batch
    consumed by each new version (150,000 batches, six versions: 900,000 rows), and nothing took
    them out once SQLMesh's janitor had dropped a version's table. A version brought back later is
    built whole by the plan, as a new one. Versions of other models (not in ``models``) and
    ``novde`` (a model's only table when virtual environments are off) are kept, and so is a
    version recorded in the last day: another environment's transform records its new versions
    before its plan puts them in SQLMesh's state (on PostgreSQL a dev transform may run beside a
    prod deploy; a review), and the janitor waits a week before dropping a version anyway.
    Returns (versions, rows) forgotten. Not on Spark, whose Parquet tables cannot delete rows."""
    if adapter.dialect == "spark" or not adapter.table_exists(CONSUMED):
        return 0, 0
    gone = [(str(m), str(v), int(n)) for m, v, n in adapter.fetchall(
        f"SELECT model, version, count(*) FROM {CONSUMED} GROUP BY model, version "
        "HAVING max(consumed_at) < CURRENT_TIMESTAMP - INTERVAL '1' DAY")
        if str(m) in models and (str(m), str(v)) not in live and str(v) != "novde"]
    if gone:
        d = adapter.dialect
        with adapter.transaction():
            adapter.execute(f"DELETE FROM {CONSUMED} WHERE " + " OR ".join(
                f"(model = {_lit(m, d)} AND version = {_lit(v, d)})" for m, v, _ in gone))
    return len(gone), sum(n for _, _, n in gone)


def ensure_raw_tombstone_column(adapter: Any) -> list[str]:
    """Give raw tables made before tombstones existed their ``_deleted`` column (FALSE): staging
    reads it. Returns the tables changed."""
    if not adapter.table_exists(LEDGER):
        return []
    changed = []
    for (raw_table,) in adapter.fetchall(f"SELECT DISTINCT raw_table FROM {LEDGER}"):
        if adapter.table_exists(raw_table) and not _has_column(adapter, raw_table, DELETED):
            adapter.execute(f"ALTER TABLE {parse_one(_t(raw_table), read='duckdb').sql(adapter.dialect)} "
                            f"ADD COLUMN {exp.to_identifier(DELETED, quoted=True).sql(adapter.dialect)} BOOLEAN DEFAULT FALSE")
            changed.append(raw_table)
    return changed


# --- days touched by batches --------------------------------------------------------------------

def _q(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql("duckdb")


def _t(raw_table: str) -> str:
    schema, table = raw_table.split(".", 1)
    return exp.table_(table, db=schema, quoted=True).sql("duckdb")


def _has_column(adapter: Any, raw_table: str, column: str) -> bool:
    return column in adapter.columns(raw_table)


def window_sql(raw_table: str, spec: WindowSpec, batches: set[str], *, has_deleted: bool,
               values: bool = False, parent: WindowSpec | None = None) -> str | None:
    """The query (DuckDB dialect) listing the days that ``batches`` of ``raw_table`` touch. It may
    return a NULL day (a row without time): callers skip it.

    Two choices here keep a day's batch from scanning history at hash-join speed (6 years, one
    day's 2,019 items: 0.03 s instead of 0.3-0.5 s): a single-column key finds its versions with
    ``IN`` (a semi join whose small side filters the scan of raw), and the parent table is read
    without a filter of its own, which made DuckDB build its hash table on the whole parent.

    ``parent``: the parent table's spec, for a child table (``spec.parent``)."""
    ids = ", ".join(_lit(b, "duckdb") for b in sorted(batches))
    key = ", ".join(_q(k) for k in spec.key)
    using = f"USING ({key})"
    in_batches = f"FROM {_t(raw_table)} WHERE {_q('_batch_id')} IN ({ids})"
    if len(spec.key) == 1:
        changed = f"changed AS (SELECT {key} {in_batches})"
        versions = f"versions AS (SELECT v.* FROM {_t(raw_table)} AS v WHERE v.{key} IN (SELECT {key} FROM changed))"
    else:
        changed = f"changed AS (SELECT DISTINCT {key} {in_batches})"
        versions = f"versions AS (SELECT v.* FROM {_t(raw_table)} AS v JOIN changed {using})"
    if spec.parent:
        parent_table, column = spec.parent
        if not column or parent is None or not parent.event_time:
            return None
        # the parent's columns, quoted here: a child column named like a placeholder ("line {n}")
        # once broke the str.format that filled them in, and every transform with it (a probe)
        event_time, parent_key = _q(parent.event_time), _q(parent.key[0])
        sequence_key = _q(parent.sequence_key or "")
        sql = (f"WITH {changed}, {versions} "
               f"SELECT DISTINCT CAST(p.{event_time} AS DATE) AS day, 0 AS later FROM {_t(parent_table)} AS p "
               f"WHERE p.{parent_key} IN (SELECT versions.{_q(column)} FROM versions)")
        if values:
            # any changed child shifts the later values of its parent's entity (the parent's
            # sequence_key): the parent's days from the first one on
            sql += (f" UNION SELECT DISTINCT CAST(later.{event_time} AS DATE) AS day, 2 AS later "
                    f"FROM {_t(parent_table)} AS later JOIN (SELECT p.{sequence_key} AS entity, "
                    f"MIN(CAST(p.{event_time} AS DATE)) AS first_day FROM {_t(parent_table)} AS p "
                    f"WHERE p.{parent_key} IN (SELECT versions.{_q(column)} FROM versions) "
                    f"AND p.{sequence_key} IS NOT NULL GROUP BY p.{sequence_key}) AS touched "
                    f"ON later.{sequence_key} = touched.entity WHERE CAST(later.{event_time} AS DATE) >= touched.first_day")
        return sql
    if not spec.event_time:
        return None
    et = _q(spec.event_time)
    sql = (f"WITH {changed}, {versions} SELECT DISTINCT CAST(versions.{et} AS DATE) AS day, 0 AS later "
           f"FROM versions WHERE versions.{et} IS NOT NULL")
    if spec.sequence_key:
        sk = _q(spec.sequence_key)
        deleted = f" OR MAX(CASE WHEN {_q(DELETED)} THEN 1 ELSE 0 END) = 1" if has_deleted else ""
        # a key shifts its entity's later rows when it is new, deleted, or moves in time or entity
        moved = (f"moved AS (SELECT {key} FROM versions GROUP BY {key} HAVING "
                 f"COUNT(CASE WHEN {_q('_batch_id')} NOT IN ({ids}) THEN 1 END) = 0 "
                 f"OR COUNT(DISTINCT CAST({et} AS DATE)) > 1 OR COUNT(DISTINCT {sk}) > 1{deleted} "
                 # a version without its time leaves staging as a deleted one does
                 f"OR COUNT(*) > COUNT({et}))")
        shifted = (f"shifted AS (SELECT versions.{sk} AS entity, MIN(CAST(versions.{et} AS DATE)) AS first_day "
                   f"FROM versions JOIN moved {using} WHERE versions.{sk} IS NOT NULL GROUP BY versions.{sk})")
        def later_days(entities: str, level: int) -> str:
            return (f"UNION SELECT DISTINCT CAST(later.{et} AS DATE) AS day, {level} AS later FROM {_t(raw_table)} AS later "
                    f"JOIN {entities} ON later.{sk} = {entities}.entity WHERE CAST(later.{et} AS DATE) >= {entities}.first_day "
                    # implied by the condition before it; a bare column against one value lets the scan
                    # skip the row groups before the earliest shifted day (6 years, one new day: 0.04 s
                    # instead of 0.13-0.17 s, a cost that grew with history)
                    f"AND later.{et} >= (SELECT MIN({entities}.first_day) FROM {entities})")

        # with ``values``: every changed key's entity too, from the first day of any of its versions
        touched = (f", touched AS (SELECT versions.{sk} AS entity, MIN(CAST(versions.{et} AS DATE)) AS first_day "
                   f"FROM versions WHERE versions.{sk} IS NOT NULL GROUP BY versions.{sk})") if values else ""
        sql = (f"WITH {changed}, {versions}, {moved}, {shifted}{touched} "
               f"SELECT DISTINCT CAST(versions.{et} AS DATE) AS day, 0 AS later FROM versions "
               f"WHERE versions.{et} IS NOT NULL {later_days('shifted', 1)}"
               + (f" {later_days('touched', 2)}" if values else ""))
    return sql


@dataclass
class Orphans:
    """Rows of new batches that staging cannot place on a day, held out of staging: their parent
    (``event_time_from``) is not in raw (``parent_table``), or, when ``event_time`` is set, their
    own event time is empty."""

    raw_table: str
    parent_table: str
    count: int
    example: dict[str, Any]
    batches: set[str]
    query: str
    event_time: str | None = None
    # the held table declares held_rows: warn (set by restate from its WindowSpec)
    warn: bool = False
    # warned, but held longer than held_rows_fail_after allows: why it fails instead (restate)
    overdue: str = ""
    # the parent is in raw but its source deleted it (deleted_parents), not missing
    parent_deleted: bool = False
    # event times before this day, the first any model builds (timeless with first_day), not empty ones
    before: date | None = None
    # event times after this day, today in UTC (timeless with after): their day has not come yet
    after: date | None = None


def timeless(adapter: Any, raw_table: str, specs: dict[str, WindowSpec], batches: set[str],
             first_day: date | None = None, after: date | None = None) -> Orphans | None:
    """Rows of ``batches`` that are their key's latest live version and have no event time. The
    loader lands them as the source has them (so they never block their table); staging's window
    filter leaves them out, as a clean build of the same raw does, so the key disappears from
    staging and the marts. Like orphans, they fail the transform, and every transform checks their
    batches again (``HELD``), until the source fills the event time (a later version of the key) or
    deletes the row.

    With ``first_day`` (the earliest start of the time models reading the table), the rows whose
    event time is before it instead: no interval of any model holds them, so they were in no mart,
    with every command succeeding (an on-call probe: an order dated 2018-08-31, or moved there).

    With ``after`` (today in UTC), the rows dated on a later day instead: SQLMesh builds a day once
    it has ended, so they are in no mart until their day comes (a typo of 2029 for 2019, or a
    9999-12-31 "end of time" placeholder); they wait, and are named meanwhile."""
    spec = specs.get(raw_table)
    if not batches or spec is None or not spec.event_time or not adapter.table_exists(raw_table):
        return None
    ids = ", ".join(_lit(b, "duckdb") for b in sorted(batches))
    et = _q(spec.event_time)

    def outside(alias: str) -> str:
        if after is not None:  # from the next day's midnight on (after is today: never date.max)
            return f"{alias}{et} >= {_lit((after + timedelta(days=1)).isoformat(), 'duckdb')}"
        return f"{alias}{et} IS NULL" if first_day is None else f"{alias}{et} < {_lit(first_day.isoformat(), 'duckdb')}"
    live = f" AND NOT COALESCE(v.{_q(DELETED)}, FALSE)" if _has_column(adapter, raw_table, DELETED) else ""
    in_batches = f"v.{_q('_batch_id')} IN ({ids})"
    # the usual answer (every new row has its time) from one filtered scan of the batches' rows
    probe = f"SELECT 1 FROM {_t(raw_table)} AS v WHERE {in_batches} AND {outside('v.')}{live} LIMIT 1"
    if not adapter.fetchall(parse_one(probe, read="duckdb").sql(adapter.dialect)):
        return None
    key = ", ".join(_q(k) for k in spec.key)
    order = ", ".join(f"{_q(c)} DESC NULLS LAST" for c in ORDER)
    where = f"{_q('_batch_id')} IN ({ids}) AND {outside('')}"
    keys = ", ".join(f"v.{_q(k)}" for k in spec.key)
    sql = (f"WITH {_versions_of_keys(raw_table, key, order, where)} "
           f"SELECT {keys}, v.{_q('_batch_id')}, v.{_q('_batch_row')} + 1 AS data_row, v.{et} "
           f"FROM versions AS v WHERE v._rn = 1 AND {in_batches} AND {outside('v.')}{live} ORDER BY {keys}")
    rendered = parse_one(sql, read="duckdb").sql(adapter.dialect)
    rows = adapter.fetchall(rendered)
    if not rows:
        return None
    first = rows[0]
    # the time as the source wrote it (9999-12-31 10:00:00), not a datetime's repr
    when = str(first[-1]) if isinstance(first[-1], date) else first[-1]
    example = {**dict(zip(spec.key, first[:len(spec.key)])), spec.event_time: when, "_batch_id": first[-3],
               "data row": first[-2]}
    return Orphans(raw_table, "", len(rows), example, {r[-3] for r in rows}, rendered, event_time=spec.event_time,
                   before=None if after is not None else first_day, after=after)


def orphans(adapter: Any, raw_table: str, specs: dict[str, WindowSpec], batches: set[str],
            deleting: set[str] | None = None) -> Orphans | None:
    """Rows of ``batches`` that are their key's latest live version and whose parent has no live
    row in the parent table. Staging cannot place them on a day; they stay in raw, and every
    transform checks their batches again (``HELD``), until the parent arrives (its batch restates
    its day) or the row is corrected. Rows whose parent one of the parent table's ``deleting``
    batches deleted are left to ``deleted_parents``, which checks those batches in the same
    transform: counted here too, each was reported twice, once as a missing parent."""
    spec = specs.get(raw_table)
    if not batches or spec is None or spec.parent is None:
        return None
    parent_table, column = spec.parent
    parent_spec = specs.get(parent_table)
    if parent_spec is None or len(parent_spec.key) != 1 or not adapter.table_exists(raw_table):
        return None
    ids = ", ".join(_lit(b, "duckdb") for b in sorted(batches))
    deleted = _has_column(adapter, raw_table, DELETED)
    live = f" AND NOT COALESCE(v.{_q(DELETED)}, FALSE)" if deleted else ""
    # a parent table that does not exist yet (its source never loaded here: raw tables several
    # sources declare are made by their first load) holds no parent: every row is an orphan
    has_parent_table = adapter.table_exists(parent_table)
    parent_live = (f" AND NOT COALESCE(p.{_q(DELETED)}, FALSE)"
                   if has_parent_table and _has_column(adapter, parent_table, DELETED) else "")
    # "no live parent row" as an anti-join (LEFT JOIN to the live parent keys, keep the rows without
    # a match): the same rows as NOT EXISTS, but DuckDB plans NOT EXISTS as a delim join, about 3x
    # slower when the batches are all of raw (a whole-history build: 2 s to 0.65 s at 6 years)
    pk = _q(parent_spec.key[0])
    live_parents = f"SELECT p.{pk} FROM {_t(parent_table)} AS p WHERE TRUE{parent_live}"
    # A parent the source deleted keeps its earlier, live versions in raw under its tombstone: a
    # parent is live when its latest version is (a fuzz found an item naming an order deleted
    # earlier passing, and dropped from staging without a word, where a clean build fails on it).
    # Only a parent table that holds tombstones needs the latest version: read then for the
    # parents these batches name, not all of them.
    tombstoned = bool(parent_live) and bool(adapter.fetchall(parse_one(
        f"SELECT 1 FROM {_t(parent_table)} AS p WHERE COALESCE(p.{_q(DELETED)}, FALSE) LIMIT 1",
        read="duckdb").sql(adapter.dialect)))
    if tombstoned:
        live_parents = _latest_live(parent_table, pk, f"SELECT n.{_q(column)} FROM {_t(raw_table)} AS n "
                                                      f"WHERE n.{_q('_batch_id')} IN ({ids})")
    parent_join, parent_exists = (
        (f" LEFT JOIN ({live_parents}) AS lp ON lp.{pk} = v.{_q(column)}", f" AND lp.{pk} IS NULL")
        if has_parent_table else ("", ""))
    # First the cheap question, without the dedupe: does any row of these batches point at a
    # parent that has no live row? The exact answer below is a subset of this one, so no
    # candidate means no orphan (the common case, and a whole-history build's).
    large = True
    if parent_exists:
        rows, parents = (adapter.fetchone(parse_one(q, read="duckdb").sql(adapter.dialect))[0] for q in (
            f"SELECT COUNT(*) FROM {_t(raw_table)} WHERE {_q('_batch_id')} IN ({ids})",
            f"SELECT COUNT(*) FROM {_t(parent_table)}"))
        if not rows:
            return None
        large = rows * 10 >= parents
        if not large and _all_parents_live(adapter, raw_table, parent_table, column, pk, ids, live, parent_live,
                                           tombstoned):
            return None
    with _hash_joins(adapter, large):
        return _orphan_rows(adapter, raw_table, spec, ids, parent_join, parent_exists, live, pk, deleting, parent_live)


@contextmanager
def _hash_joins(adapter: Any, large: bool) -> Iterator[None]:
    """On PostgreSQL, for batches as large as a tenth of the parent table (a whole-history build:
    the first transform, or one from landing), joins by hashing only. PostgreSQL's estimate of the
    rows a dedupe keeps (``ROW_NUMBER() ... = 1``) can be a thousand times too low; it then joins
    by a nested loop that reads the other side once per row, and the orphan check of a first
    build at 1 year took 135-146 s instead of 0.3 s (108,000 items against 72,000 orders, some
    deleted), and hours at 6 years. A day's batches keep the planner's choice: their index lookups
    are the fast way. ``SET LOCAL`` ends with the transaction opened here."""
    if not large or adapter.dialect != "postgres":
        yield
        return
    with adapter.transaction():
        adapter.execute("SET LOCAL enable_nestloop = off")
        yield


def _orphan_rows(adapter: Any, raw_table: str, spec: WindowSpec, ids: str, parent_join: str, parent_exists: str,
                 live: str, pk: str, deleting: set[str] | None, parent_live: str) -> Orphans | None:
    """The rows ``orphans`` describes, once the cheap questions did not rule them out."""
    assert spec.parent is not None
    parent_table, column = spec.parent
    key = ", ".join(_q(k) for k in spec.key)
    order = ", ".join(f"{_q(c)} DESC NULLS LAST" for c in ORDER)
    # Counted, not LIMIT 1: a LIMIT makes PostgreSQL's planner bet on finding a row early and join
    # by a nested loop, which reads the parent table once per row when no row matches, the usual
    # answer (a first build at 1 year, 108,000 items against 72,000 orders without indexes: 146 s
    # instead of 0.04 s). Without it both engines hash the parent once; a count costs DuckDB the
    # same scan.
    candidates = (f"SELECT COUNT(*) FROM {_t(raw_table)} AS v{parent_join} WHERE v.{_q('_batch_id')} IN ({ids}) "
                  f"AND v.{_q(column)} IS NOT NULL{live}{parent_exists}")
    if parent_exists and not adapter.fetchone(parse_one(candidates, read="duckdb").sql(adapter.dialect))[0]:
        return None
    of_batches = f"{_q('_batch_id')} IN ({ids})"
    reported_deleted = (f" AND v.{_q(column)} NOT IN (SELECT k FROM ({_gone(parent_table, pk, deleting)}) AS gone)"
                        if deleting and parent_live else "")
    sql = (f"WITH {_versions_of_keys(raw_table, key, order, of_batches)} "
           f"SELECT {', '.join(f'v.{_q(k)}' for k in spec.key)}, v.{_q(column)}, v.{_q('_batch_id')} FROM versions AS v"
           f"{parent_join} WHERE v._rn = 1 AND v.{_q('_batch_id')} IN ({ids}) AND v.{_q(column)} IS NOT NULL{live}"
           f"{parent_exists}{reported_deleted}")
    rendered = parse_one(sql, read="duckdb").sql(adapter.dialect)
    rows = adapter.fetchall(rendered)
    if not rows:
        return None
    first = rows[0]
    example = {**dict(zip(spec.key, first[:len(spec.key)])), column: first[len(spec.key)],
               "_batch_id": first[-1]}
    return Orphans(raw_table, parent_table, len(rows), example, {r[-1] for r in rows}, rendered)


def _latest_live(table: str, pk: str, named: str) -> str:
    """The keys ``pk`` of ``table``, among those the query ``named`` returns, whose latest version is
    live (not a tombstone), as a query of one column named ``pk``."""
    order = ", ".join(f"{_q(c)} DESC NULLS LAST" for c in ORDER)
    return (f"SELECT ranked.k AS {pk} FROM (SELECT p.{pk} AS k, p.{_q(DELETED)} AS d, ROW_NUMBER() OVER "
            f"(PARTITION BY p.{pk} ORDER BY {order}) AS rn FROM {_t(table)} AS p WHERE p.{pk} IN ({named})) "
            "AS ranked WHERE ranked.rn = 1 AND NOT COALESCE(ranked.d, FALSE)")


def _versions_of_keys(raw_table: str, key: str, order: str, where: str) -> str:
    """Two CTEs: ``keys``, the keys of ``raw_table``'s rows that match ``where``, and ``versions``,
    every version of those keys with ``_rn`` = 1 on the latest (``order``)."""
    return (f"keys AS (SELECT DISTINCT {key} FROM {_t(raw_table)} WHERE {where}), "
            f"versions AS (SELECT t.*, ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {order}) AS _rn "
            f"FROM {_t(raw_table)} AS t JOIN keys USING ({key}))")


def deleted_parents(adapter: Any, parent_table: str, specs: dict[str, WindowSpec], batches: set[str]) -> list[Orphans]:
    """Rows whose parent ``batches`` deleted (the parent key's latest version is a tombstone of one
    of them) while the row itself is still live: one ``Orphans`` per child table, whose ``batches``
    are the parent's batches that deleted those parents. Staging drops such rows with their
    parent's day; a clean build of the same source state finds them with ``orphans`` (the parent
    has no row at all). So both fail the same way: every transform checks the deleting batches
    again (``HELD``) until the parent is restored or the rows are deleted at the source."""
    parent_spec = specs.get(parent_table)
    children = sorted(t for t, s in specs.items() if s.parent is not None and s.parent[0] == parent_table)
    if (not batches or not children or parent_spec is None or len(parent_spec.key) != 1
            or not adapter.table_exists(parent_table) or not _has_column(adapter, parent_table, DELETED)):
        return []
    pk = _q(parent_spec.key[0])
    order = ", ".join(f"{_q(c)} DESC NULLS LAST" for c in ORDER)
    gone = _gone(parent_table, pk, batches)
    if not adapter.fetchall(parse_one(f"{gone} LIMIT 1", read="duckdb").sql(adapter.dialect)):
        return []  # the usual case: no parent deleted, no child table read
    # Hash joins on PostgreSQL (``_hash_joins``), whatever the size: its estimate of the deleted
    # keys and of the children's dedupe is low, and it joined them by a nested loop, whose cost
    # grows with the square of the deletions: 7,200 deleted orders at 1 year took 3.7 s instead of
    # 0.09 s (hours for a purge of a tenth of 6 years). One deleted order costs 0.01-0.1 s more.
    with _hash_joins(adapter, True):
        return _children_of_gone(adapter, parent_table, specs, children, gone, order)


def _children_of_gone(adapter: Any, parent_table: str, specs: dict[str, WindowSpec], children: list[str], gone: str,
                      order: str) -> list[Orphans]:
    """The live rows of each child table whose parent is among ``gone`` (see ``deleted_parents``)."""
    found: list[Orphans] = []
    for child in children:
        spec = specs[child]
        assert spec.parent is not None
        column = _q(spec.parent[1])
        if not adapter.table_exists(child):
            continue
        key = ", ".join(_q(k) for k in spec.key)
        live = f" AND NOT COALESCE(v.{_q(DELETED)}, FALSE)" if _has_column(adapter, child, DELETED) else ""
        sql = (f"WITH gone AS ({gone}), {_versions_of_keys(child, key, order, f'{column} IN (SELECT k FROM gone)')} "
               f"SELECT {', '.join(f'v.{_q(k)}' for k in spec.key)}, v.{column}, g.b FROM versions AS v "
               f"JOIN gone AS g ON g.k = v.{column} WHERE v._rn = 1{live}")
        rendered = parse_one(sql, read="duckdb").sql(adapter.dialect)
        rows = adapter.fetchall(rendered)
        if rows:
            first = rows[0]
            example = {**dict(zip(spec.key, first[:len(spec.key)])), spec.parent[1]: first[len(spec.key)],
                       f"deleted by {parent_table} batch": first[-1]}
            found.append(Orphans(child, parent_table, len(rows), example, {r[-1] for r in rows}, rendered,
                                 parent_deleted=True))
    return found


def _gone(parent_table: str, pk: str, batches: set[str]) -> str:
    """The parent keys ``batches`` tombstoned and that stayed deleted (their latest version), each
    with the batch (columns ``k``, ``b``)."""
    ids = ", ".join(_lit(b, "duckdb") for b in sorted(batches))
    order = ", ".join(f"{_q(c)} DESC NULLS LAST" for c in ORDER)
    return (f"SELECT k, b FROM (SELECT p.{pk} AS k, p.{_q('_batch_id')} AS b, p.{_q(DELETED)} AS d, "
            f"ROW_NUMBER() OVER (PARTITION BY p.{pk} ORDER BY {order}) AS rn FROM {_t(parent_table)} AS p "
            f"WHERE p.{pk} IN (SELECT t.{pk} FROM {_t(parent_table)} AS t WHERE t.{_q('_batch_id')} IN ({ids}) "
            f"AND t.{_q(DELETED)})) AS ranked WHERE rn = 1 AND d AND b IN ({ids})")


def _all_parents_live(adapter: Any, raw_table: str, parent_table: str, column: str, pk: str, ids: str,
                      live: str, parent_live: str, tombstoned: bool = False) -> bool:
    """True when batches that are small beside the parent table (under a tenth of its rows; the
    caller asks only for those) are known to reference only live parents: the parents they name,
    counted through a semi join that reads the parent table filtered by those names, are as many
    as the names. Larger batches (a whole-history build) skip this count: the anti-join that
    follows builds its hash table on the parent once, which is cheaper for them. One day at 6
    years: 0.04 s + 0.04 s for the row count, against 0.2-0.3 s for building that hash table."""
    # a parent row counts when it is live; the CASE (not a WHERE) keeps the parent scan unfiltered
    # but by the semi join, as window_sql explains
    alive = f"NOT COALESCE(p.{_q(DELETED)}, FALSE)" if parent_live else "TRUE"
    found = (f"SELECT COUNT(DISTINCT CASE WHEN {alive} THEN p.{pk} END) FROM {_t(parent_table)} AS p "
             f"WHERE p.{pk} IN (SELECT ref FROM refs)")
    if tombstoned:  # a parent counts when its latest version is live (see orphans)
        found = f"SELECT COUNT(*) FROM ({_latest_live(parent_table, pk, 'SELECT ref FROM refs')}) AS latest"
    sql = (f"WITH refs AS (SELECT DISTINCT v.{_q(column)} AS ref FROM {_t(raw_table)} AS v "
           f"WHERE v.{_q('_batch_id')} IN ({ids}) AND v.{_q(column)} IS NOT NULL{live}) "
           f"SELECT (SELECT COUNT(*) FROM refs), ({found})")
    named, found = adapter.fetchone(parse_one(sql, read="duckdb").sql(adapter.dialect))
    return named == found


def batches_with_rows(adapter: Any, raw_table: str, batches: set[str]) -> set[str]:
    """The ``batches`` that put at least one row into ``raw_table``. A snapshot that did not
    change lands a batch that raw records but that adds no row (sources/load/changes.py): it
    touches nothing, and must not restate a model whole because its table has no time."""
    if not batches or not adapter.table_exists(raw_table):
        return set()
    ids = ", ".join(_lit(b, "duckdb") for b in sorted(batches))
    sql = f"SELECT DISTINCT {_q('_batch_id')} FROM {_t(raw_table)} WHERE {_q('_batch_id')} IN ({ids})"
    return {b for (b,) in adapter.fetchall(parse_one(sql, read="duckdb").sql(adapter.dialect))}


def raw_windows(adapter: Any, raw_table: str, specs: dict[str, WindowSpec], batches: set[str], *,
                values: bool = False, last: date | None = None) -> Windows:
    """The days ``batches`` of ``raw_table`` touch (``whole`` for a table without time); with
    ``values``, also the later days of every entity with a changed row (``later_values``). With
    ``last``, none after it (``Windows.until``): left out by the query itself, so a time past the
    years Python's dates hold never reaches Python."""
    spec = specs.get(raw_table)
    if not batches:
        return Windows()
    if spec is None or not (spec.event_time or spec.parent):
        return Windows(whole=bool(batches_with_rows(adapter, raw_table, batches)))
    if spec.parent:
        parent_spec = specs.get(spec.parent[0])
        if parent_spec is None or not parent_spec.event_time or len(parent_spec.key) != 1:
            return Windows(whole=True)
        values = values and bool(parent_spec.sequence_key)
    sql = window_sql(raw_table, spec, batches, has_deleted=_has_column(adapter, raw_table, DELETED), values=values,
                     parent=parent_spec if spec.parent else None)
    if spec.parent and not adapter.table_exists(spec.parent[0]):
        return Windows()
    assert sql is not None
    if last is not None:
        sql = (f"SELECT touched.day, touched.later FROM ({sql}) AS touched "
               f"WHERE touched.day <= CAST({_lit(last.isoformat(), 'duckdb')} AS DATE)")
    rendered = parse_one(sql, read="duckdb").sql(adapter.dialect)
    found: tuple[set[date], set[date], set[date]] = (set(), set(), set())  # own days, later (NUMBERS, VALUES)
    for day, level in adapter.fetchall(rendered):
        if day is not None:
            found[int(level)].add(day.date() if isinstance(day, datetime) else day)
    days, later, values_later = found
    return Windows(days, later=later - days, later_values=values_later - days - later)

