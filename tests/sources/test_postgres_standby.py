"""A PostgreSQL source read from a hot standby with a role that may only read (decision 0072): a
real primary and a standby streaming from it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg2
import pytest

from orchestrator.scheduling.worker import is_retryable
from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
from tests.servers import postgres_with_standby


@pytest.fixture(scope="module")
def servers():  # type: ignore[no-untyped-def]
    with postgres_with_standby() as (primary, standby):
        yield primary, standby


def _standby_connection(standby):  # type: ignore[no-untyped-def]
    """A connection to the standby that reads with READ COMMITTED: the database's default
    (serializable, set by the first test) is refused by a hot standby."""
    return psycopg2.connect(standby.dsn, options="-c default_transaction_isolation=read\\ committed")


def _replayed(primary, standby) -> None:  # type: ignore[no-untyped-def]
    """Waits until the standby has replayed everything the primary has written so far."""
    con = psycopg2.connect(primary.dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()")
        lsn = cur.fetchone()[0]
    con.close()
    reader = _standby_connection(standby)
    reader.autocommit = True
    try:
        deadline = time.monotonic() + 30
        with reader.cursor() as cur:
            while True:
                cur.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])
                if cur.fetchone()[0]:
                    return
                assert time.monotonic() < deadline, "the standby did not catch up in 30 s"
                time.sleep(0.05)
    finally:
        reader.close()


def test_a_standby_is_read_by_a_select_only_role_whatever_the_default_isolation(
        servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """A database whose default isolation is SERIALIZABLE (set on the primary for its application,
    replicated to the standby) made every read of the standby fail with `unexpected
    FeatureNotSupported: cannot use serializable mode in a hot standby`, on every rerun. The loader
    now reads with READ COMMITTED, and needs nothing but SELECT."""
    primary, standby = servers
    con = psycopg2.connect(primary.dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("CREATE ROLE elt_reader LOGIN")
        cur.execute("CREATE SCHEMA app")
        cur.execute("CREATE TABLE app.orders (id bigint PRIMARY KEY, amount numeric(8, 2), updated_at timestamptz)")
        cur.execute("INSERT INTO app.orders SELECT g, g / 100.0, '2024-01-01'::timestamptz + g * interval '1 minute' "
                    "FROM generate_series(1, 500) g")
        cur.execute("GRANT USAGE ON SCHEMA app TO elt_reader; GRANT SELECT ON app.orders TO elt_reader")
        cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC; REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC")
        cur.execute("ALTER DATABASE postgres SET default_transaction_isolation = 'serializable'")
    con.close()
    _replayed(primary, standby)
    for key, value in {**standby.env("APPDB"), "APPDB_USER": "elt_reader"}.items():
        monkeypatch.setenv(key, value)
    spec = parse_source({
        "name": "appdb", "kind": "postgres", "owner": "app-team", "env_prefix": "APPDB_",
        "tables": {"orders": {"source_table": "app.orders", "primary_key": "id", "cursor_field": "updated_at",
                              "lookback": "1h"}}})
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        (outcome,) = ingest(spec, landing=Landing.local(tmp_path / "landing"), raw=raw, lock_dir=tmp_path)
        assert outcome.error is None, outcome.error
        assert outcome.rows_applied == 500
        assert raw.cursor("appdb", "orders") == "2024-01-01T08:20:00+00:00"


def test_a_read_cancelled_by_the_standby_is_retried_and_says_what_to_set(servers) -> None:  # type: ignore[no-untyped-def]
    """A hot standby cancels a read that holds back its replay (`canceling statement due to
    conflict with recovery`, SQLSTATE 40001): transient, but it was not retried (psycopg2 raises a
    subclass of OperationalError, and the text matched nothing), and the hint said only to check
    the source. The cancel here is the standby's own: a read holds a table while the primary locks
    it, and the standby (max_standby_streaming_delay = 0) cancels the read to replay the lock."""
    from sources.extract.postgres import _copy_error
    from sources.specs import TableSpec

    primary, standby = servers
    con = psycopg2.connect(primary.dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("CREATE TABLE public.held (id int)")
        cur.execute("INSERT INTO public.held VALUES (1)")
    _replayed(primary, standby)
    cancelled: list[BaseException] = []

    def read() -> None:
        reader = _standby_connection(standby)
        try:
            with reader.cursor() as cur:
                cur.execute("SELECT pg_sleep(30) FROM public.held")
        except psycopg2.Error as exc:
            cancelled.append(exc)
        finally:
            reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    reader_started = time.monotonic() + 30
    probe = _standby_connection(standby)
    probe.autocommit = True
    with probe.cursor() as cur:  # the read holds the table on the standby
        while True:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'")
            if cur.fetchone()[0]:
                break
            assert time.monotonic() < reader_started, "the standby read did not start"
            time.sleep(0.05)
    probe.close()
    with con.cursor() as cur:
        cur.execute("BEGIN; LOCK TABLE public.held IN ACCESS EXCLUSIVE MODE; COMMIT")
    con.close()
    thread.join(timeout=60)
    assert len(cancelled) == 1 and "conflict with recovery" in str(cancelled[0]), cancelled

    table = TableSpec(name="held", columns=(), primary_key=("id",), source_table="public.held")
    try:
        try:
            raise cancelled[0]
        except psycopg2.Error as exc:  # as the extraction raises it
            raise _copy_error(exc, table, {"source": "appdb", "table": "held"}) from exc
    except Exception as raised:  # noqa: BLE001 - the error as the loader raises it
        error = raised
    assert "conflict with recovery" in str(error) and "relation lock" in str(error), error  # PostgreSQL's detail
    assert "hot_standby_feedback" in str(getattr(error, "hint", "")), error
    assert is_retryable(error)
