"""The shape of a source declaration, as pydantic models: every key, its type and its description
(editors show them from the JSON Schema generated from these models), the rules that span keys,
and the wording of every problem. ``SourceModel.spec()`` gives the frozen ``SourceSpec`` that the
rest of the code reads; ``sources.config`` loads the YAML and raises one ``ConfigError`` listing
every problem (``explain_errors``)."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError,
                      ValidationInfo, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sources.load.schema import POLICIES
from sources.specs import ColumnSpec, SourceSpec, TableSpec, parse_duration
from sources.types import TYPE_NAMES, parse_type

_NAME = r"^[a-z][a-z0-9_]{0,62}$"
# PostgreSQL's identifiers hold 63 bytes and cut longer ones, silently: a raw schema or column
# longer than that would be another one's, or not match its declaration
MAX_IDENTIFIER_BYTES = 63
# names the loader's own reads cannot take (read_parquet(..., file_row_number = true))
RESERVED_COLUMNS = frozenset({"file_row_number"})


def case_clashes(names: Iterable[str]) -> dict[str, str]:
    """Each name that differs only in case from an earlier one -> that earlier name: DuckDB, Spark
    and SQLMesh's models compare column names without case, so the two would be one column.

    >>> case_clashes(["id", "ID", "note", "Id"])
    {'ID': 'id', 'Id': 'id'}
    """
    first: dict[str, str] = {}
    return {name: first[name.lower()] for name in names if first.setdefault(name.lower(), name) != name}
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
Kind = Literal["files", "postgres", "rest_api"]
Format = Literal["csv", "jsonl", "parquet"]
Paging = Literal["none", "page", "offset", "cursor", "next_link"]
AuthType = Literal["none", "bearer", "api_key"]
Policy = Literal["evolve", "strict", "evolve_cast"]
HeldRows = Literal["fail", "warn"]
KINDS, FORMATS, PAGINATION, AUTH = get_args(Kind), get_args(Format), get_args(Paging), get_args(AuthType)
if get_args(Policy) != POLICIES:  # the loader's list is the truth; the Literal is for the schema
    raise ImportError(f"sources.declaration_models.Policy {get_args(Policy)} differs from sources.load.schema.POLICIES {POLICIES}")


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
    check_overlap: bool | None = Field(None, strict=True, description="offset: ask each page from one record "
                                       "before the last one read and refuse the read unless that record comes "
                                       "back first (default true; false for an API that cannot start there).")


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
    newest_by_cursor: bool = Field(False, strict=True, description=(
        "With cursor_field: a row's version with the larger cursor is the newer, whichever read brought it, so a "
        "read that returns a key at an earlier cursor than raw holds is not landed. For a source read through "
        "hosts that lag behind one another (a reader endpoint over replicas). Off by default: with stamps taken "
        "at a transaction's start (now()), concurrent transactions can commit a row's last version with the "
        "earlier stamp."))
    freshness: Duration | None = Field(None, description="The maximum age of the table's newest data.")
    schema_policy: Policy = Field("evolve", description="When a batch's columns differ from raw: evolve, "
                                                        "strict or evolve_cast.")
    window_column: str | None = Field(None, description="postgres: the business-time column a backfill window "
                                                        "selects on.")
    event_time: str | None = Field(None, description="The column whose day places a row in the "
                                                     "time-partitioned models.")
    event_time_from: _Parent | None = Field(None, description="A child table's parent: {table: orders, key: order_id}.")
    sequence_key: str | None = Field(None, description="The column within which models number rows by event_time.")
    soft_delete: str | None = Field(None, description="A declared column by which the source marks a row deleted "
                                                      "(is_deleted: TRUE; deleted_at: not NULL): raw records the "
                                                      "row as its key's deletion.")
    held_rows: HeldRows = Field("fail", description="When the transform holds rows of this table out of staging "
                                                    "(no event time, a missing or deleted parent): fail (the "
                                                    "default) or warn (the transform passes and reports them).")
    held_rows_fail_after: Duration | None = Field(None, description="With held_rows: warn, how long a row may be "
                                                                    "held before it fails the transform as with "
                                                                    "fail (e.g. 7d): a backlog warned about for "
                                                                    "ever is no longer noticed.")
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

        clashes = case_clashes(str(name) for name in written)
        for name, column in written.items():
            if str(name).startswith("_"):
                out.append((("columns", name), "names starting with '_' are reserved for load metadata"))
            if len(str(name).encode()) > MAX_IDENTIFIER_BYTES:
                out.append((("columns", name), f"is {len(str(name).encode())} bytes long: at most "
                                               f"{MAX_IDENTIFIER_BYTES} (PostgreSQL cuts longer names, so the raw "
                                               "column would not match its declaration)"))
            if str(name).lower() in RESERVED_COLUMNS:
                out.append((("columns", name), "is reserved: the loader reads each batch with DuckDB's "
                                               "file_row_number, which a column of that name breaks"))
            if str(name) in clashes:
                out.append((("columns", name), f"differs from {clashes[str(name)]!r} only in case: the warehouses "
                                               "and SQLMesh's models compare column names without case, so both "
                                               "would be one column"))
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
        for key in ("cursor_field", "window_column", "event_time", "sequence_key", "soft_delete"):
            if undeclared(getattr(self, key)):
                out.append(((key,), f"{getattr(self, key)!r} must be a declared column"))
        if raw.get("window_column") is not None and kind != "postgres":
            out.append((("window_column",), "only postgres tables can be read by window "
                                            "(files and APIs are re-read whole)"))
        if self.event_time_from and undeclared(self.event_time_from.key):
            out.append((("event_time_from", "key"), f"{self.event_time_from.key!r} must be a declared column"))
        if raw.get("held_rows_fail_after") is not None and raw.get("held_rows") != "warn":
            out.append((("held_rows_fail_after",), "only with held_rows: warn (under fail, a held row fails every "
                                                   "transform at once)"))
        if raw.get("held_rows") == "warn" and not raw.get("event_time") and not raw.get("event_time_from"):
            out.append((("held_rows",), "only a table with event_time or event_time_from has rows the transform "
                                        "holds out of staging; remove held_rows or declare one of them"))
        if self.soft_delete:
            roles = {"the primary key": list(getattr(self, "primary_key", [])), "cursor_field": [self.cursor_field],
                     "event_time": [self.event_time], "window_column": [self.window_column],
                     "sequence_key": [self.sequence_key],
                     "event_time_from": [self.event_time_from.key if self.event_time_from else None]}
            for role, columns in roles.items():
                if self.soft_delete in columns:
                    out.append((("soft_delete",), f"{self.soft_delete!r} is also {role}; name the column that only "
                                                  "marks a row deleted (is_deleted, deleted_at)"))
            columns = getattr(self, "columns", None) or {}
            declared_type = columns[self.soft_delete].type if self.soft_delete in columns else None
            if declared_type and declared_type.split("(")[0].strip() not in ("boolean", "date", "timestamp", "timestamptz"):
                out.append((("soft_delete",), f"{self.soft_delete!r} is declared {declared_type}: only a boolean (TRUE "
                                              "marks a row deleted) or a date or timestamp (a value marks it) can "
                                              "mark deletions"))
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
        if raw.get("newest_by_cursor") and not raw.get("cursor_field"):
            out.append((("newest_by_cursor",), " needs cursor_field: versions are ordered by that column"))
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
            lookback_s=parse_duration(self.lookback or "0s"), newest_by_cursor=self.newest_by_cursor,
            window_column=self.window_column,
            event_time=self.event_time, event_time_from=(parent.table, parent.key) if parent else None,
            sequence_key=self.sequence_key, held_rows=self.held_rows, soft_delete=self.soft_delete or None,
            held_rows_fail_after_s=parse_duration(self.held_rows_fail_after) if self.held_rows_fail_after else None,
            freshness_s=parse_duration(self.freshness) if self.freshness else None,
            schema_policy=self.schema_policy, file=self.file or None, pattern=self.pattern or None,
            source_table=self.source_table or None, endpoint=self.endpoint or None,
            records_path=tuple(p for p in self.records_path.split(".") if p),
            pagination=self.pagination.model_dump(exclude_none=True) if self.pagination else {},
            params=dict(self.params), updated_since_param=self.updated_since_param or None,
            max_row_mb=float(self.max_row_mb))


class SourceModel(_Checked):
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
    request_deadline_s: float = Field(300.0, ge=0.1, strict=True,
                                      description="rest_api: seconds one request may take in all, headers and body included.")
    max_retries: int = Field(5, ge=0, strict=True, description="rest_api: retries after the first attempt "
                                                                "of a request.")
    tables: dict[str, _Table] = Field(min_length=1, json_schema_extra={"propertyNames": {"pattern": _NAME}},
                                      description="Table name (lower_snake_case) to table declaration.")

    def _problems(self, raw: dict[str, Any], bad: set[str], kind: Any) -> list[Problem]:
        out: list[Problem] = [(("tables", name), "table name must be lower_snake_case") for name in
                              (raw.get("tables") if isinstance(raw.get("tables"), dict) else ())
                              if not re.match(_NAME, str(name))]
        name = str(raw.get("name") or "")
        if "name" not in bad and not raw.get("raw_schema") and len(f"raw_{name}") > MAX_IDENTIFIER_BYTES:
            # PostgreSQL cut two such names to one schema: two sources wrote one raw table and each
            # load marked the other source's keys deleted (a probe of identifiers)
            out.append((("name",), f"is {len(name)} characters: at most {MAX_IDENTIFIER_BYTES - 4}, so that its "
                                   f"raw schema raw_{name[:8]}... fits PostgreSQL's {MAX_IDENTIFIER_BYTES}-byte "
                                   "names (or set raw_schema)"))
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
            timeout_s=float(self.timeout_s), request_deadline_s=float(self.request_deadline_s),
            max_retries=self.max_retries, raw_schema_name=self.raw_schema or "",
            tables={name: table.spec(name) for name, table in self.tables.items()})


# ---- pydantic's errors in our words ------------------------------------------------------------

_MODELS: dict[str, type[BaseModel]] = {  # where each mapping is, for its allowed keys
    "": SourceModel, "auth": _Auth, "tables.*": _Table, "tables.*.columns.*": _ColumnMapping,
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


def explain_errors(errors: list[Any]) -> list[str]:
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
        if any(re.fullmatch(r"\s*\d+\)", k) for k in keys):  # {type: decimal(10,2)}: YAML split at the comma
            notes.append("a type with a comma inside {...} needs quotes: {type: 'decimal(10,2)'}")
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
