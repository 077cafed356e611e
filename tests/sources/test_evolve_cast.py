"""``schema_policy: evolve_cast`` casts a changed column to raw's type, and refuses a value the cast
would change. Before, DuckDB rounded silently: a price column that moved from integer cents to
decimal dollars (11.00, 12.49) landed in raw's BIGINT as 11 and 12, 100x too small, fractions
lost, and the marts served them (found by a schema-evolution probe)."""

from __future__ import annotations

from datetime import date
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


def _pg_rows(pg_db, query: str, params: list | None = None) -> list[tuple]:  # type: ignore[no-untyped-def]
    import psycopg2

    con = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=pg_db.user, dbname=pg_db.dbname)
    try:
        with con.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall()
    finally:
        con.close()


def _pg_day(pg_db, order_id: str):  # type: ignore[no-untyped-def]
    return _pg_rows(pg_db, "SELECT day FROM raw_shop.orders WHERE id = %s", [order_id])[0][0]


def test_on_a_postgresql_warehouse_a_cast_that_would_change_a_value_fails_and_one_that_keeps_them_applies(
        tmp_path: Path, pg_db) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL's COPY rounded text into a numeric(p, s) without a word (12.499 into numeric(10,2)
    landed 12.50), and refused '11.00' for a bigint although the cast keeps it: both now behave as
    on DuckDB (the probe that found DuckDB's rounding left this side open, decision 0035)."""
    from sources.connections import PostgresSettings
    from sources.load.postgres_raw import PostgresRaw

    spec = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": ".", "tables": {
        "orders": {"file": "orders.csv", "primary_key": "id", "schema_policy": "evolve_cast",
                   "columns": {"id": "string", "amount": "decimal(10,2)", "qty": "integer", "day": "date"}}}})
    landing = Landing.local(tmp_path / "landing")
    types = {"id": "string", "amount": "decimal(10,2)", "qty": "integer", "day": "date"}

    def apply() -> TableOutcome:
        outcome = TableOutcome("orders")
        with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
            try:
                apply_pending(spec, spec.tables["orders"], landing, raw, outcome)
            except Exception as exc:  # noqa: BLE001 - what ingest records per table
                outcome.error = exc
        return outcome

    def rows() -> list[tuple]:
        return _pg_rows(pg_db, "SELECT id, amount, qty FROM raw_shop.orders ORDER BY id")

    land_batch(landing, "shop", "orders", [{"id": "o1", "amount": Decimal("1.50"), "qty": 1}], types, key="id")
    assert apply().error is None and rows() == [("o1", Decimal("1.50"), 1)]

    # a finer scale, and a float: 12.499 would be rounded to 12.50; nothing of the batch is applied
    lossy = land_batch(landing, "shop", "orders", [{"id": "o2", "amount": Decimal("11.0000"), "qty": 2},
                                                   {"id": "o3", "amount": Decimal("12.4990"), "qty": 3}],
                       {**types, "amount": "decimal(12,4)"}, key="id")
    text = str(apply().error)
    assert f"batch={lossy}" in text and "amount = 12.4990 becomes 12.50 in raw's DECIMAL(10, 2) (row 2 of the batch)" \
        in text, text
    assert "migrate the raw column to the new type instead of evolve_cast" in text and "set-aside" not in text, text
    assert rows() == [("o1", Decimal("1.50"), 1)]

    from sources.load.set_aside import set_aside  # the team migrates instead; here the batch is put aside

    with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
        set_aside(spec, "orders", lossy, landing=landing, raw=raw, reason="lossy cast, test")
    # values the casts keep: a float and decimal text into numeric(10,2), decimal and padded text into bigint
    land_batch(landing, "shop", "orders", [{"id": "o4", "amount": 11.5, "qty": Decimal("4.00")}],
               {**types, "amount": "float", "qty": "decimal(10,2)"}, key="id")
    land_batch(landing, "shop", "orders", [{"id": "o5", "amount": "7.10", "qty": " 5"}],
               {**types, "amount": "string", "qty": "string"}, key="id")
    applied = apply()
    assert applied.error is None, applied.error
    assert "column qty cast to raw type BIGINT" in applied.schema_notes, applied.schema_notes
    assert rows() == [("o1", Decimal("1.50"), 1), ("o4", Decimal("11.50"), 4), ("o5", Decimal("7.10"), 5)]
    land_batch(landing, "shop", "orders", [{"id": "o6a", "amount": Decimal("2.00"), "qty": 6, "day": "2020-01-03T00:00:00"}],
               {**types, "day": "timestamp"}, key="id")  # a timestamp at midnight into the date: kept
    assert apply().error is None
    assert _pg_day(pg_db, "o6a") == date(2020, 1, 3)
    float_batch = land_batch(landing, "shop", "orders", [{"id": "o6", "amount": 0.1 + 0.2, "qty": 6}],
                             {**types, "amount": "float"}, key="id")
    assert "amount = 0.30000000000000004 becomes 0.30" in str(apply().error)
    with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
        set_aside(spec, "orders", float_batch, landing=landing, raw=raw, reason="lossy cast, test")
    # a date column whose source now sends timestamps: COPY kept the day and dropped the time
    timestamps = land_batch(landing, "shop", "orders", [
        {"id": "o7", "amount": Decimal("1.00"), "qty": 7, "day": "2020-01-01T00:00:00"},
        {"id": "o8", "amount": Decimal("1.00"), "qty": 8, "day": "2020-01-02T10:30:00"}],
        {**types, "day": "timestamp"}, key="id")
    assert "day = 2020-01-02 10:30:00 becomes 2020-01-02 in raw's DATE (row 2 of the batch)" in str(apply().error)
    with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
        set_aside(spec, "orders", timestamps, landing=landing, raw=raw, reason="lossy cast, test")
    land_batch(landing, "shop", "orders", [{"id": "o9", "amount": float("nan"), "qty": 9}],
               {**types, "amount": "float"}, key="id")
    assert "amount = nan is no number raw's DECIMAL(10, 2) holds (row 1 of the batch)" in str(apply().error)



TIME_SPEC = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": ".", "tables": {
    "orders": {"file": "orders.csv", "primary_key": "id", "schema_policy": "evolve_cast",
               "columns": {"id": "string", "day": "date", "at": "timestamp"}}}})


def _text_into_dates_and_timestamps(tmp_path: Path, open_raw, read_rows) -> None:  # type: ignore[no-untyped-def]
    """Text that names another instant than raw would store is refused; text naming the same one
    applies. Both warehouses cut '2020-01-02 10:30' into the date 2020-01-02 and dropped an
    offset's hours ('10:30+02:00' became the timestamp 10:30) without a word."""
    from datetime import datetime

    landing = Landing.local(tmp_path / "time-landing")

    def apply() -> TableOutcome:
        outcome = TableOutcome("orders")
        with open_raw() as raw:
            try:
                apply_pending(TIME_SPEC, TIME_SPEC.tables["orders"], landing, raw, outcome)
            except Exception as exc:  # noqa: BLE001 - what ingest records per table
                outcome.error = exc
        return outcome

    def set_aside_batch(batch: str) -> None:
        from sources.load.set_aside import set_aside

        with open_raw() as raw:
            set_aside(TIME_SPEC, "orders", batch, landing=landing, raw=raw, reason="lossy cast, test")

    typed = {"id": "string", "day": "date", "at": "timestamp"}
    text = {"id": "string", "day": "string", "at": "string"}
    land_batch(landing, "shop", "orders", [{"id": "o1", "day": date(2020, 1, 1), "at": "2020-01-01T08:00:00"}],
               typed, key="id")
    assert apply().error is None

    cut = land_batch(landing, "shop", "orders", [{"id": "o2", "day": "2020-01-02", "at": "2020-01-02 09:00:00"},
                                                 {"id": "o3", "day": "2020-01-03 10:30:00", "at": "2020-01-03 09:00:00"}],
                     text, key="id")
    error = str(apply().error)
    assert f"batch={cut}" in error and "day = 2020-01-03 10:30:00 becomes 2020-01-03 in raw's DATE (row 2 of the batch)" \
        in error, error
    set_aside_batch(cut)
    shifted = land_batch(landing, "shop", "orders", [{"id": "o4", "day": "2020-01-04", "at": "2020-01-04T10:30:00+02:00"}],
                         text, key="id")
    error = str(apply().error)
    assert f"batch={shifted}" in error and "at = 2020-01-04T10:30:00+02:00 becomes 2020-01-04 10:30:00 in raw's " \
        "TIMESTAMP (row 1 of the batch)" in error, error
    set_aside_batch(shifted)
    # a form DuckDB reads as a date but not as an instant, and PostgreSQL's ISO check cannot read:
    # its UTC day is 2020-01-03, and both warehouses' date casts kept 2020-01-02
    zoned = land_batch(landing, "shop", "orders", [{"id": "o4b", "day": "2020-01-02 23:30:00 -0500",
                                                    "at": "2020-01-02 09:00:00"}], text, key="id")
    error = str(apply().error)
    assert f"batch={zoned}" in error and "day = 2020-01-02 23:30:00 -0500 " in error, error
    assert read_rows() == [("o1", date(2020, 1, 1), datetime(2020, 1, 1, 8))]  # nothing of the three batches applied
    set_aside_batch(zoned)

    land_batch(landing, "shop", "orders", [  # the same instants, however written: applied
        {"id": "o5", "day": "2020-01-05", "at": "2020-01-05 09:00:00"},
        {"id": "o6", "day": "2020-01-06T00:00:00", "at": "2020-01-06T09:00:00Z"},
        {"id": "o7", "day": None, "at": "2020-01-07T09:00:00+00:00"},
        {"id": "o8", "day": "2020-01-08T02:00:00+02:00", "at": None}], text, key="id")  # midnight UTC
    applied = apply()
    assert applied.error is None, applied.error
    assert read_rows() == [("o1", date(2020, 1, 1), datetime(2020, 1, 1, 8)),
                           ("o5", date(2020, 1, 5), datetime(2020, 1, 5, 9)),
                           ("o6", date(2020, 1, 6), datetime(2020, 1, 6, 9)),
                           ("o7", None, datetime(2020, 1, 7, 9)),
                           ("o8", date(2020, 1, 8), None)]


def test_text_into_a_date_or_timestamp_is_refused_when_it_names_another_instant(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh.duckdb"

    def rows() -> list[tuple]:
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            return con.execute('SELECT id, day, "at" FROM raw_shop.orders ORDER BY id').fetchall()
        finally:
            con.close()

    _text_into_dates_and_timestamps(tmp_path, lambda: DuckDBRaw(warehouse), rows)


def test_on_a_postgresql_warehouse_text_into_a_date_or_timestamp_is_refused_when_it_names_another_instant(
        tmp_path: Path, pg_db) -> None:  # type: ignore[no-untyped-def]
    from sources.connections import PostgresSettings
    from sources.load.postgres_raw import PostgresRaw

    def rows() -> list[tuple]:
        return _pg_rows(pg_db, 'SELECT id, day, "at" FROM raw_shop.orders ORDER BY id')

    _text_into_dates_and_timestamps(
        tmp_path, lambda: PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)), rows)
