from __future__ import annotations

import pytest

from sources.config import load_source, parse_source
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
    with pytest.raises(ConfigError, match="declared sources: jaffle_app, jaffle_catalog, jaffle_shop"):
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
