"""The days a batch touches and the orphan check, on a DuckDB warehouse, whichever query plan the
batch's size selects; the record of consumed batches on DuckDB and PostgreSQL
(orchestrator/transform/windows.py)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import duckdb
import pytest
from sqlmesh.core.engine_adapter import create_engine_adapter

from orchestrator.transform import windows as w

SPECS = {
    "raw_s.orders": w.WindowSpec(("id",), "ordered_at"),
    "raw_s.items": w.WindowSpec(("id",), None, ("raw_s.orders", "order_id")),
}
PARENTS = 40  # live orders o0..o39 on 2020-01-01 + n days


@pytest.fixture
def adapter(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "w.duckdb")
    con = duckdb.connect(path)
    meta = "_extracted_at TIMESTAMP, _batch_id TEXT, _batch_row BIGINT, _deleted BOOLEAN"
    con.execute("CREATE SCHEMA raw_s")
    con.execute(f"CREATE TABLE raw_s.orders (id TEXT, ordered_at TIMESTAMP, {meta})")
    con.execute(f"CREATE TABLE raw_s.items (id TEXT, order_id TEXT, {meta})")
    con.execute(f"INSERT INTO raw_s.orders SELECT 'o' || i, TIMESTAMP '2020-01-01 10:00' + i * INTERVAL 1 DAY, "
                f"TIMESTAMP '2020-03-01', 'b0', i, FALSE FROM range({PARENTS}) t(i)")
    # o-del was live, then deleted; o-null has no time
    con.execute("INSERT INTO raw_s.orders VALUES ('o-del', '2020-06-01 09:00', '2020-03-01', 'b0', 100, FALSE), "
                "('o-del', '2020-06-01 09:00', '2020-03-02', 'b1', 0, TRUE), "
                "('o-null', NULL, '2020-03-01', 'b0', 101, FALSE)")
    con.execute("INSERT INTO raw_s.items SELECT 'i' || i, 'o' || i, '2020-03-01', 'b0', i, FALSE FROM range(20) t(i)")
    # b2: a good item moved from o3 to o5 (its old version is in b0), an orphan, one whose order
    # was deleted, one whose order has no time; b3: only a good item
    con.execute("INSERT INTO raw_s.items VALUES ('i3', 'o5', '2020-03-03', 'b2', 0, FALSE), "
                "('i-orphan', 'o404', '2020-03-03', 'b2', 1, FALSE), ('i-del', 'o-del', '2020-03-03', 'b2', 2, FALSE), "
                "('i-null', 'o-null', '2020-03-03', 'b2', 3, FALSE), ('i-new', 'o7', '2020-03-04', 'b3', 0, FALSE)")
    con.close()
    yield create_engine_adapter(lambda: duckdb.connect(path), "duckdb")


@pytest.mark.parametrize("key", [("id",), ("id", "order_id")], ids=["one-column-key", "two-column-key"])
def test_a_child_batch_touches_its_parents_days_old_and_new(adapter, key: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    specs = {**SPECS, "raw_s.items": w.WindowSpec(key, None, ("raw_s.orders", "order_id"))}
    days = w.raw_windows(adapter, "raw_s.items", specs, {"b2"}).days
    if key == ("id",):  # i3's versions: its old order o3 (2020-01-04) and its new one o5 (2020-01-06)
        assert days == {date(2020, 1, 4), date(2020, 1, 6), date(2020, 6, 1)}
    else:  # (i3, o5) is a new key: its old version is another key's
        assert days == {date(2020, 1, 6), date(2020, 6, 1)}
    assert w.raw_windows(adapter, "raw_s.items", specs, {"b3"}).days == {date(2020, 1, 8)}


def test_orphans_are_the_same_whichever_check_runs_first(adapter, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    answers: list[bool] = []
    original = w._all_parents_live

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        answers.append(original(*args, **kwargs))
        return answers[-1]

    monkeypatch.setattr(w, "_all_parents_live", spy)
    # a small batch (4 rows beside 43 parent rows): the semi-join count runs first, finds a
    # missing parent, and the exact query names the orphans: i-orphan, and i-del, added after its
    # order o-del was deleted (o-del's earlier live row in raw does not make it present: a clean
    # build of the same source has no o-del at all; before, i-del passed, found by a fuzz)
    small = w.orphans(adapter, "raw_s.items", SPECS, {"b2"})
    assert answers == [False]
    assert small is not None and small.count == 2 and small.batches == {"b2"}
    assert small.example["id"] in {"i-orphan", "i-del"}
    # a small batch whose parents all live: settled by the count alone
    assert w.orphans(adapter, "raw_s.items", SPECS, {"b3"}) is None
    assert answers == [False, True]
    # all of raw (a whole-history build): the count is skipped, the anti-join decides
    whole = w.orphans(adapter, "raw_s.items", SPECS, {"b0", "b2", "b3"})
    assert answers == [False, True]
    assert whole is not None and whole.count == 2 and whole.batches == {"b2"}


def test_pending_batches_reads_back_only_the_tables_a_version_reads(adapter) -> None:  # type: ignore[no-untyped-def]
    """Found by a probe of months of daily runs: the query returned every ledger batch of the
    tables a model does not read (none is ever consumed by it), filtered in Python, on every
    transform: 952k rows and 1.2 s at 100k old batches. The rows the warehouse returns are counted."""
    adapter.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
    adapter.execute("CREATE TABLE elt_meta.loaded_batches (raw_table TEXT, batch_id TEXT, loaded_at TIMESTAMP, rows BIGINT)")
    adapter.execute("INSERT INTO elt_meta.loaded_batches SELECT 'raw_s.Other', 'x' || i, TIMESTAMP '2020-03-01', 1 "
                    "FROM range(5000) t(i)")
    adapter.execute("INSERT INTO elt_meta.loaded_batches VALUES ('raw_s.orders', 'b0', '2020-03-01', 1), "
                    "('raw_s.orders', 'b1', '2020-03-02', 1), ('raw_s.items', 'b2', '2020-03-03', 1)")
    w.ensure_tables(adapter)
    w.mark_consumed(adapter, {("stg.orders", "v1"): {"raw_s.orders": {"b0"}}})
    returned: list[int] = []
    fetchall = adapter.fetchall

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        rows = fetchall(*args, **kwargs)
        returned.append(len(rows))
        return rows

    adapter.fetchall = counting
    pending = w.pending_batches(adapter, {("stg.orders", "v1"): {"raw_s.orders"}, ("stg.items", "v2"): {"raw_s.items"},
                                          ("stg.none", "v3"): set()})
    assert pending == {("stg.orders", "v1"): {"raw_s.orders": {"b1"}}, ("stg.items", "v2"): {"raw_s.items": {"b2"}},
                       ("stg.none", "v3"): {}}
    assert returned == [2], returned  # the two pending batches, not the 5,000 of a table no version reads


@pytest.fixture(params=["duckdb", "postgres"])
def meta(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty consumption record on DuckDB, or on a fresh PostgreSQL database."""
    if request.param == "duckdb":
        path = str(tmp_path / "meta.duckdb")
        adapter = create_engine_adapter(lambda: duckdb.connect(path), "duckdb")
    else:
        import psycopg2

        pg = request.getfixturevalue("pg_db")
        adapter = create_engine_adapter(lambda: psycopg2.connect(pg.dsn), "postgres")
    w.ensure_tables(adapter)
    yield adapter
    adapter.close()


def test_mark_consumed_records_each_pair_once_however_often_it_is_given(meta) -> None:  # type: ignore[no-untyped-def]
    """A rerun with overlapping sets (a transform killed after recording, then run again) adds only
    the new pairs, keeps the first record's time, and counts the pairs given; text with a quote,
    a comma, a newline, or none at all arrives as it was (the pairs travel as data)."""
    def recorded() -> dict[tuple[str, str, str, str], object]:
        return {(m, v, b, t): at for m, v, b, t, at in meta.fetchall(
            "SELECT model, version, batch_id, raw_table, consumed_at FROM elt_meta.consumed_batches")}

    assert w.mark_consumed(meta, {}) == 0
    first = {("stg.orders", "v1"): {"raw_s.orders": {"b0", "b1"}},
             ("stg.it'ems", "v2"): {"raw_s.items": {"b'2", "", 'q"\n,x'}}}
    assert w.mark_consumed(meta, first) == 5
    before = recorded()
    time.sleep(0.01)
    again = {("stg.orders", "v1"): {"raw_s.orders": {"b1", "b3"}}, ("stg.orders", "v9"): {"raw_s.orders": {"b1"}},
             ("stg.it'ems", "v2"): {"raw_s.items": {""}}}
    assert w.mark_consumed(meta, again) == 4
    assert w.mark_consumed(meta, again) == 4
    after = recorded()
    assert set(after) == set(before) | {("stg.orders", "v1", "b3", "raw_s.orders"), ("stg.orders", "v9", "b1", "raw_s.orders")}
    assert {k: after[k] for k in before} == before


def test_prune_consumed_forgets_only_the_versions_sqlmesh_no_longer_has(meta) -> None:  # type: ignore[no-untyped-def]
    """On DuckDB and PostgreSQL: the records of a known model's versions missing from SQLMesh's
    state go; its live versions, its ``novde`` table and other models' records stay."""
    w.mark_consumed(meta, {("stg.orders", "v1"): {"raw_s.orders": {"b0", "b1"}},
                           ("stg.orders", "v0"): {"raw_s.orders": {"b0", "b1", "b2"}},
                           ("stg.orders", "novde"): {"raw_s.orders": {"b0"}},
                           ("stg.it'ems", "v7"): {"raw_s.items": {"b0"}},
                           ("stg.other", "v5"): {"raw_s.orders": {"b0"}}})
    live = {("stg.orders", "v1"), ("stg.it'ems", "v8")}
    # recorded in the last day: kept (another environment's transform records before its plan)
    assert w.prune_consumed(meta, live, {"stg.orders", "stg.it'ems"}) == (0, 0)
    meta.execute("UPDATE elt_meta.consumed_batches SET consumed_at = consumed_at - INTERVAL '2' DAY")
    w.mark_consumed(meta, {("stg.orders", "v2"): {"raw_s.orders": {"b0"}}})  # a version just recorded
    assert w.prune_consumed(meta, live, {"stg.orders", "stg.it'ems"}) == (2, 4)
    left = {(m, v) for m, v in meta.fetchall("SELECT DISTINCT model, version FROM elt_meta.consumed_batches")}
    assert left == {("stg.orders", "v1"), ("stg.orders", "novde"), ("stg.orders", "v2"), ("stg.other", "v5")}
    assert w.prune_consumed(meta, live, {"stg.orders", "stg.it'ems"}) == (0, 0)


@pytest.mark.parametrize("tombstones", [False, True], ids=["no-deletions", "deleted-orders"])
def test_orphan_check_on_postgresql_hashes_the_parent_instead_of_rescanning_it(pg_db, tombstones: bool) -> None:  # type: ignore[no-untyped-def]
    """A whole-history build on PostgreSQL (the first transform, or one from landing) checks every
    item against the orders, and the items of deleted orders. Each join these checks send must hash
    (or merge): a nested loop reads the other side once per row. Its first question was sent with LIMIT 1, and PostgreSQL
    underestimates the rows a dedupe keeps (ROW_NUMBER() = 1); either made the planner pick that
    nested loop: 135-146 s at 1 year (72,000 orders, 108,000 items) where hash joins take 0.1-0.5 s,
    and hours at 6 years. The plans are read with EXPLAIN as each query is sent, not timed."""
    import psycopg2

    orders, items = 4000, 6000
    con = psycopg2.connect(pg_db.dsn)
    con.autocommit = True
    meta = "_extracted_at TIMESTAMP, _batch_id TEXT, _batch_row BIGINT, _deleted BOOLEAN"
    with con.cursor() as cur:
        cur.execute("CREATE SCHEMA raw_s")
        cur.execute(f"CREATE TABLE raw_s.orders (id TEXT, ordered_at TIMESTAMP, {meta})")
        cur.execute(f"CREATE TABLE raw_s.items (id TEXT, order_id TEXT, {meta})")
        cur.execute(f"INSERT INTO raw_s.orders SELECT 'o' || g, TIMESTAMP '2020-01-01' + (g % 365) * INTERVAL '1 day', "
                    f"TIMESTAMP '2020-03-01', 'b' || (g % 20), g, FALSE FROM generate_series(1, {orders}) AS g")
        if tombstones:  # every 500th order deleted by a later batch, and its items with it
            cur.execute("INSERT INTO raw_s.orders SELECT id, ordered_at, TIMESTAMP '2020-03-02', 'b99', _batch_row, TRUE "
                        "FROM raw_s.orders WHERE _batch_row % 500 = 0")
        cur.execute(f"INSERT INTO raw_s.items SELECT 'i' || g, 'o' || (1 + g % {orders}), TIMESTAMP '2020-03-01', "
                    f"'b' || (g % 20), g, FALSE FROM generate_series(1, {items}) AS g")
        if tombstones:
            cur.execute("INSERT INTO raw_s.items SELECT id, order_id, TIMESTAMP '2020-03-02', 'b99', _batch_row, TRUE "
                        f"FROM raw_s.items WHERE (1 + _batch_row % {orders}) % 500 = 0")
        cur.execute("ANALYZE")
    adapter = create_engine_adapter(lambda: psycopg2.connect(pg_db.dsn), "postgres")
    plans: list[tuple[str, str]] = []
    fetchall, fetchone = adapter.fetchall, adapter.fetchone

    def recording(fetch):  # type: ignore[no-untyped-def]
        def run(query, *args, **kwargs):  # type: ignore[no-untyped-def]
            text = query if isinstance(query, str) else query.sql("postgres")
            if " JOIN " in text.upper() or " IN (SELECT" in text.upper():
                # the plan as the query is sent: same connection, transaction and settings
                plans.append((text, "\n".join(str(line) for (line,) in fetchall("EXPLAIN " + text))))
            return fetch(query, *args, **kwargs)
        return run

    adapter.fetchall, adapter.fetchone = recording(fetchall), recording(fetchone)
    everything = {f"b{i}" for i in range(20)} | ({"b99"} if tombstones else set())
    try:
        assert w.orphans(adapter, "raw_s.items", SPECS, everything) is None
        if tombstones:  # the deleted orders' items are deleted too: nothing held, but the children are read
            assert w.deleted_parents(adapter, "raw_s.orders", SPECS, {"b99"}) == []
        assert plans
        for query, plan in plans:
            assert "Nested Loop" not in plan, f"{query}\n{plan}"
    finally:
        adapter.close()
        con.close()


def test_a_child_whose_columns_look_like_placeholders_finds_its_days(tmp_path: Path) -> None:
    """A child table keyed by `line {n}` and pointing at its order through `order {id}`: the
    parent's columns were filled into the query with str.format, which read the child's quoted
    names as placeholders (KeyError: 'n'), and every `elt transform` of the project failed so (a
    probe of identifiers)."""
    path = str(tmp_path / "w.duckdb")
    con = duckdb.connect(path)
    meta = "_extracted_at TIMESTAMP, _batch_id TEXT, _batch_row BIGINT"
    con.execute("CREATE SCHEMA raw_s")
    con.execute(f'CREATE TABLE raw_s.orders ("id" TEXT, "ordered_at" TIMESTAMP, {meta})')
    con.execute(f'CREATE TABLE raw_s.items ("line {{n}}" TEXT, "order {{id}}" TEXT, {meta})')
    con.execute("INSERT INTO raw_s.orders VALUES ('o1', '2020-01-02 10:00', '2020-03-01', 'b0', 0), "
                "('o2', '2020-01-05 10:00', '2020-03-01', 'b0', 1)")
    con.execute("INSERT INTO raw_s.items VALUES ('l1', 'o1', '2020-03-01', 'b0', 0), ('l2', 'o2', '2020-03-02', 'b1', 0)")
    con.close()
    adapter = create_engine_adapter(lambda: duckdb.connect(path), "duckdb")
    specs = {"raw_s.orders": w.WindowSpec(("id",), "ordered_at"),
             "raw_s.items": w.WindowSpec(("line {n}",), None, ("raw_s.orders", "order {id}"))}
    try:
        assert w.raw_windows(adapter, "raw_s.items", specs, {"b1"}).days == {date(2020, 1, 5)}
    finally:
        adapter.close()
