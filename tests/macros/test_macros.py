"""The macros render to the SQL we expect and compute the right values when executed.

Models are written in DuckDB's dialect and SQLMesh transpiles them for the gateway's engine, so
every value test runs twice: on DuckDB, and on a real PostgreSQL server after the same
transpilation (``engine`` fixture). A dialect difference a macro fails to hide fails here.
"""

from __future__ import annotations

from decimal import Decimal

from collections.abc import Callable
from typing import Any

import duckdb
import pytest
import sqlglot
from sqlglot import parse_one
from sqlmesh.core.macros import MacroEvaluator

import macros.dedupe  # noqa: F401 - registers @latest_row_per_key
import macros.money  # noqa: F401 - registers @cents_to_dollars


def render(sql: str, dialect: str = "duckdb") -> str:
    return MacroEvaluator(dialect="duckdb").transform(parse_one(sql, dialect="duckdb")).sql(dialect=dialect)


@pytest.fixture(params=["duckdb", "postgres"])
def engine(request: pytest.FixtureRequest) -> Callable[[str], list[tuple[Any, ...]]]:
    """Runs a DuckDB-dialect query on the parametrized engine and returns its rows."""
    if request.param == "duckdb":
        return lambda query: duckdb.sql(query).fetchall()
    import psycopg2

    server = request.getfixturevalue("pg_server")
    con = psycopg2.connect(server.dsn)
    request.addfinalizer(con.close)

    def on_postgres(query: str) -> list[tuple[Any, ...]]:
        with con.cursor() as cur:
            cur.execute(sqlglot.transpile(query, read="duckdb", write="postgres")[0])
            return cur.fetchall()

    return on_postgres


def test_cents_to_dollars_casts_before_dividing() -> None:
    sql = render("SELECT @cents_to_dollars(price) AS p FROM t")
    assert sql == "SELECT CAST(ROUND(CAST(price AS DECIMAL(18, 4)) / 100, 2) AS DECIMAL(16, 2)) AS p FROM t"


@pytest.mark.parametrize(("cents", "dollars"), [(1100, "11.00"), (7, "0.07"), (643, "6.43"), (0, "0.00"), (-250, "-2.50"), (None, None)])
def test_cents_to_dollars_values(engine: Callable[[str], list[tuple[Any, ...]]], cents: int | None, dollars: str | None) -> None:
    sql = render("SELECT @cents_to_dollars(c) AS d FROM t")
    value = engine(f"WITH t AS (SELECT {cents if cents is not None else 'NULL'}::BIGINT AS c) {sql}")[0][0]
    assert value == (Decimal(dollars) if dollars else None)


def test_cents_to_dollars_never_divides_integers_on_postgres() -> None:
    sql = render("SELECT @cents_to_dollars(c) AS d FROM t", dialect="postgres")
    assert "CAST(c AS DECIMAL(18, 4)) / " in sql  # the numerator is a decimal before any division


def test_cents_to_dollars_other_scale(engine: Callable[[str], list[tuple[Any, ...]]]) -> None:
    sql = render("SELECT @cents_to_dollars(c, 4) AS d FROM t")
    assert engine(f"WITH t AS (SELECT 12345::BIGINT AS c) {sql}")[0][0] == Decimal("123.4500")


def test_latest_row_per_key_renders_a_portable_window() -> None:
    sql = render("SELECT r.id, r.name FROM raw AS r QUALIFY @latest_row_per_key(r.id)")
    assert sql == (
        "SELECT r.id, r.name FROM raw AS r QUALIFY ROW_NUMBER() OVER (PARTITION BY r.id "
        "ORDER BY r._extracted_at DESC, r._batch_id DESC, r._batch_row DESC) = 1 AND NOT FIRST_VALUE(COALESCE(r._deleted, FALSE)) "
        "OVER (PARTITION BY r.id ORDER BY r._extracted_at DESC, r._batch_id DESC, r._batch_row DESC)"
    )
    # PostgreSQL has no QUALIFY: the transpiler turns it into a filtered subquery
    assert "QUALIFY" not in render("SELECT r.id FROM raw AS r QUALIFY @latest_row_per_key(r.id)", dialect="postgres")


def test_latest_row_per_key_keeps_the_latest_extract_then_batch_then_row(engine: Callable[[str], list[tuple[Any, ...]]]) -> None:
    rows = """
        SELECT * FROM (VALUES
          ('a', 'old',     TIMESTAMP '2026-01-01', 'b1', 0, FALSE),
          ('a', 'newest',  TIMESTAMP '2026-01-02', 'b2', 0, FALSE),
          ('b', 'first',   TIMESTAMP '2026-01-01', 'b1', 1, FALSE),
          ('b', 'second',  TIMESTAMP '2026-01-01', 'b1', 2, FALSE),
          ('c', 'batch b1',TIMESTAMP '2026-01-03', 'b1', 5, FALSE),
          ('c', 'batch b3',TIMESTAMP '2026-01-03', 'b3', 0, FALSE),
          ('d', 'live',    TIMESTAMP '2026-01-01', 'b1', 3, FALSE),
          ('d', NULL,      TIMESTAMP '2026-01-04', 'b4', NULL, TRUE),
          ('e', 'deleted', TIMESTAMP '2026-01-01', 'b1', 4, FALSE),
          ('e', NULL,      TIMESTAMP '2026-01-04', 'b4', NULL, TRUE),
          ('e', 'back',    TIMESTAMP '2026-01-05', 'b5', 0, FALSE)
        ) AS v(id, name, _extracted_at, _batch_id, _batch_row, _deleted)
    """
    sql = render("SELECT r.id, r.name FROM raw AS r QUALIFY @latest_row_per_key(r.id) ORDER BY r.id")
    got = engine(f"WITH raw AS ({rows}) {sql}")
    # d's latest version is a tombstone: gone; e came back after its tombstone
    assert got == [("a", "newest"), ("b", "second"), ("c", "batch b3"), ("e", "back")]


def test_latest_row_per_key_with_a_composite_key(engine: Callable[[str], list[tuple[Any, ...]]]) -> None:
    rows = """
        SELECT * FROM (VALUES
          ('SUP-1', 'JAF-1', 1, TIMESTAMP '2026-01-01', 'b1', 0, FALSE),
          ('SUP-1', 'JAF-1', 2, TIMESTAMP '2026-01-02', 'b2', 0, FALSE),
          ('SUP-1', 'JAF-2', 3, TIMESTAMP '2026-01-01', 'b1', 1, FALSE)
        ) AS v(id, sku, cost, _extracted_at, _batch_id, _batch_row, _deleted)
    """
    sql = render("SELECT r.id, r.sku, r.cost FROM raw AS r QUALIFY @latest_row_per_key(r.id, r.sku) ORDER BY r.sku")
    assert engine(f"WITH raw AS ({rows}) {sql}") == [("SUP-1", "JAF-1", 2), ("SUP-1", "JAF-2", 3)]
