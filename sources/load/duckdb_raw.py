"""Append landed batches to raw tables in a DuckDB warehouse, one transaction per batch.

Each raw row carries its batch id, its row number inside the batch's Parquet file, the extraction
time and the load time, so it can be traced to its landing file. The batch's rows, its ledger
entry (``elt_meta.loaded_batches``) and the table's cursor (``elt_meta.source_cursors``) commit
together, so a batch is in raw completely or not at all, and applying it again is a no-op.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
from sqlglot import exp

from sources import failpoints
from sources.errors import RawLoadError, warehouse_write_problem
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
    older_or_same,
)
from sources.load.changes import snapshot_insert_sql, soft_deleted_sql
from sources.load.schema import plan_schema
from sources.types import parse_type

DIALECT = "duckdb"
# The loader's DuckDB connections stay small (spilling to disk past it), so loading a table of
# any size runs in bounded memory next to other work. Override with ELT_LOADER_MEMORY_LIMIT.
LOADER_MEMORY_LIMIT = os.environ.get("ELT_LOADER_MEMORY_LIMIT", "64MB")
# Comparing a snapshot with raw's current state (the latest version of every key) is a join and a
# window over the whole table: it gets more memory, still bounded (it spills past it).
SNAPSHOT_MEMORY_LIMIT = os.environ.get("ELT_LOADER_SNAPSHOT_MEMORY_LIMIT", "1GB")
# DuckDB compression methods the loader's connection does not try. Analysing dictionary
# compression on high-cardinality text (keys, UUIDs) cost about a quarter of the raw insert on
# bench/loader_postgres.py; text is then stored with FSST (or uncompressed), and the raw file of
# that benchmark grows from 46 to 54 MB. The values are the same. "" restores DuckDB's default.
LOADER_DISABLED_COMPRESSION = os.environ.get("ELT_LOADER_DISABLED_COMPRESSION", "dictionary")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """End the transaction after a failure, never raising over it. A write that failed (a full disk)
    can end the transaction itself ("no transaction is active"), or make DuckDB refuse every later
    statement ("database has been invalidated"): either would hide the error that matters."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def q(name: str) -> str:
    """Quote an identifier for DuckDB.

    >>> print(q("order items"))
    "order items"
    """
    return exp.to_identifier(name, quoted=True).sql(DIALECT)


def lit(value: object) -> str:
    """A value as a DuckDB literal, rendered by sqlglot (escaping quotes).

    Used instead of bound parameters: DuckDB's Python client imports pandas (0.3 s) on the first
    parameterised query, a cost every ``elt load`` would pay.

    >>> print(lit("it's"))
    'it''s'
    """
    return exp.convert(value).sql(DIALECT)


def qtable(schema: str, table: str) -> str:
    return exp.table_(table, db=schema, quoted=True).sql(DIALECT)


LEDGER = qtable(META_SCHEMA, LEDGER_TABLE)
CURSORS = qtable(META_SCHEMA, CURSOR_TABLE)
SET_ASIDE = qtable(META_SCHEMA, SET_ASIDE_TABLE)
IDENTITY = qtable(META_SCHEMA, IDENTITY_TABLE)


def normal_type(sql_type: str) -> str:
    return exp.DataType.build(sql_type, dialect=DIALECT).sql(DIALECT)


# The words of the error a lossy evolve_cast raises (from DuckDB's error(), while the batch is inserted)
LOSSY_CAST = "evolve_cast would change a value"
_NUMERIC = re.compile(r"(U?(TINY|SMALL|HUGE|BIG)?INT(EGER)?|DECIMAL|NUMERIC|DOUBLE|FLOAT|REAL)\b")  # not INTERVAL


def checked_cast(column: str, raw_type: str, batch_type: str, row_number: str) -> str:
    """``evolve_cast``'s cast of ``column`` to raw's type, failing the insert at the first value the
    cast would change (DuckDB rounds 12.49, or the text '12.49', to the BIGINT 12 without a word:
    a source that moved from integer cents to decimal dollars landed 100x too small). A value
    that does not cast at all fails as before.

    >>> con = duckdb.connect()
    >>> con.execute(f"SELECT {checked_cast('p', 'BIGINT', 'TEXT', 'r')} FROM (VALUES ('12'), ('5.0'), (' 5'), "
    ...             "('007'), ('1e3')) t(p), (SELECT 0 AS r)").fetchall()
    [(12,), (5,), (5,), (7,), (1000,)]
    >>> con.execute(f"SELECT {checked_cast('p', 'BIGINT', 'DECIMAL(10,2)', 'r')} FROM "
    ...             "(VALUES (11.00::DECIMAL(10,2), 0), (12.49, 1)) t(p, r)").fetchall()
    Traceback (most recent call last):
    ...
    _duckdb.InvalidInputException: Invalid Input Error: evolve_cast would change a value: p = 12.49 becomes 12 in raw's BIGINT (row 2 of the batch)

    Text into a date or a timestamp is kept only when it names the same instant (raw's sessions are UTC):

    >>> _ = con.execute("SET TimeZone = 'UTC'")
    >>> con.execute(f"SELECT {checked_cast('d', 'DATE', 'TEXT', 'r')} FROM (VALUES ('2020-01-02'), "
    ...             "('2020-01-03 00:00:00'), ('2020-01-04T00:00:00Z')) t(d), (SELECT 0 AS r)").fetchall()
    [(datetime.date(2020, 1, 2),), (datetime.date(2020, 1, 3),), (datetime.date(2020, 1, 4),)]
    >>> con.execute(f"SELECT {checked_cast('d', 'DATE', 'TEXT', 'r')} FROM (VALUES ('2020-01-02 10:30', 0)) t(d, r)").fetchall()
    Traceback (most recent call last):
    ...
    _duckdb.InvalidInputException: Invalid Input Error: evolve_cast would change a value: d = 2020-01-02 10:30 becomes 2020-01-02 in raw's DATE (row 1 of the batch)
    >>> con.execute(f"SELECT {checked_cast('d', 'DATE', 'TEXT', 'r')} FROM (VALUES ('2020-01-02 23:30:00 -0500', 0)) t(d, r)").fetchall()
    Traceback (most recent call last):
    ...
    _duckdb.InvalidInputException: Invalid Input Error: evolve_cast would change a value: d = 2020-01-02 23:30:00 -0500 becomes 2020-01-02 in raw's DATE (row 1 of the batch)
    >>> con.execute(f"SELECT {checked_cast('t', 'TIMESTAMP', 'TEXT', 'r')} FROM (VALUES ('2020-01-02T10:30:00+02:00', 0)) t(t, r)").fetchall()
    Traceback (most recent call last):
    ...
    _duckdb.InvalidInputException: Invalid Input Error: evolve_cast would change a value: t = 2020-01-02T10:30:00+02:00 becomes 2020-01-02 10:30:00 in raw's TIMESTAMP (row 1 of the batch)
    """
    value = q(column)
    cast = f"CAST({value} AS {raw_type})"
    if batch_type in ("TEXT", "VARCHAR"):  # normal_type's name for text, and DuckDB's
        if raw_type in ("DATE", "TIMESTAMP"):
            # DuckDB cuts '2020-01-02 10:30' into the DATE 2020-01-02 and drops an offset's hours
            # ('10:30+02:00' is the TIMESTAMP 10:30): compared as instants (no offset: UTC, the session's
            # zone). Text DuckDB reads as a date but not as an instant ('2020-01-02 23:30:00 -0500')
            # is refused too: the date cast would cut whatever follows the day.
            changed = f"TRY_CAST({value} AS TIMESTAMPTZ) IS DISTINCT FROM CAST({cast} AS TIMESTAMPTZ)"
        elif not _NUMERIC.match(raw_type):
            return cast  # text into a timestamptz, a boolean: the cast fails on anything it cannot read
        else:
            # compared as numbers, not as text ('5.0', ' 5', '007' are kept as 5): exactly as a decimal
            # where the text is one, else as a DOUBLE ('1e3', 'NaN', 'inf', '1e30')
            exact = f"TRY_CAST({value} AS DECIMAL(38, 10))"
            changed = (f"CASE WHEN {exact} IS NOT NULL THEN {exact} IS DISTINCT FROM TRY_CAST({cast} AS DECIMAL(38, 10)) "
                       f"ELSE TRY_CAST({value} AS DOUBLE) IS DISTINCT FROM CAST({cast} AS DOUBLE) END")
    else:
        changed = f"CAST({cast} AS {batch_type}) IS DISTINCT FROM {value}"
    message = (f"{lit(f'{LOSSY_CAST}: {column} = ')} || CAST({value} AS VARCHAR) || ' becomes ' || "
               f"CAST({cast} AS VARCHAR) || {lit(f' in raw' + chr(39) + f's {raw_type} (row ')} || "
               f"CAST({row_number} + 1 AS VARCHAR) || ' of the batch)'")
    return f"CASE WHEN {value} IS NOT NULL AND {changed} THEN error({message}) ELSE {cast} END"


class DuckDBRaw:
    """Raw tables, the batch ledger and source cursors in one DuckDB file."""

    dialect = DIALECT

    def __init__(self, database: Path | str) -> None:
        self.database = str(database)
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        # Row order in raw is carried by _batch_row, so DuckDB may insert in parallel (4x faster here).
        self.con = duckdb.connect(self.database, config={"memory_limit": LOADER_MEMORY_LIMIT, "preserve_insertion_order": False})
        # UTC, as the models' sessions (config.yaml): a timestamptz's day and text never follow the machine's zone
        self.con.execute("SET enable_progress_bar = false; SET TimeZone = 'UTC'")
        if LOADER_DISABLED_COMPRESSION:
            self.con.execute(f"SET disabled_compression_methods = {lit(LOADER_DISABLED_COMPRESSION)}")
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(META_SCHEMA)}")
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {LEDGER} ({LEDGER_COLUMNS})")
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {CURSORS} ({CURSOR_COLUMNS})")
        self.con.execute(f"CREATE TABLE IF NOT EXISTS {SET_ASIDE} ({SET_ASIDE_COLUMNS})")

    def __repr__(self) -> str:
        return f"DuckDBRaw({self.database!r})"

    def identity(self) -> str:
        """This warehouse's id, made on first use: a load writes it into the manifests it lands, so
        another warehouse sharing the landing store is told apart (``pipeline.apply_pending``)."""
        import uuid

        self.con.execute(f"CREATE TABLE IF NOT EXISTS {IDENTITY} ({IDENTITY_COLUMNS})")
        row = self.con.execute(f"SELECT id FROM {IDENTITY} ORDER BY created_at, id LIMIT 1").fetchone()
        if row:
            return str(row[0])
        made = uuid.uuid4().hex
        self.con.execute(f"INSERT INTO {IDENTITY} VALUES ({lit(made)}, now())")
        return made

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDBRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loaded_batch_ids(self, source: str, table: str) -> set[str]:
        rows = self.con.execute(
            f"SELECT batch_id FROM {LEDGER} WHERE source = {lit(source)} AND table_name = {lit(table)}"
        ).fetchall()
        return {r[0] for r in rows}

    def set_aside_ids(self, source: str, table: str) -> set[str]:
        rows = self.con.execute(
            f"SELECT batch_id FROM {SET_ASIDE} WHERE source = {lit(source)} AND table_name = {lit(table)}"
        ).fetchall()
        return {r[0] for r in rows}

    def record_set_aside(self, record: SetAside, raw_schema: str) -> None:
        """Record a set-aside batch in one transaction; refused when the ledger holds the batch."""
        key = f"source = {lit(record.source)} AND table_name = {lit(record.table)} AND batch_id = {lit(record.batch_id)}"
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            if con.execute(f"SELECT 1 FROM {LEDGER} WHERE {key}").fetchone():
                raise RawLoadError(
                    "the batch is already applied to raw; only a batch raw does not hold can be set aside",
                    source=record.source, table=record.table, batch_id=record.batch_id,
                    hint="its rows are in raw; to correct them, land a corrected extract (docs/runbook.md#failed-audit)",
                )
            values = [record.batch_id, record.source, record.table, f"{raw_schema}.{record.table}", record.rows,
                      record.by, utc_naive(record.at_dt), record.reason]
            con.execute(f"DELETE FROM {SET_ASIDE} WHERE {key}")
            con.execute(f"INSERT INTO {SET_ASIDE} VALUES ({', '.join(lit(v) for v in values)})")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def remove_set_aside(self, source: str, table: str, batch_id: str) -> bool:
        key = f"source = {lit(source)} AND table_name = {lit(table)} AND batch_id = {lit(batch_id)}"
        return bool(self.con.execute(f"DELETE FROM {SET_ASIDE} WHERE {key} RETURNING batch_id").fetchall())

    def cursor(self, source: str, table: str) -> str | None:
        row = self.con.execute(
            f"SELECT cursor_value FROM {CURSORS} WHERE source = {lit(source)} AND table_name = {lit(table)}"
        ).fetchone()
        return row[0] if row else None

    def seen_rows(self, raw_schema: str, table: str, key: list[str], cursor_field: str, since: object,
                  rows: pa.Table, newest_by_cursor: bool = False) -> pa.Array:
        """True for each extracted row whose (key..., cursor) raw already holds (or, with
        ``newest_by_cursor``, holds at a later cursor value: ``older_or_same``), among raw rows with
        cursor >= ``since`` (what a lookback re-reads): a semi-join in DuckDB, so memory follows the
        batch, not the number of rows in the lookback window."""
        exists = self.con.execute(
            f"SELECT count(*) FROM information_schema.tables WHERE table_schema = {lit(raw_schema)} AND table_name = {lit(table)}"
        ).fetchone()[0]
        if not exists or not rows.num_rows:
            return pa.array([False] * rows.num_rows)
        cols = list(dict.fromkeys([*key, cursor_field]))  # the cursor may be the key (an increasing id)
        on = older_or_same(key, cursor_field, lambda c: f"p.{q(c)}", lambda c: f"r.{q(c)}", newest_by_cursor)
        self.con.register("_elt_probe", probe_table(rows, key, cursor_field))
        try:
            found = self.con.execute(
                f"SELECT p._elt_i FROM _elt_probe AS p SEMI JOIN (SELECT {', '.join(q(c) for c in cols)} "
                f"FROM {qtable(raw_schema, table)} WHERE {q(cursor_field)} >= {lit(since)}) AS r ON {on}"
            ).fetchnumpy()["_elt_i"]
        finally:
            self.con.unregister("_elt_probe")
        return mask_from_positions(rows.num_rows, found)

    def load(self, manifest: Manifest, reader: pa.RecordBatchReader | list[str], raw_schema: str, *, policy: str = "evolve") -> LoadResult:
        """Apply one landed batch. Idempotent: a batch already in the ledger is skipped.

        ``reader``: the batch's rows as an Arrow stream, or the paths of its local Parquet files
        (read by DuckDB itself: parallel and spilling to disk under the memory limit).
        """
        where = {"source": manifest.source, "table": manifest.table, "batch_id": manifest.batch_id}
        raw_table = qtable(raw_schema, manifest.table)
        loaded_at = datetime.now(UTC).replace(tzinfo=None)
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            seen = con.execute(
                f"SELECT 1 FROM {LEDGER} WHERE source = {lit(manifest.source)} AND table_name = {lit(manifest.table)} "
                f"AND batch_id = {lit(manifest.batch_id)}"
            ).fetchone()
            if seen:
                con.execute("ROLLBACK")
                return LoadResult(manifest.batch_id, manifest.table, manifest.rows, applied=False)
            if con.execute(  # set aside since the caller listed the table's batches: never applied
                f"SELECT 1 FROM {SET_ASIDE} WHERE source = {lit(manifest.source)} AND table_name = {lit(manifest.table)} "
                f"AND batch_id = {lit(manifest.batch_id)}"
            ).fetchone():
                con.execute("ROLLBACK")
                return LoadResult(manifest.batch_id, manifest.table, 0, applied=False)
            notes, casts = self._ensure_table(raw_schema, manifest, where, policy)
            data_cols = [c["name"] for c in manifest.columns]
            target_cols = ", ".join(q(c) for c in [*data_cols, *(m for m, _ in METADATA_COLUMNS)])
            if isinstance(reader, list):
                source, row_number = f"read_parquet({lit(reader)}, file_row_number = true)", "file_row_number"
            else:
                con.register("_elt_batch", numbered(reader))
                source, row_number = "_elt_batch", "_batch_row"
            if casts:  # evolve_cast: each changed column's cast, checked value by value
                batch_types = {c["name"]: c["type"] for c in manifest.columns if c["name"] in casts}
                casts = {c: checked_cast(c, raw_type, normal_type(parse_type(batch_types[c]).sql(DIALECT)), row_number)
                         for c, raw_type in casts.items()}
            select_cols = ", ".join(casts.get(c, q(c)) for c in data_cols)
            has_rows = ((manifest.snapshot or manifest.changes_only)
                        and con.execute(f"SELECT EXISTS (SELECT 1 FROM {raw_table})").fetchone()[0])
            if has_rows:
                # only the snapshot's changes and deletions against raw's current state; comparing
                # with the latest version of every key needs more than the loader's small memory
                con.execute(f"SET memory_limit = {lit(SNAPSHOT_MEMORY_LIMIT)}")
                aliased = ", ".join(f"{casts[c]} AS {q(c)}" if c in casts else q(c) for c in data_cols)
                if isinstance(reader, list):  # local Parquet: read twice (rows, then count) instead of copied
                    batch = f"(SELECT {aliased}, {row_number} AS _batch_row FROM {source})"
                    count = int(con.execute(f"SELECT count(*) FROM {source}").fetchone()[0])
                else:  # an Arrow stream can be read once: into a temporary table
                    con.execute(f"CREATE OR REPLACE TEMP TABLE _elt_snapshot AS SELECT {aliased}, "
                                f"{row_number} AS _batch_row FROM {source}")
                    batch = "_elt_snapshot"
                    count = int(con.execute("SELECT count(*) FROM _elt_snapshot").fetchone()[0])
                inserted = con.execute(snapshot_insert_sql(
                    raw_table, batch, data_cols, list(manifest.primary_key), manifest.batch_id,
                    utc_naive(manifest.extracted_at_dt), loaded_at, DIALECT, tombstones=manifest.snapshot,
                    soft_delete=(manifest.soft_delete, manifest.soft_delete_type()))).fetchone()
                applied_rows = int(inserted[0]) if inserted else 0
                if batch == "_elt_snapshot":
                    con.execute("DROP TABLE _elt_snapshot")
                con.execute(f"SET memory_limit = {lit(LOADER_MEMORY_LIMIT)}")
            else:
                marked = soft_deleted_sql(manifest.soft_delete, manifest.soft_delete_type(), DIALECT)
                meta = (f"{lit(manifest.batch_id)}, {row_number}, {lit(utc_naive(manifest.extracted_at_dt))}, "
                        f"{lit(loaded_at)}, {marked}")
                inserted = con.execute(
                    f"INSERT INTO {raw_table} ({target_cols}) SELECT {select_cols}, {meta} FROM {source}"
                ).fetchone()
                count = applied_rows = int(inserted[0]) if inserted else 0
            if not isinstance(reader, list):
                con.unregister("_elt_batch")
            if count != manifest.rows:
                raise RawLoadError(
                    f"landing files hold {count} rows but the manifest says {manifest.rows}",
                    **where,
                    hint="the batch is corrupt: restore its files from backup or re-extract the table",
                )
            values = [manifest.batch_id, manifest.source, manifest.table, f"{raw_schema}.{manifest.table}", manifest.rows,
                      utc_naive(manifest.extracted_at_dt), loaded_at, manifest.origin.get("sha256")]
            con.execute(f"INSERT INTO {LEDGER} VALUES ({', '.join(lit(v) for v in values)})")
            failpoints.hit("raw.mid_load")
            if manifest.cursor.get("field") and manifest.cursor.get("to") is not None:
                values = [manifest.source, manifest.table, manifest.cursor["field"], str(manifest.cursor["to"]),
                          manifest.batch_id, loaded_at]
                con.execute(f"INSERT OR REPLACE INTO {CURSORS} VALUES ({', '.join(lit(v) for v in values)})")
            con.execute("COMMIT")
        except RawLoadError:
            _rollback(con)
            raise
        except (duckdb.Error, pa.ArrowException) as exc:
            _rollback(con)
            problem = warehouse_write_problem(exc, self.database)  # a full disk: not the batch's fault
            if LOSSY_CAST in str(exc):
                problem = ("raw's column type cannot hold the new values unchanged: migrate the raw column to the "
                           "new type instead of evolve_cast (docs/runbook.md, 'Schema change'), then rerun")
            raise RawLoadError(
                f"appending to {raw_schema}.{manifest.table} failed and was rolled back: {exc}",
                **where,
                hint=(f"nothing of the batch was applied (it stays in landing and is applied by the rerun); {problem}"
                      if problem else set_aside_hint(manifest)),
            ) from exc
        except BaseException:  # anything else (a landing read, an interrupt): never leave it open
            _rollback(con)
            raise
        return LoadResult(manifest.batch_id, manifest.table, applied_rows, applied=True, schema_notes=notes)

    def column_names(self, raw_schemas: list[str]) -> dict[tuple[str, str], set[str]]:
        """The columns of every table in ``raw_schemas``, by (schema, table), all lower case: one
        read of the catalog. In DuckDB each ``information_schema`` query reads the whole catalog,
        so a question per table cost tables x catalog (1.8 s of a 10.7 s transform at 200 tables)."""
        if not raw_schemas:
            return {}
        found: dict[tuple[str, str], set[str]] = {}
        for schema, table, column in self.con.execute(
                "SELECT table_schema, table_name, column_name FROM information_schema.columns "
                f"WHERE lower(table_schema) IN ({', '.join(lit(s.lower()) for s in raw_schemas)})").fetchall():
            found.setdefault((schema.lower(), table.lower()), set()).add(column.lower())
        return found

    def create_declared(self, raw_schema: str, table: str, columns: list[dict[str, str]], primary_key: list[str]) -> bool:
        """Create ``raw_schema.table`` empty, with the declared ``columns`` (as a batch's manifest
        lists them) and the metadata columns, unless it exists; True if it was created. A first
        batch then finds the table as the loader itself would have made it."""
        exists = self.con.execute(
            "SELECT 1 FROM information_schema.tables "
            f"WHERE table_schema = {lit(raw_schema)} AND table_name = {lit(table)}").fetchone()
        if exists:
            return False
        declared = DeclaredTable(table, columns, primary_key)
        self.con.execute("BEGIN TRANSACTION")
        try:
            self._ensure_table(raw_schema, declared, {"table": table}, "evolve")  # type: ignore[arg-type]
            self.con.execute("COMMIT")
        except duckdb.Error:
            self.con.execute("ROLLBACK")
            raise
        return True

    def add_declared_columns(self, raw_schema: str, table: str, columns: list[dict[str, str]]) -> list[str]:
        """Add to an existing raw table the declared ``columns`` it lacks, NULL in its rows, as the
        next batch holding them would (schema_policy evolve); their names. A model reading a column
        just declared then runs before that batch arrives (a table read by cursor may wait long)."""
        present = {name.lower() for (name,) in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
            [raw_schema, table]).fetchall()}
        missing = [c for c in columns if present and c["name"].lower() not in present]
        if not missing:
            return []
        self.con.execute("BEGIN TRANSACTION")
        try:
            for column in missing:
                self.con.execute(f"ALTER TABLE {qtable(raw_schema, table)} ADD COLUMN {q(column['name'])} "
                                 f"{normal_type(parse_type(column['type']).sql(DIALECT))}")
            self.con.execute("COMMIT")
        except duckdb.Error:
            self.con.execute("ROLLBACK")
            raise
        return [c["name"] for c in missing]

    def _ensure_table(self, raw_schema: str, manifest: Manifest, where: dict[str, str], policy: str) -> tuple[tuple[str, ...], dict[str, str]]:
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(raw_schema)}")
        batch = [(c["name"], normal_type(parse_type(c["type"]).sql(DIALECT))) for c in manifest.columns]
        existing = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            f"WHERE table_schema = {lit(raw_schema)} AND table_name = {lit(manifest.table)} ORDER BY ordinal_position"
        ).fetchall()
        table = qtable(raw_schema, manifest.table)
        if not existing:
            columns = ",\n    ".join(f"{q(n)} {t}" for n, t in [*batch, *METADATA_COLUMNS])
            self.con.execute(f"CREATE TABLE {table} (\n    {columns}\n)")
            return (), {}
        meta = {m for m, _ in METADATA_COLUMNS}
        for name, sql_type in METADATA_COLUMNS:  # raw tables made before a metadata column existed
            if name not in {n for n, _ in existing}:
                default = " DEFAULT FALSE" if name == "_deleted" else ""
                self.con.execute(f"ALTER TABLE {table} ADD COLUMN {q(name)} {sql_type}{default}")
        raw = {n: normal_type(t) for n, t in existing if n not in meta}
        plan = plan_schema(raw, batch, policy, where, f"{raw_schema}.{manifest.table}")
        for name, sql_type in plan.add:
            self.con.execute(f"ALTER TABLE {table} ADD COLUMN {q(name)} {sql_type}")
        return plan.notes, dict(plan.cast)
