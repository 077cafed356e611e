"""PostgreSQL source against a real server: exact types from the catalog, full and incremental
extraction with lookback, raw in DuckDB or PostgreSQL, landing local or on S3, schema changes."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg2
import pytest

from sources.config import parse_source
from sources.errors import RawLoadError
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.load.postgres_raw import PostgresRaw
from sources.connections import PostgresSettings
from sources.pipeline import ingest

SEED = """
CREATE SCHEMA app;
CREATE TABLE app.orders (
    id uuid PRIMARY KEY,
    customer text NOT NULL,
    amount numeric(12, 2),
    ordered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    payload jsonb,
    is_paid boolean,
    day date,
    note text
);
INSERT INTO app.orders VALUES
  ('00000000-0000-0000-0000-000000000001', 'ann', 12345678.91, '2024-01-01 10:00:00+00', '2024-01-01 10:00:00+00', '{"a": [1, 2]}', true, '2024-01-01', ''),
  ('00000000-0000-0000-0000-000000000002', 'bob', 0.10, '2024-01-01 11:30:00+02', '2024-01-01 11:30:00+02', NULL, false, NULL, NULL),
  ('00000000-0000-0000-0000-000000000003', 'cyd', NULL, '2024-01-02 09:00:00+00', '2024-01-02 09:00:00+00', '"x"', NULL, '2024-01-02', E'a "quoted", multi\\nline note');
"""


def declaration(lookback: str = "1h", policy: str = "evolve") -> dict:
    return {
        "name": "appdb", "kind": "postgres", "owner": "app-team", "env_prefix": "APPDB_",
        "tables": {"orders": {"source_table": "app.orders", "primary_key": "id", "cursor_field": "updated_at",
                              "lookback": lookback, "schema_policy": policy}},
    }


@pytest.fixture
def appdb(pg_db, monkeypatch):  # type: ignore[no-untyped-def]
    for key, value in pg_db.env("APPDB").items():
        monkeypatch.setenv(key.replace("APPDB_", "APPDB_"), value)
    con = psycopg2.connect(pg_db.dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(SEED)
    yield con
    con.close()


def _pg_rows(dsn: str, sql: str) -> list[tuple]:
    con = psycopg2.connect(dsn)
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        con.close()


def _duck(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _open_raw(store: str, tmp_path: Path, pg_db):  # type: ignore[no-untyped-def]
    """A new raw store of the kind ``store`` names: the DuckDB file under ``tmp_path``, or ``pg_db``."""
    if store == "duckdb":
        return DuckDBRaw(tmp_path / "wh.duckdb")
    return PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname))


def _read(store: str, tmp_path: Path, pg_db, sql: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    """``sql`` run on that store from a connection of its own (the store must be closed, for DuckDB)."""
    return _duck(tmp_path / "wh.duckdb", sql) if store == "duckdb" else _pg_rows(pg_db.dsn, sql)


def test_full_extract_keeps_exact_types_and_values(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = parse_source(declaration())
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert outcome.error is None and outcome.rows_applied == 3
    (manifest,) = list(landing.batches("appdb", "orders"))
    types = {c["name"]: c["type"] for c in manifest.columns}
    assert types == {"id": "uuid", "customer": "string", "amount": "decimal(12,2)", "ordered_at": "timestamptz",
                     "updated_at": "timestamptz", "payload": "json", "is_paid": "boolean", "day": "date", "note": "string"}
    assert manifest.cursor == {"field": "updated_at", "from": None, "to": "2024-01-02T09:00:00+00:00"}
    rows = _duck(tmp_path / "wh.duckdb", "SELECT id, amount, ordered_at AT TIME ZONE 'UTC', payload, is_paid, day, note "
                 "FROM raw_appdb.orders ORDER BY id")
    assert rows[0][1] == Decimal("12345678.91") and rows[1][1] == Decimal("0.10") and rows[2][1] is None
    assert str(rows[1][2]) == "2024-01-01 09:30:00"  # +02 converted to UTC
    assert rows[0][3] == '{"a": [1, 2]}' and rows[1][3] is None and rows[2][3] == '"x"'
    assert [r[4] for r in rows] == [True, False, None]
    assert rows[0][6] == "" and rows[1][6] is None and rows[2][6] == 'a "quoted", multi\nline note'


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_incremental_extract_reads_from_the_cursor_minus_lookback(appdb, pg_db, tmp_path: Path, store: str) -> None:  # type: ignore[no-untyped-def]
    """Rows re-read by the lookback are dropped by a semi-join in the raw store itself (uuid keys,
    timestamptz cursors), on both stores."""
    spec = parse_source(declaration(lookback="1h"))
    landing = Landing.local(tmp_path / "landing")
    opened = _open_raw(store, tmp_path, pg_db)

    def query(sql: str) -> list[tuple]:
        if store == "postgres":
            sql = sql.replace("(id, updated_at)", "ROW(id, updated_at)")
        return _read(store, tmp_path, pg_db, sql)
    with opened as raw:
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert raw.cursor("appdb", "orders") == "2024-01-02T09:00:00+00:00"
        with appdb.cursor() as cur:
            cur.execute("UPDATE app.orders SET note = 'edited', updated_at = '2024-01-03 08:00:00+00' WHERE customer = 'ann'")
            cur.execute("INSERT INTO app.orders VALUES ('00000000-0000-0000-0000-000000000004', 'dee', 5, "
                        "'2024-01-03 07:00:00+00', '2024-01-03 07:00:00+00', NULL, true, NULL, NULL)")
        (outcome,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert raw.cursor("appdb", "orders") == "2024-01-03T08:00:00+00:00"
        (nothing,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    # second extract reads updated_at >= 08:00 on 01-02 (cursor 09:00 minus 1h): cyd (unchanged at the
    # boundary, already in raw: dropped), dee (new) and ann (changed)
    assert outcome.rows_applied == 2 and outcome.rows_landed == 2
    # third run: the lookback re-reads ann and dee, both unchanged in raw: nothing new, no batch
    assert nothing.rows_applied == 0 and nothing.status == "unchanged" and nothing.error is None
    # raw holds each (id, updated_at) version once: the lookback never duplicates a row
    assert query("SELECT count(*), count(DISTINCT (id, updated_at)) FROM raw_appdb.orders") == [(5, 5)]
    latest = query("""
        SELECT customer, note FROM (SELECT customer, note, row_number() OVER (
            PARTITION BY id ORDER BY _extracted_at DESC, _batch_id DESC, _batch_row DESC) AS n FROM raw_appdb.orders) AS t
        WHERE n = 1 ORDER BY customer""")
    assert latest == [("ann", "edited"), ("bob", None), ("cyd", 'a "quoted", multi\nline note'), ("dee", None)]


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
@pytest.mark.parametrize("newest_by_cursor", [False, True])
def test_a_version_with_an_earlier_cursor_than_raw_holds(appdb, pg_db, tmp_path: Path, store: str,  # type: ignore[no-untyped-def]
                                                         newest_by_cursor: bool) -> None:
    """A load reads v2 of a row (08:30); the next read returns the row at 08:00, inside the lookback.

    - By default that is the row's newest version, as the source committed it: two concurrent
      transactions stamping now() (their start) can commit the last version with the earlier
      stamp. It is landed and wins staging's dedupe, as before.
    - With ``newest_by_cursor`` (a source read through replicas that lag behind one another) it
      is an older version from a lagging host: appended, it won staging's dedupe, and every later
      load dropped v2 as already held, so the row went back in time for good with every audit
      green (a probe). It is dropped like a re-read row."""
    decl = declaration(lookback="1h")
    decl["tables"]["orders"]["newest_by_cursor"] = newest_by_cursor
    spec = parse_source(decl)
    landing = Landing.local(tmp_path / "landing")
    ann = "customer = 'ann'"
    with _open_raw(store, tmp_path, pg_db) as raw:
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        with appdb.cursor() as cur:  # v1, then v2
            cur.execute(f"UPDATE app.orders SET note = 'v1', updated_at = '2024-01-03 08:00:00+00' WHERE {ann}")
            cur.execute(f"UPDATE app.orders SET note = 'v2', updated_at = '2024-01-03 08:30:00+00' WHERE {ann}")
        (fresh,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        with appdb.cursor() as cur:  # the next read: the row at 08:00 (inside the lookback from 08:30)
            cur.execute(f"UPDATE app.orders SET note = 'v1', updated_at = '2024-01-03 08:00:00+00' WHERE {ann}")
        (earlier,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert fresh.rows_applied == 1 and earlier.error is None
    assert (earlier.status, earlier.rows_applied) == (("unchanged", 0) if newest_by_cursor else ("loaded", 1)), earlier
    latest = _read(store, tmp_path, pg_db, f"""
        SELECT note FROM (SELECT note, customer, row_number() OVER (
            PARTITION BY id ORDER BY _extracted_at DESC, _batch_id DESC, _batch_row DESC) AS n FROM raw_appdb.orders) AS t
        WHERE n = 1 AND {ann}""")
    assert latest == [("v2",) if newest_by_cursor else ("v1",)]


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_a_soft_delete_column_makes_raw_record_the_keys_deletion(appdb, pg_db, tmp_path: Path, store: str) -> None:  # type: ignore[no-untyped-def]
    """A row the source marks deleted (soft_delete) is raw's deletion of its key, values kept: read by
    cursor (deleted_at: not NULL) and read whole (is_deleted: TRUE, and a marked row that stays in
    every snapshot is recorded once, not once per read); unmarked again, the key is live again."""
    with appdb.cursor() as cur:
        cur.execute("ALTER TABLE app.orders ADD COLUMN deleted_at timestamptz")
        cur.execute("CREATE TABLE app.tags (id text PRIMARY KEY, label text, is_deleted boolean)")
        cur.execute("INSERT INTO app.tags VALUES ('t1', 'a', false), ('t2', 'b', NULL), ('t3', 'c', false)")
    decl = declaration()
    decl["tables"]["orders"]["soft_delete"] = "deleted_at"
    decl["tables"]["tags"] = {"source_table": "app.tags", "primary_key": "id", "soft_delete": "is_deleted"}
    spec = parse_source(decl)
    landing = Landing.local(tmp_path / "landing")
    if store == "duckdb":
        opened = DuckDBRaw(tmp_path / "wh.duckdb")

        def query(sql: str) -> list[tuple]:  # the store's own connection: it is open meanwhile
            return opened.con.execute(sql).fetchall()
    else:
        opened = PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname))

        def query(sql: str) -> list[tuple]:
            return _pg_rows(pg_db.dsn, sql)

    def latest(table: str, column: str) -> dict[str, tuple]:
        return {str(k): (v, d) for k, v, d in query(
            f"SELECT id, {column}, _deleted FROM (SELECT id, {column}, _deleted, row_number() OVER (PARTITION BY id "
            f"ORDER BY _extracted_at DESC, _batch_id DESC, _batch_row DESC) AS n FROM raw_appdb.{table}) AS t WHERE n = 1")}

    ann = "00000000-0000-0000-0000-000000000001"
    with opened as raw:
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert {k: d for k, (_, d) in latest("orders", "customer").items()} == {
            ann: False, "00000000-0000-0000-0000-000000000002": False, "00000000-0000-0000-0000-000000000003": False}
        with appdb.cursor() as cur:
            cur.execute("UPDATE app.orders SET deleted_at = '2024-01-05 00:00+00', updated_at = '2024-01-05 00:00+00' "
                        f"WHERE id = '{ann}'")
            cur.execute("UPDATE app.tags SET is_deleted = true WHERE id = 't2'")
        orders, tags = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert orders.rows_applied == 1 and tags.rows_applied == 1, (orders, tags)
        assert latest("orders", "customer")[ann] == ("ann", True)  # the deletion keeps the row's values
        assert latest("tags", "label") == {"t1": ("a", False), "t2": ("b", True), "t3": ("c", False)}
        # the marked row is still in the next snapshot (changed elsewhere: a new batch lands): not again
        with appdb.cursor() as cur:
            cur.execute("UPDATE app.tags SET label = 'c2' WHERE id = 't3'")
        _, tags = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert tags.rows_applied == 1 and latest("tags", "label")["t3"] == ("c2", False)
        assert query("SELECT count(*) FROM raw_appdb.tags WHERE id = 't2'") == [(2,)]
        # a forced re-read of the cursor table (changes only) adds nothing either
        (orders,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, tables=["orders"], force=True)
        assert orders.rows_applied == 0, orders
        # unmarked at the source: the key is live again
        with appdb.cursor() as cur:
            cur.execute(f"UPDATE app.orders SET deleted_at = NULL, updated_at = '2024-01-06 00:00+00' WHERE id = '{ann}'")
            cur.execute("UPDATE app.tags SET is_deleted = false WHERE id = 't2'")
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert latest("orders", "customer")[ann] == ("ann", False)
        assert latest("tags", "label")["t2"] == ("b", False)
        # declared later: a row marked before the declaration is recorded by one forced reload
        with appdb.cursor() as cur:
            cur.execute("INSERT INTO app.tags VALUES ('t4', 'd', true)")
        before = parse_source({**decl, "tables": {"tags": {**decl["tables"]["tags"], "soft_delete": None}}})
        (tags,) = ingest(before, landing=landing, raw=raw, lock_dir=tmp_path)
        assert tags.rows_applied == 1 and latest("tags", "label")["t4"] == ("d", False)
        (tags,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, tables=["tags"], force=True)
        assert tags.rows_applied == 1 and latest("tags", "label")["t4"] == ("d", True)
    manifests = list(landing.batches("appdb", "orders"))
    assert manifests and all(m.soft_delete == "deleted_at" for m in manifests)


def test_raw_in_postgres_with_landing_on_s3_and_replay(appdb, pg_db, s3_bucket, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    spec = parse_source(declaration())
    landing = Landing.from_url(f"s3://{s3_bucket}/landing")
    warehouse = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    with PostgresRaw(warehouse) as raw:
        (outcome,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert outcome.error is None and outcome.rows_applied == 3
        (again,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    import boto3

    import os

    s3 = boto3.client("s3", endpoint_url=os.environ["ELT_S3_ENDPOINT"])
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    assert keys[0].startswith("landing/appdb/orders/") and keys[0].endswith("/_manifest.json")
    con = psycopg2.connect(pg_db.dsn)
    query = ("SELECT id::text, amount, ordered_at, payload, is_paid, day, note, _batch_id, _batch_row "
             "FROM raw_appdb.orders ORDER BY _batch_id, _batch_row")
    with con, con.cursor() as cur:
        cur.execute(query)
        before = cur.fetchall()
        cur.execute("SELECT count(*) FROM elt_meta.loaded_batches")
        assert cur.fetchone() == (len(outcome.applied) + len(again.applied),)
        # replay: drop raw and the ledger, apply landing again -> identical raw
        cur.execute("DROP SCHEMA raw_appdb CASCADE; DROP SCHEMA elt_meta CASCADE")
    con.close()
    with PostgresRaw(warehouse) as raw:
        (replay,) = ingest(spec, landing=landing, raw=raw, extract=False, lock_dir=tmp_path)
    assert replay.error is None and not replay.landed
    con = psycopg2.connect(pg_db.dsn)
    with con, con.cursor() as cur:
        cur.execute(query)
        assert cur.fetchall() == before
        cur.execute("SELECT cursor_value FROM elt_meta.source_cursors")
        assert cur.fetchone() == ("2024-01-02T09:00:00+00:00",)
    con.close()
    by_id = {r[0]: r for r in before}
    ann, bob = by_id["00000000-0000-0000-0000-000000000001"], by_id["00000000-0000-0000-0000-000000000002"]
    assert ann[1] == Decimal("12345678.91") and ann[6] == "" and bob[6] is None


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_schema_changes_are_applied_reported_or_refused(appdb, pg_db, tmp_path: Path, store: str) -> None:  # type: ignore[no-untyped-def]
    spec = parse_source(declaration(lookback="0s"))
    landing = Landing.local(tmp_path / "landing")

    def open_raw():  # type: ignore[no-untyped-def]
        return _open_raw(store, tmp_path, pg_db)

    with open_raw() as raw:
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    with appdb.cursor() as cur:
        cur.execute("ALTER TABLE app.orders ADD COLUMN channel text DEFAULT 'web'; ALTER TABLE app.orders DROP COLUMN day;"
                    "UPDATE app.orders SET updated_at = '2024-02-01 00:00:00+00' WHERE customer = 'bob'")
    with open_raw() as raw:
        (outcome,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    assert outcome.error is None
    assert "added column channel TEXT" in outcome.schema_notes
    assert "column day absent from the batch: loaded as NULL" in outcome.schema_notes
    with appdb.cursor() as cur:
        cur.execute("ALTER TABLE app.orders ALTER COLUMN amount TYPE text; "
                    "UPDATE app.orders SET updated_at = '2024-03-01 00:00:00+00' WHERE customer = 'cyd'")
    with open_raw() as raw:
        (failed,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert raw.cursor("appdb", "orders") == "2024-02-01T00:00:00+00:00"  # did not advance past the refused batch
    assert isinstance(failed.error, RawLoadError)
    message = str(failed.error)
    assert "column type changed" in message and "amount" in message and "source=appdb" in message and "next:" in message


def test_a_table_that_cannot_be_read_fails_alone(appdb, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    with appdb.cursor() as cur:
        cur.execute("CREATE TABLE app.secret (id int PRIMARY KEY); CREATE ROLE reader LOGIN; "
                    "GRANT USAGE ON SCHEMA app TO reader; GRANT SELECT ON app.orders TO reader; "
                    "CREATE VIEW app.broken AS SELECT 1 / (length(customer) - 3) AS id FROM app.orders; "
                    "GRANT SELECT ON app.broken TO reader; "
                    # SELECT on some columns only: information_schema hides the others from this user
                    "CREATE TABLE app.partial (id int PRIMARY KEY, name text, salary numeric(10,2)); "
                    "INSERT INTO app.partial VALUES (1, 'ann', 100.00); GRANT SELECT (id, name) ON app.partial TO reader")
    decl = declaration()
    decl["tables"]["secret"] = {"source_table": "app.secret", "primary_key": "id"}
    decl["tables"]["broken"] = {"source_table": "app.broken", "primary_key": "id"}
    decl["tables"]["partial"] = {"source_table": "app.partial", "primary_key": "id"}  # every column
    decl["tables"]["readable"] = {"source_table": "app.partial", "primary_key": "id",
                                  "columns": {"id": "integer", "name": "string"}}
    monkeypatch.setenv("APPDB_USER", "reader")
    spec = parse_source(decl)
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        outcomes = {o.table: o for o in ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)}
    assert outcomes["orders"].rows_applied == 3
    # no privilege: the table is invisible in the catalog, and the error says what to check
    assert outcomes["secret"].status == "failed" and "not visible to this user" in str(outcomes["secret"].error)
    # a failure in the middle of the COPY stream: named, nothing landed
    assert outcomes["broken"].status == "failed" and "division by zero" in str(outcomes["broken"].error)
    assert "table=broken" in str(outcomes["broken"].error)
    assert not (tmp_path / "landing" / "appdb" / "broken").exists()
    # a column it may not read is named, not taken for a dropped one (which landed NULL in it)
    partial = str(outcomes["partial"].error)
    assert outcomes["partial"].status == "failed" and "may not read column(s) salary of app.partial" in partial, partial
    assert "GRANT SELECT (salary) ON app.partial" in partial and "name" not in partial.split("of app.partial")[0]
    assert not (tmp_path / "landing" / "appdb" / "partial").exists()
    # declaring only the readable columns reads them
    assert outcomes["readable"].status != "failed" and outcomes["readable"].rows_applied == 1, outcomes["readable"]


def test_a_source_server_that_cannot_be_reached_is_named_with_its_table(appdb, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Found by a probe: the connection error came without [source= table=], so the report's and the
    alert's line did not say which source was down."""
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("APPDB_PORT", str(port))
    spec = parse_source(declaration())
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        [outcome] = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    message = str(outcome.error)
    assert outcome.status == "failed" and message.startswith("[source=appdb table=orders] cannot connect to PostgreSQL"), message
    assert "next: the server is down or unreachable" in message


def test_an_unexpected_error_fails_only_its_table(appdb, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sources.extract import postgres

    real = postgres.read_catalog

    def flaky(con, table, where):  # type: ignore[no-untyped-def]
        if table.name == "orders":
            raise RuntimeError("boom")
        return real(con, table, where)

    monkeypatch.setattr(postgres, "read_catalog", flaky)
    decl = declaration()
    decl["tables"]["orders_again"] = {**decl["tables"]["orders"]}
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        outcomes = {o.table: o for o in ingest(parse_source(decl), landing=Landing.local(tmp_path / "landing"), raw=raw,
                                               lock_dir=tmp_path)}
    assert "unexpected RuntimeError: boom" in str(outcomes["orders"].error) and "table=orders" in str(outcomes["orders"].error)
    assert outcomes["orders_again"].rows_applied == 3


def test_declared_types_and_keys_are_checked_against_the_catalog(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    decl = declaration()
    decl["tables"]["typed"] = {"source_table": "app.orders", "primary_key": "id", "columns": {"id": "uuid", "amount": "integer"}}
    decl["tables"]["badkey"] = {"source_table": "app.orders", "primary_key": "order_id"}
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        outcomes = {o.table: o for o in ingest(parse_source(decl), landing=Landing.local(tmp_path / "landing"), raw=raw,
                                               lock_dir=tmp_path)}
    assert "amount: declared integer, catalog decimal(12,2)" in str(outcomes["typed"].error)
    assert "['order_id'] are not in app.orders" in str(outcomes["badkey"].error)
    assert outcomes["orders"].rows_applied == 3


def test_catalog_columns_raw_cannot_take_are_refused_before_landing(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A table typed from its catalog with `id` and `ID`, or a column named like the loader's own
    (`_batch_row`): landed, then every apply failed (`Column with name ID already exists!`; a probe
    of identifiers). Refused before landing now; declaring the columns to load is the way on."""
    with appdb.cursor() as cur:
        cur.execute('CREATE TABLE app.clash (id text PRIMARY KEY, "ID" text, _batch_row int)')
        cur.execute("INSERT INTO app.clash VALUES ('a', 'b', 1)")
        cur.execute("CREATE TABLE app.etl (id text PRIMARY KEY, _etl_ts timestamp)")  # '_' but not the loader's
        cur.execute("INSERT INTO app.etl VALUES ('a', '2024-01-01 10:00')")
    decl = declaration()
    decl["tables"] = {"clash": {"source_table": "app.clash", "primary_key": "id"},
                      "picked": {"source_table": "app.clash", "primary_key": "id", "columns": {"id": "string"}},
                      "etl": {"source_table": "app.etl", "primary_key": "id"}}
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        outcomes = {o.table: o for o in ingest(parse_source(decl), landing=landing, raw=raw, lock_dir=tmp_path)}
    text = f"{outcomes['clash'].error}\n{outcomes['clash'].error.hint}"
    assert "columns of app.clash that raw cannot take: 'ID' differs from 'id' only in case; '_batch_row' is one " \
           "of the loader's own columns" in text, text
    assert "declare the table's columns" in text and outcomes["clash"].landed == [], outcomes["clash"]
    assert outcomes["picked"].error is None and outcomes["picked"].rows_applied == 1, outcomes["picked"]
    assert outcomes["etl"].error is None and outcomes["etl"].rows_applied == 1, outcomes["etl"]


def test_a_backfill_window_reads_only_its_days_and_leaves_the_cursor(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    decl = declaration()
    decl["tables"]["orders"]["window_column"] = "ordered_at"
    spec = parse_source(decl)
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (full,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        cursor = raw.cursor("appdb", "orders")
        window_days = ("2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00")
        (window,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, window=window_days)
        assert raw.cursor("appdb", "orders") == cursor  # a window's rows are not the newest
        # a correction the source made without a new cursor value: what a backfill is for
        appdb.cursor().execute("UPDATE app.orders SET amount = 7 WHERE customer = 'cyd'")
        (corrected,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, window=window_days)
        (after,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)  # the next incremental read
    assert full.rows_applied == 3
    # the window's one order is landed again, but raw gains nothing: it equals raw's latest version
    # (every type compared: NULL numeric, json, a multi-line note, date, timestamptz)
    assert len(window.landed) == 1 and window.rows_landed == 1 and window.rows_applied == 0
    assert len(corrected.landed) == 1 and corrected.rows_applied == 1  # the corrected row only
    assert after.status == "unchanged"
    (manifest,) = [m for m in landing.batches("appdb", "orders") if m.batch_id == window.landed[0]]
    assert manifest.origin["window_column"] == "ordered_at" and manifest.cursor == {}
    assert manifest.changes_only and not manifest.snapshot
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    rows = con.execute("SELECT customer, count(*) FROM raw_appdb.orders GROUP BY 1 ORDER BY 1").fetchall()
    amounts = con.execute("SELECT amount FROM raw_appdb.orders WHERE customer = 'cyd' ORDER BY _extracted_at").fetchall()
    con.close()
    assert rows == [("ann", 1), ("bob", 1), ("cyd", 2)]  # no deletion read from the window, no copy
    assert [a for (a,) in amounts] == [None, 7]


def test_a_backfill_window_reads_a_child_table_through_its_parents_window(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A child without a window column (items, placed by event_time_from on their order's day) is
    read for the window's parents only: not whole (six years of items for one week's backfill), and
    not before orders newer than the window (they would land without their order)."""
    with appdb.cursor() as cur:
        cur.execute("CREATE TABLE app.items (id text PRIMARY KEY, order_id uuid NOT NULL, sku text, "
                    "updated_at timestamptz NOT NULL)")
        cur.execute("INSERT INTO app.items SELECT 'i-' || customer || n, id, 'JAF-00' || n, updated_at "
                    "FROM app.orders, generate_series(1, 2) AS n")
    decl = declaration()
    decl["tables"]["orders"].update(window_column="ordered_at", event_time="ordered_at")
    decl["tables"]["items"] = {"source_table": "app.items", "primary_key": "id", "cursor_field": "updated_at",
                               "lookback": "1h", "event_time_from": {"table": "orders", "key": "order_id"}}
    spec = parse_source(decl)
    assert spec.window_parent(spec.tables["items"]) is spec.tables["orders"]
    assert spec.window_parent(spec.tables["orders"]) is None
    landing = Landing.local(tmp_path / "landing")
    window_days = ("2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00")  # cyd's order only
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        # corrections without a new cursor value: one item inside the window, one outside
        appdb.cursor().execute("UPDATE app.items SET sku = 'BEV-001' WHERE id IN ('i-cyd1', 'i-ann1')")
        orders, items = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, window=window_days)
    assert orders.rows_landed == 1 and items.rows_landed == 2 and items.rows_applied == 1, (orders, items)
    (manifest,) = [m for m in landing.batches("appdb", "items") if m.batch_id == items.landed[0]]
    assert manifest.origin["window_column"] == "orders.ordered_at" and manifest.cursor == {}
    assert manifest.changes_only and not manifest.snapshot
    skus = dict(_duck(tmp_path / "wh.duckdb", "SELECT id, arg_max(sku, _extracted_at) FROM raw_appdb.items GROUP BY id"))
    assert skus["i-cyd1"] == "BEV-001" and skus["i-ann1"] == "JAF-001"  # the window's item only
    # a child whose column has another type than the parent's key cannot be compared in the
    # semi-join (text = uuid): it is read whole, as before, and the backfill still succeeds
    with appdb.cursor() as cur:
        cur.execute("ALTER TABLE app.items ALTER COLUMN order_id TYPE text")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        orders, items = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path, window=window_days)
    assert items.error is None and items.rows_landed == 6, items


def test_server_session_defaults_do_not_change_the_values(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """COPY's text depends on session settings; a database configured otherwise (floats rounded to
    12 digits, dates as 01/01/2024, India time) must land the same values."""
    from psycopg2 import sql

    with appdb.cursor() as cur:
        cur.execute("ALTER TABLE app.orders ADD COLUMN ratio double precision")
        cur.execute("UPDATE app.orders SET ratio = 0.1234567890123456789")
        cur.execute("SELECT current_database()")
        db = sql.Identifier(cur.fetchone()[0])
        cur.execute(sql.SQL("ALTER DATABASE {} SET extra_float_digits = -3").format(db))
        cur.execute(sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(db))
        cur.execute(sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'").format(db))
        cur.execute(sql.SQL("ALTER DATABASE {} SET IntervalStyle = 'sql_standard'").format(db))
    spec = parse_source(declaration())
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    assert outcome.error is None, outcome.error
    rows = _duck(tmp_path / "wh.duckdb", "SELECT day, ordered_at AT TIME ZONE 'UTC' FROM raw_appdb.orders ORDER BY id")
    assert [str(r[0]) for r in rows] == ["2024-01-01", "None", "2024-01-02"]
    assert str(rows[1][1]) == "2024-01-01 09:30:00"
    assert _duck(tmp_path / "wh.duckdb", "SELECT DISTINCT ratio FROM raw_appdb.orders") == [(0.1234567890123456789,)]


def test_a_row_larger_than_the_parse_block_is_named_and_loads_once_allowed(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with appdb.cursor() as cur:
        cur.execute("UPDATE app.orders SET note = repeat('x', 3000000), updated_at = now() "
                    "WHERE customer = 'bob'")
    big = declaration()
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (failed,) = ingest(parse_source(big), landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
        assert failed.status == "failed"
        message = str(failed.error)
        assert "a row of app.orders is larger than 1 MB" in message and "max_row_mb" in message
        assert "table=orders" in message and "batch=" in message
        big["tables"]["orders"]["max_row_mb"] = 4
        (loaded,) = ingest(parse_source(big), landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    assert loaded.error is None and loaded.rows_applied == 3
    assert _duck(tmp_path / "wh.duckdb", "SELECT max(length(note)) FROM raw_appdb.orders") == [(3_000_000,)]


ODD_TEXTS = ["", "tab\there", "line\nbreak", "cr\rlf\r\n", "back\\slash", "\\N", "\\\\N", "\\n (two chars)", "ends with \\",
             "\b\f\v\x01\x1f\x7f", "quote \" and ' and ,;|", "ünïcödé ✓ 𝄞 👩‍👩‍👧", "  padded  ", "NULL", "{\"a\": \"x\\\\ny\"}"]


def test_values_round_trip_exactly(pg_db, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Every odd text (escapes, control characters, a literal \\N, the empty string against NULL),
    decimals at their precision, unconstrained numerics, floats, timestamps with and without zone
    to the microsecond and booleans land and reach raw exactly as PostgreSQL holds them."""
    for key, value in pg_db.env("ODD").items():
        monkeypatch.setenv(key, value)
    con = psycopg2.connect(pg_db.dsn)
    con.autocommit = True
    rows = [*enumerate(ODD_TEXTS), (len(ODD_TEXTS), None)]
    with con.cursor() as cur:
        cur.execute("CREATE TABLE one_text (v text)")  # one column: an empty value is an empty line
        # a byte-order mark opens the extract: Arrow's reader dropped it ('\ufeffx' and 'x' became one key)
        cur.executemany("INSERT INTO one_text VALUES (%s)", [("\ufeffx",), ("x",), ("",), (None,), ("\\N",), ("",)])
        # escapes only after the first parse blocks (1 MB each): each block is unescaped on its own
        cur.execute("CREATE TABLE late AS SELECT n AS id, CASE WHEN n % 20000 = 0 THEN E'tab\\t\\\\n' "
                    "ELSE repeat('plain ', 5) END AS t FROM generate_series(1, 100000) AS n")
        cur.execute("""CREATE TABLE odd (id int PRIMARY KEY, t text, j jsonb, d numeric(38, 10), n numeric, f double precision,
                       ts timestamp, tz timestamptz, b boolean, day date, raw bytea)""")
        cur.executemany("INSERT INTO odd (id, t) VALUES (%s, %s)", rows)
        cur.execute("""UPDATE odd SET j = jsonb_build_object('t', t), d = '1234567890123456789012345678.0123456789',
                       n = '-0.000000000000000000000000000000000000000001234567890123456789', f = 0.1 + id,
                       ts = '2024-02-29 23:59:59.999999', tz = '1999-12-31 23:59:59.000001-08', b = id % 2 = 0,
                       day = '0001-01-01', raw = convert_to(coalesce(t, ''), 'UTF8') WHERE id % 2 = 0""")
        cur.execute("UPDATE odd SET f = 'NaN', d = '-0.0000000001', ts = '1970-01-01', tz = '2262-04-11 23:47:16+00', "
                    "b = false, day = '9999-12-31' WHERE id = 1")
        cur.execute("SELECT id, t, j::text, d, n::text, f, ts, tz, b, day, encode(raw, 'hex') FROM odd ORDER BY id")
        expected = cur.fetchall()
    con.close()
    spec = parse_source({"name": "odd", "kind": "postgres", "owner": "t", "env_prefix": "ODD_",
                         "tables": {"odd": {"source_table": "public.odd", "primary_key": "id"},
                                    "one_text": {"source_table": "public.one_text", "primary_key": "v"},
                                    "late": {"source_table": "public.late", "primary_key": "id"}}})
    from sources.extract import postgres

    (extract,) = postgres.extracts(spec, spec.tables["one_text"], cursor=None)
    assert [v for b in extract.batches for v in b.column(0).to_pylist()] == ["\ufeffx", "x", "", None, "\\N", ""]
    (extract,) = postgres.extracts(spec, spec.tables["late"], cursor=None)
    late = [b.to_pydict() for b in extract.batches]
    assert len(late) > 2 and [t for b in late for t in b["t"] if t != "plain " * 5] == ["tab\t\\n"] * 5
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, tables=["odd"], lock_dir=tmp_path)
    assert outcome.error is None
    got = _duck(tmp_path / "wh.duckdb", "SET TimeZone = 'UTC'; SELECT id, t, j, d, n, f, ts, tz, b, day, raw FROM raw_odd.odd ORDER BY id")
    assert [r[1] for r in got] == [r[1] for r in expected] == [*ODD_TEXTS, None]
    for mine, theirs in zip(got, expected):
        assert mine[0] == theirs[0] and mine[2] == theirs[2]  # JSON text as PostgreSQL renders it
        assert mine[3] == theirs[3] and mine[4] == theirs[4]  # every digit of both numerics
        assert (mine[5] == theirs[5]) or (mine[5] != mine[5] and theirs[5] != theirs[5])  # NaN stays NaN
        assert mine[6] == theirs[6] and mine[7] == theirs[7] and mine[8] is theirs[8] and mine[9] == theirs[9]
        assert mine[10] == (None if theirs[10] is None else f"\\x{theirs[10]}")  # bytea as hex text


def _land_ids(landing: Landing, ids: list[str]):  # type: ignore[no-untyped-def]
    """Land one batch of ``shop.orders`` holding only these ids; returns its manifest."""
    from datetime import UTC, datetime

    import pyarrow as pa

    schema = pa.schema([("id", pa.string())])
    writer = landing.open_batch("shop", "orders", schema, datetime.now(UTC))
    writer.write(pa.RecordBatch.from_pylist([{"id": i} for i in ids], schema=schema))
    return writer.commit([{"name": "id", "type": "string", "arrow": "string"}], ["id"], {})


def test_a_batch_that_grows_raw_by_more_than_a_tenth_refreshes_its_statistics(pg_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Stale statistics made the transform's queries by batch id nested loops over a reloaded table
    (minutes instead of a second): raw is analysed after a batch that grows it by more than a tenth."""
    landing = Landing.local(tmp_path / "landing")
    start = 0

    def apply(raw: PostgresRaw, n: int) -> None:
        nonlocal start
        manifest = _land_ids(landing, [f"o{i}" for i in range(start, start + n)])
        start += n
        assert raw.load(manifest, landing.open_batch_reader(manifest), "raw_shop").applied

    def reltuples() -> float:
        with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
            cur.execute("SELECT reltuples FROM pg_class WHERE oid = 'raw_shop.orders'::regclass")
            return cur.fetchone()[0]

    with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
        apply(raw, 1000)
        assert reltuples() == 1000  # the first batch: analysed (never analysed before)
        apply(raw, 80)
        assert reltuples() == 1000  # under a tenth: left to autovacuum
        apply(raw, 200)
        assert reltuples() == 1280  # over a tenth of what the statistics know


def test_a_warehouse_connection_lost_mid_load_is_named_retried_and_never_set_aside(pg_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A restart of the warehouse under a load: the message says the connection was lost (not that the
    batch cannot be applied, whose advice is to set it aside), the scheduler retries it, and the
    rerun applies the landed batch once."""
    from orchestrator.scheduling.worker import is_retryable

    landing = Landing.local(tmp_path / "landing")
    manifest = _land_ids(landing, ["o1", "o2"])
    settings = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    with PostgresRaw(settings) as raw:
        with psycopg2.connect(pg_db.dsn) as admin, admin.cursor() as cur:  # what a restart does to the session
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(RawLoadError) as err:
            raw.load(manifest, landing.open_batch_reader(manifest), "raw_shop")
    message = str(err.value)
    assert "lost the connection to the PostgreSQL warehouse while appending to raw_shop.orders" in message, message
    assert f"pg_isready -h {pg_db.host} -p {pg_db.port}" in message and "set-aside" not in message
    # the server's reason, not the rollback's "connection already closed" that hid it (a probe)
    assert "connection already closed" not in message and "server closed the connection" in message, message
    assert is_retryable(err.value)
    with PostgresRaw(settings) as raw:
        assert raw.load(manifest, landing.open_batch_reader(manifest), "raw_shop").rows == 2
        assert not raw.load(manifest, landing.open_batch_reader(manifest), "raw_shop").applied


def test_source_columns_the_declaration_does_not_name_are_reported(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A table declaring its columns reads only those; a column the source has beside them (one
    added upstream after go-live) was ignored without a word (a schema-evolution probe)."""
    decl = declaration()
    decl["tables"]["orders"]["columns"] = {"id": "uuid", "customer": "string", "updated_at": "timestamptz"}
    with appdb.cursor() as cur:
        cur.execute("ALTER TABLE app.orders ADD COLUMN channel text DEFAULT 'web'")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(parse_source(decl), landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    assert outcome.error is None and outcome.rows_applied == 3
    assert outcome.schema_notes == ["column(s) amount, ordered_at, payload, is_paid, day, note, channel of the source "
                                    "are not declared: not loaded (declare them to load them)"], outcome.schema_notes
    assert [r[0] for r in _duck(tmp_path / "wh.duckdb", "DESCRIBE raw_appdb.orders")][:3] == ["id", "customer", "updated_at"]


def test_a_load_that_lost_the_warehouse_says_so_once(pg_db, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every later table of the load failed with the same `connection already closed` (six blocks in
    the probe's report); now the first says why, and the others that they were not loaded."""
    from sources import pipeline

    spec = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": str(tmp_path), "tables": {
        "a": {"file": "a.csv", "primary_key": "id", "columns": {"id": "string"}},
        "b": {"file": "b.csv", "primary_key": "id", "columns": {"id": "string"}},
        "c": {"file": "c.csv", "primary_key": "id", "columns": {"id": "string"}}}})
    for name in "abc":
        (tmp_path / f"{name}.csv").write_text("id\nx1\n")
    real = pipeline.apply_pending

    def restart_first(spec, table, landing, raw, outcome, **kw):  # type: ignore[no-untyped-def]
        if table.name == "a":
            with psycopg2.connect(pg_db.dsn) as admin, admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return real(spec, table, landing, raw, outcome, **kw)

    monkeypatch.setattr(pipeline, "apply_pending", restart_first)
    with PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)) as raw:
        outcomes = {o.table: o for o in ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw,
                                               lock_dir=tmp_path)}
    first = str(outcomes["a"].error)
    assert "lost the connection to the PostgreSQL warehouse" in first and "already closed" not in first, first
    for name in "bc":
        assert "not loaded: the connection to the PostgreSQL warehouse was lost while loading a" in str(outcomes[name].error)


def test_the_servers_reason_is_found_under_the_rollbacks_error() -> None:
    """A restart mid-COPY: the rollback on the dead connection raises `connection already closed`
    over the server's reason, which the message showed instead (a probe)."""
    from sources.load.postgres_raw import server_reason

    try:
        try:
            raise psycopg2.OperationalError("terminating connection due to administrator command\nSSL SYSCALL")
        except psycopg2.Error:
            raise psycopg2.InterfaceError("connection already closed")
    except psycopg2.Error as exc:
        assert server_reason(exc) == "terminating connection due to administrator command"
    assert server_reason(ValueError("plain")) == "plain"


def test_a_value_arrow_cannot_hold_is_named_by_field_value_and_key(appdb, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Found by a probe: `infinity` in a timestamp gave `In CSV column #2: Row #200000: CSV
    conversion error ...`: a 0-based column number, a position in the COPY stream and no key."""
    with appdb.cursor() as cur:
        cur.execute("CREATE TABLE app.events (id int PRIMARY KEY, ts timestamp, d date); "
                    "INSERT INTO app.events VALUES (1, '2024-01-01 10:00', '2024-01-01'), (2, 'infinity', '2024-01-02'), "
                    "(3, '2024-01-03 10:00', '4713-01-01 BC')")
    decl = declaration()
    decl["tables"] = {"events": {"source_table": "app.events", "primary_key": "id"}}
    spec = parse_source(decl)
    landing = Landing.local(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (infinite,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        with appdb.cursor() as cur:
            cur.execute("UPDATE app.events SET ts = '2024-01-02 10:00' WHERE id = 2")
        (ancient,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
    text = str(infinite.error)
    assert "app.events.ts holds 'infinity' in the row(s) with (id=2), which its type timestamp cannot hold" in text, text
    assert "field=ts" in text and "CSV column #" not in text and "next: ask the source owner to replace 'infinity'" in text
    assert "app.events.d holds '4713-01-01 BC' in the row(s) with (id=3)" in str(ancient.error), ancient.error
    assert not infinite.landed and not ancient.landed
    # Arrow's decimal parser names no column: NaN in a numeric(p,s) said neither field nor key
    with appdb.cursor() as cur:
        cur.execute("CREATE TABLE app.amounts (id int PRIMARY KEY, a numeric(10, 2), b numeric(10, 2)); "
                    "INSERT INTO app.amounts VALUES (1, 1.5, 2.5), (2, 3, 'NaN')")
    decl["tables"] = {"amounts": {"source_table": "app.amounts", "primary_key": "id"}}
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (nan,) = ingest(parse_source(decl), landing=landing, raw=raw, lock_dir=tmp_path)
    text = str(nan.error)
    assert "app.amounts.b holds 'NaN' in the row(s) with (id=2), which its type decimal(10,2) cannot hold" in text, text
    assert "field=b" in text and not nan.landed


def test_bytes_a_sql_ascii_database_cannot_send_as_utf8_say_a_rerun_will_not_help(pg_server, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Found by a probe: the hint said `check the source database and rerun`, which fails the same way."""
    from tests.servers import Postgres

    admin = psycopg2.connect(pg_server.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS t_sql_ascii")
        cur.execute("CREATE DATABASE t_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        db = Postgres(pg_server.host, pg_server.port, pg_server.user, "t_sql_ascii")
        con = psycopg2.connect(db.dsn)
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, name text); "
                        "INSERT INTO app.t VALUES (1, 'cafe'), (2, E'caf\\xe9')")
        con.close()
        for key, value in db.env("APPDB").items():
            monkeypatch.setenv(key, value)
        decl = declaration()
        decl["tables"] = {"t": {"source_table": "app.t", "primary_key": "id"}}
        with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
            (outcome,) = ingest(parse_source(decl), landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS t_sql_ascii WITH (FORCE)")
        admin.close()
    text = str(outcome.error)
    assert 'invalid byte sequence for encoding "UTF8"' in text and "a rerun fails the same way" in text, text
    assert not outcome.landed


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_cursors_sort_as_the_source_sorts_them(appdb, pg_db, tmp_path: Path, store: str) -> None:  # type: ignore[no-untyped-def]
    """Found by a type probe: a cursor compared as text in the loader and as its own type (or under
    the database's collation) in PostgreSQL skipped new rows for good, with status `unchanged`; a
    numeric(p,s) cursor could not be written to its manifest; a cursor that is also the key failed
    every load after the first."""
    with appdb.cursor() as cur:
        cur.execute("CREATE TABLE app.by_id (id bigint PRIMARY KEY, v text)")
        cur.execute("CREATE TABLE app.by_amount (k text PRIMARY KEY, seq numeric(12, 0))")
        cur.execute("CREATE TABLE app.by_seq (k text PRIMARY KEY, seq numeric)")
        cur.execute("SELECT count(*) FROM pg_collation WHERE collname = 'en-x-icu'")
        icu = cur.fetchone()[0] > 0
        collate = 'COLLATE "en-x-icu"' if icu else ""  # the probe's collation, where the server has ICU
        cur.execute(f"CREATE TABLE app.by_code (id int PRIMARY KEY, code text {collate})")
        cur.execute("INSERT INTO app.by_id SELECT g, 'r' FROM generate_series(1, 9) AS g")
        cur.execute("INSERT INTO app.by_amount SELECT 'k' || g, g FROM generate_series(1, 9) AS g")
        cur.execute("INSERT INTO app.by_seq SELECT 'k' || g, g FROM generate_series(1, 9) AS g")
        cur.execute("INSERT INTO app.by_code VALUES (1, 'a'), (2, 'B')")
    tables = {"by_id": {"source_table": "app.by_id", "primary_key": "id", "cursor_field": "id", "lookback": "0s"},
              "by_amount": {"source_table": "app.by_amount", "primary_key": "k", "cursor_field": "seq", "lookback": "0s"},
              "by_code": {"source_table": "app.by_code", "primary_key": "id", "cursor_field": "code", "lookback": "0s"},
              "by_seq": {"source_table": "app.by_seq", "primary_key": "k", "cursor_field": "seq", "lookback": "0s"}}
    spec = parse_source({"name": "appdb", "kind": "postgres", "owner": "t", "env_prefix": "APPDB_", "tables": tables})
    landing = Landing.local(tmp_path / "landing")
    opened = (DuckDBRaw(tmp_path / "wh.duckdb") if store == "duckdb"
              else PostgresRaw(PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)))
    with opened as raw:
        first = {o.table: o for o in ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)}
        with appdb.cursor() as cur:
            cur.execute("INSERT INTO app.by_id SELECT g, 'r' FROM generate_series(10, 25) AS g")
            cur.execute("INSERT INTO app.by_amount SELECT 'k' || g, g FROM generate_series(10, 25) AS g")
            # '~' sorts after 'a' in bytes and before it under ICU, which read past it; 'c' after it in both
            cur.execute("INSERT INTO app.by_code VALUES (3, '~'), (4, 'c')")
        second = {o.table: o for o in ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)}
        cursors = {t: raw.cursor("appdb", t) for t in ("by_id", "by_amount", "by_code")}
    refused = str(first["by_seq"].error)
    assert "cursor_field seq is numeric without a precision in app.by_seq" in refused and "seq::numeric(38,0)" in refused
    assert list(landing.batches("appdb", "by_seq")) == []
    for name in ("by_id", "by_amount", "by_code"):
        assert first[name].error is None and second[name].error is None, (first[name].error, second[name].error)
    assert (second["by_id"].rows_applied, second["by_amount"].rows_applied) == (16, 16)
    assert cursors["by_id"] == "25" and cursors["by_amount"] == "25"
    # the text cursor was 'a' (the highest of 'a' and 'B' in bytes), and the next read goes on from it in
    # byte order (COLLATE "C"), whatever the column's collation
    assert second["by_code"].rows_applied == 2 and cursors["by_code"] == "~", icu


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_an_incremental_table_empty_at_the_source_gets_its_raw_table_on_the_first_load(  # type: ignore[no-untyped-def]
        appdb, pg_db, tmp_path: Path, store: str) -> None:
    """An app table still empty (no refunds yet) landed nothing and made no raw table, and every
    `elt transform` then failed saying its source was never loaded (a backfill probe). Its raw table
    is made empty, typed from the catalog; the first rows then apply to it as usual."""
    with appdb.cursor() as cur:
        cur.execute("DELETE FROM app.orders")
    spec = parse_source(declaration())
    landing = Landing.local(tmp_path / "landing")
    def query(sql: str) -> list[tuple]:
        return _read(store, tmp_path, pg_db, sql)

    with _open_raw(store, tmp_path, pg_db) as raw:
        (empty,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert empty.error is None and empty.rows_landed == 0 and not empty.landed, empty
        assert raw.cursor("appdb", "orders") is None
    columns = query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw_appdb' "
                    "AND table_name = 'orders' ORDER BY ordinal_position")
    assert [c for c, _ in columns][:3] == ["id", "customer", "amount"] and query(
        "SELECT count(*) FROM raw_appdb.orders") == [(0,)], columns
    with appdb.cursor() as cur:
        cur.execute("INSERT" + SEED.split("INSERT", 1)[1])
    with _open_raw(store, tmp_path, pg_db) as raw:
        (first,) = ingest(spec, landing=landing, raw=raw, lock_dir=tmp_path)
        assert first.error is None and first.rows_applied == 3, first
        assert raw.cursor("appdb", "orders") == "2024-01-02T09:00:00+00:00"
    assert query("SELECT count(*) FROM raw_appdb.orders") == [(3,)]


def test_a_local_time_cursor_on_a_source_outside_utc_is_warned_about(appdb, pg_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A `timestamp` cursor without zone written in local time goes back an hour when the clocks
    go back, and with less than an hour of lookback the rows of the repeated hour are skipped for
    good, with every load `unchanged` (a probe, on a New York server). The load says so."""
    import logging

    from psycopg2 import sql

    with appdb.cursor() as cur:
        cur.execute("CREATE TABLE app.visits (id int PRIMARY KEY, seen_at timestamp NOT NULL)")
        cur.execute("INSERT INTO app.visits VALUES (1, '2026-11-01 01:30'), (2, '2026-11-01 01:50')")
    decl = {"name": "appdb", "kind": "postgres", "owner": "app-team", "env_prefix": "APPDB_",
            "tables": {"visits": {"source_table": "app.visits", "primary_key": "id", "cursor_field": "seen_at",
                                  "lookback": "15m"}}}
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("sources").addHandler(handler)
    try:
        for zone in ("UTC", "America/New_York"):
            with appdb.cursor() as cur:
                cur.execute(sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(
                    sql.Identifier(pg_db.dbname), sql.Literal(zone)))
            records.clear()
            with DuckDBRaw(tmp_path / f"wh-{zone.replace('/', '-')}.duckdb") as raw:
                (outcome,) = ingest(parse_source(decl), landing=Landing.local(tmp_path / f"landing-{zone.replace('/', '-')}"),
                                    raw=raw, lock_dir=tmp_path)
            assert outcome.error is None and outcome.rows_applied == 2
            warned = [r.getMessage() for r in records if "timestamp without time zone" in r.getMessage()]
            if zone == "UTC":
                assert warned == [], warned
            else:
                assert len(warned) == 1 and "America/New_York" in warned[0] and "lookback to 1h" in warned[0], warned
    finally:
        logging.getLogger("sources").removeHandler(handler)
