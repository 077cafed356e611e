"""What every raw store shares: the metadata columns, the ledger and cursor tables, row numbering.

A raw store appends one landed batch per transaction: the batch's rows, its ledger entry and (for
incremental tables) the advance of the table's cursor commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa

from sources.landing.manifest import Manifest
from sources.landing.store import SetAside

META_SCHEMA = "elt_meta"
LEDGER_TABLE = "loaded_batches"
CURSOR_TABLE = "source_cursors"
IDENTITY_TABLE = "warehouse_identity"  # one id per warehouse, written into the manifests it lands (0079)
IDENTITY_COLUMNS = "id TEXT NOT NULL, created_at TIMESTAMP NOT NULL"
SET_ASIDE_TABLE = "set_aside_batches"  # landed batches raw must not apply (`elt set-aside`)

METADATA_COLUMNS = (
    ("_batch_id", "TEXT"),
    ("_batch_row", "BIGINT"),
    ("_extracted_at", "TIMESTAMP"),
    ("_loaded_at", "TIMESTAMP"),
    # TRUE on a tombstone: the key was absent from a snapshot (sources/load/changes.py)
    ("_deleted", "BOOLEAN"),
)

LEDGER_COLUMNS = """
    batch_id TEXT NOT NULL,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    raw_table TEXT NOT NULL,
    rows BIGINT NOT NULL,
    extracted_at TIMESTAMP NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    origin_sha256 TEXT,
    PRIMARY KEY (source, table_name, batch_id)
"""

CURSOR_COLUMNS = """
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    cursor_field TEXT NOT NULL,
    cursor_value TEXT,
    batch_id TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, table_name)
"""


SET_ASIDE_COLUMNS = """
    batch_id TEXT NOT NULL,
    source TEXT NOT NULL,
    table_name TEXT NOT NULL,
    raw_table TEXT NOT NULL,
    rows BIGINT NOT NULL,
    set_aside_by TEXT NOT NULL,
    set_aside_at TIMESTAMP NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (source, table_name, batch_id)
"""


@dataclass(frozen=True)
class LoadResult:
    batch_id: str
    table: str
    rows: int
    applied: bool  # False when the ledger already had the batch
    schema_notes: tuple[str, ...] = ()  # columns added to raw / absent from the batch


@dataclass(frozen=True)
class DeclaredTable:
    """What a raw store's table code reads of a manifest, for a table created from its
    declaration before any batch (``create_declared`` of the DuckDB and PostgreSQL stores)."""

    table: str
    columns: list[dict[str, str]]
    primary_key: list[str]


class RawStore(Protocol):
    dialect: str

    def loaded_batch_ids(self, source: str, table: str) -> set[str]: ...
    def cursor(self, source: str, table: str) -> str | None: ...
    def seen_rows(self, raw_schema: str, table: str, key: list[str], cursor_field: str, since: object,
                  rows: pa.Table, newest_by_cursor: bool = False) -> pa.Array: ...
    def load(self, manifest: Manifest, reader: pa.RecordBatchReader | list[str], raw_schema: str, *,
             policy: str = "evolve") -> LoadResult: ...
    def set_aside_ids(self, source: str, table: str) -> set[str]: ...
    def record_set_aside(self, record: SetAside, raw_schema: str) -> None: ...
    def remove_set_aside(self, source: str, table: str, batch_id: str) -> bool: ...
    def close(self) -> None: ...


def probe_table(rows: pa.Table | pa.RecordBatch, key: list[str], cursor_field: str) -> pa.Table:
    """The (key..., cursor) columns of extracted rows plus their position, ``_elt_i``: what a
    lookback check sends to the warehouse (see ``seen_rows``)."""
    cols = list(dict.fromkeys([*key, cursor_field]))  # the cursor may be the key (an increasing id)
    return pa.Table.from_arrays([rows.column(c) for c in cols] + [pa.array(range(rows.num_rows), pa.int64())],
                                names=[*cols, "_elt_i"])


def older_or_same(key: list[str], cursor_field: str, probe: Callable[[str], str], held: Callable[[str], str],
                  newest_by_cursor: bool = False) -> str:
    """The condition under which raw's row (``held``) makes an extracted row (``probe``) not worth
    appending: the same key and the same cursor value (a row the lookback re-reads). With
    ``newest_by_cursor`` (the table declares it), also a later cursor value held: a row from a
    replica that lags behind the host read before it can be an older version, and appended it
    would be the newest extract, which staging's dedupe keeps (a probe: an order moved back a day,
    for good). It is not the default: with stamps taken at a transaction's start (``now()``), two
    concurrent transactions can commit a row's last version with the earlier stamp, and that
    version would be dropped. ``probe`` and ``held`` quote a column for each side. (The PostgreSQL
    store builds the same condition with ``psycopg2.sql``.)

    >>> older_or_same(["id"], "updated_at", lambda c: f"p.{c}", lambda c: f"r.{c}")
    'p.id = r.id AND p.updated_at = r.updated_at'
    >>> older_or_same(["id"], "updated_at", lambda c: f"p.{c}", lambda c: f"r.{c}", newest_by_cursor=True)
    'p.id = r.id AND r.updated_at >= p.updated_at'
    >>> older_or_same(["id"], "id", lambda c: f"p.{c}", lambda c: f"r.{c}", True)  # an increasing id: the key itself
    'p.id = r.id'
    """
    parts = [f"{probe(c)} = {held(c)}" for c in key]
    if cursor_field not in key:
        parts.append(f"{held(cursor_field)} >= {probe(cursor_field)}" if newest_by_cursor
                     else f"{probe(cursor_field)} = {held(cursor_field)}")
    return " AND ".join(parts)


def mask_from_positions(n: int, positions: pa.Array | list[int]) -> pa.Array:
    """A boolean array of length ``n``, true at ``positions``."""
    import numpy as np

    mask = np.zeros(n, dtype=bool)
    index = np.asarray(positions, dtype=np.int64)
    if index.size:
        mask[index] = True
    return pa.array(mask)


def set_aside_hint(manifest: Manifest) -> str:
    """The ``next:`` of a batch that failed to apply: fix the cause, or set the batch aside.

    >>> m = Manifest("B1", "shop", "orders", "2026-12-01T00:00:00+00:00", 1, [], ["id"], [])
    >>> print(set_aside_hint(m))
    fix the cause and rerun the load (the batch stays in landing and is applied then); if the batch itself can never be applied, set it aside so later batches apply: elt set-aside shop orders B1 --reason "..." (docs/runbook.md#a-batch-blocks-its-table)
    """
    return ("fix the cause and rerun the load (the batch stays in landing and is applied then); if the batch itself "
            "can never be applied, set it aside so later batches apply: "
            f'elt set-aside {manifest.source} {manifest.table} {manifest.batch_id} --reason "..." '
            "(docs/runbook.md#a-batch-blocks-its-table)")


def utc_naive(value: datetime) -> datetime:
    """A time as raw tables store it: UTC, without a time zone."""
    return value.astimezone(UTC).replace(tzinfo=None)


def numbered(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """Add ``_batch_row`` (0-based position in the landed file) to every row, in file order."""
    schema = reader.schema.append(pa.field("_batch_row", pa.int64()))

    def batches() -> Iterator[pa.RecordBatch]:
        offset = 0
        for batch in reader:
            rows = pa.array(range(offset, offset + batch.num_rows), pa.int64())
            offset += batch.num_rows
            yield pa.RecordBatch.from_arrays([*batch.columns, rows], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())
