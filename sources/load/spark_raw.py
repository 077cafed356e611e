"""Apply landed batches to raw tables on Apache Spark (the `spark` gateway).

Spark tables have no multi-statement transactions, so "all or nothing, never twice" comes from
the layout instead (docs/decisions/0013-spark-gateway.md):

- a raw table is a Parquet table partitioned by ``_batch_id``: one partition per landed batch;
- applying a batch is ``INSERT OVERWRITE ... PARTITION (_batch_id = '<id>')``: applying it again
  (after a crash at any point) replaces the partition instead of adding to it;
- the batch counts as applied only when its ledger row (``elt_meta.loaded_batches``, with the
  cursor it advances) is written, after its partition; readers of raw never see a partial
  partition, because Spark's file commit moves a partition's files into place at job end;
- Spark reads the batch's Parquet files from landing itself (no rows through Python) when
  landing is a folder it can see; from object storage it gets the batch as an Arrow stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlglot import exp

from sources import failpoints
from sources.errors import RawLoadError
from sources.landing.manifest import Manifest
from sources.landing.store import SetAside
from sources.load.base import (
    LEDGER_TABLE,
    META_SCHEMA,
    METADATA_COLUMNS,
    SET_ASIDE_TABLE,
    LoadResult,
    mask_from_positions,
    numbered,
    probe_table,
    set_aside_hint,
    utc_naive,
    older_or_same,
)
from sources.load.changes import DELETED, ORDER, soft_deleted_sql
from sources.load.schema import plan_schema
from sources.types import parse_type

DIALECT = "spark"
# the ledger also carries the cursor a batch advances: one append records both
LEDGER_SPARK_COLUMNS = (
    ("batch_id", "STRING"), ("source", "STRING"), ("table_name", "STRING"), ("raw_table", "STRING"),
    ("rows", "BIGINT"), ("extracted_at", "TIMESTAMP"), ("loaded_at", "TIMESTAMP"), ("origin_sha256", "STRING"),
    ("cursor_field", "STRING"), ("cursor_value", "STRING"),
)

# set-aside batches (`elt set-aside`) as an append-only log: Parquet tables have no DELETE, so an
# undo appends a row with removed = TRUE, and a batch's latest row says whether it is set aside
SET_ASIDE_SPARK_COLUMNS = (
    ("batch_id", "STRING"), ("source", "STRING"), ("table_name", "STRING"), ("raw_table", "STRING"),
    ("rows", "BIGINT"), ("set_aside_by", "STRING"), ("set_aside_at", "TIMESTAMP"), ("reason", "STRING"),
    ("removed", "BOOLEAN"), ("recorded_at", "TIMESTAMP"),
)


def q(name: str) -> str:
    """Quote an identifier for Spark SQL.

    >>> print(q("order items"))
    `order items`
    """
    return exp.to_identifier(name, quoted=True).sql(DIALECT)


def lit(value: object) -> str:
    """A value as a Spark SQL literal (quotes escaped by sqlglot).

    >>> print(lit("it's"))
    'it\\'s'
    """
    if isinstance(value, datetime):
        return f"TIMESTAMP {exp.convert(value.isoformat(sep=' ')).sql(DIALECT)}"
    return exp.convert(value).sql(DIALECT)


def qtable(schema: str, table: str) -> str:
    return exp.table_(table, db=schema, quoted=True).sql(DIALECT)


LEDGER = qtable(META_SCHEMA, LEDGER_TABLE)
SET_ASIDE = qtable(META_SCHEMA, SET_ASIDE_TABLE)


def spark_type(declared: str) -> str:
    return parse_type(declared).sql(DIALECT)


class SparkRaw:
    """Raw tables and the batch ledger in the Spark catalog of the `spark` gateway."""

    dialect = DIALECT

    def __init__(self, project_root: Path, spark: Any = None) -> None:
        if spark is None:
            from sources.spark import session

            spark = session(project_root)
        self.spark = spark
        self.sql(f"CREATE DATABASE IF NOT EXISTS {q(META_SCHEMA)}")
        columns = ", ".join(f"{q(n)} {t}" for n, t in LEDGER_SPARK_COLUMNS)
        self.sql(f"CREATE TABLE IF NOT EXISTS {LEDGER} ({columns}) USING parquet")
        columns = ", ".join(f"{q(n)} {t}" for n, t in SET_ASIDE_SPARK_COLUMNS)
        self.sql(f"CREATE TABLE IF NOT EXISTS {SET_ASIDE} ({columns}) USING parquet")

    def __repr__(self) -> str:
        return "SparkRaw()"

    def sql(self, statement: str) -> Any:
        return self.spark.sql(statement)

    def rows(self, statement: str) -> list[Any]:
        return self.spark.sql(statement).collect()

    def close(self) -> None:  # the session is the process's: SQLMesh may still use it
        pass

    def __enter__(self) -> SparkRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loaded_batch_ids(self, source: str, table: str) -> set[str]:
        return {r[0] for r in self.rows(
            f"SELECT batch_id FROM {LEDGER} WHERE source = {lit(source)} AND table_name = {lit(table)}")}

    def set_aside_ids(self, source: str, table: str) -> set[str]:
        return {r[0] for r in self.rows(
            f"SELECT batch_id FROM (SELECT batch_id, removed, ROW_NUMBER() OVER (PARTITION BY batch_id "
            f"ORDER BY recorded_at DESC) AS _rn FROM {SET_ASIDE} WHERE source = {lit(source)} "
            f"AND table_name = {lit(table)}) AS events WHERE _rn = 1 AND NOT removed")}

    def _set_aside_event(self, record: SetAside, raw_table: str, removed: bool) -> None:
        values = [record.batch_id, record.source, record.table, raw_table, record.rows, record.by,
                  utc_naive(record.at_dt), record.reason, removed, datetime.now(UTC).replace(tzinfo=None)]
        self.sql(f"INSERT INTO {SET_ASIDE} VALUES ({', '.join(lit(v) for v in values)})")

    def record_set_aside(self, record: SetAside, raw_schema: str) -> None:
        if record.batch_id in self.loaded_batch_ids(record.source, record.table):
            raise RawLoadError(
                "the batch is already applied to raw; only a batch raw does not hold can be set aside",
                source=record.source, table=record.table, batch_id=record.batch_id,
                hint="its rows are in raw; to correct them, land a corrected extract (docs/runbook.md#failed-audit)",
            )
        self._set_aside_event(record, f"{raw_schema}.{record.table}", removed=False)

    def remove_set_aside(self, source: str, table: str, batch_id: str) -> bool:
        if batch_id not in self.set_aside_ids(source, table):
            return False
        self._set_aside_event(SetAside(source, table, batch_id, 0, "-", datetime.now(UTC).isoformat(), "undo"),
                              "-", removed=True)
        return True

    def cursor(self, source: str, table: str) -> str | None:
        found = self.rows(
            f"SELECT cursor_value FROM {LEDGER} WHERE source = {lit(source)} AND table_name = {lit(table)} "
            "AND cursor_value IS NOT NULL ORDER BY loaded_at DESC, batch_id DESC LIMIT 1")
        return found[0][0] if found else None

    def _exists(self, raw_schema: str, table: str) -> bool:
        return bool(self.spark.catalog.tableExists(f"{raw_schema}.{table}"))

    def seen_rows(self, raw_schema: str, table: str, key: list[str], cursor_field: str, since: object,
                  rows: pa.Table, newest_by_cursor: bool = False) -> pa.Array:
        """True for each extracted row whose (key..., cursor) raw already holds (or, with
        ``newest_by_cursor``, holds at a later cursor value: ``older_or_same``), among raw rows with
        cursor >= ``since``: a semi-join in Spark; only the positions of the seen rows come back."""
        if not self._exists(raw_schema, table) or not rows.num_rows:
            return pa.array([False] * rows.num_rows)
        cols = list(dict.fromkeys([*key, cursor_field]))  # the cursor may be the key (an increasing id)
        self.spark.createDataFrame(probe_table(rows, key, cursor_field)).createOrReplaceTempView("_elt_probe")
        on = older_or_same(key, cursor_field, lambda c: f"p.{q(c)}", lambda c: f"r.{q(c)}", newest_by_cursor)
        found = self.rows(f"SELECT p._elt_i FROM _elt_probe AS p LEFT SEMI JOIN (SELECT {', '.join(q(c) for c in cols)} "
                          f"FROM {qtable(raw_schema, table)} WHERE {q(cursor_field)} >= {lit(since)}) AS r ON {on}")
        return mask_from_positions(rows.num_rows, [r[0] for r in found])

    def _batch_view(self, manifest: Manifest, reader: pa.RecordBatchReader | list[str]) -> None:
        """The batch's rows with ``_batch_row`` (position in the batch, across its files) as the
        temporary view ``_elt_batch``."""
        if isinstance(reader, list):
            frame = None
            offset = 0
            for path, landed in zip(reader, manifest.files):
                part = self.spark.read.parquet(Path(path).resolve().as_uri()).selectExpr(
                    "*", f"_metadata.row_index + {offset} AS _batch_row")
                frame = part if frame is None else frame.unionByName(part)
                offset += landed.rows
            if frame is None:  # a batch without files holds no rows
                frame = self.spark.createDataFrame([], "_batch_row BIGINT")
        else:
            frame = self.spark.createDataFrame(numbered(reader).read_all())
        frame.createOrReplaceTempView("_elt_batch")

    def load(self, manifest: Manifest, reader: pa.RecordBatchReader | list[str], raw_schema: str, *, policy: str = "evolve") -> LoadResult:
        """Apply one landed batch. Idempotent: a batch in the ledger is skipped, and a batch whose
        partition was written by a run that died before its ledger row is written again."""
        where = {"source": manifest.source, "table": manifest.table, "batch_id": manifest.batch_id}
        if manifest.batch_id in self.loaded_batch_ids(manifest.source, manifest.table):
            return LoadResult(manifest.batch_id, manifest.table, manifest.rows, applied=False)
        if manifest.batch_id in self.set_aside_ids(manifest.source, manifest.table):
            return LoadResult(manifest.batch_id, manifest.table, 0, applied=False)
        raw_table = qtable(raw_schema, manifest.table)
        loaded_at = datetime.now(UTC).replace(tzinfo=None)
        extracted_at = utc_naive(manifest.extracted_at_dt)
        try:
            notes, types = self._ensure_table(raw_schema, manifest, where, policy)
            data_cols = [c["name"] for c in manifest.columns]
            self._batch_view(manifest, reader)
            count = int(self.rows("SELECT count(*) FROM _elt_batch")[0][0]) if manifest.files else 0
            if count != manifest.rows:
                raise RawLoadError(
                    f"landing files hold {count} rows but the manifest says {manifest.rows}", **where,
                    hint="the batch is corrupt: restore its files from backup or re-extract the table",
                )
            typed = ", ".join(f"CAST({q(c)} AS {types[c]}) AS {q(c)}" for c in data_cols)
            self.sql(f"CREATE OR REPLACE TEMPORARY VIEW _elt_typed AS SELECT {typed}, _batch_row FROM _elt_batch")
            partition = f"PARTITION ({q('_batch_id')} = {lit(manifest.batch_id)})"
            target = ", ".join(q(c) for c in [*data_cols, "_batch_row", "_extracted_at", "_loaded_at", DELETED])
            times = f"{lit(extracted_at)}, {lit(loaded_at)}"
            prior = f"{q('_batch_id')} <> {lit(manifest.batch_id)}"
            has_rows = manifest.snapshot and bool(self.rows(f"SELECT 1 FROM {raw_table} WHERE {prior} LIMIT 1"))
            if has_rows:
                query = self._changes_sql(raw_table, data_cols, list(manifest.primary_key), prior, times,
                                          (manifest.soft_delete, manifest.soft_delete_type()))
                # the changes read raw itself: staged in a table first (Spark refuses to overwrite
                # a table it reads in the same statement)
                stage = qtable(META_SCHEMA, f"_stage_{manifest.batch_id.replace('-', '_').lower()}")
                self.sql(f"DROP TABLE IF EXISTS {stage}")
                self.sql(f"CREATE TABLE {stage} USING parquet AS {query}")
                self.sql(f"INSERT OVERWRITE TABLE {raw_table} {partition} ({target}) SELECT {target} FROM {stage}")
                applied_rows = int(self.rows(f"SELECT count(*) FROM {stage}")[0][0])
                self.sql(f"DROP TABLE IF EXISTS {stage}")
            else:
                select = ", ".join(q(c) for c in data_cols)
                marked = soft_deleted_sql(manifest.soft_delete, manifest.soft_delete_type(), "spark")
                self.sql(f"INSERT OVERWRITE TABLE {raw_table} {partition} ({target}) "
                         f"SELECT {select}, _batch_row, {times}, {marked} FROM _elt_typed")
                applied_rows = count
            failpoints.hit("raw.mid_load")
            cursor_field = manifest.cursor.get("field") if manifest.cursor.get("to") is not None else None
            values = [manifest.batch_id, manifest.source, manifest.table, f"{raw_schema}.{manifest.table}", manifest.rows,
                      extracted_at, loaded_at, manifest.origin.get("sha256"), cursor_field,
                      str(manifest.cursor["to"]) if cursor_field else None]
            rendered = ", ".join("NULL" if v is None else lit(v) for v in values)
            self.sql(f"INSERT INTO {LEDGER} VALUES ({rendered})")
        except RawLoadError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("pyspark", "py4j")):
                raise RawLoadError(
                    f"applying the batch to {raw_schema}.{manifest.table} on Spark failed: {str(exc).splitlines()[0]}", **where,
                    hint=set_aside_hint(manifest),
                ) from exc
            raise
        return LoadResult(manifest.batch_id, manifest.table, applied_rows, applied=True, schema_notes=notes)

    def _changes_sql(self, raw_table: str, data_cols: list[str], key: list[str], prior: str, times: str,
                     soft_delete: tuple[str, str] = ("", "")) -> str:
        """A snapshot's changes against raw's current state (sources/load/changes.py's rules),
        from every batch but this one: a rerun compares with what raw held before the batch."""
        marked = soft_deleted_sql(*soft_delete, "spark", "b")
        cols = ", ".join(q(c) for c in data_cols)
        extracted, loaded = times.split(", ")
        aliased = f"{extracted} AS {q('_extracted_at')}, {loaded} AS {q('_loaded_at')}"
        order = ", ".join(f"{q(c)} DESC NULLS LAST" for c in ORDER)
        part = ", ".join(q(k) for k in key)
        match = " AND ".join(f"c.{q(k)} = b.{q(k)}" for k in key)
        same = " AND ".join(f"c.{q(c)} <=> b.{q(c)}" for c in data_cols if c not in key)
        tomb = ", ".join(f"c.{q(c)}" if c in key else f"CAST(NULL AS {t}) AS {q(c)}"
                         for c, t in self._column_types(raw_table, data_cols))
        return (
            f"WITH current_rows AS (SELECT {cols}, {q(DELETED)} FROM (SELECT {cols}, {q(DELETED)}, "
            f"ROW_NUMBER() OVER (PARTITION BY {part} ORDER BY {order}) AS _rn FROM {raw_table} WHERE {prior}) AS v "
            f"WHERE _rn = 1) "
            f"SELECT {', '.join(f'b.{q(c)}' for c in data_cols)}, b._batch_row, {aliased}, "
            f"{marked} AS {q(DELETED)} FROM _elt_typed AS b WHERE NOT EXISTS (SELECT 1 FROM current_rows AS c WHERE {match} "
            f"AND COALESCE(c.{q(DELETED)}, FALSE) = ({marked}){' AND ' + same if same else ''}) "
            f"UNION ALL SELECT {tomb}, CAST(NULL AS BIGINT), {times}, TRUE FROM current_rows AS c "
            f"WHERE NOT COALESCE(c.{q(DELETED)}, FALSE) AND NOT EXISTS (SELECT 1 FROM _elt_typed AS b WHERE {match})"
        )

    def _column_types(self, raw_table: str, data_cols: list[str]) -> list[tuple[str, str]]:
        types = {f.name: f.dataType.simpleString() for f in self.spark.table(raw_table).schema.fields}
        return [(c, types.get(c, "string")) for c in data_cols]

    def _ensure_table(self, raw_schema: str, manifest: Manifest, where: dict[str, str], policy: str) -> tuple[tuple[str, ...], dict[str, str]]:
        """Create or evolve the raw table; returns schema notes and each data column's raw type."""
        self.sql(f"CREATE DATABASE IF NOT EXISTS {q(raw_schema)}")
        batch = [(c["name"], spark_type(c["type"])) for c in manifest.columns]
        table = qtable(raw_schema, manifest.table)
        if not self._exists(raw_schema, manifest.table):
            meta = [(n, "STRING" if t == "TEXT" else t) for n, t in METADATA_COLUMNS if n != "_batch_id"]
            columns = ", ".join(f"{q(n)} {t}" for n, t in [*batch, *meta, ("_batch_id", "STRING")])
            self.sql(f"CREATE TABLE {table} ({columns}) USING parquet PARTITIONED BY ({q('_batch_id')})")
            return (), dict(batch)
        meta_names = {m for m, _ in METADATA_COLUMNS}
        existing = {f.name: exp.DataType.build(f.dataType.simpleString(), dialect=DIALECT).sql(DIALECT)
                    for f in self.spark.table(table).schema.fields if f.name not in meta_names}
        normal = [(n, exp.DataType.build(t, dialect=DIALECT).sql(DIALECT)) for n, t in batch]
        plan = plan_schema(existing, normal, policy, where, f"{raw_schema}.{manifest.table}")
        if plan.add:
            added = ", ".join(f"{q(n)} {t}" for n, t in plan.add)
            self.sql(f"ALTER TABLE {table} ADD COLUMNS ({added})")
        types = {**existing, **dict(plan.add)}
        return plan.notes, {n: types.get(n, t) for n, t in normal}
