"""The snapshot comparison (sources/load/changes.py) against a model of what it must append.

Random histories of snapshots and partial re-reads (no tombstones) are applied to a raw table by
the SQL, on DuckDB and on PostgreSQL, and by a small Python model of the rule in the module's
docstring: a row is appended when its key is new, deleted, or its values differ from the key's
latest version; a live key the snapshot lacks gets a tombstone. After every step the raw tables
must hold the same rows. The histories hold keys with many versions, resurrected keys, NULL values,
a two-column key and batches extracted at the same instant (ordered by batch id).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import duckdb
import pytest

from sources.load.changes import snapshot_insert_sql

KEY = ["k1", "k2"]
DATA = ["k1", "k2", "v1", "v2"]
RAW_DDL = ("k1 INTEGER, k2 TEXT, v1 INTEGER, v2 TEXT, _batch_id TEXT, _batch_row BIGINT, "
           "_extracted_at TIMESTAMP, _loaded_at TIMESTAMP, _deleted BOOLEAN")
Row = tuple  # (k1, k2, v1, v2, _batch_id, _batch_row, _extracted_at, _deleted)


def model_apply(raw: list[Row], snapshot: list[tuple], batch: str, at: datetime, tombstones: bool) -> list[Row]:
    """What the rule appends for ``snapshot`` (rows of DATA, unique keys) against ``raw``."""
    def order(r: Row) -> tuple:  # _extracted_at, _batch_id, _batch_row, all DESC NULLS LAST
        return (r[6], r[4], -1 if r[5] is None else r[5])

    latest: dict[tuple, Row] = {}
    for r in raw:
        k = r[:2]
        if k not in latest or order(r) > order(latest[k]):
            latest[k] = r
    out = []
    for i, s in enumerate(snapshot):
        cur = latest.get(s[:2])
        if cur is None or cur[7] or tuple(cur[2:4]) != tuple(s[2:4]):
            out.append((*s, batch, i, at, False))
    if tombstones:
        keys = {s[:2] for s in snapshot}
        for k, cur in latest.items():
            if not cur[7] and k not in keys:
                out.append((k[0], k[1], None, None, batch, None, at, True))
    return out


def histories(seed: int, steps: int = 14) -> list[tuple[list[tuple], str, datetime, bool]]:
    rng = random.Random(seed)
    keys = [(rng.randrange(20), rng.choice("ab")) for _ in range(40)]
    keys = sorted(set(keys))
    state: dict[tuple, tuple] = {}
    at = datetime(2024, 1, 1)
    out = []
    for step in range(steps):
        for k in keys:  # each key: kept, changed, deleted or (re)created
            roll = rng.random()
            if k in state and roll < 0.15:
                del state[k]
            elif roll < 0.45 or k not in state and roll < 0.7:
                state[k] = (*k, rng.choice([None, 1, 2, 3]), rng.choice([None, "x", "y"]))
        partial = step > 1 and rng.random() < 0.3  # a re-read of part of the table: no tombstones
        rows = [state[k] for k in sorted(state) if not partial or rng.random() < 0.5]
        rng.shuffle(rows)
        if rng.random() < 0.7:  # otherwise extracted at the same instant as the last batch
            at += timedelta(hours=1)
        out.append((rows, f"B{step:03d}", at, not partial))
    return out


def _literal_rows(rows: list[tuple]) -> str:
    def lit(v: object) -> str:
        return "NULL" if v is None else (str(v) if isinstance(v, int) else f"'{v}'")

    return ", ".join(f"({', '.join(lit(v) for v in (*r, i))})" for i, r in enumerate(rows))


def run_history(execute, fetch, dialect: str, seed: int) -> int:  # type: ignore[no-untyped-def]
    """Apply one random history through the SQL and the model; returns the number of raw rows."""
    model: list[Row] = []
    for rows, batch, at, tombstones in histories(seed):
        execute("DROP TABLE IF EXISTS b")
        execute("CREATE TABLE b (k1 INTEGER, k2 TEXT, v1 INTEGER, v2 TEXT, _batch_row BIGINT)")
        if rows:
            execute(f"INSERT INTO b VALUES {_literal_rows(rows)}")
        execute(snapshot_insert_sql("raw_t", "b", DATA, KEY, batch, at, at, dialect, tombstones=tombstones))
        model += model_apply(model, rows, batch, at, tombstones)
        got = sorted(fetch("SELECT k1, k2, v1, v2, _batch_id, _batch_row, _extracted_at, _deleted FROM raw_t"),
                     key=repr)
        assert got == sorted(model, key=repr), f"seed {seed}, batch {batch}: raw differs from the rule"
    return len(model)


@pytest.mark.parametrize("seed", range(6))
def test_duckdb_appends_exactly_the_changes_of_random_histories(seed: int) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE raw_t ({RAW_DDL})")
    n = run_history(con.execute, lambda sql: con.execute(sql).fetchall(), "duckdb", seed)
    assert n > 100  # the histories do hold many versions


@pytest.mark.parametrize("seed", range(3))
def test_postgres_appends_exactly_the_changes_of_random_histories(pg_db, seed: int) -> None:  # type: ignore[no-untyped-def]
    import psycopg2

    con = psycopg2.connect(pg_db.dsn)
    con.autocommit = True
    cur = con.cursor()
    cur.execute(f"CREATE TABLE raw_t ({RAW_DDL})")

    def fetch(sql: str) -> list[tuple]:
        cur.execute(sql)
        return cur.fetchall()

    try:
        run_history(cur.execute, fetch, "postgres", seed)
    finally:
        con.close()


def test_the_model_notices_a_wrong_append() -> None:
    """The comparison can fail: a rule that ignored deletions would differ from the model."""
    rows, batch, at, _ = histories(1)[0]
    first = model_apply([], rows, batch, at, True)
    assert model_apply(first, rows[1:], "B999", at, True)[-1][7] is True  # the dropped key: a tombstone
    assert model_apply(first, rows, "B999", at, True) == []  # an unchanged snapshot appends nothing
