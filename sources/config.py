"""Source declarations: one YAML file per source under ``sources/declarations/``.

A declaration says what a source is (``kind``: files, postgres or rest_api), who owns it, when it
runs, how fresh it must be and, per table, the key, the cursor and the contract its rows must
meet. Connection settings are given as environment-variable *names*; no secret value is ever in
a declaration. It is validated when loaded, by the pydantic models below (an unknown key is
refused at every level), and every problem is listed in one ``ConfigError``. The rest of the
code reads the frozen dataclasses ``SourceSpec``, ``TableSpec`` and ``ColumnSpec``, never the models.

>>> src = load_source("jaffle_shop")
>>> src.tables["orders"].primary_key
('id',)

The JSON Schema editors check the YAML with is generated from the same models
(``python -m sources.config --schema > docs/reference/source-declaration.schema.json``).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      ValidationInfo, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sources.errors import ConfigError
from sources.load.schema import POLICIES
from sources.types import TYPE_NAMES, ColumnType, parse_type

# ELT_DECLARATIONS_DIR points elsewhere (a deployment's own folder, or a test's copy)
DECLARATIONS_DIR = Path(os.environ.get("ELT_DECLARATIONS_DIR") or Path(__file__).resolve().parent / "declarations")
_NAME = r"^[a-z][a-z0-9_]{0,62}$"
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
Kind = Literal["files", "postgres", "rest_api"]
Format = Literal["csv", "jsonl", "parquet"]
Paging = Literal["none", "page", "offset", "cursor", "next_link"]
AuthType = Literal["none", "bearer", "api_key"]
Policy = Literal["evolve", "strict", "evolve_cast"]
KINDS, FORMATS, PAGINATION, AUTH = get_args(Kind), get_args(Format), get_args(Paging), get_args(AuthType)
if get_args(Policy) != POLICIES:  # the loader's list is the truth; the Literal is for the schema
    raise ImportError(f"sources.config.Policy {get_args(Policy)} differs from sources.load.schema.POLICIES {POLICIES}")


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


def parse_source(raw: Any, origin: str = "<declaration>") -> SourceSpec:
    """Validate a parsed declaration; collect every problem before raising.

    >>> parse_source({"name": "shop", "kind": "files", "owner": "x", "path": ".", "tables": {"orders": {
    ...     "file": "o.csv", "primary_key": "id", "columns": {"id": {"type": "string", "nullable": False}}}}})
    Traceback (most recent call last):
    ...
    sources.errors.ConfigError: [source=shop] <declaration> has 1 problem(s):
      - tables.orders.columns.id: unknown key(s) ['nullable']; allowed: description, type (nullable is not ...
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a source declaration must be a mapping")
    try:
        model = _Source.model_validate(raw, context={"kind": raw.get("kind")})
    except ValidationError as exc:
        problems = list(dict.fromkeys(_explain(exc.errors(include_url=False))))
        listing = "\n".join(f"  - {p}" for p in problems)
        name = raw.get("name")
        raise ConfigError(f"{origin} has {len(problems)} problem(s):\n{listing}",
                          source=name if isinstance(name, str) and name else None,
                          hint=f"fix {origin}; see docs/reference/sources.md for every key") from None
    return model.spec()


def declaration_json_schema() -> dict[str, Any]:
    """The JSON Schema of a declaration, for editors (docs/reference/source-declaration.schema.json).

    >>> declaration_json_schema()["properties"]["kind"]["enum"]
    ['files', 'postgres', 'rest_api']
    """
    schema = _Source.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "generated by `python -m sources.config --schema`; do not edit", **schema}


# ---- the models: the shape of every key ------------------------------------------------------

def _is_duration(text: str) -> str:
    parse_duration(text)
    return text


def _ci(word: str) -> str:  # a case-insensitive JSON Schema pattern (ECMA regex has no (?i))
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in word)


_TYPE_PATTERN = (r"^\s*(" + "|".join(_ci(t) for t in TYPE_NAMES[:-1])
                 + "|" + _ci("decimal") + r"\(\d{1,2},\s*\d{1,2}\))\s*$")
Duration = Annotated[str, AfterValidator(_is_duration), Field(
    json_schema_extra={"pattern": r"^\s*\d+\s*[smhd]\s*$"},
    description="A duration: a whole number and s, m, h or d (90s, 15m, 26h, 2d).")]
Column = Annotated[str, Field(min_length=1)]
TypeName = Annotated[str, Field(description=f"One of: {', '.join(TYPE_NAMES)} (case-insensitive).",
                                json_schema_extra={"pattern": _TYPE_PATTERN})]  # checked by parse_type


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Auth(_Strict):
    """How the API is authenticated. Secrets are named by environment variable, never given."""

    model_config = ConfigDict(title="auth")

    type: AuthType = Field("none", description="none, bearer (Authorization: Bearer <secret>) or api_key.")
    token_env: str | None = Field(None, description="The environment variable holding the secret "
                                                    "(or <token_env>_FILE naming a file).")
    header: str | None = Field(None, description="api_key: the header that carries the secret, e.g. X-API-Key.")


class _Pagination(_Strict):
    """How to get the next page; unset parameters take the defaults in docs/reference/sources.md."""

    model_config = ConfigDict(title="pagination")

    type: Paging = Field("none", description="none, page, offset, cursor or next_link.")
    page_param: str | None = Field(None, description="page: the page number parameter (page).")
    page_size_param: str | None = Field(None, description="page: the page size parameter (per_page).")
    page_size: int | None = Field(None, ge=1, description="page: records asked per page (100).")
    start: int | None = Field(None, description="page: the first page number (1).")
    offset_param: str | None = Field(None, description="offset: the offset parameter (offset).")
    limit_param: str | None = Field(None, description="offset: the limit parameter (limit).")
    limit: int | None = Field(None, ge=1, description="offset: records asked per request (100).")
    cursor_param: str | None = Field(None, description="cursor: the parameter that carries the token (cursor).")
    cursor_path: str | None = Field(None, description="cursor: the dotted path of the next token in the body "
                                                      "(next_cursor).")
    next_path: str | None = Field(None, description="next_link: the dotted path of the next URL in the body (next).")
    max_pages: int | None = Field(None, ge=1, description="The most requests per table (10000).")
    stop_on_short_page: bool | None = Field(None, strict=True, description="page/offset: stop at a page "
                                            "shorter than asked (default false: at an empty page).")


class _ColumnMapping(_Strict):
    """A column written as a mapping: its type and a description for external_models.yaml."""

    model_config = ConfigDict(title="column")

    type: TypeName
    description: str = Field("", description="Becomes the raw column's description (grain, units: cents).")


class _Parent(_Strict):
    """A child table's time comes from its parent: {table: orders, key: order_id}."""

    model_config = ConfigDict(title="event_time_from")

    table: str = Field(description="The parent table, of the same source.")
    key: Column = Field(description="The column of this table holding the parent's primary key.")


def _column_form(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


def _key_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


ColumnDecl = Annotated[_ColumnMapping, BeforeValidator(_column_form, json_schema_input_type=TypeName | _ColumnMapping)]
Key = Annotated[list[Column], Field(min_length=1),
                BeforeValidator(_key_list, json_schema_input_type=Column | list[Column])]
Problem = tuple[tuple[str | int, ...], str]  # (where in the model, our message)


class _Checked(_Strict):
    """Adds the rules that join several keys (``_problems``). They run even when some keys are
    wrong, on the keys that are right, so one error lists every problem of the declaration."""

    def _problems(self, raw: dict[str, Any], bad: set[str], kind: Any) -> list[Problem]:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _rules(cls, data: Any, handler: Any, info: ValidationInfo) -> Any:
        try:
            model, errors = handler(data), []
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            errors = exc.errors(include_url=False)
            model = cls._partial(data, {e["loc"][0] for e in errors if e["loc"]}, info.context)
        raw = data if isinstance(data, dict) else {}
        problems = model._problems(raw, {e["loc"][0] for e in errors if e["loc"]}, (info.context or {}).get("kind"))
        if not errors and not problems:
            return model
        details = [InitErrorDetails(type=PydanticCustomError(e["type"], "{message}", {
            **{k: v if isinstance(v, (str, int, float)) else str(v) for k, v in (e.get("ctx") or {}).items()},
            "message": e["msg"]}), loc=e["loc"], input=e["input"]) for e in errors]
        details += [InitErrorDetails(type=PydanticCustomError("rule", "{message}", {"message": text}), loc=loc,
                                     input=None) for loc, text in problems]
        raise ValidationError.from_exception_data(cls.__name__, details)

    @classmethod
    def _partial(cls, data: dict[str, Any], bad: set[Any], context: Any) -> Any:
        """The model of the keys that are right (the others at their defaults), to check the rules on."""
        values = {}
        for key, value in data.items():
            if key in cls.model_fields and key not in bad:
                values[key] = _adapter(cls, key).validate_python(value, context=context)
        return cls.model_construct(**values)


@functools.cache
def _adapter(model: type[BaseModel], key: str) -> TypeAdapter[Any]:
    """Validates one field of ``model`` alone: its type and its constraints."""
    info = model.model_fields[key]
    return TypeAdapter(Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation)


class _Table(_Checked):
    """One table of a source: where its rows come from and the contract they must meet."""

    model_config = ConfigDict(title="table")

    primary_key: Key = Field(description="A declared column, or a list of them (a composite key).")
    columns: dict[str, ColumnDecl] = Field(
        default_factory=dict, json_schema_extra={"propertyNames": {"pattern": "^[^_]"}},
        description="Column name to type (id: string) or to {type, description}; in order. "
                    "Optional for postgres (types then come from the catalog).")
    description: str = Field("", description="Free text for readers.")
    cursor_field: str | None = Field(None, description="A declared column that grows with every change: "
                                                       "the table is read incrementally.")
    lookback: Duration | None = Field(None, description="Required with cursor_field: how much earlier than the "
                                                        "cursor the next read starts (15m; 0s only for a cursor "
                                                        "that never commits out of order).")
    freshness: Duration | None = Field(None, description="The maximum age of the table's newest data.")
    schema_policy: Policy = Field("evolve", description="When a batch's columns differ from raw: evolve, "
                                                        "strict or evolve_cast.")
    window_column: str | None = Field(None, description="postgres: the business-time column a backfill window "
                                                        "selects on.")
    event_time: str | None = Field(None, description="The column whose day places a row in the "
                                                     "time-partitioned models.")
    event_time_from: _Parent | None = Field(None, description="A child table's parent: {table: orders, key: order_id}.")
    sequence_key: str | None = Field(None, description="The column within which models number rows by event_time.")
    max_row_mb: float = Field(1.0, ge=0.0625, strict=True, description="postgres: the largest row as COPY text.")
    file: str | None = Field(None, description="files: one file in path, re-read when it changes.")
    pattern: str | None = Field(None, description="files: a glob under path; each new file is read once.")
    source_table: str | None = Field(None, description="postgres: the table or view to read, schema.table.")
    endpoint: str | None = Field(None, description="rest_api: a path joined to the base URL (/v1/products).")
    records_path: str = Field("", description="rest_api: the dotted path of the list of records in the body.")
    pagination: _Pagination | None = Field(None, description="rest_api: how to get the next page.")
    params: dict[str, Any] = Field(default_factory=dict, description="rest_api: query parameters for every request.")
    updated_since_param: str | None = Field(None, description="rest_api: the query parameter carrying the cursor.")

    def _problems(self, raw: dict[str, Any], bad: set[str], kind: Any) -> list[Problem]:
        out: list[Problem] = []
        # the declared columns as written: a wrong key in one column hides no other problem
        written = raw.get("columns") if isinstance(raw.get("columns"), dict) else {}
        declared = {str(name) for name in written}

        def undeclared(column: str | None) -> bool:  # unknowable without columns (postgres: the catalog)
            return column is not None and bool(declared) and column not in declared

        for name, column in written.items():
            if str(name).startswith("_"):
                out.append((("columns", name), "names starting with '_' are reserved for load metadata"))
            type_name = column.get("type") if isinstance(column, dict) else column
            if isinstance(type_name, str):  # otherwise the model reported it
                try:
                    parse_type(type_name)
                except ValueError as exc:
                    out.append((("columns", name), str(exc)))
        if not self.columns and "columns" not in bad and kind != "postgres":
            out.append((("columns",), "required, a mapping of column name to type "
                                      "(postgres tables may omit it: types come from the catalog)"))
        out += [(("primary_key",), f"{col!r} is not a declared column") for col in getattr(self, "primary_key", [])
                if undeclared(col)]
        for key in ("cursor_field", "window_column", "event_time", "sequence_key"):
            if undeclared(getattr(self, key)):
                out.append(((key,), f"{getattr(self, key)!r} must be a declared column"))
        if raw.get("window_column") is not None and kind != "postgres":
            out.append((("window_column",), "only postgres tables can be read by window "
                                            "(files and APIs are re-read whole)"))
        if self.event_time_from and undeclared(self.event_time_from.key):
            out.append((("event_time_from", "key"), f"{self.event_time_from.key!r} must be a declared column"))
        if raw.get("event_time_from") is not None and raw.get("event_time") is not None:
            out.append(((), "give event_time or event_time_from, not both"))
        if kind == "files" and bool(raw.get("file")) == bool(raw.get("pattern")):
            out.append(((), "give exactly one of file (one file, re-read when it changes) "
                            "or pattern (each new file once)"))
        if kind == "postgres" and not re.match(r"^[A-Za-z_][\w$]*\.[A-Za-z_][\w$]*$", str(raw.get("source_table", ""))):
            out.append((("source_table",), "required for postgres, as schema.table"))
        if raw.get("cursor_field") and "lookback" not in raw:
            out.append((("lookback",), "required with cursor_field: how much earlier than the last cursor the next "
                                       "read starts, for rows that commit after a later one was read (e.g. 15m; 0s "
                                       "only for a cursor that never commits out of order)"))
        if raw.get("updated_since_param") and not raw.get("cursor_field"):
            out.append((("updated_since_param",), " needs cursor_field: the cursor is the newest value of that column"))
        if kind == "rest_api" and not isinstance(raw.get("endpoint"), str):
            out.append((("endpoint",), "required for rest_api, a path like /v1/products"))
        if kind == "rest_api" and raw.get("cursor_field") and not raw.get("updated_since_param"):
            out.append((("cursor_field",), " without updated_since_param: the API cannot be asked for new records "
                                           "only, so every run would append the whole endpoint again; set "
                                           "updated_since_param, or drop cursor_field (the endpoint is then read as "
                                           "a snapshot, landed only when it changes)"))
        return out

    def spec(self, name: str) -> TableSpec:
        parent = self.event_time_from
        return TableSpec(
            name=name, columns=tuple(ColumnSpec(n, parse_type(c.type), c.description) for n, c in self.columns.items()),
            primary_key=tuple(self.primary_key), description=self.description, cursor_field=self.cursor_field,
            lookback_s=parse_duration(self.lookback or "0s"), window_column=self.window_column,
            event_time=self.event_time, event_time_from=(parent.table, parent.key) if parent else None,
            sequence_key=self.sequence_key, freshness_s=parse_duration(self.freshness) if self.freshness else None,
            schema_policy=self.schema_policy, file=self.file or None, pattern=self.pattern or None,
            source_table=self.source_table or None, endpoint=self.endpoint or None,
            records_path=tuple(p for p in self.records_path.split(".") if p),
            pagination=self.pagination.model_dump(exclude_none=True) if self.pagination else {},
            params=dict(self.params), updated_since_param=self.updated_since_param or None,
            max_row_mb=float(self.max_row_mb))


class _Source(_Checked):
    """A source declaration (sources/declarations/<name>.yaml). Reference: docs/reference/sources.md."""

    model_config = ConfigDict(title="source declaration")

    name: str = Field(pattern=_NAME, description="lower_snake_case; by convention the file's name.")
    kind: Kind = Field(description="files, postgres or rest_api.")
    owner: str = Field(description="Who answers for the data (a team or an address).")
    description: str = Field("", description="What the source is, its units and time zone.")
    schedule: str = Field("@daily", description="When to load, in UTC: a five-field cron or @hourly, @daily, ...")
    freshness: Duration | None = Field(None, description="The maximum age of the newest data (tables may override).")
    raw_schema: str | None = Field(None, pattern=_NAME, description="The warehouse schema of the raw tables "
                                                                   "(default raw_<name>).")
    format: Format = Field("csv", description="files: csv, jsonl or parquet.")
    path: str = Field("", description="files: a folder (relative to the project root) or s3://bucket/prefix.")
    env_prefix: str = Field("", description="postgres: the prefix of the connection variables, e.g. APPDB_ "
                                            "(APPDB_HOST, APPDB_PASSWORD, ...).")
    base_url: str = Field("", description="rest_api: the API's base URL.")
    base_url_env: str = Field("", description="rest_api: the environment variable holding the base URL.")
    auth: _Auth = Field(default_factory=_Auth, description="rest_api: how requests are authenticated.")
    timeout_s: float = Field(30.0, ge=0.1, strict=True, description="rest_api: seconds a request may wait.")
    max_retries: int = Field(5, ge=0, strict=True, description="rest_api: retries after the first attempt "
                                                                "of a request.")
    tables: dict[str, _Table] = Field(min_length=1, json_schema_extra={"propertyNames": {"pattern": _NAME}},
                                      description="Table name (lower_snake_case) to table declaration.")

    def _problems(self, raw: dict[str, Any], bad: set[str], kind: Any) -> list[Problem]:
        out: list[Problem] = [(("tables", name), "table name must be lower_snake_case") for name in
                              (raw.get("tables") if isinstance(raw.get("tables"), dict) else ())
                              if not re.match(_NAME, str(name))]
        if kind == "files" and not self.path:
            out.append((("path",), " is required for kind files (a folder, or s3://bucket/prefix)"))
        if kind == "postgres" and not re.match(r"^[A-Z][A-Z0-9_]*_$", self.env_prefix):
            out.append((("env_prefix",), " is required for kind postgres, e.g. APPDB_ (reads APPDB_HOST, "
                                         "APPDB_PASSWORD, ...)"))
        if kind == "rest_api":
            if not (raw.get("base_url") or raw.get("base_url_env")):
                out.append(((), "'base_url' or 'base_url_env' is required for kind rest_api"))
            if self.base_url_env and not _ENV_NAME.match(self.base_url_env):
                out.append((("base_url_env",), " must be an environment variable name"))
            if self.auth.type != "none" and "auth" not in bad:
                if not _ENV_NAME.match(self.auth.token_env or ""):
                    out.append((("auth", "token_env"), " must name the environment variable holding the secret "
                                                       "(never the secret)"))
                if self.auth.type == "api_key" and not self.auth.header:
                    out.append((("auth", "header"), " is required for api_key auth, e.g. X-API-Key"))
        return out

    def spec(self) -> SourceSpec:
        return SourceSpec(
            name=self.name, kind=self.kind, owner=self.owner, description=self.description, schedule=self.schedule,
            freshness_s=parse_duration(self.freshness) if self.freshness else None, format=self.format,
            path=self.path, env_prefix=self.env_prefix, base_url=self.base_url, base_url_env=self.base_url_env,
            auth=self.auth.model_dump(exclude_none=True) if "auth" in self.model_fields_set else {},
            timeout_s=float(self.timeout_s), max_retries=self.max_retries, raw_schema_name=self.raw_schema or "",
            tables={name: table.spec(name) for name, table in self.tables.items()})


# ---- pydantic's errors in our words ------------------------------------------------------------

_MODELS: dict[str, type[BaseModel]] = {  # where each mapping is, for its allowed keys
    "": _Source, "auth": _Auth, "tables.*": _Table, "tables.*.columns.*": _ColumnMapping,
    "tables.*.pagination": _Pagination, "tables.*.event_time_from": _Parent}
_SAY: dict[str, str] = {  # what a wrong value at these places should have been
    "tables": " must map table names to table declarations",
    "tables.*": ": must be a mapping with primary_key and columns",
    "tables.*.primary_key": ": required, a column name or a list of them",
    "tables.*.columns": ": required, a mapping of column name to type",
    "tables.*.columns.*": ": a type is required (id: string, or {type: integer, description: cents})",
    "tables.*.records_path": " must be a dotted path like data.items",
    "tables.*.event_time_from": ": must be {table: <parent table>, key: <column of this table holding the "
                                "parent's primary key>}",
}
_HINTS = {"nullable": "nullable is not enforced by the loader: every column may be NULL in raw; check it "
                      "downstream with a not_null audit on the staging model"}


def _shape(loc: tuple[Any, ...]) -> str:
    """``('tables', 'orders', 'columns', 'id', 'type')`` -> ``tables.*.columns.*.type``."""
    parts = [str(p) for p in loc]
    for i in (1, 3):  # a table's name, a column's name
        if len(parts) > i and parts[i - 1] == ("tables", "columns")[i // 2]:
            parts[i] = "*"
    return ".".join(parts)


def _where(loc: tuple[Any, ...]) -> str:
    """Table paths as they are (``tables.orders.lookback``), source keys quoted (``'kind'``)."""
    path = ".".join(str(p) for p in loc)
    return path if loc[:1] == ("tables",) and len(loc) > 1 else f"'{path}'" if path else "declaration"


def _explain(errors: list[Any]) -> list[str]:
    """One line per problem, ``<where>: <what is wrong>`` or ``<where> <is wrong how>``, in our words;
    the unknown keys of one mapping on one line, where the first of them was found."""
    lines: dict[Any, str] = {}
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for n, e in enumerate(errors):
        loc = tuple(e["loc"])
        if e["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
            lines.setdefault(("unknown", loc[:-1]), "")
            continue
        loc = tuple(p for p in loc if not isinstance(p, int))  # primary_key.0 is primary_key
        message = e["msg"] if e["type"] == "rule" else _SAY.get(_shape(loc)) or _say(e)
        lines[n] = message if not loc else _where(loc) + (message if message[:1] in " :" else f": {message}")
    for loc, keys in unknown.items():
        model = _MODELS.get(_shape(loc))
        allowed = sorted(model.model_fields) if model else []
        notes = [f"did you mean {close[0]!r}?" for k in keys if (close := difflib.get_close_matches(k, allowed, 1))]
        notes += [_HINTS[k] for k in keys if k in _HINTS]
        lines[("unknown", loc)] = (f"{_where(loc)}: unknown key(s) {keys}; allowed: {', '.join(allowed)}"
                                   + (f" ({'; '.join(notes)})" if notes else ""))
    return list(lines.values())


_TYPES = {"string_type": "a string", "int_type": "a whole number", "int_from_float": "a whole number",
          "float_type": "a number", "bool_type": "true or false", "list_type": "a list"}


def _say(e: Any) -> str:
    """Pydantic's error ``e`` in the words the hand-written checks used."""
    kind, ctx, given = e["type"], e.get("ctx") or {}, e.get("input")
    if kind == "missing":
        return " is required"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected")))
        return f" is {given!r}; allowed: {', '.join(allowed)}"
    if kind == "string_pattern_mismatch":
        return f" {given!r} has the wrong form ({ctx.get('pattern')})"
    if kind in _TYPES or kind in ("dict_type", "model_type", "model_attributes_type"):
        return f" must be {_TYPES.get(kind, 'a mapping')}, got {type(given).__name__}"
    if kind in ("greater_than_equal", "greater_than"):
        return f" must be a number >= {ctx.get('ge', ctx.get('gt'))}"
    if kind == "too_short":
        return " must not be empty"
    if kind == "value_error":
        return ": " + str(ctx.get("error", e["msg"]))
    return ": " + e["msg"][:1].lower() + e["msg"][1:]


if __name__ == "__main__":  # python -m sources.config --schema > docs/reference/source-declaration.schema.json
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m sources.config --schema")
    print(json.dumps(declaration_json_schema(), indent=2, ensure_ascii=False))
