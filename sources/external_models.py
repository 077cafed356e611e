"""Describe raw tables to SQLMesh (``external_models.yaml``) from the source declarations.

Raw tables are written by the loader, not by SQLMesh, so SQLMesh learns their columns from
``external_models.yaml``; that gives column-level lineage down to raw columns and type-checked
staging models. The file is generated, never edited by hand: ``elt sources --write-external-models``
rewrites it, and a test fails when it is out of date with the declarations.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sources.config import SourceSpec, available_sources, load_source, read_yaml
from sources.load.duckdb_raw import METADATA_COLUMNS

HEADER = "# Generated from sources/declarations/*.yaml by `elt sources --write-external-models`. Do not edit.\n"
_META_DESCRIPTIONS = {
    "_batch_id": "Landing batch the row came from (landing/<source>/<table>/<batch_id>/).",
    "_batch_row": "Row number (0-based) inside the batch's Parquet file.",
    "_extracted_at": "When the batch was extracted from the source (UTC).",
    "_loaded_at": "When the batch was appended to this raw table (UTC).",
    "_deleted": "TRUE when the row deletes its key: a tombstone (the key was absent from a snapshot of the source; "
                "other columns NULL), or a row the source marked deleted (the table's soft_delete; values kept).",
}


def _entries(specs: list[SourceSpec]) -> list[dict[str, object]]:
    # Several sources may feed one raw schema (jaffle_app + jaffle_catalog share raw_jaffle_shop):
    # the source named after the schema describes a table first, the others add the columns it
    # lacks (a column one system has, declared in that system's source only, is in raw all the
    # same: a model may read it). A column both declare keeps the first one's type; the loader
    # refuses a batch whose type the raw table cannot take.
    specs = sorted(specs, key=lambda s: (s.raw_schema != f"raw_{s.name}", s.name))
    entries: dict[str, dict[str, object]] = {}
    for spec in specs:
        for table in spec.tables.values():
            name = f"{spec.raw_schema}.{table.name}"
            entry = entries.get(name)
            if entry is None:
                entry = entries[name] = {
                    "name": name,
                    "description": f"Raw {spec.name}.{table.name}, append-only, one row per extracted row per batch "
                    f"(key {', '.join(table.primary_key)}; duplicates across batches are expected). "
                    f"Loaded from {table.file or table.pattern or table.source_table or table.endpoint}.",
                    "columns": {},
                    "column_descriptions": {},
                }
            columns, descriptions = entry["columns"], entry["column_descriptions"]
            assert isinstance(columns, dict) and isinstance(descriptions, dict)
            for c in table.columns:
                if c.name not in columns:
                    columns[c.name] = c.type.sql("duckdb")
                    if c.description:
                        descriptions[c.name] = c.description
    for entry in entries.values():
        columns, descriptions = entry["columns"], entry["column_descriptions"]
        assert isinstance(columns, dict) and isinstance(descriptions, dict)
        columns.update({name: sql_type for name, sql_type in METADATA_COLUMNS})
        descriptions.update(_META_DESCRIPTIONS)
    return list(entries.values())


def render(specs: list[SourceSpec] | None = None) -> str:
    specs = specs if specs is not None else [load_source(n) for n in available_sources()]
    return HEADER + yaml.safe_dump(_entries(specs), sort_keys=False, width=120)


def type_differences(project_root: Path, specs: list[SourceSpec] | None = None) -> list[str]:
    """Columns that ``external_models.yaml`` gives another type than the declarations do, as
    ``raw_x.table.column: TYPE in external_models.yaml, TYPE declared``. SQLMesh builds the models
    with the file's types, so a declaration changed without regenerating the file casts the raw
    values to the old type (a wider decimal rounded back, silently: a probe). Tables or columns only
    one side has are left to SQLMesh (a model reading a column the file lacks fails its plan)."""
    path = project_root / "external_models.yaml"
    try:
        written = read_yaml(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return []  # no file, or not one this could read: SQLMesh reports it
    specs = specs if specs is not None else [load_source(n) for n in available_sources()]
    declared = {str(e["name"]).lower(): e["columns"] for e in _entries(specs)}
    out = []
    for entry in written if isinstance(written, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("columns"), dict):
            continue
        want = declared.get(str(entry.get("name", "")).lower())
        if not isinstance(want, dict):
            continue
        for column, sql_type in entry["columns"].items():
            if column in want and _normal(sql_type) != _normal(want[column]):
                out.append(f"{entry['name']}.{column}: {sql_type} in external_models.yaml, {want[column]} declared")
    return out


def _normal(sql_type: object) -> str:
    return "".join(str(sql_type).split()).upper()


def write(project_root: Path) -> Path:
    path = project_root / "external_models.yaml"
    path.write_text(render())
    return path
