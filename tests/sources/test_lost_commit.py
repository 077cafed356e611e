"""The connection to a PostgreSQL raw store is lost after COMMIT was sent and before its answer
came: the server may have committed. A network probe found such a batch reported "rolled back",
and the rerun reporting it "unchanged", while raw held it: no load ever said it was applied."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from sources.config import parse_source
from sources.connections import PostgresSettings
from sources.landing.store import Landing
from sources.load.postgres_raw import PostgresRaw
from sources.pipeline import TableOutcome, apply_pending
from tests.servers import cutting_relay
from tests.sources.test_set_aside import land_batch

SPEC = parse_source({"name": "shop", "kind": "files", "owner": "o", "format": "csv", "path": ".", "tables": {
    "orders": {"file": "orders.csv", "primary_key": "id", "columns": {"id": "string", "qty": "integer"}}}})
TYPES = {"id": "string", "qty": "integer"}


def _apply(landing: Landing, settings: PostgresSettings) -> TableOutcome:
    outcome = TableOutcome("orders")
    with PostgresRaw(settings) as raw:
        try:
            apply_pending(SPEC, SPEC.tables["orders"], landing, raw, outcome)
        except Exception as exc:  # noqa: BLE001 - what ingest records per table
            outcome.error = exc
    return outcome


def _raw(pg_db) -> list[tuple]:  # type: ignore[no-untyped-def]
    with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
        cur.execute("SELECT id, qty, _batch_id FROM raw_shop.orders ORDER BY id")
        return cur.fetchall()


def _until_warned(caplog, loader) -> None:  # type: ignore[no-untyped-def]
    """Wait (10 s at most) until ``loader`` says it waits for the raw table's lock, or ends."""
    for _ in range(100):
        if any("waiting for the lock of raw_shop.orders" in r.getMessage() for r in caplog.records):
            return
        loader.join(0.1)


@pytest.mark.parametrize("slow", [False, True], ids=["commit", "slow-commit"])
def test_a_commit_whose_answer_is_lost_is_reported_as_what_the_ledger_says(  # type: ignore[no-untyped-def]
        tmp_path: Path, pg_db, caplog, slow: bool) -> None:
    """``slow``: the COMMIT takes 3 s on the server (a slow fsync, a synchronous standby; here a
    deferred constraint trigger), so the ledger, read at once, did not show it yet: a review found
    such a batch reported "rolled back", then committed."""
    import logging

    landing = Landing.local(tmp_path / "landing")
    direct = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    first = land_batch(landing, "shop", "orders", [{"id": "o1", "qty": 1}], TYPES, key="id")
    assert _apply(landing, direct).error is None
    if slow:
        with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
            cur.execute("CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$")
            cur.execute("CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON elt_meta.loaded_batches "
                        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()")
    caplog.set_level(logging.WARNING, logger="sources.load.postgres_raw")

    second = land_batch(landing, "shop", "orders", [{"id": "o2", "qty": 2}], TYPES, key="id")
    seen: list[bytes] = []

    def after_the_ledger(data: bytes) -> bool:  # the COMMIT that follows the batch's ledger row
        seen.append(data)
        return data.startswith(b"Q") and b"COMMIT" in data and any(b"loaded_batches" in d and b"INSERT" in d for d in seen)

    with cutting_relay(pg_db.host, pg_db.port, after_the_ledger) as port:
        outcome = _apply(landing, PostgresSettings("127.0.0.1", port, pg_db.user, pg_db.dbname))
    settled = [r.getMessage() for r in caplog.records if "the ledger says" in r.getMessage()]
    if slow:  # ended while it committed: rolled back, and the rerun applies it
        assert settled == [f"the connection was lost after the COMMIT of batch {second} was sent; the ledger says it "
                           "was rolled back"], settled
        assert outcome.error is not None and "the append was rolled back" in str(outcome.error), outcome
        assert _raw(pg_db) == [("o1", 1, first)]
        rerun = _apply(landing, direct)
        assert rerun.error is None and rerun.applied == [second], rerun
        assert _raw(pg_db) == [("o1", 1, first), ("o2", 2, second)]
        return
    assert settled == [f"the connection was lost after the COMMIT of batch {second} was sent; the ledger says it "
                       "was committed"], settled  # the cut happened, and the ledger was asked
    assert outcome.error is None, outcome.error
    assert outcome.applied == [second], outcome
    assert _raw(pg_db) == [("o1", 1, first), ("o2", 2, second)]

    rerun = _apply(landing, direct)  # nothing left to apply, nothing twice
    assert rerun.error is None and rerun.applied == [], rerun
    assert _raw(pg_db) == [("o1", 1, first), ("o2", 2, second)]


def test_a_load_waiting_for_the_raw_tables_lock_says_who_holds_it(tmp_path: Path, pg_db, caplog) -> None:  # type: ignore[no-untyped-def]
    """A session the network cut off while it applied a batch keeps the raw table's lock on the
    server; the rerun waited for it without a word (a network probe). It now names the holder."""
    import logging
    import threading

    landing = Landing.local(tmp_path / "landing")
    direct = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    land_batch(landing, "shop", "orders", [{"id": "o1", "qty": 1}], TYPES, key="id")
    holder = psycopg2.connect(pg_db.dsn, application_name="cut-off-loader")
    with holder.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), pg_advisory_xact_lock(hashtext('elt:raw:raw_shop.orders'))")
        pid = cur.fetchone()[0]
    caplog.set_level(logging.WARNING, logger="sources.load.postgres_raw")
    outcome: list[TableOutcome] = []
    loader = threading.Thread(target=lambda: outcome.append(_apply(landing, direct)))
    loader.start()
    try:
        _until_warned(caplog, loader)
        assert not outcome, outcome  # it waits for the holder
    finally:
        holder.rollback()  # the server ends the cut session: its transaction, and the lock, go
        holder.close()
    loader.join(30)
    assert outcome and outcome[0].error is None and len(outcome[0].applied) == 1, outcome
    (warned,) = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
    assert f"held by pid {pid} (cut-off-loader, from " in warned and "pg_terminate_backend" in warned, warned


def test_a_raw_tables_lock_held_by_another_roles_session_is_waited_for(tmp_path: Path, pg_db, caplog) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL shows another role's session without its state or times (unless the reader may
    read all statistics): the first version of the message failed on them, and the load failed
    with a hint to set the batch aside (a review)."""
    import logging
    import threading

    loader, other = f"{pg_db.dbname}_ld"[:63], f"{pg_db.dbname}_ot"[:63]
    admin = psycopg2.connect(pg_db.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        for role in (loader, other):
            cur.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER')
        cur.execute(f'GRANT CREATE ON DATABASE "{pg_db.dbname}" TO "{loader}"')
    try:
        landing = Landing.local(tmp_path / "landing")
        land_batch(landing, "shop", "orders", [{"id": "o1", "qty": 1}], TYPES, key="id")
        holder = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=other, dbname=pg_db.dbname)
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('elt:raw:raw_shop.orders'))")
        caplog.set_level(logging.WARNING, logger="sources.load.postgres_raw")
        outcome: list[TableOutcome] = []
        worker = threading.Thread(target=lambda: outcome.append(
            _apply(landing, PostgresSettings(pg_db.host, pg_db.port, loader, pg_db.dbname))))
        worker.start()
        try:
            _until_warned(caplog, worker)
        finally:
            holder.rollback()
            holder.close()
        worker.join(30)
        assert outcome and outcome[0].error is None and len(outcome[0].applied) == 1, outcome
        (warned,) = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
        assert "held by pid " in warned and "state not shown" in warned, warned
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename IN (%s, %s)", [loader, other])
        with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:  # in the test's database
            for role in (loader, other):
                cur.execute(f'DROP OWNED BY "{role}"')
        with admin.cursor() as cur:
            for role in (loader, other):
                cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def test_every_table_a_lost_connection_stopped_is_retried_by_the_scheduler(tmp_path: Path, small_jaffle: Path,  # type: ignore[no-untyped-def]
                                                                           pg_db) -> None:
    """The connection to the warehouse goes during the first table's COPY: that table and every
    later one fail. The scheduler retries a load only when each failed table may pass next time,
    and the later tables' "not loaded" was not such an error: a scheduler probe saw no retry, with
    ELT_JOB_ATTEMPTS=3."""
    from orchestrator.scheduling.worker import is_retryable
    from sources.config import load_source
    from sources.pipeline import load_file_source

    with cutting_relay(pg_db.host, pg_db.port, lambda data: b"COPY" in data and b"FROM STDIN" in data) as port:
        with PostgresRaw(PostgresSettings("127.0.0.1", port, pg_db.user, pg_db.dbname)) as raw:
            outcomes = load_file_source(load_source("jaffle_shop"), path=small_jaffle, landing=Landing.local(
                tmp_path / "landing"), raw=raw, lock_dir=tmp_path / "locks")
    failed = [o for o in outcomes if o.error is not None]
    assert len(failed) > 1 and "lost the connection" in str(failed[0].error), outcomes
    assert all(is_retryable(o.error) for o in failed), [(o.table, str(o.error)) for o in failed]
