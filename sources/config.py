"""Source declarations: one YAML file per source under ``sources/declarations/``.

A declaration says what a source is (``kind``: files, postgres or rest_api), who owns it, when it
runs, how fresh it must be and, per table, the key, the cursor and the contract its rows must
meet. Connection settings are given as environment-variable *names*; no secret value is ever in
a declaration. It is validated when loaded, by the pydantic models of
``sources/declaration_models.py`` (an unknown key is refused at every level), and every problem
is listed in one ``ConfigError``. The rest of the
code reads the frozen dataclasses ``SourceSpec``, ``TableSpec`` and ``ColumnSpec``
(``sources/specs.py``, importable from here too), never the models.

>>> src = load_source("jaffle_shop")
>>> src.tables["orders"].primary_key
('id',)

The JSON Schema editors check the YAML with is generated from the same models
(``python -m sources.config --schema > docs/reference/source-declaration.schema.json``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sources.declaration_models import SourceModel, explain_errors
from sources.errors import ConfigError
from sources.specs import ColumnSpec, SourceSpec, TableSpec, format_duration, parse_duration

__all__ = ["DECLARATIONS_DIR", "ColumnSpec", "SourceSpec", "TableSpec", "available_sources", "check_shared_tables",
           "declaration_json_schema",
           "load_source", "parse_duration", "parse_source"]

# libyaml's parser when PyYAML was built with it (its wheels are): the same documents and values as
# the pure-Python SafeLoader, about ten times faster (4 ms against 0.4 ms a declaration; every
# transform reads each declaration several times and external_models.yaml once: decision 0083)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(text: str) -> Any:
    r"""``yaml.safe_load`` of ``text``, by libyaml where PyYAML has it. A document libyaml refuses
    is read again by the pure-Python loader: its error shows the line with a caret under the fault
    (libyaml's gives only the line and column), and a document only libyaml refuses is still read.

    >>> read_yaml("a: [1, 2]")
    {'a': [1, 2]}
    >>> try:
    ...     read_yaml("tables:\n  orders:\n    file: a.csv\n   primary_key: id\n")
    ... except yaml.YAMLError as exc:
    ...     print(str(exc).splitlines()[-3:])
    ['  in "<unicode string>", line 4, column 4:', '       primary_key: id', '       ^']
    """
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError:
        if _YAML_LOADER is yaml.SafeLoader:
            raise
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506


# ELT_DECLARATIONS_DIR points elsewhere (a deployment's own folder, or a test's copy)
DECLARATIONS_DIR = Path(os.environ.get("ELT_DECLARATIONS_DIR") or Path(__file__).resolve().parent / "declarations")


def declarations_dir() -> Path:
    """The declarations folder, read from the environment when asked (a process that sets it after
    importing this module, such as a test, gets its own folder): ELT_DECLARATIONS_DIR; else the
    ``sources/declarations`` of the project ELT_PROJECT_DIR names, when it has one (its models read
    those sources: a checkout pointed at by ELT_PROJECT_DIR was read with the installed package's
    declarations, and `elt sources` left out a source declared in it; a newcomer walkthrough);
    else the package's own."""
    given = os.environ.get("ELT_DECLARATIONS_DIR")
    if given:
        return Path(given)
    project = os.environ.get("ELT_PROJECT_DIR")
    if project and (Path(project) / "sources" / "declarations").is_dir():
        return (Path(project) / "sources" / "declarations").resolve()
    return DECLARATIONS_DIR


def available_sources(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or declarations_dir()).glob("*.yaml"))


def load_source(name_or_path: str | Path, directory: Path | None = None) -> SourceSpec:
    """Load and validate a source declaration by name (``jaffle_shop``) or by file path."""
    directory = directory or declarations_dir()
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
        raw = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", source=path.stem) from exc
    spec = parse_source(raw, origin=str(path))
    if spec.name != path.stem:  # job names, locks and landing folders use the file name
        raise ConfigError(f"{path} declares name {spec.name!r}, but its file is named {path.stem!r}", source=spec.name,
                          hint=f"rename the file to {spec.name}.yaml or set name: {path.stem}")
    return spec


def check_shared_tables(spec: SourceSpec, directory: Path | None = None) -> None:
    """Refuse ``spec`` when another declaration writes one of its raw tables with another
    ``soft_delete``: the other source's batches would apply rows this one records as deleted as
    live again (the transform checks the windows' keys the same way, windows.window_specs)."""
    for name in available_sources(directory):
        if name == spec.name:
            continue
        try:
            other = load_source(name, directory)
        except ConfigError as exc:  # its own commands fail on it; said, since its tables go unchecked
            from sources.logs import get_logger

            get_logger("sources.config").warning(
                f"declaration {name} is invalid, so its tables were not compared with {spec.name}'s "
                f"(soft_delete must agree on a shared raw table): {str(exc).splitlines()[0]}",
                extra={"fields": {"source": spec.name, "other": name}})
            continue
        if other.raw_schema != spec.raw_schema:
            continue
        for table in spec.tables.values():
            theirs = other.tables.get(table.name)
            if theirs is not None and (theirs.soft_delete or None) != (table.soft_delete or None):
                raise ConfigError(
                    f"{spec.raw_schema}.{table.name} is written by sources {spec.name} (soft_delete: "
                    f"{table.soft_delete or 'none'}) and {other.name} (soft_delete: {theirs.soft_delete or 'none'})",
                    source=spec.name, table=table.name,
                    hint="give every declaration of a shared raw table the same soft_delete; nothing was loaded")
            # what the transform reads from the declarations (windows.window_specs refuses the same,
            # but only once a batch is pending: after the load that would mix them)
            if theirs is not None and (windowed(table) or windowed(theirs)) and windowed(table) != windowed(theirs):
                raise ConfigError(
                    f"{spec.raw_schema}.{table.name} is written by sources {spec.name} ({windowed_words(table)}) "
                    f"and {other.name} ({windowed_words(theirs)})", source=spec.name, table=table.name,
                    hint="give every declaration of a shared raw table the same primary_key, event_time, "
                         "event_time_from, sequence_key, held_rows and held_rows_fail_after; nothing was loaded")


def windowed(table: TableSpec) -> tuple[object, ...] | None:
    """What the transform places a time table's rows by (None: the table has no time). Every
    declaration of a shared raw table must give the same, when any gives one: checked here before a
    load, and by the transform (``orchestrator.transform.windows.window_specs``)."""
    if not table.event_time and not table.event_time_from:
        return None
    return (tuple(table.primary_key), table.event_time, table.event_time_from, table.sequence_key, table.held_rows,
            table.held_rows_fail_after_s)


def windowed_words(table: TableSpec) -> str:
    """``windowed`` in the declaration's own words."""
    parent = (f"{{table: {table.event_time_from[0]}, key: {table.event_time_from[1]}}}"
              if table.event_time_from else "none")
    return (f"primary_key: {', '.join(table.primary_key) or 'none'}, "
            f"event_time: {table.event_time or 'none'}, event_time_from: {parent}, "
            f"sequence_key: {table.sequence_key or 'none'}, held_rows: {table.held_rows}"
            + (f", held_rows_fail_after: {format_duration(table.held_rows_fail_after_s)}"
               if table.held_rows_fail_after_s else ""))


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
        model = SourceModel.model_validate(raw, context={"kind": raw.get("kind")})
    except ValidationError as exc:
        problems = list(dict.fromkeys(explain_errors(exc.errors(include_url=False))))
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
    schema = SourceModel.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": "generated by `python -m sources.config --schema`; do not edit", **schema}



if __name__ == "__main__":  # python -m sources.config --schema > docs/reference/source-declaration.schema.json
    if sys.argv[1:] != ["--schema"]:
        sys.exit("usage: python -m sources.config --schema")
    print(json.dumps(declaration_json_schema(), indent=2, ensure_ascii=False))
