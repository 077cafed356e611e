"""What an extractor hands to the pipeline: one batch-to-be of one table."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sources.config import ColumnSpec, TableSpec


@dataclass
class Extract:
    """Rows to land as one batch, with what is needed to trace them and to advance the cursor."""

    table: TableSpec
    columns: list[ColumnSpec]  # the contract of this batch (declared, or read from a catalog)
    batches: Iterator[pa.RecordBatch]
    origin: dict[str, Any] = field(default_factory=dict)
    cursor_from: str | None = None  # lower bound used for this extract (incremental tables)
    land_if_empty: bool = True  # snapshots land even when empty; incremental extracts do not
    # True when the source itself enforces the primary key (a PRIMARY KEY constraint on exactly
    # those columns, read in one consistent statement): the loader's own key check is redundant.
    key_enforced_by_source: bool = False
    # False for a backfill window's extract: its rows are not the newest, the cursor stays put
    advances_cursor: bool = True
    # True when the extractor ran ``sources.contracts.check_values`` on every batch it yields (the
    # file and REST extractors do while casting, naming the file's row and line): the pipeline
    # does not run the same checks a second time
    values_checked: bool = False
    # For a CSV file: the file line each given data row starts on (what an editor shows), so that
    # a refusal found after landing (a duplicated or empty key) names lines as well as rows
    file_lines: Callable[[Iterable[int]], dict[int, int]] | None = None

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type.arrow) for c in self.columns])

    def manifest_columns(self) -> list[dict[str, str]]:
        return [{"name": c.name, "type": c.type.name, "arrow": str(c.type.arrow)} for c in self.columns]
