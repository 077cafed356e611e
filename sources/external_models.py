"""Describe raw tables to SQLMesh (``external_models.yaml``) from the source declarations.

Raw tables are written by the loader, not by SQLMesh, so SQLMesh learns their columns from
``external_models.yaml``; that gives column-level lineage down to raw columns and type-checked
staging models. The file is generated, never edited by hand: ``elt sources --write-external-models``
rewrites it, and a test fails when it is out of date with the declarations.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from sources.config import SourceSpec, available_sources, load_source
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


def render(specs: list[SourceSpec] | None = None) -> str:
    specs = specs if specs is not None else [load_source(n) for n in available_sources()]
    # Several sources may feed one raw schema (jaffle_app + jaffle_catalog share raw_jaffle_shop);
    # the source named after the schema describes it, the others only add tables it lacks.
    specs = sorted(specs, key=lambda s: (s.raw_schema != f"raw_{s.name}", s.name))
    entries = []
    described: set[str] = set()
    for spec in specs:
        for table in spec.tables.values():
            if f"{spec.raw_schema}.{table.name}" in described:
                continue
            described.add(f"{spec.raw_schema}.{table.name}")
            columns = {c.name: c.type.sql("duckdb") for c in table.columns}
            columns.update({name: sql_type for name, sql_type in METADATA_COLUMNS})
            descriptions = {c.name: c.description for c in table.columns if c.description}
            descriptions.update(_META_DESCRIPTIONS)
            entries.append(
                {
                    "name": f"{spec.raw_schema}.{table.name}",
                    "description": f"Raw {spec.name}.{table.name}, append-only, one row per extracted row per batch "
                    f"(key {', '.join(table.primary_key)}; duplicates across batches are expected). "
                    f"Loaded from {table.file or table.pattern or table.source_table or table.endpoint}.",
                    "columns": columns,
                    "column_descriptions": descriptions,
                }
            )
    return HEADER + yaml.safe_dump(entries, sort_keys=False, width=120)


def write(project_root: Path) -> Path:
    path = project_root / "external_models.yaml"
    path.write_text(render())
    return path
