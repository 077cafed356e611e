"""``schema_policy: evolve_cast`` casts a changed column to raw's type, and refuses a value the cast
would change. Before, DuckDB rounded silently: a price column that moved from integer cents to
decimal dollars (11.00, 12.49) landed in raw's BIGINT as 11 and 12, 100x too small, fractions
lost, and the marts served them (found by a schema-evolution probe)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb

from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import apply_pending
from sources.config import parse_source
from sources.pipeline import TableOutcome
from tests.sources.test_set_aside import land_batch

SPEC = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": ".", "tables": {
    "orders": {"file": "orders.csv", "primary_key": "id", "schema_policy": "evolve_cast",
               "columns": {"id": "string", "amount": "integer"}}}})


def _apply(landing: Landing, warehouse: Path) -> TableOutcome:
    outcome = TableOutcome("orders")
    with DuckDBRaw(warehouse) as raw:
        try:
            apply_pending(SPEC, SPEC.tables["orders"], landing, raw, outcome)
        except Exception as exc:  # noqa: BLE001 - what ingest records per table
            outcome.error = exc
    return outcome


def _raw(warehouse: Path) -> list[tuple]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute("SELECT id, amount FROM raw_shop.orders ORDER BY id").fetchall()
    finally:
        con.close()


def test_a_cast_that_would_change_a_value_fails_the_batch_and_one_that_keeps_them_applies(tmp_path: Path) -> None:
    landing, warehouse = Landing.local(tmp_path / "landing"), tmp_path / "wh.duckdb"
    land_batch(landing, "shop", "orders", [{"id": "o1", "amount": 10}], {"id": "string", "amount": "integer"}, key="id")
    assert _apply(landing, warehouse).error is None and _raw(warehouse) == [("o1", 10)]

    dollars = {"id": "string", "amount": "decimal(10,2)"}
    lossy = land_batch(landing, "shop", "orders", [{"id": "o2", "amount": Decimal("11.00")},
                                                   {"id": "o3", "amount": Decimal("12.49")}], dollars, key="id")
    failed = _apply(landing, warehouse)
    text = str(failed.error)
    assert f"batch={lossy}" in text and "amount = 12.49 becomes 12 in raw's BIGINT (row 2 of the batch)" in text, text
    assert "migrate the raw column to the new type instead of evolve_cast" in text and "set-aside" not in text, text
    assert _raw(warehouse) == [("o1", 10)]  # nothing of it applied

    text_batch = tmp_path / "text-landing"  # text from an untyped column: DuckDB rounds '12.49' as well
    landing2 = Landing.local(text_batch)
    land_batch(landing2, "shop", "orders", [{"id": "o1", "amount": 10}], {"id": "string", "amount": "integer"}, key="id")
    assert _apply(landing2, tmp_path / "wh2.duckdb").error is None
    land_batch(landing2, "shop", "orders", [{"id": "o4", "amount": "7"}, {"id": "o5", "amount": "12.49"}],
               {"id": "string", "amount": "string"}, key="id")
    assert "amount = 12.49 becomes 12 in raw's BIGINT (row 2 of the batch)" in str(_apply(landing2, tmp_path / "wh2.duckdb").error)

    # text the cast keeps as the same number is applied, however it is written (compared as
    # numbers, not as DuckDB's rendering of them)
    kept = Landing.local(tmp_path / "kept-landing")
    land_batch(kept, "shop", "orders", [{"id": "o1", "amount": 10}], {"id": "string", "amount": "integer"}, key="id")
    assert _apply(kept, tmp_path / "wh4.duckdb").error is None
    land_batch(kept, "shop", "orders", [{"id": f"t{n}", "amount": text} for n, text in
                                        enumerate(["5.0", " 6", "+7", "008", "1e3"])],
               {"id": "string", "amount": "string"}, key="id")
    text_applied = _apply(kept, tmp_path / "wh4.duckdb")
    assert text_applied.error is None, text_applied.error
    assert sorted(v for _, v in _raw(tmp_path / "wh4.duckdb")) == [5, 6, 7, 8, 10, 1000]

    whole = tmp_path / "whole-landing"  # values the cast keeps: applied, reported as cast
    landing3 = Landing.local(whole)
    land_batch(landing3, "shop", "orders", [{"id": "o1", "amount": 10}], {"id": "string", "amount": "integer"}, key="id")
    assert _apply(landing3, tmp_path / "wh3.duckdb").error is None
    land_batch(landing3, "shop", "orders", [{"id": "o2", "amount": Decimal("11.00")}], dollars, key="id")
    applied = _apply(landing3, tmp_path / "wh3.duckdb")
    assert applied.error is None and "column amount cast to raw type BIGINT" in applied.schema_notes, applied
    assert _raw(tmp_path / "wh3.duckdb") == [("o1", 10), ("o2", 11)]
