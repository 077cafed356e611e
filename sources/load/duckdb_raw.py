"""Append landed batches to raw tables in a DuckDB warehouse, one transaction per batch.

Each raw row carries its batch id, its row number inside the batch's Parquet file, the extraction
time and the load time, so it can be traced to its landing file. The ledger
``elt_meta.loaded_batches`` records every batch applied; the batch's rows and its ledger entry
commit together, so a batch is in raw completely or not at all, and applying it again is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from sqlglot import exp

from sources.errors import RawLoadError
from sources.landing.manifest import Manifest
from sources.types import parse_type

DIALECT = "duckdb"
META_SCHEMA = "elt_meta"
LEDGER_TABLE = "loaded_batches"
METADATA_COLUMNS = (
    ("_batch_id", "TEXT"),
    ("_batch_row", "BIGINT"),
    ("_extracted_at", "TIMESTAMP"),
    ("_loaded_at", "TIMESTAMP"),
)


def q(name: str) -> str:
    """Quote an identifier for DuckDB.

    >>> print(q("order items"))
    "order items"
    """
    return exp.to_identifier(name, quoted=True).sql(DIALECT)


def qtable(schema: str, table: str) -> str:
    return exp.table_(table, db=schema, quoted=True).sql(DIALECT)


LEDGER = qtable(META_SCHEMA, LEDGER_TABLE)
_LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER} (
    batch_id TEXT NOT NULL,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    raw_table TEXT NOT NULL,
    rows BIGINT NOT NULL,
    extracted_at TIMESTAMP NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    origin_sha256 TEXT,
    PRIMARY KEY (source, table_name, batch_id)
)
"""


@dataclass(frozen=True)
class LoadResult:
    batch_id: str
    table: str
    rows: int
    applied: bool  # False when the ledger already had the batch


class DuckDBRaw:
    """Raw tables and the batch ledger in one DuckDB file."""

    def __init__(self, database: Path | str) -> None:
        self.database = str(database)
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(self.database)
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(META_SCHEMA)}")
        self.con.execute(_LEDGER_DDL)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDBRaw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def loaded_batch_ids(self, source: str, table: str) -> set[str]:
        rows = self.con.execute(
            f"SELECT batch_id FROM {LEDGER} WHERE source = ? AND table_name = ?", [source, table]
        ).fetchall()
        return {r[0] for r in rows}

    def load(self, manifest: Manifest, files: list[Path], raw_schema: str) -> LoadResult:
        """Apply one landed batch. Idempotent: a batch already in the ledger is skipped."""
        where = {"source": manifest.source, "table": manifest.table, "batch_id": manifest.batch_id}
        raw_table = qtable(raw_schema, manifest.table)
        loaded_at = datetime.now(UTC).replace(tzinfo=None)
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            seen = con.execute(
                f"SELECT 1 FROM {LEDGER} WHERE source = ? AND table_name = ? AND batch_id = ?",
                [manifest.source, manifest.table, manifest.batch_id],
            ).fetchone()
            if seen:
                con.execute("ROLLBACK")
                return LoadResult(manifest.batch_id, manifest.table, manifest.rows, applied=False)
            self._ensure_table(raw_schema, manifest, where)
            data_cols = [c["name"] for c in manifest.columns]
            target_cols = ", ".join(q(c) for c in [*data_cols, *(m for m, _ in METADATA_COLUMNS)])
            select_cols = ", ".join(q(c) for c in data_cols)
            inserted = con.execute(
                f"""
                INSERT INTO {raw_table} ({target_cols})
                SELECT {select_cols}, ?, file_row_number, ?, ?
                FROM read_parquet(?, file_row_number = true)
                """,
                [
                    manifest.batch_id,
                    manifest.extracted_at_dt.astimezone(UTC).replace(tzinfo=None),
                    loaded_at,
                    [str(f) for f in files],
                ],
            ).fetchone()
            count = int(inserted[0]) if inserted else 0
            if count != manifest.rows:
                raise RawLoadError(
                    f"landing files hold {count} rows but the manifest says {manifest.rows}",
                    **where,
                    hint="the batch is corrupt: restore its files from backup or re-extract the table",
                )
            con.execute(
                f"INSERT INTO {LEDGER} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    manifest.batch_id,
                    manifest.source,
                    manifest.table,
                    f"{raw_schema}.{manifest.table}",
                    manifest.rows,
                    manifest.extracted_at_dt.astimezone(UTC).replace(tzinfo=None),
                    loaded_at,
                    manifest.origin.get("sha256"),
                ],
            )
            con.execute("COMMIT")
        except RawLoadError:
            con.execute("ROLLBACK")
            raise
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise RawLoadError(
                f"appending to {raw_schema}.{manifest.table} failed and was rolled back: {exc}",
                **where,
                hint="fix the cause, then rerun the load; the batch stays in landing and will be applied then",
            ) from exc
        return LoadResult(manifest.batch_id, manifest.table, manifest.rows, applied=True)

    def _ensure_table(self, raw_schema: str, manifest: Manifest, where: dict[str, str]) -> None:
        self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {q(raw_schema)}")
        wanted = [(c["name"], parse_type(c["type"]).sql(DIALECT)) for c in manifest.columns]
        wanted += list(METADATA_COLUMNS)
        existing = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
            [raw_schema, manifest.table],
        ).fetchall()
        if not existing:
            columns = ",\n    ".join(f"{q(n)} {t}" for n, t in wanted)
            self.con.execute(f"CREATE TABLE {qtable(raw_schema, manifest.table)} (\n    {columns}\n)")
            return
        have = {n: _normal_type(t) for n, t in existing}
        changed = [
            f"{n}: raw has {have.get(n, 'no such column')}, batch has {_normal_type(t)}"
            for n, t in wanted
            if have.get(n) != _normal_type(t)
        ]
        changed += [f"{n}: in raw, not in the batch" for n in have if n not in dict(wanted)]
        if changed:
            raise RawLoadError(
                f"the batch's columns differ from raw table {raw_schema}.{manifest.table}: {'; '.join(changed)}",
                **where,
                hint="a source schema change: update the declaration and migrate the raw table "
                "(see docs/runbook.md, 'Schema change')",
            )


def _normal_type(sql_type: str) -> str:
    return exp.DataType.build(sql_type, dialect=DIALECT).sql(DIALECT)
