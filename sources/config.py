"""Source declarations: one YAML file per source under ``sources/declarations/``.

A declaration says what a source is, who owns it and, per table, which columns (with types) and
which primary key the loader must find. It is validated when loaded: every wrong field is listed
in one ``ConfigError``, so a typo costs one run, not five.

>>> src = load_source("jaffle_shop")
>>> src.tables["orders"].primary_key
('id',)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sources.errors import ConfigError
from sources.types import ColumnType, parse_type

DECLARATIONS_DIR = Path(__file__).resolve().parent / "declarations"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_KINDS = ("files",)
_FORMATS = ("csv",)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: ColumnType
    description: str = ""


@dataclass(frozen=True)
class TableSpec:
    """One table of a source: where it comes from and the contract its rows must meet."""

    name: str
    file: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]
    description: str = ""

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str
    format: str
    path: str
    owner: str
    description: str
    tables: dict[str, TableSpec] = field(default_factory=dict)

    @property
    def raw_schema(self) -> str:
        """The warehouse schema that holds this source's raw tables."""
        return f"raw_{self.name}"


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
    return parse_source(raw, origin=str(path))


def parse_source(raw: Any, origin: str = "<declaration>") -> SourceSpec:
    """Validate a parsed declaration; collect every problem before raising."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: a source declaration must be a mapping")

    def text(key: str, default: str | None = None, allowed: tuple[str, ...] = ()) -> str:
        value = raw.get(key, default)
        if value is None:
            problems.append(f"'{key}' is required")
            return ""
        if not isinstance(value, str):
            problems.append(f"'{key}' must be a string, got {type(value).__name__}")
            return ""
        if allowed and value not in allowed:
            problems.append(f"'{key}' is {value!r}; allowed: {', '.join(allowed)}")
        return value

    name = text("name")
    if name and not _NAME.match(name):
        problems.append(f"'name' {name!r} must be lower_snake_case, at most 63 characters")
    source = SourceSpec(
        name=name,
        kind=text("kind", allowed=_KINDS),
        format=text("format", "csv", allowed=_FORMATS),
        path=text("path", ""),
        owner=text("owner"),
        description=text("description", ""),
    )
    unknown = set(raw) - {"name", "kind", "format", "path", "owner", "description", "tables"}
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")

    tables = raw.get("tables")
    if not isinstance(tables, dict) or not tables:
        problems.append("'tables' must map table names to table declarations")
        tables = {}
    for table_name, table_raw in tables.items():
        spec = _parse_table(str(table_name), table_raw, problems)
        if spec is not None:
            source.tables[spec.name] = spec

    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"{origin} has {len(problems)} problem(s):\n{listing}",
            source=name or None,
            hint=f"fix {origin}; see docs/reference/sources.md for every key",
        )
    return source


def _parse_table(name: str, raw: Any, problems: list[str]) -> TableSpec | None:
    where = f"tables.{name}"
    if not _NAME.match(name):
        problems.append(f"{where}: table name must be lower_snake_case")
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping with file, primary_key and columns")
        return None
    unknown = set(raw) - {"file", "primary_key", "columns", "description"}
    if unknown:
        problems.append(f"{where}: unknown keys {sorted(unknown)}")
    file = raw.get("file")
    if not isinstance(file, str) or not file:
        problems.append(f"{where}.file: required, the file name inside the source path")
        file = ""
    columns: list[ColumnSpec] = []
    cols_raw = raw.get("columns")
    if not isinstance(cols_raw, dict) or not cols_raw:
        problems.append(f"{where}.columns: required, a mapping of column name to type")
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
    if not isinstance(pk, list) or not pk or not all(isinstance(c, str) for c in pk):
        problems.append(f"{where}.primary_key: required, a column name or a list of them")
        pk = []
    for col in pk:
        if col not in cols_raw:
            problems.append(f"{where}.primary_key: {col!r} is not a declared column")
    return TableSpec(
        name=name,
        file=file,
        columns=tuple(columns),
        primary_key=tuple(pk),
        description=str(raw.get("description", "")),
    )
