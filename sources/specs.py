"""What the rest of the code reads about a source: frozen dataclasses, made from a validated
declaration (sources/declaration_models.py) by ``sources.config.load_source``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sources.types import ColumnType

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")


def parse_duration(text: str) -> int:
    """Seconds in ``'90s'``, ``'15m'``, ``'26h'``, ``'2d'``.

    >>> parse_duration("26h")
    93600
    """
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 26h or 2d")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def format_duration(seconds: int) -> str:
    """``seconds`` as a declaration writes it, the inverse of ``parse_duration``.

    >>> format_duration(604800), format_duration(129600), format_duration(5400), format_duration(45)
    ('7d', '36h', '90m', '45s')
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: ColumnType
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One table of a source: where it comes from and the contract its rows must meet."""

    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    description: str = ""
    cursor_field: str | None = None
    lookback_s: int = 0
    # a key's version with the larger cursor is the newer one, whichever read brought it (decision 0072)
    newest_by_cursor: bool = False
    # postgres: the business-time column a backfill window selects on (ordered_at), when it
    # differs from the cursor (updated_at); without it a backfill re-reads the whole table
    window_column: str | None = None
    # the transform's windows (docs/decisions/0011): the column whose day places a row in the
    # time-partitioned models (ordered_at); or, for a child table without one, the parent table
    # and the column holding the parent's key ({table: orders, key: order_id}); and the column
    # within which models number rows by that time (customer: an order's rank among its
    # customer's orders), so a late or deleted row also restates its entity's later days
    event_time: str | None = None
    event_time_from: tuple[str, str] | None = None
    sequence_key: str | None = None
    # rows the transform holds out of staging (no event time, a missing or deleted parent): "fail"
    # the transform until they are corrected, or "warn" (it passes and reports them)
    held_rows: str = "fail"
    # with held_rows "warn": seconds a row may stay held before it fails the transform as under "fail"
    held_rows_fail_after_s: int | None = None
    # the column by which the source marks a row deleted (is_deleted TRUE, deleted_at not NULL):
    # raw records such a row with _deleted = TRUE, so staging drops its key (a cursor read never
    # sees a row that is removed, only one that is marked)
    soft_delete: str | None = None
    freshness_s: int | None = None
    schema_policy: str = "evolve"
    # files: one file (re-extracted when it changes) or a glob (each new file once)
    file: str | None = None
    pattern: str | None = None
    # postgres: the table or view to read, "schema.table"
    source_table: str | None = None
    # rest_api
    endpoint: str | None = None
    records_path: tuple[str, ...] = ()
    pagination: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    updated_since_param: str | None = None
    # postgres: the largest row (as COPY text) the streaming parser must hold at once
    max_row_mb: float = 1.0

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    owner: str
    description: str = ""
    schedule: str = "@daily"
    freshness_s: int | None = None
    # files
    format: str = "csv"
    path: str = ""
    # postgres: variables <env_prefix>HOST, PORT, USER, PASSWORD(_FILE), DATABASE, SSLMODE
    env_prefix: str = ""
    # rest_api
    base_url: str = ""
    base_url_env: str = ""
    auth: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    request_deadline_s: float = 300.0  # one request in all: a server dripping bytes never ends otherwise
    max_retries: int = 5
    raw_schema_name: str = ""  # default raw_<name>; sources splitting one system may share a schema
    tables: dict[str, TableSpec] = field(default_factory=dict)

    @property
    def raw_schema(self) -> str:
        """The warehouse schema that holds this source's raw tables."""
        return self.raw_schema_name or f"raw_{self.name}"

    def window_parent(self, table: TableSpec) -> TableSpec | None:
        """postgres: the parent a child table without a ``window_column`` is read through in a
        backfill window (its ``event_time_from`` parent, when that declares a ``window_column`` and
        a one-column key): the child's rows whose parent key is among the window's parents. Other
        tables without a ``window_column`` are read whole."""
        if self.kind != "postgres" or table.window_column or not table.event_time_from:
            return None
        parent = self.tables.get(table.event_time_from[0])
        if parent is None or not parent.window_column or len(parent.primary_key) != 1 or not parent.source_table:
            return None
        return parent
