from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sources.config import DECLARATIONS_DIR, declaration_json_schema, load_source, parse_source
from sources.errors import ConfigError


def test_the_demo_declaration_is_valid() -> None:
    spec = load_source("jaffle_shop")
    assert set(spec.tables) == {"customers", "orders", "items", "products", "stores", "supplies", "tweets"}
    assert spec.tables["supplies"].primary_key == ("id", "sku")
    assert spec.raw_schema == "raw_jaffle_shop"


def test_every_wrong_field_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        parse_source(
            {
                "name": "Bad-Name",
                "kind": "ftp",
                "owner": "x",
                "tables": {"t": {"file": "t.csv", "primary_key": "nope", "columns": {"a": "strng", "_x": "string"}}},
            },
            origin="bad.yaml",
        )
    text = str(err.value)
    assert "'name' 'Bad-Name' has the wrong form" in text
    assert "'kind' is 'ftp'; allowed: files, postgres, rest_api" in text
    assert "tables.t.columns.a: unknown type 'strng'" in text
    assert "tables.t.columns._x: names starting with '_' are reserved" in text
    assert "tables.t.primary_key: 'nope' is not a declared column" in text
    assert "next: fix bad.yaml" in text


def test_unknown_source_names_the_declared_ones() -> None:
    # the project's declarations, whatever a team has added (docs/how-to/add-a-source.md)
    declared = sorted(p.stem for p in DECLARATIONS_DIR.glob("*.yaml"))
    assert {"jaffle_app", "jaffle_catalog", "jaffle_shop"} <= set(declared)
    with pytest.raises(ConfigError, match=re.escape(f"declared sources: {', '.join(declared)}")):
        load_source("no_such_source")


def test_updated_since_needs_a_cursor_field() -> None:
    with pytest.raises(ConfigError, match="updated_since_param needs cursor_field"):
        parse_source({"name": "api", "kind": "rest_api", "owner": "x", "base_url": "http://127.0.0.1:1",
                      "tables": {"t": {"endpoint": "/t", "primary_key": "id", "updated_since_param": "since",
                                       "columns": {"id": "string"}}}})


def test_an_api_cursor_needs_updated_since_and_pagination_keys_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        parse_source({"name": "api", "kind": "rest_api", "owner": "x", "base_url": "http://127.0.0.1:1",
                      "tables": {"t": {"endpoint": "/t", "primary_key": "id", "cursor_field": "updated_at",
                                       "pagination": {"type": "page", "page_size_parm": "size"},
                                       "columns": {"id": "string", "updated_at": "timestamptz"}}}})
    text = str(err.value)
    assert "tables.t.cursor_field without updated_since_param" in text  # would re-append the endpoint every run
    assert "tables.t.pagination: unknown key(s) ['page_size_parm']" in text  # a typo would silently page wrong
    assert "tables.t.lookback: required with cursor_field" in text  # a 0s default would skip late commits


def test_a_bad_gateway_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    import os

    from orchestrator.cli import main

    os.environ["ELT_GATEWAY"] = "oracle"
    try:
        assert main(["sources"]) == 2
    finally:
        del os.environ["ELT_GATEWAY"]
    assert "ELT_GATEWAY is 'oracle'" in capsys.readouterr().err


def test_a_declaration_is_named_like_its_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Jobs, locks and landing folders use the file name: a different `name` would split them."""
    (tmp_path / "billing.yaml").write_text("name: invoices\nkind: files\nowner: x\npath: .\n"
                                           "tables: {t: {file: t.csv, primary_key: id, columns: {id: string}}}\n")
    with pytest.raises(ConfigError, match="declares name 'invoices', but its file is named 'billing'"):
        load_source("billing", directory=tmp_path)


# ---- unknown keys, every problem at once, the JSON Schema (docs/decisions/0016) ----------------

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "source-declaration.schema.json"


def _api(**table: object) -> dict:
    """A valid rest_api declaration, with ``table`` keys added to its one table."""
    return {"name": "api", "kind": "rest_api", "owner": "x", "base_url": "http://127.0.0.1:1",
            "auth": {"type": "bearer", "token_env": "API_TOKEN"},
            "tables": {"orders": {"endpoint": "/orders", "primary_key": "id", "pagination": {"type": "page"},
                                  "columns": {"id": "string", "amount": {"type": "integer", "description": "cents"}},
                                  **table}}}


def _problems(raw: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_source(raw, origin="api.yaml")
    return str(err.value)


@pytest.mark.parametrize(("where", "change", "path"), [
    ("source", lambda d: d.update(colour="red"), "declaration: unknown key(s) ['colour']"),
    ("auth", lambda d: d["auth"].update(secret="s3cr3t"), "'auth': unknown key(s) ['secret']"),
    ("table", lambda d: d["tables"]["orders"].update(cursor_feild="id"),
     "tables.orders: unknown key(s) ['cursor_feild']"),
    ("column", lambda d: d["tables"]["orders"]["columns"]["amount"].update(nullable=False),
     "tables.orders.columns.amount: unknown key(s) ['nullable']"),
    ("pagination", lambda d: d["tables"]["orders"]["pagination"].update(size=10),
     "tables.orders.pagination: unknown key(s) ['size']"),
    ("event_time_from", lambda d: d["tables"]["orders"].update(event_time_from={"table": "o", "key": "id", "day": "x"}),
     "tables.orders.event_time_from: unknown key(s) ['day']"),
])
def test_an_unknown_key_is_refused_at_every_level(where, change, path) -> None:  # type: ignore[no-untyped-def]
    raw = _api()
    parse_source(raw)  # valid before the change
    change(raw)
    text = _problems(raw)
    assert "has 1 problem(s)" in text and path in text, text
    assert "pydantic" not in text and "https://" not in text  # our words, not the library's


def test_an_unknown_key_names_the_allowed_ones_and_the_likely_one() -> None:
    text = _problems(_api(cursor_feild="id"))
    assert "did you mean 'cursor_field'?" in text and "allowed: columns, cursor_field," in text
    nullable = _problems(_api(columns={"id": {"type": "string", "nullable": False}}))
    assert "nullable is not enforced by the loader" in nullable and "not_null audit" in nullable


def test_params_stay_a_free_mapping() -> None:
    spec = parse_source(_api(params={"status": "active", "anything": {"goes": [1, 2]}, "skip": None}))
    assert spec.tables["orders"].params == {"status": "active", "anything": {"goes": [1, 2]}, "skip": None}


def test_several_problems_at_several_levels_are_reported_at_once() -> None:
    raw = _api(lookback="soon", schema_policy="loose", primary_key="order_id", cursor_field="updated_at")
    raw.update(colour="red", timeout_s=0, max_retries=-1)
    raw["auth"].update(type="api_key")  # without its header
    raw["tables"]["orders"]["columns"]["amount"]["nullable"] = False
    raw["tables"]["refunds"] = {"primary_key": "id", "columns": {"id": "strng", "_loaded": "string"}}
    text = _problems(raw)
    expected = [
        "'timeout_s' must be a number >= 0.1",
        "'max_retries' must be a number >= 0",
        "declaration: unknown key(s) ['colour']",
        "'auth.header' is required for api_key auth",
        "tables.orders.columns.amount: unknown key(s) ['nullable']",
        "tables.orders.lookback: 'soon' is not a duration like 90s, 15m, 26h or 2d",
        "tables.orders.schema_policy is 'loose'; allowed: evolve, strict, evolve_cast",
        "tables.orders.primary_key: 'order_id' is not a declared column",  # despite the wrong column key
        "tables.orders.cursor_field without updated_since_param",
        "tables.refunds.columns.id: unknown type 'strng'",
        "tables.refunds.columns._loaded: names starting with '_' are reserved",
        "tables.refunds.endpoint: required for rest_api",
    ]
    for line in expected:
        assert f"  - {line}" in text, (line, text)
    assert f"has {text.count(chr(10) + '  - ')} problem(s)" in text  # N is the number of lines listed
    assert text.count("\n  - ") >= len(expected)


def test_a_declaration_in_an_editor_and_in_the_loader_agree() -> None:
    """The committed schema is the models' (regenerate: python -m sources.config --schema > ...)."""
    import jsonschema
    import yaml

    assert json.loads(SCHEMA_FILE.read_text()) == declaration_json_schema(), (
        "docs/reference/source-declaration.schema.json is stale: "
        "python -m sources.config --schema > docs/reference/source-declaration.schema.json")
    validator = jsonschema.Draft202012Validator(declaration_json_schema())
    jsonschema.Draft202012Validator.check_schema(validator.schema)
    declarations = sorted((SCHEMA_FILE.parents[2] / "sources" / "declarations").glob("*.yaml"))
    assert declarations
    for path in declarations:
        raw = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(raw)) == [], path
        assert path.read_text().startswith("# yaml-language-server: $schema=../../docs/reference/"), path
    raw = _api()
    raw["tables"]["orders"]["columns"]["amount"]["nullable"] = False
    assert [list(e.absolute_path) for e in validator.iter_errors(raw)] == [["tables", "orders", "columns", "amount"]]
    with pytest.raises(ConfigError, match=r"tables\.orders\.columns\.amount: unknown key\(s\) \['nullable'\]"):
        parse_source(raw)
    raw = _api()
    raw["tables"]["orders"]["columns"]["amount"] = "strng"  # the schema knows the type names too
    assert list(validator.iter_errors(raw))


def test_the_schema_is_printed_by_the_module() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sources.config", "--schema"], capture_output=True, text=True,
                         check=True, cwd=SCHEMA_FILE.parents[2]).stdout
    assert json.loads(out) == declaration_json_schema()


def test_a_decimal_type_in_a_flow_mapping_without_quotes_is_explained() -> None:
    """`{type: decimal(10,2)}`: YAML splits it at the comma, leaving a key named `2)`."""
    import yaml

    from sources.config import parse_source

    declaration = yaml.safe_load("name: s\nkind: files\nowner: o\npath: .\ntables:\n  t:\n    file: t.csv\n"
                                 "    primary_key: id\n    columns:\n      id: string\n"
                                 "      amount: {type: decimal(10,2), description: cents}\n")
    with pytest.raises(Exception) as refused:
        parse_source(declaration)
    assert "needs quotes: {type: 'decimal(10,2)'}" in str(refused.value), refused.value


def test_declarations_follow_the_project_elt_project_dir_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout run through ELT_PROJECT_DIR was read with the installed package's declarations:
    a source declared in it was missing from `elt sources` (a newcomer walkthrough)."""
    from sources.config import available_sources, declarations_dir

    monkeypatch.delenv("ELT_DECLARATIONS_DIR", raising=False)
    project = tmp_path / "checkout"
    monkeypatch.setenv("ELT_PROJECT_DIR", str(project))
    project.mkdir()
    assert declarations_dir() == DECLARATIONS_DIR  # a project without declarations of its own (a test's copy)
    (project / "sources" / "declarations").mkdir(parents=True)
    (project / "sources" / "declarations" / "billing.yaml").write_text(
        "name: billing\nkind: files\nowner: o\npath: .\ntables:\n  invoices:\n    file: i.csv\n    primary_key: id\n"
        "    columns: {id: string}\n")
    assert declarations_dir() == (project / "sources" / "declarations").resolve()
    assert available_sources() == ["billing"] and load_source("billing").tables["invoices"].primary_key == ("id",)
    monkeypatch.setenv("ELT_DECLARATIONS_DIR", str(tmp_path / "elsewhere"))  # the explicit folder wins
    assert declarations_dir() == tmp_path / "elsewhere"


def test_held_rows_fail_after_needs_held_rows_warn() -> None:
    table = {"file": "o.csv", "primary_key": "id", "event_time": "at", "columns": {"id": "string", "at": "timestamp"}}
    source = {"name": "shop", "kind": "files", "owner": "x", "path": ".", "tables": {"orders": table}}
    with pytest.raises(ConfigError, match=r"held_rows_fail_after: only with held_rows: warn"):
        parse_source({**source, "tables": {"orders": {**table, "held_rows_fail_after": "7d"}}})
    with pytest.raises(ConfigError, match="not a duration"):
        parse_source({**source, "tables": {"orders": {**table, "held_rows": "warn", "held_rows_fail_after": "a week"}}})
    spec = parse_source({**source, "tables": {"orders": {**table, "held_rows": "warn", "held_rows_fail_after": "36h"}}})
    assert spec.tables["orders"].held_rows_fail_after_s == 36 * 3600


def test_names_the_warehouses_would_cut_or_merge_are_refused_up_front() -> None:
    """A probe of identifiers: each of these was accepted, landed, and then failed every apply
    (or, on PostgreSQL, mixed up data): columns differing only by case (one column to DuckDB,
    Spark and SQLMesh's models), a column longer than PostgreSQL's 63 bytes (cut: two such columns
    were one, and every later load tried to add the long name again), a column named
    file_row_number (the loader's own read of a batch), and a source name whose raw schema passes
    63 bytes (two such sources wrote one PostgreSQL schema and deleted each other's keys)."""
    long_column = "a" * 64
    with pytest.raises(ConfigError) as err:
        parse_source({"name": "s" * 60, "kind": "files", "owner": "x", "path": "data",
                      "tables": {"t": {"file": "t.csv", "primary_key": "id",
                                       "columns": {"id": "string", "ID": "string", long_column: "string",
                                                   "File_Row_Number": "integer", "ok_" + "é" * 30: "string"}}}})
    text = str(err.value)
    assert "'name': is 60 characters: at most 59, so that its raw schema raw_ssssssss... fits" in text, text
    assert "tables.t.columns.ID: differs from 'id' only in case" in text, text
    assert f"tables.t.columns.{long_column}: is 64 bytes long: at most 63" in text, text
    assert "tables.t.columns.File_Row_Number: is reserved" in text, text
    assert "columns.ok_" not in text, text  # 63 bytes exactly: allowed
    # a long name with its own raw_schema is fine
    parse_source({"name": "s" * 60, "kind": "files", "owner": "x", "path": "data", "raw_schema": "raw_s",
                  "tables": {"t": {"file": "t.csv", "primary_key": "id", "columns": {"id": "string"}}}})
