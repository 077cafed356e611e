"""Append landed batches to raw tables in a PostgreSQL warehouse with COPY FROM STDIN.

One transaction per batch: the rows (streamed with COPY, one Arrow record batch at a time so
memory stays bounded), the ledger entry and the cursor advance commit together. A transaction
advisory lock on (source, table) serialises loaders of the same table across processes and hosts.

After a batch that grows its raw table by more than a tenth (or the table's first), the table is
analysed at once. Autovacuum would do it, but only minutes later: meanwhile the planner takes the
new batch for a few rows, and the transform's queries by batch id ran as nested loops over the
whole batch (a reloaded table of 146,000 rows: over 10 minutes, against 1.3 s when analysed).
"""

from __future__ import annotations

import io
import re
import shlex
from datetime import UTC, datetime, time
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg2 import sql

from sources.connections import (STATEMENT_TIMEOUT, PostgresSettings, quote_ident, statement_timeout_hint,
                                 warehouse_privilege_error)
from sources import failpoints
from sources.errors import RawLoadError, exception_chain, first_line
from sources.landing.manifest import Manifest
from sources.landing.store import SetAside
from sources.load.base import (
    CURSOR_COLUMNS,
    CURSOR_TABLE,
    IDENTITY_COLUMNS,
    IDENTITY_TABLE,
    LEDGER_COLUMNS,
    LEDGER_TABLE,
    META_SCHEMA,
    METADATA_COLUMNS,
    SET_ASIDE_COLUMNS,
    SET_ASIDE_TABLE,
    DeclaredTable,
    LoadResult,
    mask_from_positions,
    numbered,
    probe_table,
    set_aside_hint,
    utc_naive,
)
from sources.load.changes import snapshot_insert_sql
from sources.load.schema import SchemaPlan, plan_schema
from sources.logs import get_logger
from sources.types import parse_type

log = get_logger("sources.load.postgres_raw")

DIALECT = "postgres"


def lost_connection_hint(settings: PostgresSettings) -> str:
    """What to do when the warehouse went away mid-load: the server's own check, with its address."""
    check = shlex.join(["pg_isready", "-h", settings.host, "-p", str(settings.port)])
    return (f"check the server (`{check}`), then rerun the load: landed batches raw "
            "lacks are applied first (docs/runbook.md#failed-load--bad-input)")

def server_reason(exc: BaseException) -> str:
    """The server's own words for a failure: the first line of the first psycopg2 error in
    ``exc``'s chain that is not the client's "connection already closed" (which a rollback on a
    dead connection raises over the real reason: "terminating connection due to administrator
    command", "server closed the connection unexpectedly")."""
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, psycopg2.Error) and not isinstance(node, psycopg2.InterfaceError):
            return first_line(node)
        node = node.__cause__ or node.__context__
    return first_line(exc)


_PG_NORMAL = {
    "text": "TEXT", "character varying": "TEXT", "bigint": "BIGINT", "integer": "BIGINT", "double precision": "DOUBLE PRECISION",
    "boolean": "BOOLEAN", "date": "DATE", "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
}


def _ident(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _ensure_indexes(cur, raw_schema: str, table: str, key: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Indexes that keep the transform's lookups proportional to the change on PostgreSQL: the
    versions of a key, latest first (staging's dedupe, a snapshot's diff, a parent's day), and
    the rows of a batch (which keys a batch changed). Names are short hashes: identifiers stop
    at 63 characters. Cheap when they exist; built once on a table made before them."""
    import hashlib

    order = [*key, "_extracted_at", "_batch_id", "_batch_row"]
    for columns in (order, ["_batch_id"]):
        digest = hashlib.sha1(f"{raw_schema}.{table}:{','.join(columns)}".encode()).hexdigest()[:16]
        cur.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql.Identifier(f"elt_raw_{digest}"), _ident(raw_schema, table),
            sql.SQL(", ").join(_ident(c) for c in columns)))


def _sql_type(type_name: str) -> str:
    return parse_type(type_name).sql(DIALECT).upper()


def _normal(data_type: str, precision: int | None, scale: int | None) -> str:
    if data_type == "numeric":
        return f"DECIMAL({precision}, {scale})"
    return _PG_NORMAL.get(data_type, data_type.upper())


# The words of a lossy evolve_cast's error, as DuckDBRaw says them
LOSSY_CAST = "evolve_cast would change a value"
_DECIMAL = re.compile(r"DECIMAL\((\d+), ?(\d+)\)")


UNCHECKED = "unchecked"  # LossyCast.becomes of text the check cannot read as a time


class LossyCast(Exception):
    def __init__(self, index: int, value: object, becomes: object) -> None:
        super().__init__(index, value, becomes)
        self.index, self.value, self.becomes = index, value, becomes


def exact_cast(column: pa.Array, raw_type: str) -> pa.Array:
    """``column`` cast to raw's numeric type for ``evolve_cast``, raising ``LossyCast`` at the first
    value the cast would change. PostgreSQL's COPY rounds text into a ``numeric(p, s)`` without a
    word (12.499 into numeric(10,2) is 12.50), drops a timestamp's time of day into a date, and
    refuses '11.00' for a bigint: this casts here,
    value by value where Arrow's own checked cast cannot tell (floats, padded text), so a value the
    cast keeps is applied and one it would change fails the batch, as on DuckDB. Text into a date or
    a timestamp is checked by ``_check_text_instants`` and left to COPY. Columns of other raw types,
    and text that is no number (COPY refuses it, naming it), are returned unchanged.

    >>> exact_cast(pa.array(["5.0", " 6", "1e3", None]), "BIGINT").to_pylist()
    [5, 6, 1000, None]
    >>> exact_cast(pa.array([11.0, 12.25]), "DECIMAL(10, 2)").to_pylist()
    [Decimal('11.00'), Decimal('12.25')]
    >>> exact_cast(pa.array([11.0, 12.499]), "DECIMAL(10, 2)")
    Traceback (most recent call last):
    ...
    sources.load.postgres_raw.LossyCast: (1, 12.499, Decimal('12.50'))
    >>> exact_cast(pa.array(["1", "NaN"]), "BIGINT")
    Traceback (most recent call last):
    ...
    sources.load.postgres_raw.LossyCast: (1, 'NaN', 'no value')
    >>> from datetime import datetime as dt
    >>> exact_cast(pa.array([dt(2020, 1, 1), None, dt(2020, 1, 2, 10)]), "DATE")
    Traceback (most recent call last):
    ...
    sources.load.postgres_raw.LossyCast: (2, datetime.datetime(2020, 1, 2, 10, 0), datetime.date(2020, 1, 2))
    """
    import pyarrow.compute as pc

    if raw_type in ("DATE", "TIMESTAMP") and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        _check_text_instants(column, raw_type)
        return column  # COPY reads the text as it did: the check found nothing it would change
    if raw_type == "DATE" and pa.types.is_timestamp(column.type):  # COPY drops the time of day
        days = pc.cast(column, pa.date32())
        changed = pc.fill_null(pc.not_equal(pc.cast(days, column.type), column), False)
        if pc.any(changed).as_py():
            index = pc.index(changed, True).as_py()
            raise LossyCast(index, column[index].as_py(), days[index].as_py())
        return days
    decimal = _DECIMAL.fullmatch(raw_type)
    if decimal:
        precision, scale = int(decimal.group(1)), int(decimal.group(2))
        if precision > 38:
            return column  # beyond Arrow's decimal128: COPY's own conversion, as before
        target = pa.decimal128(precision, scale)
    elif raw_type == "BIGINT":
        scale, target = 0, pa.int64()
    else:
        return column
    if not pa.types.is_floating(column.type):
        try:  # exact or refused by Arrow: integers, decimals, plain numeric text
            return pc.cast(column, target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    quantum, context = Decimal(1).scaleb(-scale), Context(prec=80)
    out: list[object] = []
    for index, value in enumerate(column.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:  # a float's str() is its shortest exact repr: 12.499, not 12.4989999...
            number = Decimal(str(value).strip())
        except InvalidOperation:
            return column  # not a number: COPY fails on it, naming it
        if not number.is_finite():  # NaN, inf: a bigint has no such value, a numeric(p, s) refuses inf
            raise LossyCast(index, value, "no value")
        try:
            kept = number.quantize(quantum, rounding=ROUND_HALF_UP, context=context)
        except InvalidOperation:
            return column  # beyond any precision (1e400): COPY reports the overflow
        if kept != number:
            raise LossyCast(index, value, int(kept) if scale == 0 else kept)
        out.append(int(kept) if scale == 0 else kept)
    try:
        return pa.array(out, target)
    except (pa.ArrowInvalid, OverflowError):
        return column  # too wide for the column: COPY reports the overflow


def _check_text_instants(column: pa.Array, raw_type: str) -> None:
    """Raise ``LossyCast`` at the first text that COPY would store as another instant in raw's DATE
    or TIMESTAMP: PostgreSQL cuts '2020-01-02 10:30' into the date 2020-01-02, and drops an offset
    ('10:30+02:00' is the timestamp 10:30). Text without an offset is read as UTC, as DuckDB's check
    does. Text that is no ISO 8601 time cannot be checked here and is refused (``UNCHECKED``):
    PostgreSQL would read 'January 2 2020 10:30' or '... UTC' and cut it without a word.

    >>> _check_text_instants(pa.array(["2020-01-02", "2020-01-03 00:00:00", "2020-01-04T00:00:00Z", None]), "DATE")
    >>> _check_text_instants(pa.array(["2020-01-02T02:00:00+02:00"]), "DATE")  # midnight UTC
    >>> _check_text_instants(pa.array(["2020-01-02 10:30:00", "2020-01-02T10:30:00+00:00", "2020-01-02T10:30:00-0000"]),
    ...                      "TIMESTAMP")
    >>> _check_text_instants(pa.array(["2020-01-01", "2020-01-02 10:30"]), "DATE")
    Traceback (most recent call last):
    ...
    sources.load.postgres_raw.LossyCast: (1, '2020-01-02 10:30', datetime.date(2020, 1, 2))
    >>> _check_text_instants(pa.array(["2020-01-02T10:30:00+02:00"]), "TIMESTAMP")
    Traceback (most recent call last):
    ...
    sources.load.postgres_raw.LossyCast: (0, '2020-01-02T10:30:00+02:00', datetime.datetime(2020, 1, 2, 10, 30))
    >>> _check_text_instants(pa.array(["2020-01-02", "January 2 2020 10:30"]), "DATE")
    Traceback (most recent call last):
    ...
    sources.load.postgres_raw.LossyCast: (1, 'January 2 2020 10:30', 'unchecked')
    """
    import pyarrow.compute as pc

    # a zero offset ('Z', '+00:00', '-0000') names UTC as no offset does: dropped, so that Arrow's
    # vectorised cast reads the usual columns (an API's '...Z'); the rest is checked value by value
    utc = pc.replace_substring_regex(column, pattern=r"(?i)(z|[+-]00(:?00)?)$", replacement="")
    try:
        walls = pc.cast(utc, pa.timestamp("us"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        walls = None
    if walls is not None:
        if raw_type == "DATE":
            days = pc.cast(walls, pa.date32())
            changed = pc.fill_null(pc.not_equal(pc.cast(days, walls.type), walls), False)
            if pc.any(changed).as_py():
                index = pc.index(changed, True).as_py()
                raise LossyCast(index, column[index].as_py(), days[index].as_py())
        return
    for index, text in enumerate(column.to_pylist()):
        if text is None:
            continue
        try:
            moment = datetime.fromisoformat(text.strip())
        except ValueError:
            raise LossyCast(index, text, UNCHECKED) from None
        wall = moment.replace(tzinfo=None)
        instant = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else wall
        stored = datetime.combine(wall.date(), time(0)) if raw_type == "DATE" else wall  # what COPY keeps
        if instant != stored:
            raise LossyCast(index, text, wall.date() if raw_type == "DATE" else wall)


def _soft_deleted(batch: pa.RecordBatch, manifest: Manifest) -> pa.Array:
    """Each row's ``_deleted``: whether it marks its key deleted by the table's ``soft_delete``
    column (a boolean TRUE, a date or timestamp not NULL); all FALSE without one."""
    if not manifest.soft_delete:
        return pa.array([False] * batch.num_rows, pa.bool_())
    import pyarrow.compute as pc

    values = batch.column(manifest.soft_delete)
    if manifest.soft_delete_type() == "boolean":
        return pc.fill_null(values.cast(pa.bool_()), False)
    return pc.is_valid(values)


def _raw_table_lock(cur: Any, raw_schema: str, table: str) -> None:
    """The transaction's lock on one raw table (sources sharing a raw table are serialised). When
    another session holds it, say so and who before waiting: a rerun after the network cut a load's
    connection waited here with no word while the server kept the cut session (a network probe; elt
    asks the server for keepalives, which end such a session in about a minute)."""
    key = f"elt:raw:{raw_schema}.{table}"
    cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [key])
    if cur.fetchone()[0]:
        return
    holders = "not known"
    cur.execute("SAVEPOINT elt_holders")
    try:
        # an advisory lock on one bigint key shows in pg_locks as classid (high 32 bits) and objid
        cur.execute(
            "SELECT a.pid, a.application_name, a.client_addr, a.state, a.state_change FROM pg_locks AS l "
            "JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(%s)::bigint", [key])
        rows = cur.fetchall()
    except psycopg2.Error:  # only the message loses its detail
        cur.execute("ROLLBACK TO SAVEPOINT elt_holders")
        rows = None
    cur.execute("RELEASE SAVEPOINT elt_holders")
    if rows is not None:
        # another role's session shows its pid only, unless this role may read all statistics
        holders = "; ".join(
            f"pid {pid} ({app or 'application not shown'}, from {addr or 'a local socket or not shown'}, "
            f"{state or 'state not shown'}" + (f" since {changed:%Y-%m-%d %H:%M:%S %Z})" if changed else ")")
            for pid, app, addr, state, changed in rows) or "gone"
    log.warning(f"waiting for the lock of {raw_schema}.{table}: another session is applying a batch to it, held by "
                f"{holders}. A load of another source into the same table ends on its own; a session whose client "
                "the network cut off is ended by the server within about a minute (if it is not, end it with "
                "`SELECT pg_terminate_backend(<pid>)`)", extra={"fields": {"raw_table": f"{raw_schema}.{table}"}})
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])


class PostgresRaw:
    """Raw tables, the ledger and source cursors in a PostgreSQL database."""

    dialect = DIALECT

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.con = settings.connect()
        try:
            with self.con, self.con.cursor() as cur:
                cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(META_SCHEMA)))
                cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + LEDGER_COLUMNS + ")").format(_ident(META_SCHEMA, LEDGER_TABLE)))
                cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + CURSOR_COLUMNS + ")").format(_ident(META_SCHEMA, CURSOR_TABLE)))
                cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + SET_ASIDE_COLUMNS + ")").format(
                    _ident(META_SCHEMA, SET_ASIDE_TABLE)))
        except (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.ReadOnlySqlTransaction) as exc:
            # a role given CONNECT only, or a standby: say what to grant or where to point
            self.con.close()
            raise warehouse_privilege_error(exc, settings) or exc from None

    def __repr__(self) -> str:
        s = self.settings
        return f"PostgresRaw({s.user}@{s.host}:{s.port}/{s.dbname})"

    def identity(self) -> str:
        """This warehouse's id, made on first use (as ``DuckDBRaw.identity``); two loads making it
        at once both read the first row."""
        import uuid

        table = _ident(META_SCHEMA, IDENTITY_TABLE)
        with self.con, self.con.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (" + IDENTITY_COLUMNS + ")").format(table))
            cur.execute(sql.SQL("INSERT INTO {} SELECT %s, clock_timestamp() WHERE NOT EXISTS (SELECT 1 FROM {})").format(
                table, table), [uuid.uuid4().hex])
        with self.con, self.con.cursor() as cur:
            cur.execute(sql.SQL("SELECT id FROM {} ORDER BY created_at, id LIMIT 1").format(table))
            return str(cur.fetchone()[0])

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> PostgresRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loaded_batch_ids(self, source: str, table: str) -> set[str]:
        with self.con, self.con.cursor() as cur:
            cur.execute(sql.SQL("SELECT batch_id FROM {} WHERE source = %s AND table_name = %s").format(
                _ident(META_SCHEMA, LEDGER_TABLE)), [source, table])
            return {r[0] for r in cur.fetchall()}

    def set_aside_ids(self, source: str, table: str) -> set[str]:
        with self.con, self.con.cursor() as cur:
            cur.execute(sql.SQL("SELECT batch_id FROM {} WHERE source = %s AND table_name = %s").format(
                _ident(META_SCHEMA, SET_ASIDE_TABLE)), [source, table])
            return {r[0] for r in cur.fetchall()}

    def record_set_aside(self, record: SetAside, raw_schema: str) -> None:
        """Record a set-aside batch in one transaction, refused when the ledger holds the batch; under
        the raw table's load lock, so it is serialised with a loader applying that table."""
        key = [record.source, record.table, record.batch_id]
        with self.con, self.con.cursor() as cur:
            _raw_table_lock(cur, raw_schema, record.table)
            cur.execute(sql.SQL("SELECT 1 FROM {} WHERE source = %s AND table_name = %s AND batch_id = %s").format(
                _ident(META_SCHEMA, LEDGER_TABLE)), key)
            if cur.fetchone():
                raise RawLoadError(
                    "the batch is already applied to raw; only a batch raw does not hold can be set aside",
                    source=record.source, table=record.table, batch_id=record.batch_id,
                    hint="its rows are in raw; to correct them, land a corrected extract (docs/runbook.md#failed-audit)",
                )
            cur.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND table_name = %s AND batch_id = %s").format(
                _ident(META_SCHEMA, SET_ASIDE_TABLE)), key)
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)").format(
                _ident(META_SCHEMA, SET_ASIDE_TABLE)),
                [record.batch_id, record.source, record.table, f"{raw_schema}.{record.table}", record.rows,
                 record.by, utc_naive(record.at_dt), record.reason])

    def remove_set_aside(self, source: str, table: str, batch_id: str) -> bool:
        with self.con, self.con.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND table_name = %s AND batch_id = %s").format(
                _ident(META_SCHEMA, SET_ASIDE_TABLE)), [source, table, batch_id])
            return cur.rowcount > 0

    def cursor(self, source: str, table: str) -> str | None:
        with self.con, self.con.cursor() as cur:
            cur.execute(sql.SQL("SELECT cursor_value FROM {} WHERE source = %s AND table_name = %s").format(
                _ident(META_SCHEMA, CURSOR_TABLE)), [source, table])
            row = cur.fetchone()
            return row[0] if row else None

    def seen_rows(self, raw_schema: str, table: str, key: list[str], cursor_field: str, since: object,
                  rows: pa.Table, newest_by_cursor: bool = False) -> pa.Array:
        """True for each extracted row whose (key..., cursor) raw already holds (or, with
        ``newest_by_cursor``, holds at a later cursor value: ``older_or_same``), among raw rows with
        cursor >= ``since`` (what a lookback re-reads): the rows' key and cursor are copied into a
        temporary table typed like raw's columns and semi-joined in PostgreSQL, so memory follows
        the batch, not the number of rows in the lookback window."""
        if not rows.num_rows:
            return pa.array([], pa.bool_())
        cols = list(dict.fromkeys([*key, cursor_field]))  # the cursor may be the key (an increasing id)
        with self.con, self.con.cursor() as cur:  # one transaction; the probe table drops at its end
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", [sql.Identifier(raw_schema, table).as_string(cur)])
            if not cur.fetchone()[0]:
                return pa.array([False] * rows.num_rows)
            names = sql.SQL(", ").join(_ident(c) for c in cols)
            cur.execute(sql.SQL("CREATE TEMP TABLE _elt_probe ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(
                names, _ident(raw_schema, table)))
            cur.execute("ALTER TABLE _elt_probe ADD COLUMN _elt_i bigint")
            buf = io.BytesIO()
            pacsv.write_csv(probe_table(rows, key, cursor_field), buf, pacsv.WriteOptions(include_header=False))
            buf.seek(0)
            cur.copy_expert(sql.SQL("COPY _elt_probe ({}, _elt_i) FROM STDIN WITH (FORMAT csv)").format(names).as_string(cur), buf)
            cursor = sql.SQL("r.{}").format(_ident(cursor_field))
            if pa.types.is_string(rows.schema.field(cursor_field).type):  # byte order, as the loader's cursor
                cursor = sql.SQL('{} COLLATE "C"').format(cursor)
            # the same key at the same cursor value, or at a later one with newest_by_cursor
            # (``older_or_same``: a lagging replica's older version is not appended over a newer one)
            held = [sql.SQL("r.{c} = p.{c}").format(c=_ident(c)) for c in key]
            if cursor_field not in key:
                held.append(sql.SQL("{} >= p.{}" if newest_by_cursor else "{} = p.{}").format(cursor, _ident(cursor_field)))
            # the bound as a literal, not a parameter: with parameters psycopg2 reads every % of the
            # query, a quoted column's too ("Updated %"), as a placeholder (a probe: IndexError on
            # every load after the first)
            cur.execute(sql.SQL("SELECT p._elt_i FROM _elt_probe AS p WHERE EXISTS (SELECT 1 FROM {} AS r WHERE {} AND {} >= {})").format(
                _ident(raw_schema, table), sql.SQL(" AND ").join(held), cursor, sql.Literal(since)))
            found = [i for (i,) in cur.fetchall()]
        return mask_from_positions(rows.num_rows, found)

    def load(self, manifest: Manifest, reader: pa.RecordBatchReader, raw_schema: str, *, policy: str = "evolve") -> LoadResult:
        where = {"source": manifest.source, "table": manifest.table, "batch_id": manifest.batch_id}
        loaded_at = datetime.now(UTC).replace(tzinfo=None)
        extracted_at = manifest.extracted_at_dt.astimezone(UTC).replace(tzinfo=None)
        ledger = _ident(META_SCHEMA, LEDGER_TABLE)
        committing = False
        backend = self.con.get_backend_pid()  # libpq's record: no round trip
        try:
            with self.con, self.con.cursor() as cur:  # one transaction: commit on success, rollback on error
                # keyed by the raw table: sources sharing a raw table are serialised too
                _raw_table_lock(cur, raw_schema, manifest.table)
                cur.execute(sql.SQL("SELECT 1 FROM {} WHERE source = %s AND table_name = %s AND batch_id = %s").format(ledger),
                            [manifest.source, manifest.table, manifest.batch_id])
                if cur.fetchone():
                    return LoadResult(manifest.batch_id, manifest.table, manifest.rows, applied=False)
                # set aside since the caller listed the table's batches: never applied
                cur.execute(sql.SQL("SELECT 1 FROM {} WHERE source = %s AND table_name = %s AND batch_id = %s").format(
                    _ident(META_SCHEMA, SET_ASIDE_TABLE)), [manifest.source, manifest.table, manifest.batch_id])
                if cur.fetchone():
                    return LoadResult(manifest.batch_id, manifest.table, 0, applied=False)
                plan = self._ensure_table(cur, raw_schema, manifest, where, policy)
                notes = plan.notes
                data_cols = [c["name"] for c in manifest.columns]
                meta_cols = [m for m, _ in METADATA_COLUMNS]
                target = _ident(raw_schema, manifest.table)
                diff = False
                if manifest.snapshot or manifest.changes_only:
                    cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(target))
                    diff = bool(cur.fetchone()[0])  # a first snapshot is all new: appended as it is
                if diff:  # COPY into a temporary copy of raw, then only the changes into raw
                    cur.execute(sql.SQL("CREATE TEMP TABLE _elt_snapshot (LIKE {}) ON COMMIT DROP").format(target))
                    target = sql.Identifier("_elt_snapshot")
                copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
                    target, sql.SQL(", ").join(_ident(c) for c in [*data_cols, *meta_cols]))
                copy_text = copy.as_string(cur)
                count = 0
                for batch in numbered(reader):
                    n = batch.num_rows
                    columns = [self._cast(batch, c, plan, manifest, where) for c in data_cols] + [
                        pa.array([manifest.batch_id] * n, pa.string()),
                        batch.column("_batch_row"),
                        pa.array([extracted_at] * n, pa.timestamp("us")),
                        pa.array([loaded_at] * n, pa.timestamp("us")),
                        _soft_deleted(batch, manifest),
                    ]
                    buf = io.BytesIO()
                    pacsv.write_csv(pa.Table.from_arrays(columns, names=[*data_cols, *meta_cols]), buf,
                                    pacsv.WriteOptions(include_header=False))
                    buf.seek(0)
                    cur.copy_expert(copy_text, buf)
                    count += n
                if count != manifest.rows:
                    raise RawLoadError(
                        f"landing files hold {count} rows but the manifest says {manifest.rows}", **where,
                        hint="the batch is corrupt: restore its files from backup or re-extract the table",
                    )
                applied_rows = count
                if diff:
                    raw_table = _ident(raw_schema, manifest.table).as_string(cur)
                    cur.execute(snapshot_insert_sql(raw_table, '"_elt_snapshot"', data_cols, list(manifest.primary_key),
                                                    manifest.batch_id, extracted_at, loaded_at, "postgres",
                                                    tombstones=manifest.snapshot,
                                                    soft_delete=(manifest.soft_delete, manifest.soft_delete_type())))
                    applied_rows = cur.rowcount
                cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)").format(ledger),
                            [manifest.batch_id, manifest.source, manifest.table, f"{raw_schema}.{manifest.table}",
                             manifest.rows, extracted_at, loaded_at, manifest.origin.get("sha256")])
                failpoints.hit("raw.mid_load")
                if manifest.cursor.get("field") and manifest.cursor.get("to") is not None:
                    cur.execute(
                        sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source, table_name) DO UPDATE "
                                "SET cursor_field = EXCLUDED.cursor_field, cursor_value = EXCLUDED.cursor_value, "
                                "batch_id = EXCLUDED.batch_id, updated_at = EXCLUDED.updated_at").format(
                            _ident(META_SCHEMA, CURSOR_TABLE)),
                        [manifest.source, manifest.table, manifest.cursor["field"], str(manifest.cursor["to"]),
                         manifest.batch_id, loaded_at])
                committing = True  # the block's end sends COMMIT
        except RawLoadError:
            raise
        except Exception as exc:  # psycopg2.Error, pyarrow errors: the transaction was rolled back
            first = server_reason(exc)
            if self.con.closed:  # the server went away: the batch is fine, setting it aside would be wrong
                if committing:
                    # COMMIT was sent and its answer lost: the server may have committed. Its ledger
                    # knows; this said "rolled back" of an applied batch, and the rerun "unchanged"
                    # (a network probe)
                    committed = self._ledger_holds(manifest, backend)
                    if committed:
                        return LoadResult(manifest.batch_id, manifest.table, applied_rows, applied=True,
                                          schema_notes=notes)
                    if committed is None:
                        raise RawLoadError(
                            f"lost the connection to the PostgreSQL warehouse while committing the append to "
                            f"{raw_schema}.{manifest.table}; whether the server committed it is not known: {first}",
                            **where, hint=("nothing is half-applied either way: the rerun finds the batch in the ledger "
                                           "(elt_meta.loaded_batches) if it was committed, and applies it once if not; "
                                           + lost_connection_hint(self.settings)),
                        ) from exc
                raise RawLoadError(
                    f"lost the connection to the PostgreSQL warehouse while appending to {raw_schema}.{manifest.table} "
                    f"(the append was rolled back; the batch stays in landing): {first}", **where,
                    hint=lost_connection_hint(self.settings),
                ) from exc
            denied = warehouse_privilege_error(exc, self.settings)  # the role's rights, not the batch
            if denied:
                hint = f"the batch stays in landing and the rerun applies it; {denied.hint}"
            elif STATEMENT_TIMEOUT in first:  # the server's limit, not the batch
                hint = statement_timeout_hint(self.settings.user)
            elif any(getattr(e, "pgcode", None) == "53100" for e in exception_chain(exc)):  # disk_full: not the batch
                hint = ("the PostgreSQL warehouse's server has no disk space left: free space on its data disk (or ask "
                        "its administrator), then rerun; the batch stays in landing and the rerun applies it")
            elif "has no equivalent in encoding" in first:  # the database's encoding, not the batch
                hint = ("the warehouse database's encoding cannot hold this text: re-create it with ENCODING 'UTF8' "
                        "(docs/runbook.md, \"Production\"); the batch stays in landing and applies there")
            else:
                hint = set_aside_hint(manifest)
            raise RawLoadError(
                f"appending to {raw_schema}.{manifest.table} failed and was rolled back: {first}", **where, hint=hint,
            ) from exc
        self._refresh_statistics(raw_schema, manifest.table, applied_rows)
        return LoadResult(manifest.batch_id, manifest.table, applied_rows, applied=True, schema_notes=notes)

    def _ledger_holds(self, manifest: Manifest, backend: int) -> bool | None:
        """Whether the ledger records ``manifest``'s batch, asked on a new connection, which replaces
        the lost one for the rest of the load; None when that cannot be known. The lost session
        (``backend``) may still be committing (a slow fsync, a synchronous standby): it is ended
        first, and the ledger read once it is gone, so the answer is final (a review found a slow
        commit reported "rolled back" and then committed)."""
        import time

        try:
            con = self.settings.connect()
        except Exception:  # noqa: BLE001 - unreachable: the caller says the outcome is not known
            return None
        try:
            con.autocommit = True  # each read of pg_stat_activity sees the present, not a snapshot
            with con.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s", [backend])
                deadline = time.monotonic() + 30
                while True:
                    cur.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend])
                    if cur.fetchone() is None:
                        break
                    if time.monotonic() > deadline:
                        con.close()
                        return None
                    time.sleep(0.1)
                cur.execute(sql.SQL("SELECT 1 FROM {} WHERE source = %s AND table_name = %s AND batch_id = %s").format(
                    _ident(META_SCHEMA, LEDGER_TABLE)), [manifest.source, manifest.table, manifest.batch_id])
                found = cur.fetchone() is not None
            con.autocommit = False
        except Exception:  # noqa: BLE001
            con.close()
            return None
        log.warning(f"the connection was lost after the COMMIT of batch {manifest.batch_id} was sent; the ledger says "
                    f"it was {'committed' if found else 'rolled back'}",
                    extra={"fields": {"source": manifest.source, "table": manifest.table, "batch": manifest.batch_id}})
        self.con = con
        return found

    def _refresh_statistics(self, raw_schema: str, table: str, added: int) -> bool:
        """ANALYZE the raw table when ``added`` rows (just committed) are more than a tenth of what
        its statistics know (or it was never analysed). True if it ran. Best effort: the batch is
        committed already, so a failure is logged, not raised."""
        target = _ident(raw_schema, table)
        try:
            with self.con, self.con.cursor() as cur:
                cur.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", [target.as_string(cur)])
                found = cur.fetchone()
                known = float(found[0]) if found else -1.0
                if known > 0 and added <= known / 10:
                    return False
                cur.execute(sql.SQL("ANALYZE {}").format(target))
            return True
        except Exception as exc:  # noqa: BLE001 - statistics are an optimisation; the load succeeded
            log.warning("could not analyse the raw table after the batch", extra={"fields": {
                "table": f"{raw_schema}.{table}", "error": first_line(exc)}})
            return False

    def column_names(self, raw_schemas: list[str]) -> dict[tuple[str, str], set[str]]:
        """The columns of every table in ``raw_schemas``, by (schema, table), all lower case: one
        query (DuckDBRaw.column_names)."""
        if not raw_schemas:
            return {}
        found: dict[tuple[str, str], set[str]] = {}
        with self.con, self.con.cursor() as cur:
            cur.execute("SELECT table_schema, table_name, column_name FROM information_schema.columns "
                        "WHERE table_schema = ANY(%s)", [sorted(set(raw_schemas))])
            for schema, table, column in cur.fetchall():
                found.setdefault((schema.lower(), table.lower()), set()).add(column.lower())
        return found

    def create_declared(self, raw_schema: str, table: str, columns: list[dict[str, str]], primary_key: list[str]) -> bool:
        """Create ``raw_schema.table`` empty from its declaration unless it exists; True if created
        (DuckDBRaw.create_declared). Under the raw table's lock, as a load takes it, if that lock
        is free at once; False when a load holds it (that load creates the table)."""
        exists = "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s"
        with self.con, self.con.cursor() as cur:
            cur.execute(exists, [raw_schema, table])  # the usual answer, without waiting for any lock
            if cur.fetchone():
                return False
            # a load applying a batch holds this lock (and creates the table itself): never wait for it
            cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [f"elt:raw:{raw_schema}.{table}"])
            if not cur.fetchone()[0]:
                return False
            cur.execute(exists, [raw_schema, table])
            if cur.fetchone():
                return False
            self._ensure_table(cur, raw_schema, DeclaredTable(table, columns, primary_key), {"table": table}, "evolve")
        return True

    def add_declared_columns(self, raw_schema: str, table: str, columns: list[dict[str, str]]) -> list[str]:
        """Add to an existing raw table the declared ``columns`` it lacks (DuckDBRaw.add_declared_columns);
        nothing while a load holds the table's lock (that load adds what its batch holds)."""
        present = ("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s")
        with self.con, self.con.cursor() as cur:
            cur.execute(present, [raw_schema, table])
            names = {row[0].lower() for row in cur.fetchall()}
            missing = [c for c in columns if names and c["name"].lower() not in names]
            if not missing:
                return []
            cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [f"elt:raw:{raw_schema}.{table}"])
            if not cur.fetchone()[0]:
                return []
            # ALTER waits for every reader of the table and makes later readers wait behind it: give up
            # soon (the caller logs it; the next transform tries again, the next batch adds it anyway)
            cur.execute("SET LOCAL lock_timeout = '5s'")
            for column in missing:
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    _ident(raw_schema, table), _ident(column["name"]), sql.SQL(_sql_type(column["type"]))))
        return [c["name"] for c in missing]

    @staticmethod
    def _cast(batch: pa.RecordBatch, column: str, plan: SchemaPlan, manifest: Manifest,
              where: dict[str, str]) -> pa.Array:
        raw_type = dict(plan.cast).get(column)
        if raw_type is None:
            return batch.column(column)
        try:
            return exact_cast(batch.column(column), raw_type)
        except LossyCast as lossy:
            row = int(batch.column("_batch_row")[lossy.index].as_py()) + 1
            becomes = (f"is no number raw's {raw_type} holds" if lossy.becomes == "no value" else
                       f"is no ISO 8601 time, so whether raw's {raw_type} would keep it cannot be checked (send "
                       "ISO text such as 2020-01-02T10:30:00+02:00)" if lossy.becomes == UNCHECKED else
                       f"becomes {lossy.becomes} in raw's {raw_type}")
            raise RawLoadError(
                f"{LOSSY_CAST}: {column} = {lossy.value} {becomes} (row {row:,} of the batch); nothing of the "
                "batch was applied", **where,
                hint="migrate the raw column to the new type instead of evolve_cast (docs/runbook.md, "
                     "'Schema change'), then rerun; the batch stays in landing") from None

    def _ensure_table(self, cur, raw_schema: str, manifest: Manifest, where: dict[str, str],  # type: ignore[no-untyped-def]
                      policy: str) -> SchemaPlan:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(_ident(raw_schema)))
        batch = [(c["name"], _sql_type(c["type"])) for c in manifest.columns]
        cur.execute(
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [raw_schema, manifest.table],
        )
        existing = cur.fetchall()
        table = _ident(raw_schema, manifest.table)
        if not existing:
            # information_schema hides a table the role has no privilege on: it exists all the same,
            # and CREATE TABLE would say "already exists" (an on-call probe)
            cur.execute("SELECT pg_get_userbyid(c.relowner) FROM pg_class AS c JOIN pg_namespace AS n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", [raw_schema, manifest.table])
            owner = cur.fetchone()
            if owner:
                raise RawLoadError(
                    f"raw table {raw_schema}.{manifest.table} exists but belongs to role {owner[0]}, and the role "
                    f"{self.settings.user} has no privilege on it", **where,
                    hint=(f"as its owner or a superuser, run `ALTER TABLE {quote_ident(raw_schema)}."
                          f"{quote_ident(manifest.table)} OWNER TO {quote_ident(self.settings.user)};`, then rerun: "
                          "the batch stays in landing"))
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(_ident(n), sql.SQL(t)) for n, t in [*batch, *METADATA_COLUMNS]
            )
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(table, cols))
            _ensure_indexes(cur, raw_schema, manifest.table, list(manifest.primary_key))
            return SchemaPlan()
        meta = {m for m, _ in METADATA_COLUMNS}
        for name, sql_type in METADATA_COLUMNS:  # raw tables made before a metadata column existed
            if name not in {row[0] for row in existing}:
                default = sql.SQL(" DEFAULT FALSE" if name == "_deleted" else "")
                cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}{}").format(table, _ident(name), sql.SQL(sql_type), default))
        raw = {n: _normal(t, p, s) for n, t, p, s in existing if n not in meta}
        plan = plan_schema(raw, batch, policy, where, f"{raw_schema}.{manifest.table}")
        for name, sql_type in plan.add:
            cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(table, _ident(name), sql.SQL(sql_type)))
        _ensure_indexes(cur, raw_schema, manifest.table, list(manifest.primary_key))
        # evolve_cast on PostgreSQL: numeric, date and timestamp columns are checked (and numeric ones
        # cast) by exact_cast: a value the cast would change fails the batch; COPY converts the
        # others' text to raw's type, or fails the batch
        return plan
