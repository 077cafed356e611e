from __future__ import annotations

from pathlib import Path

import yaml

from sources import external_models
from tests.conftest import ROOT


def test_external_models_yaml_is_up_to_date_with_the_declarations() -> None:
    committed = (ROOT / "external_models.yaml").read_text()
    assert committed == external_models.render(), "run `elt sources --write-external-models` and commit the result"


def test_a_column_declared_by_another_source_of_a_shared_raw_table_is_described() -> None:
    """Two sources writing one raw table: the one named after the schema describes it, and a column
    only the other declares (the system that has it) is described too. It was left out, and a model
    reading it failed SQLMesh's plan with `Unknown column` after the command that should fix it (a probe)."""
    from sources.config import parse_source

    shop = parse_source({"name": "shop", "kind": "files", "owner": "o", "path": "d", "tables": {"orders": {
        "file": "o.csv", "primary_key": "id", "columns": {"id": "string", "total": "decimal(9,4)"}}}})
    app = parse_source({"name": "app", "kind": "files", "owner": "o", "path": "d", "raw_schema": "raw_shop",
                        "tables": {"orders": {"file": "o.csv", "primary_key": "id",
                                              "columns": {"id": "string", "total": "decimal(12,6)", "channel": "string"}}}})
    (entry,) = yaml.safe_load(external_models.render([app, shop]))
    assert entry["name"] == "raw_shop.orders" and "Raw shop.orders" in entry["description"]
    assert list(entry["columns"])[:3] == ["id", "total", "channel"], entry["columns"]
    assert entry["columns"]["total"] == "DECIMAL(9, 4)"  # the schema's own source first


def test_types_the_file_gives_otherwise_than_the_declarations_are_named(tmp_path: Path) -> None:
    from sources.config import parse_source

    decl = {"name": "shop", "kind": "files", "owner": "o", "path": "d", "tables": {"stores": {
        "file": "s.csv", "primary_key": "id", "columns": {"id": "string", "tax_rate": "decimal(9,4)"}}}}
    (tmp_path / "external_models.yaml").write_text(external_models.render([parse_source(decl)]))
    assert external_models.type_differences(tmp_path, [parse_source(decl)]) == []
    decl["tables"]["stores"]["columns"]["tax_rate"] = "decimal(12,6)"  # type: ignore[index]
    decl["tables"]["stores"]["columns"]["opened_at"] = "timestamp"  # type: ignore[index]
    assert external_models.type_differences(tmp_path, [parse_source(decl)]) == [
        "raw_shop.stores.tax_rate: DECIMAL(9, 4) in external_models.yaml, DECIMAL(12, 6) declared"]
    (tmp_path / "external_models.yaml").write_text("- name: [unreadable\n")
    assert external_models.type_differences(tmp_path, [parse_source(decl)]) == []
