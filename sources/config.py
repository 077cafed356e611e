"""Source declarations: one YAML file per source under ``sources/declarations/``.

A declaration says what a source is (``kind``: files, postgres or rest_api), who owns it, when it
runs, how fresh it must be and, per table, the key, the cursor and the contract its rows must
meet. Connection settings are given as environment-variable *names*; no secret value is ever in
a declaration. It is validated when loaded: every wrong field is listed in one ``ConfigError``.

>>> src = load_source("jaffle_shop")
>>> src.tables["orders"].primary_key
('id',)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sources.errors import ConfigError
from sources.load.schema import POLICIES
from sources.types import ColumnType, parse_type

# ELT_DECLARATIONS_DIR points elsewhere (a deployment's own folder, or a test's copy)
DECLARATIONS_DIR = Path(os.environ.get("ELT_DECLARATIONS_DIR") or Path(__file__).resolve().parent / "declarations")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
KINDS = ("files", "postgres", "rest_api")
FORMATS = ("csv", "jsonl", "parquet")
PAGINATION = ("none", "page", "offset", "cursor", "next_link")
PAGINATION_KEYS = frozenset({
    "type", "page_param", "page_size_param", "page_size", "start", "offset_param", "limit_param", "limit",
    "cursor_param", "cursor_path", "next_path", "max_pages", "stop_on_short_page",
})
AUTH = ("none", "bearer", "api_key")


def parse_duration(text: str) -> int:
    """Seconds in ``'90s'``, ``'15m'``, ``'26h'``, ``'2d'``.

    >>> parse_duration("26h")
    93600
    """
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 26h or 2d")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


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
    max_retries: int = 5
    raw_schema_name: str = ""  # default raw_<name>; sources splitting one system may share a schema
    tables: dict[str, TableSpec] = field(default_factory=dict)

    @property
    def raw_schema(self) -> str:
        """The warehouse schema that holds this source's raw tables."""
        return self.raw_schema_name or f"raw_{self.name}"


def available_sources(directory: Path = DECLARATIONS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_source(name_or_path: str | Path, directory: Path = DECLARATIONS_DIR) -> SourceSpec:
    """Load and validate a source declaration by name (``jaffle_shop``) or by file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_sources(directory)) or "none"
        raise ConfigError(
            f"no source declaration at {path}",
            source=str(name_or_path),
            hint=f"declared sources: {known}; add sources/declarations/<name>.yaml to declare one",
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", source=path.stem) from exc
    spec = parse_source(raw, origin=str(path))
    if spec.name != path.stem:  # job names, locks and landing folders use the file name
        raise ConfigError(f"{path} declares name {spec.name!r}, but its file is named {path.stem!r}", source=spec.name,
                          hint=f"rename the file to {spec.name}.yaml or set name: {path.stem}")
    return spec


class _Checker:
    """Reads typed fields from a mapping, collecting problems instead of raising at the first."""

    def __init__(self, raw: dict[str, Any], where: str, problems: list[str]) -> None:
        self.raw, self.where, self.problems = raw, where, problems

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else f"'{key}'"

    def text(self, key: str, default: str | None = None, allowed: tuple[str, ...] = (), pattern: re.Pattern[str] | None = None) -> str:
        value = self.raw.get(key, default)
        if value is None:
            self.problems.append(f"{self._at(key)} is required")
            return ""
        if not isinstance(value, str):
            self.problems.append(f"{self._at(key)} must be a string, got {type(value).__name__}")
            return ""
        if allowed and value not in allowed:
            self.problems.append(f"{self._at(key)} is {value!r}; allowed: {', '.join(allowed)}")
        if pattern and value and not pattern.match(value):
            self.problems.append(f"{self._at(key)} {value!r} has the wrong form ({pattern.pattern})")
        return value

    def duration(self, key: str, default: str | None = None) -> int | None:
        value = self.raw.get(key, default)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problems.append(f"{self._at(key)}: {exc}")
            return None

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.raw.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum:
            self.problems.append(f"{self._at(key)} must be a number >= {minimum}")
            return default
        return float(value)

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key, {})
        if not isinstance(value, dict):
            self.problems.append(f"{self._at(key)} must be a mapping")
            return {}
        return value

    def unknown(self, allowed: set[str]) -> None:
        extra = set(self.raw) - allowed
        if extra:
            self.problems.append(f"{self.where or 'declaration'}: unknown keys {sorted(extra)}")


_SOURCE_KEYS = {"name", "kind", "format", "path", "owner", "description", "schedule", "freshness", "env_prefix",
                "base_url", "base_url_env", "auth", "timeout_s", "max_retries", "raw_schema", "tables"}
_TABLE_KEYS = {"file", "pattern", "source_table", "endpoint", "records_path", "pagination", "params",
               "updated_since_param", "primary_key", "columns", "description", "cursor_field", "lookback",
               "freshness", "schema_policy", "window_column", "max_row_mb",
               "event_time", "event_time_from", "sequence_key"}


def parse_source(raw: Any, origin: str = "<declaration>") -> SourceSpec:
    """Validate a parsed declaration; collect every problem before raising."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a source declaration must be a mapping")
    c = _Checker(raw, "", problems)
    c.unknown(_SOURCE_KEYS)
    name = c.text("name", pattern=_NAME)
    kind = c.text("kind", allowed=KINDS)
    auth = c.mapping("auth")
    spec = SourceSpec(
        name=name,
        kind=kind,
        owner=c.text("owner"),
        description=c.text("description", ""),
        schedule=c.text("schedule", "@daily"),
        freshness_s=c.duration("freshness"),
        format=c.text("format", "csv", allowed=FORMATS),
        path=c.text("path", ""),
        env_prefix=c.text("env_prefix", ""),
        base_url=c.text("base_url", ""),
        base_url_env=c.text("base_url_env", ""),
        auth=auth,
        timeout_s=c.number("timeout_s", 30.0, minimum=0.1),
        max_retries=int(c.number("max_retries", 5)),
        raw_schema_name=c.text("raw_schema", "", pattern=_NAME),
    )
    if kind == "files" and not spec.path:
        problems.append("'path' is required for kind files (a folder, or s3://bucket/prefix)")
    if kind == "postgres" and not re.match(r"^[A-Z][A-Z0-9_]*_$", spec.env_prefix):
        problems.append("'env_prefix' is required for kind postgres, e.g. APPDB_ (reads APPDB_HOST, APPDB_PASSWORD, ...)")
    if kind == "rest_api":
        if not (spec.base_url or spec.base_url_env):
            problems.append("'base_url' or 'base_url_env' is required for kind rest_api")
        if spec.base_url_env and not _ENV_NAME.match(spec.base_url_env):
            problems.append("'base_url_env' must be an environment variable name")
        auth_type = auth.get("type", "none")
        if auth_type not in AUTH:
            problems.append(f"'auth.type' is {auth_type!r}; allowed: {', '.join(AUTH)}")
        elif auth_type != "none":
            secret = auth.get("token_env")
            if not isinstance(secret, str) or not _ENV_NAME.match(secret):
                problems.append("'auth.token_env' must name the environment variable holding the secret (never the secret)")
            if auth_type == "api_key" and not isinstance(auth.get("header"), str):
                problems.append("'auth.header' is required for api_key auth, e.g. X-API-Key")

    tables = raw.get("tables")
    if not isinstance(tables, dict) or not tables:
        problems.append("'tables' must map table names to table declarations")
        tables = {}
    for table_name, table_raw in tables.items():
        table = _parse_table(str(table_name), table_raw, kind, problems)
        if table is not None:
            spec.tables[table.name] = table

    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{origin} has {len(problems)} problem(s):\n{listing}",
            source=name or None,
            hint=f"fix {origin}; see docs/reference/sources.md for every key",
        )
    return spec


def _parse_table(name: str, raw: Any, kind: str, problems: list[str]) -> TableSpec | None:
    where = f"tables.{name}"
    if not _NAME.match(name):
        problems.append(f"{where}: table name must be lower_snake_case")
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with primary_key and columns")
        return None
    c = _Checker(raw, where, problems)
    c.unknown(_TABLE_KEYS)
    columns: list[ColumnSpec] = []
    cols_raw = raw.get("columns", {})
    if not isinstance(cols_raw, dict) or (not cols_raw and kind != "postgres"):
        problems.append(f"{where}.columns: required, a mapping of column name to type"
                        + (" (postgres tables may omit it: types come from the catalog)" if kind != "postgres" else ""))
        cols_raw = {}
    for col_name, col_raw in cols_raw.items():
        col_name = str(col_name)
        if col_name.startswith("_"):
            problems.append(f"{where}.columns.{col_name}: names starting with '_' are reserved for load metadata")
        description = ""
        type_name = col_raw
        if isinstance(col_raw, dict):
            type_name = col_raw.get("type")
            description = str(col_raw.get("description", ""))
        if not isinstance(type_name, str):
            problems.append(f"{where}.columns.{col_name}: a type is required")
            continue
        try:
            columns.append(ColumnSpec(col_name, parse_type(type_name), description))
        except ValueError as exc:
            problems.append(f"{where}.columns.{col_name}: {exc}")
    pk_raw = raw.get("primary_key")
    pk = [pk_raw] if isinstance(pk_raw, str) else pk_raw
    if not isinstance(pk, list) or not pk or not all(isinstance(col, str) for col in pk):
        problems.append(f"{where}.primary_key: required, a column name or a list of them")
        pk = []
    for col in pk:
        if cols_raw and col not in cols_raw:
            problems.append(f"{where}.primary_key: {col!r} is not a declared column")
    cursor_field = raw.get("cursor_field")
    if cursor_field is not None and (not isinstance(cursor_field, str) or (cols_raw and cursor_field not in cols_raw)):
        problems.append(f"{where}.cursor_field: {cursor_field!r} must be a declared column")
    window_column = raw.get("window_column")
    if window_column is not None and (not isinstance(window_column, str) or (cols_raw and window_column not in cols_raw)):
        problems.append(f"{where}.window_column: {window_column!r} must be a declared column")
    if window_column is not None and kind != "postgres":
        problems.append(f"{where}.window_column: only postgres tables can be read by window (files and APIs are re-read whole)")
    for key in ("event_time", "sequence_key"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or (cols_raw and value not in cols_raw)):
            problems.append(f"{where}.{key}: {value!r} must be a declared column")
    parent = raw.get("event_time_from")
    event_time_from = None
    if parent is not None:
        if (not isinstance(parent, dict) or set(parent) != {"table", "key"}
                or not all(isinstance(v, str) for v in parent.values())):
            problems.append(f"{where}.event_time_from: must be {{table: <parent table>, key: <column of this table "
                            "holding the parent's primary key>}}")
        elif cols_raw and parent["key"] not in cols_raw:
            problems.append(f"{where}.event_time_from.key: {parent['key']!r} must be a declared column")
        else:
            event_time_from = (parent["table"], parent["key"])
        if raw.get("event_time") is not None:
            problems.append(f"{where}: give event_time or event_time_from, not both")
    if kind == "files" and bool(raw.get("file")) == bool(raw.get("pattern")):
        problems.append(f"{where}: give exactly one of file (one file, re-read when it changes) or pattern (each new file once)")
    if kind == "postgres" and not re.match(r"^[A-Za-z_][\w$]*\.[A-Za-z_][\w$]*$", str(raw.get("source_table", ""))):
        problems.append(f"{where}.source_table: required for postgres, as schema.table")
    if cursor_field and "lookback" not in raw:
        problems.append(f"{where}.lookback: required with cursor_field: how much earlier than the last cursor the "
                        "next read starts, for rows that commit after a later one was read (e.g. 15m; 0s only "
                        "for a cursor that never commits out of order)")
    if raw.get("updated_since_param") and not cursor_field:
        problems.append(f"{where}.updated_since_param needs cursor_field: the cursor is the newest value of that column")
    if kind == "rest_api" and not isinstance(raw.get("endpoint"), str):
        problems.append(f"{where}.endpoint: required for rest_api, a path like /v1/products")
    if kind == "rest_api" and cursor_field and not raw.get("updated_since_param"):
        problems.append(f"{where}.cursor_field without updated_since_param: the API cannot be asked for new records "
                        "only, so every run would append the whole endpoint again; set updated_since_param, or drop "
                        "cursor_field (the endpoint is then read as a snapshot, landed only when it changes)")
    pagination = c.mapping("pagination")
    if kind == "rest_api" and pagination.get("type", "none") not in PAGINATION:
        problems.append(f"{where}.pagination.type is {pagination.get('type')!r}; allowed: {', '.join(PAGINATION)}")
    if "stop_on_short_page" in pagination and not isinstance(pagination["stop_on_short_page"], bool):
        problems.append(f"{where}.pagination.stop_on_short_page must be true or false")
    unknown = sorted(set(pagination) - PAGINATION_KEYS)
    if kind == "rest_api" and unknown:
        problems.append(f"{where}.pagination: unknown key(s) {unknown}; allowed: {', '.join(sorted(PAGINATION_KEYS))}")
    records_path = raw.get("records_path", "")
    if not isinstance(records_path, str):
        problems.append(f"{where}.records_path must be a dotted path like data.items")
        records_path = ""
    return TableSpec(
        name=name,
        columns=tuple(columns),
        primary_key=tuple(pk),
        description=c.text("description", ""),
        cursor_field=cursor_field if isinstance(cursor_field, str) else None,
        lookback_s=c.duration("lookback", "0s") or 0,
        window_column=window_column if isinstance(window_column, str) else None,
        event_time=raw.get("event_time") if isinstance(raw.get("event_time"), str) else None,
        event_time_from=event_time_from,
        sequence_key=raw.get("sequence_key") if isinstance(raw.get("sequence_key"), str) else None,
        freshness_s=c.duration("freshness"),
        schema_policy=c.text("schema_policy", "evolve", allowed=POLICIES),
        file=raw.get("file") or None,
        pattern=raw.get("pattern") or None,
        source_table=raw.get("source_table") or None,
        endpoint=raw.get("endpoint") or None,
        records_path=tuple(p for p in records_path.split(".") if p),
        pagination=pagination,
        params=c.mapping("params"),
        updated_since_param=raw.get("updated_since_param") or None,
        max_row_mb=c.number("max_row_mb", 1.0, minimum=0.0625),
    )
