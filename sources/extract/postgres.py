"""PostgreSQL source: full or incremental extraction streamed with COPY in bounded Arrow batches.

The column types are read once from the source catalog (exact numeric precision, timestamptz,
uuid, json/jsonb, booleans, dates), never guessed per batch. Rows are streamed with
``COPY (SELECT ...) TO STDOUT`` (text format) through a pipe into Arrow's streaming CSV reader,
so memory stays flat however large the table is. The text format costs the server less than
``FORMAT csv`` and needs no quote handling; its backslash escapes are undone in Arrow, only in
the text columns of a block that hold a backslash (docs/decisions/0014-postgres-extraction.md).

Incremental tables read ``cursor_field >= last cursor - lookback``. Rows at the boundary are
read again on the next run; staging keeps the latest version of each primary key, so they never
duplicate downstream.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from psycopg2 import sql
from pyarrow import csv

from sources.config import ColumnSpec, SourceSpec, TableSpec
from sources.connections import PostgresSettings
from sources.errors import ContractError, SourceReadError, first_line
from sources.declaration_models import MAX_IDENTIFIER_BYTES, RESERVED_COLUMNS, case_clashes
from sources.extract.base import Extract
from sources.load.base import METADATA_COLUMNS
from sources.logs import get_logger
from sources.types import ColumnType, parse_type

log = get_logger("sources.extract.postgres")

# Arrow's streaming CSV reader holds a few dozen blocks: 1 MB blocks kept ~40 MB less than 2 MB
# at the same speed (bench/loader_postgres.py).
BLOCK_BYTES = 1 << 20
# COPY's text format escapes these (and the backslash itself) with a backslash; NULL is \N.
ESCAPES = (("\\b", "\b"), ("\\f", "\f"), ("\\n", "\n"), ("\\r", "\r"), ("\\t", "\t"), ("\\v", "\v"))
# The text form of values in COPY output depends on session settings a server or database may
# change (DateStyle 'SQL, DMY' turns dates into 31/12/2024, extra_float_digits 0 rounds floats).
SESSION_SETTINGS = ("SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; "
                    "SET bytea_output = 'hex'; SET TimeZone = 'UTC'; SET lc_monetary = 'C'")


def catalog_type(data_type: str, udt: str, precision: int | None, scale: int | None) -> ColumnType:
    """Map a PostgreSQL column type to the loader's vocabulary (exact, never guessed).

    >>> catalog_type("numeric", "numeric", 12, 2).name
    'decimal(12,2)'
    >>> catalog_type("timestamp with time zone", "timestamptz", None, None).name
    'timestamptz'
    >>> catalog_type("numeric", "numeric", 50, 10).name  # wider than a 38-digit decimal: every digit kept
    'string'
    >>> catalog_type("numeric", "numeric", 2, 2045).name  # numeric(2,-3): 12000, 13000...
    'string'
    """
    if data_type == "numeric":
        if precision is None or precision > 38 or not 0 <= (scale or 0) <= precision:
            # unconstrained, wider than Arrow/DuckDB decimals, or (PostgreSQL 15) a scale above the
            # precision or below zero, which the catalog reports as 2045 and up: exact as text
            return parse_type("string")
        return parse_type(f"decimal({precision},{scale or 0})")
    mapping = {
        "smallint": "integer", "integer": "integer", "bigint": "integer",
        "real": "float", "double precision": "float", "boolean": "boolean", "date": "date",
        "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
        "uuid": "uuid", "json": "json", "jsonb": "json",
    }
    return parse_type(mapping.get(data_type, "string"))


def _split(source_table: str) -> tuple[str, str]:
    schema, _, table = source_table.partition(".")
    return schema, table


def read_catalog(con, table: TableSpec, where: dict[str, str]) -> list[ColumnSpec]:  # type: ignore[no-untyped-def]
    schema, name = _split(str(table.source_table))
    with con.cursor() as cur:
        cur.execute(
            "SELECT column_name, data_type, udt_name, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            [schema, name],
        )
        rows = cur.fetchall()
    if not rows:
        raise SourceReadError(
            f"table {table.source_table} does not exist or is not visible to this user", **where,
            hint="check source_table in the declaration and the user's grants (GRANT SELECT ...)",
        )
    _refuse_unreadable_columns(con, table, where)
    catalog = [ColumnSpec(r[0], catalog_type(r[1], r[2], r[3], r[4])) for r in rows]
    by_name = {c.name: c for c in catalog}
    wanted = [*table.primary_key, *([table.cursor_field] if table.cursor_field else [])]
    absent = [c for c in wanted if c not in by_name]
    if absent:
        raise ContractError(f"primary_key/cursor_field columns {absent} are not in {table.source_table}", **where,
                            hint="fix primary_key or cursor_field in the declaration")
    if table.cursor_field:
        (row,) = [r for r in rows if r[0] == table.cursor_field]
        _refuse_unordered_cursor(table, str(row[1]), by_name[table.cursor_field].type, where, row[3], row[4])
    if not table.columns:
        _refuse_unloadable_names([c.name for c in catalog], table, where)
        return catalog
    # declared columns: a subset of the catalog, each with the catalog's type
    missing = [c.name for c in table.columns if c.name not in by_name]
    if missing:
        raise ContractError(f"declared columns {missing} are not in {table.source_table}", **where,
                            hint="update the declaration, or ask the source owner what changed")
    differ = [f"{c.name}: declared {c.type.name}, catalog {by_name[c.name].type.name}" for c in table.columns
              if c.type.arrow != by_name[c.name].type.arrow]
    if differ:
        raise ContractError(f"declared types differ from {table.source_table}: {'; '.join(differ)}", **where,
                            hint="declare the catalog's types (or omit columns to take them from the catalog)")
    return list(table.columns)


def _refuse_unloadable_names(names: list[str], table: TableSpec, where: dict[str, str]) -> None:
    """A table typed from its catalog (no declared columns) gets the declaration's checks of names
    here: the catalog's `id` and `ID`, `_batch_row` (a loader column), a 64-byte name or
    `file_row_number` were landed, then failed every apply (a probe of identifiers). Nothing is
    landed."""
    problems = [f"{n!r} differs from {other!r} only in case" for n, other in case_clashes(names).items()]
    # the loader's own columns only: other names starting with '_' (`_etl_ts`) always loaded, and still do
    own = {name for name, _ in METADATA_COLUMNS}
    problems += [f"{n!r} is one of the loader's own columns" for n in names if n.lower() in own]
    problems += [f"{n!r} is reserved (the loader reads batches with DuckDB's file_row_number)" for n in names
                 if n.lower() in RESERVED_COLUMNS]
    problems += [f"{n!r} is {len(n.encode())} bytes long (PostgreSQL cuts names after {MAX_IDENTIFIER_BYTES})"
                 for n in names if len(n.encode()) > MAX_IDENTIFIER_BYTES]
    if problems:
        raise ContractError(f"columns of {table.source_table} that raw cannot take: {'; '.join(problems)}", **where,
                            hint="declare the table's columns (those to load, without these), or select them under "
                                 "other names in a view at the source and read the view")


# text types compared byte by byte (COLLATE "C"), as the loader compares them; other types that
# land as text keep their own order, which text order is not ('10' < '9' for numeric)
_TEXT_CURSORS = ("text", "character varying", "character")


def _refuse_unordered_cursor(table: TableSpec, data_type: str, mapped: ColumnType, where: dict[str, str],
                             precision: int | None = None, scale: int | None = None) -> None:
    """A cursor must sort the same in PostgreSQL and in the loader, which takes the highest value
    it read as the next lower bound: numbers, times, text (read with ``COLLATE "C"``) and UUIDs
    do; a ``numeric`` without a precision (landed as text), an enum, an interval... do not, and a
    new row that sorted below the last cursor as text was skipped for good.

    >>> _refuse_unordered_cursor(TableSpec("t", (), ("id",), cursor_field="seq", source_table="app.t"), "numeric",
    ...                          catalog_type("numeric", "numeric", None, None), {})
    Traceback (most recent call last):
    ...
    sources.errors.ContractError: cursor_field seq is numeric without a precision in app.t, which lands as text, and text does not sort as PostgreSQL sorts it ('10' before '9' for a numeric): rows after the cursor would be skipped for good
      next: use a bigint, numeric(p,s) (p up to 38), date or timestamp column as cursor_field, or read the table through a view that casts seq::numeric(38,0) (or numeric(38,s) for its decimals)
    """
    if data_type in (*_TEXT_CURSORS, "uuid") or not pa.types.is_string(mapped.arrow):
        return
    field = table.cursor_field
    if data_type == "numeric" and precision is None:
        shown, cast = "numeric without a precision", f"{field}::numeric(38,0) (or numeric(38,s) for its decimals)"
    elif data_type == "numeric":
        shown = f"numeric({precision},{scale}), more than a decimal column's 38 digits or a scale outside 0..precision"
        cast = f"{field}::numeric(38,s), with the scale s its values need, if they fit in 38 digits"
    else:
        shown, cast = data_type, f"{field} to a number or a timestamp"
    raise ContractError(
        f"cursor_field {field} is {shown} in {table.source_table}, which lands as text, and text does not sort as "
        "PostgreSQL sorts it ('10' before '9' for a numeric): rows after the cursor would be skipped for good",
        **where, hint=f"use a bigint, numeric(p,s) (p up to 38), date or timestamp column as cursor_field, or read "
                      f"the table through a view that casts {cast}")


def cursor_is_text(con, table: TableSpec) -> bool:  # type: ignore[no-untyped-def]
    """Whether the table's cursor is a text column, compared with ``COLLATE "C"`` (byte order, as
    the loader compares): under a database's usual collation (en_US.UTF-8, ICU) 'B' sorts after
    'a', and a new row 'C' below a cursor 'a' was skipped."""
    schema, name = _split(str(table.source_table))
    with con.cursor() as cur:
        cur.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "AND column_name = %s", [schema, name, table.cursor_field])
        row = cur.fetchone()
    return row is not None and row[0] in _TEXT_CURSORS


def _refuse_unreadable_columns(con, table: TableSpec, where: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Fail when the user may not read a column the extract needs (every column of a table without
    declared columns; else the declared ones, the key and the cursor).

    ``information_schema.columns`` lists only the columns a user holds a privilege on, so a column
    whose SELECT was revoked (``REVOKE SELECT ON t``, then ``GRANT SELECT (a, b) ON t``) looked
    dropped: a table read whole landed NULL in it, and a later load after the grant came back saw
    no change and kept the NULLs; a declared column was reported as "not in" the table. The
    system catalog lists every column, and ``has_column_privilege`` says which ones may be read."""
    schema, name = _split(str(table.source_table))
    with con.cursor() as cur:
        cur.execute(
            "SELECT a.attname FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid "
            "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
            "AND a.attnum > 0 AND NOT a.attisdropped AND NOT has_column_privilege(c.oid, a.attnum, 'SELECT') "
            "ORDER BY a.attnum", [schema, name])
        denied = [str(r[0]) for r in cur.fetchall()]
    if table.columns:
        needed = {c.name for c in table.columns} | set(table.primary_key) | ({table.cursor_field} - {None})
        denied = [c for c in denied if c in needed]
    if denied:
        listed = ", ".join(denied)
        raise SourceReadError(
            f"this user may not read column(s) {listed} of {table.source_table} (SELECT was granted on other "
            "columns only); nothing was landed", **where,
            hint=f"ask the source owner to GRANT SELECT ({listed}) ON {table.source_table} (or on the whole table) "
                 "to this user, or declare only the columns it may read",
        )


def undeclared_columns(con, table: TableSpec) -> list[str]:  # type: ignore[no-untyped-def]
    """The source table's columns that ``table`` does not declare, in the table's order."""
    schema, name = _split(str(table.source_table))
    with con.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "ORDER BY ordinal_position", [schema, name])
        declared = {c.name for c in table.columns}
        return [r[0] for r in cur.fetchall() if r[0] not in declared]


def extracts(spec: SourceSpec, table: TableSpec, *, cursor: str | None,
             window: tuple[str, str] | None = None) -> Iterator[Extract]:
    """One extract: rows from the cursor (minus lookback) on, or all rows when ``cursor`` is None.

    ``window`` (start, end: ISO timestamps, end exclusive) reads only the rows whose
    ``window_column`` falls in it, for a backfill; the cursor does not move. A child table without
    one reads the rows of the window's parents (``SourceSpec.window_parent``; read whole when its
    key column's type differs from the parent's key); any other table is read whole.
    """
    where = {"source": spec.name, "table": table.name}
    con = PostgresSettings.from_env(spec.env_prefix).connect()
    # READ COMMITTED whatever the database's default: a hot standby refuses SERIALIZABLE, and a
    # default of serializable set on the primary (for its application) is replicated to it
    con.set_session(readonly=True, isolation_level="READ COMMITTED")
    try:
        with con.cursor() as cur:  # COPY's text depends on these: pin them, whatever the server's defaults
            cur.execute(SESSION_SETTINGS)
        columns = read_catalog(con, table, where)
        # columns the source has and the declaration does not: not read, but said (a new column
        # upstream would otherwise go unnoticed until someone asks for it in the marts)
        undeclared = undeclared_columns(con, table) if table.columns else []
        text_cursor = bool(table.cursor_field) and cursor_is_text(con, table)
        if table.cursor_field and table.lookback_s < 3600 and window is None:
            _warn_local_time_cursor(con, table, columns, where)
    except BaseException:
        con.close()
        raise
    drift = {"schema_drift": {"not_loaded": undeclared}} if undeclared else {}
    enforced = key_is_enforced(con, table)
    parent = spec.window_parent(table) if window is not None else None
    if parent is not None and not _same_key_type(con, table, parent):
        log.warning(f"{table.name} is read whole: its {table.event_time_from[1]} and the key of {parent.name} "  # type: ignore[index]
                    "have types that cannot be compared in the source (or one was not found), so it cannot be read "
                    "through the window's parents",
                    extra={"fields": where})
        parent = None
    if window is not None and (table.window_column or parent is not None):
        # a child without a window column: the rows of the window's parents (items of its orders)
        column = table.window_column or f"{parent.name}.{parent.window_column}"  # type: ignore[union-attr]
        origin = {"kind": "postgres", "table": table.source_table, "window_column": column,
                  "window_start": window[0], "window_end": window[1], **drift}
        yield Extract(table, columns, _stream(con, spec, table, columns, None, where, window=window, parent=parent),
                      origin, land_if_empty=True, key_enforced_by_source=enforced, advances_cursor=False)
        return
    lower = lower_bound(cursor, table.lookback_s, cursor_type(columns, table)) if table.cursor_field else None
    origin = {"kind": "postgres", "table": table.source_table, "cursor_field": table.cursor_field, "cursor_from": lower,
              **drift}
    yield Extract(table, columns, _stream(con, spec, table, columns, lower, where, text_cursor=text_cursor), origin,
                  cursor_from=lower,
                  land_if_empty=not table.cursor_field, key_enforced_by_source=enforced)


def _same_key_type(con, child: TableSpec, parent: TableSpec) -> bool:  # type: ignore[no-untyped-def]
    """Whether the child's column naming its parent can be compared with the parent's key in the
    window's semi-join: one type, or two of the string or numeric categories (``varchar(36)`` and
    ``text``; ``integer`` and ``bigint``). ``order_id text`` against ``id uuid`` cannot."""
    def column_type(table: TableSpec, column: str) -> tuple[int, str] | None:
        schema, name = _split(str(table.source_table))
        with con.cursor() as cur:
            cur.execute("SELECT t.oid, t.typcategory FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped",
                        [sql.Identifier(schema, name).as_string(con), column])
            row = cur.fetchone()
        return (int(row[0]), str(row[1])) if row else None

    mine = column_type(child, str(child.event_time_from[1])) if child.event_time_from else None
    theirs = column_type(parent, parent.primary_key[0])
    if mine is None or theirs is None:
        return False
    return mine[0] == theirs[0] or (mine[1] == theirs[1] and mine[1] in ("S", "N"))


def key_is_enforced(con, table: TableSpec) -> bool:  # type: ignore[no-untyped-def]
    """Whether a PRIMARY KEY constraint on exactly the declared key columns guards the source table.

    One COPY reads one snapshot, so such a table cannot yield a NULL or duplicated key. Views and
    tables without that constraint return False and get the loader's check.
    """
    schema, name = _split(str(table.source_table))
    with con.cursor() as cur:
        cur.execute(
            "SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY (c.conkey) "
            "WHERE c.contype = 'p' AND n.nspname = %s AND t.relname = %s GROUP BY c.oid",
            [schema, name],
        )
        return any(sorted(table.primary_key) == list(row[0]) for row in cur.fetchall())


def lower_bound(cursor: str | None, lookback_s: int, cursor_type: pa.DataType | None) -> str | None:
    """The cursor minus the lookback, for time cursors; other cursors (ids) are used as they are.

    >>> lower_bound("2024-01-02T09:00:00+00:00", 3600, pa.timestamp("us", tz="UTC"))
    '2024-01-02T08:00:00+00:00'
    >>> lower_bound("20240101", 3600, pa.int64())
    '20240101'
    """
    if cursor is None or not lookback_s or cursor_type is None:
        return cursor
    if not (pa.types.is_timestamp(cursor_type) or pa.types.is_date(cursor_type)):
        return cursor
    return (datetime.fromisoformat(cursor) - timedelta(seconds=lookback_s)).isoformat()


# the time zones whose clocks never change: a timestamp without zone written in one of them never repeats
_UTC_ZONES = frozenset({"utc", "etc/utc", "gmt", "etc/gmt", "universal", "zulu", "etc/universal", "etc/zulu", "uct",
                        "etc/uct", "gmt0", "etc/gmt0", "greenwich", "etc/greenwich"})


def _warn_local_time_cursor(con, table: TableSpec, columns: list[ColumnSpec], where: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Warn when the cursor is a timestamp without time zone and the source's default zone is not
    UTC: an application that writes local wall-clock times (``now()`` into such a column) stamps
    the hour repeated when clocks go back lower than the cursor read before it, and with less than
    an hour of lookback those rows are skipped for good (a probe, against a New York server). The
    default zone is the one this session would reset to (ours is pinned to UTC)."""
    if next((c.type.name for c in columns if c.name == table.cursor_field), None) != "timestamp":
        return
    with con.cursor() as cur:
        cur.execute("SELECT reset_val FROM pg_catalog.pg_settings WHERE name = 'TimeZone'")
        row = cur.fetchone()
    zone = str(row[0]) if row else ""
    if zone and zone.lower() not in _UTC_ZONES:
        log.warning(f"cursor {table.cursor_field} of {table.source_table} is a timestamp without time zone and the "
                    f"source's time zone is {zone}: if the application writes local times, the rows stamped in the "
                    f"hour repeated when clocks go back are skipped for good with a lookback under 1h (it is "
                    f"{table.lookback_s}s); make the cursor a timestamptz (or have it written in UTC), or set lookback "
                    "to 1h or more (docs/reference/sources.md#cursors-and-lookback)",
                    extra={"fields": {**where, "time_zone": zone}})


def cursor_type(columns: list[ColumnSpec], table: TableSpec) -> pa.DataType | None:
    return next((c.type.arrow for c in columns if c.name == table.cursor_field), None)


def _select(table: TableSpec, columns: list[ColumnSpec], lower: str | None,
            window: tuple[str, str] | None = None, parent: TableSpec | None = None,
            text_cursor: bool = False) -> sql.Composed:
    schema, name = _split(str(table.source_table))
    exprs = []
    for c in columns:
        ident = sql.Identifier(c.name)
        if c.type.name == "timestamptz":  # UTC wall time, parsed as UTC on our side
            exprs.append(sql.SQL("({} AT TIME ZONE 'UTC') AS {}").format(ident, ident))
        else:
            exprs.append(ident)
    query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(exprs), sql.Identifier(schema, name))
    if window is not None and table.window_column:
        column = sql.Identifier(table.window_column)
        return sql.SQL("{} WHERE {} >= {} AND {} < {}").format(query, column, sql.Literal(window[0]), column, sql.Literal(window[1]))
    if window is not None and parent is not None and table.event_time_from:
        column = sql.Identifier(str(parent.window_column))
        parents = sql.SQL("SELECT {} FROM {} WHERE {} >= {} AND {} < {}").format(
            sql.Identifier(parent.primary_key[0]), sql.Identifier(*_split(str(parent.source_table))),
            column, sql.Literal(window[0]), column, sql.Literal(window[1]))
        return sql.SQL("{} WHERE {} IN ({})").format(query, sql.Identifier(table.event_time_from[1]), parents)
    if table.cursor_field:
        cursor = sql.Identifier(table.cursor_field)
        if text_cursor:  # byte order, as the loader compares (cursor_is_text)
            cursor = sql.SQL('{} COLLATE "C"').format(cursor)
        if lower is not None:
            query = sql.SQL("{} WHERE {} >= {}").format(query, cursor, sql.Literal(lower))
        query = sql.SQL("{} ORDER BY {}").format(query, cursor)
    return query


def _stream(con, spec: SourceSpec, table: TableSpec, columns: list[ColumnSpec], lower: str | None,  # type: ignore[no-untyped-def]
            where: dict[str, str], window: tuple[str, str] | None = None,
            parent: TableSpec | None = None, text_cursor: bool = False) -> Iterator[pa.RecordBatch]:
    """COPY ... TO STDOUT in a thread, writing into a pipe that Arrow's CSV reader consumes.

    The text format is tab-separated without quotes: a value never spans lines (newlines and tabs
    are escaped), so an empty line is a row of one empty text value, and NULL is ``\\N``.
    """
    read_fd, write_fd = os.pipe()
    errors: list[BaseException] = []
    copy = sql.SQL("COPY ({}) TO STDOUT").format(_select(table, columns, lower, window, parent, text_cursor)).as_string(con)

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=1 << 20) as sink, con.cursor() as cur:
                # a first line that the reader skips: Arrow drops a UTF-8 byte-order mark at the start
                # of its input, which would strip one from the extract's first value ('\ufeffA' and
                # 'A', two keys in the source, landed as one key twice)
                sink.write(b"\n")
                cur.copy_expert(copy, sink, size=1 << 20)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            errors.append(exc)

    producer = threading.Thread(target=produce, name=f"copy-{table.name}", daemon=True)
    producer.start()
    # Parse straight into the final types (PostgreSQL already typed every value); zone-aware
    # timestamps arrive as UTC wall time and only get their zone attached afterwards (no copy).
    parse_types = {c.name: pa.timestamp(c.type.arrow.unit) if pa.types.is_timestamp(c.type.arrow) else c.type.arrow
                   for c in columns}
    source = os.fdopen(read_fd, "rb", buffering=1 << 20)
    texts = [i for i, c in enumerate(columns) if pa.types.is_string(c.type.arrow)]
    try:
        reader = csv.open_csv(
            source,
            read_options=csv.ReadOptions(column_names=[c.name for c in columns], use_threads=False, skip_rows=1,
                                         block_size=max(BLOCK_BYTES, int(table.max_row_mb * (1 << 20)))),
            parse_options=csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=False),
            convert_options=csv.ConvertOptions(column_types=parse_types, null_values=["\\N"], strings_can_be_null=True,
                                               true_values=["t"], false_values=["f"]),
        )
        schema = pa.schema([pa.field(c.name, c.type.arrow) for c in columns])
        for batch in reader:
            batch = _unescape(batch, texts)
            yield batch if batch.schema == schema else pa.RecordBatch.from_arrays(
                [col.cast(f.type) if col.type != f.type else col for col, f in zip(batch.columns, schema)], schema=schema)
    except pa.ArrowInvalid as exc:
        # The producer closes the pipe before it records its error: wait for it, or a COPY that
        # failed before its first row would look like an empty table.
        producer.join(timeout=60)
        if errors:
            raise _copy_error(errors[0], table, where) from errors[0]
        if "Empty CSV file" in str(exc):
            return
        if "straddl" in str(exc):  # one row is larger than a parse block
            raise SourceReadError(
                f"a row of {table.source_table} is larger than {table.max_row_mb:g} MB as COPY text", **where,
                hint=f"set max_row_mb on the table in the declaration above the largest row (e.g. "
                     f"{max(2, int(table.max_row_mb * 4))}); nothing of this extract was landed") from exc
        raise _unparsed_value(exc, spec, table, columns, lower, where, window, parent) from exc
    finally:
        source.close()
        producer.join(timeout=60)
        con.close()
    if errors:
        raise _copy_error(errors[0], table, where) from errors[0]


# Arrow's words for a value its CSV reader could not convert; the column number is 0-based
_CONVERSION = re.compile(r"In CSV column #(\d+): Row #(\d+): CSV conversion error to ([^:]+): invalid value '(.*)'",
                         re.DOTALL)


# and for a decimal column, without the column
_DECIMAL_CONVERSION = re.compile(r"(?:In CSV column #(\d+): Row #\d+: )?The string '(.*)' (?:is not a valid decimal128 "
                                 r"number|cannot be represented as decimal128)", re.DOTALL)


def _unparsed_value(exc: BaseException, spec: SourceSpec, table: TableSpec, columns: list[ColumnSpec],  # noqa: PLR0913
                    lower: str | None, where: dict[str, str], window: tuple[str, str] | None,
                    parent: TableSpec | None) -> SourceReadError:
    """A value PostgreSQL holds and its catalog type's Arrow type cannot (a timestamp or date
    ``infinity``, a date before the common era), named by field, value and the keys of the rows
    that hold it. The keys come from one more query with the extract's own SELECT, bounded by a
    statement timeout; without them the message still names the field and the value."""
    found = _CONVERSION.search(str(exc))
    decimal = _DECIMAL_CONVERSION.search(str(exc))
    if found and int(found.group(1)) < len(columns):
        candidates, value, arrow = [columns[int(found.group(1))]], found.group(4), found.group(3)
    elif decimal:  # Arrow's decimal parser words it otherwise, maybe without the column: each is asked
        index = int(decimal.group(1)) if decimal.group(1) is not None else len(columns)
        candidates = [columns[index]] if index < len(columns) else [
            c for c in columns if pa.types.is_decimal(c.type.arrow)]
        value, arrow = decimal.group(2), "decimal128"
    else:
        candidates = []
    if not candidates:
        return SourceReadError(f"a value of {table.source_table} does not fit its catalog type: {first_line(exc)}",
                               **where, hint="report the column to the source owner; nothing of this extract was landed")
    shown = value if len(value) <= 80 else value[:77] + "..."  # a long text in a message helps no one
    keys, column = "", candidates[0]
    try:
        con = PostgresSettings.from_env(spec.env_prefix).connect()
        try:
            con.set_session(readonly=True, isolation_level="READ COMMITTED")  # as ``extracts``
            with con.cursor() as cur:
                cur.execute(SESSION_SETTINGS + "; SET statement_timeout = '30s'")
                for candidate in candidates:
                    cur.execute(sql.SQL("SELECT {} FROM ({}) AS s WHERE s.{}::text = {} LIMIT 3").format(
                        sql.SQL(", ").join(sql.Identifier("s", k) for k in (table.primary_key or [candidate.name])),
                        _select(table, columns, lower, window, parent), sql.Identifier(candidate.name),
                        sql.Literal(value)))
                    rows = cur.fetchall()
                    if rows:
                        column = candidate
                        break
        finally:
            con.close()
        named = ["(" + ", ".join(f"{k}={v!r}" for k, v in zip(table.primary_key, r)) + ")" for r in rows]
        keys = f" in the row(s) with {', '.join(named)}" if named and table.primary_key else ""
    except Exception:  # noqa: BLE001 - the keys are a courtesy: the field and value are named anyway
        keys = ""
    return SourceReadError(
        f"{table.source_table}.{column.name} holds {shown!r}{keys}, which its type {column.type.name} cannot hold "
        f"here (Arrow reads it as {arrow}); nothing of this extract was landed", **where, field=column.name,
        hint=f"ask the source owner to replace {shown!r} in {column.name} (NaN, infinity or a date before the common "
             "era has no equivalent in the warehouse), or declare the table's columns without it; then rerun")


def _unescape(batch: pa.RecordBatch, texts: list[int]) -> pa.RecordBatch:
    r"""Undo COPY's text escapes in the text columns that have any (a byte search in the column's
    data: a block without a backslash costs a copy of its text, no string kernel).

    ``\\`` is replaced first (left to right, so it pairs as COPY wrote it) by a NUL byte, which
    no PostgreSQL text value can hold, and becomes one backslash last.

    >>> _unescape(pa.record_batch({"a": [r"a\\nb", r"tab\there", r"\\N", None]}), [0]).column(0).to_pylist()
    ['a\\nb', 'tab\there', '\\N', None]
    """
    arrays = batch.columns
    escaped = [i for i in texts if (data := arrays[i].buffers()[2]) is not None and b"\\" in data.to_pybytes()]
    if not escaped:
        return batch
    for i in escaped:
        values = pc.replace_substring(arrays[i], "\\\\", "\x00")
        for escape, char in ESCAPES:
            values = pc.replace_substring(values, escape, char)
        arrays[i] = pc.replace_substring(values, "\x00", "\\")
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _copy_error(exc: BaseException, table: TableSpec, where: dict[str, str]) -> SourceReadError:
    first = first_line(exc)
    if "invalid byte sequence for encoding" in first or "has no equivalent in encoding" in first:
        # a SQL_ASCII database stores any bytes; they cannot be sent as UTF-8, on this run or the next
        return SourceReadError(
            f"reading {table.source_table} failed: {first}", **where,
            hint="the source holds text that is not valid in its encoding (a SQL_ASCII database stores any bytes): "
                 "a rerun fails the same way. Ask the source owner to find the rows (e.g. WHERE col !~ '^[[:print:]]*$') "
                 "and fix them, or leave the column out by declaring the table's columns; nothing of this extract was landed")
    if "conflict with recovery" in first:
        # a hot standby cancelled the read to apply the primary's changes (a VACUUM, a lock): transient,
        # and retried as such (``is_retryable``), but one read longer than the standby allows fails every time
        detail = getattr(getattr(exc, "diag", None), "message_detail", None)
        return SourceReadError(
            f"reading {table.source_table} failed: {first}" + (f" ({detail})" if detail else ""), **where,
            hint="the source is a hot standby, which cancelled the read to replay the primary's changes; nothing of "
                 "this extract was landed and a rerun reads it again. If it keeps happening, on the standby set "
                 "hot_standby_feedback = on, or a max_standby_streaming_delay longer than this table's read "
                 "(docs/reference/sources.md#reading-a-replica)")
    return SourceReadError(f"reading {table.source_table} failed: {first}", **where,
                           hint="check the source database and rerun; nothing of this extract was landed")
