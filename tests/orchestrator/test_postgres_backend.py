"""On the production gateway the run history lives in the warehouse's PostgreSQL (elt_meta) and
job locks are advisory locks, which the server frees when a killed run's session ends."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psycopg2
import pytest

from orchestrator.scheduling.locks import PgAdvisoryLock
from sources.connections import PostgresSettings
from tests.orchestrator.conftest import Project, wait_for


@pytest.fixture
def pg_project(project: Project, pg_db, monkeypatch) -> Project:  # type: ignore[no-untyped-def]
    env = {**pg_db.env("ELT_PG"), "ELT_GATEWAY": "postgres"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    project.env.update(env)
    return project


def test_history_and_advisory_locks_on_postgres(pg_project: Project, pg_db) -> None:  # type: ignore[no-untyped-def]
    first = pg_project.popen("run-job", "slow", SLOW_S="120")
    record = wait_for(lambda: next((r for r in pg_project.history().recent(5, "slow") if r.status == "running"
                                    and r.pid != first.pid), None), what="attempt started")
    second = pg_project.elt("run-job", "slow")
    assert second.returncode == 75, second.stderr
    busy = PgAdvisoryLock("job:slow", PostgresSettings.from_env("ELT_PG_"))
    assert not busy.try_acquire()
    # the holder is named from the server's view of the session: the supervisor's command and pid
    assert (busy.holder() or "").startswith(f"elt run-job pid {first.pid} on "), busy.holder()
    assert f"held by elt run-job pid {first.pid} on " in second.stderr, second.stderr

    os.kill(first.pid, signal.SIGKILL)  # the server ends its session, which frees the lock
    first.wait(timeout=10)
    lock = PgAdvisoryLock("job:slow", PostgresSettings.from_env("ELT_PG_"))
    wait_for(lock.try_acquire, timeout=20, what="the advisory lock to be freed")
    lock.release()
    tick = pg_project.elt("tick", "--now", "2026-11-25T06:00", ELT_JOBS="quick")
    assert "abandoned: slow" in tick.stdout, tick.stdout + tick.stderr

    with psycopg2.connect(pg_db.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT job, status FROM elt_meta.job_runs ORDER BY job, status")
        rows = cur.fetchall()
    assert rows == [("quick", "succeeded"), ("slow", "abandoned"), ("slow", "skipped_locked")]
    assert record.run_id in pg_project.elt("runs").stdout


def test_freshness_and_alert_state_on_postgres(pg_project: Project, pg_db) -> None:  # type: ignore[no-untyped-def]
    from sources.load.base import LEDGER_COLUMNS
    from tests.orchestrator.receivers import WebhookReceiver

    with psycopg2.connect(pg_db.dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
        cur.execute(f"CREATE TABLE elt_meta.loaded_batches ({LEDGER_COLUMNS})")
        cur.execute("INSERT INTO elt_meta.loaded_batches VALUES ('b1', 'jaffle_app', 'orders', "
                    "'raw_jaffle_shop.orders', 5, '2026-11-20 00:00', '2026-11-20 00:00', NULL)")
    env = {"ELT_JOBS": "jaffle_app", "ELT_JOB_JAFFLE_APP_SCHEDULE": "0 0 31 2 *"}
    with WebhookReceiver() as hook:
        pg_project.env["ELT_ALERT_WEBHOOK_URL"] = hook.url
        for now in ("2026-11-21T03:00", "2026-11-21T03:01"):
            tick = pg_project.elt("tick", "--now", now, **env)
            assert "stale: raw_jaffle_shop.orders" in tick.stdout, tick.stdout + tick.stderr
    assert [m["text"].splitlines()[0] for m in hook.received] == ["[elt] STALE: table raw_jaffle_shop.orders"]
    with psycopg2.connect(pg_db.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT subject, state FROM elt_meta.alert_state")
        assert cur.fetchall() == [("fresh:raw_jaffle_shop.orders", "stale")]


def test_a_killed_runs_background_children_are_killed_when_it_is_marked_abandoned(pg_project: Project,
                                                                                   tmp_path: Path) -> None:
    """An advisory lock dies with the supervisor's session, not with the job's background children:
    the tick that marks the run abandoned finds them by their ELT_RUN_ID and kills them."""
    from tests.orchestrator.test_runs import _alive

    supervisor = pg_project.popen("run-job", "orphan")
    pid_file = tmp_path / "orphan.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the background child")
    orphan = int(pid_file.read_text())
    os.kill(supervisor.pid, signal.SIGKILL)  # its direct child (sh) dies with it; `sleep` lives on
    supervisor.wait(timeout=10)
    lock = PgAdvisoryLock("job:orphan", PostgresSettings.from_env("ELT_PG_"))
    wait_for(lock.try_acquire, timeout=20, what="the advisory lock to be freed")
    lock.release()
    assert _alive(orphan)  # nothing holds the job's lock, yet a process of the run still works

    tick = pg_project.elt("tick", "--now", "2026-11-25T06:00", ELT_JOBS="quick")
    assert "abandoned: orphan" in tick.stdout, tick.stdout + tick.stderr
    assert "killed processes left by an abandoned run" in tick.stderr
    wait_for(lambda: not _alive(orphan), timeout=10, what="the background child to be killed")


def test_a_run_whose_lock_session_dies_is_stopped(pg_project: Project, pg_db) -> None:  # type: ignore[no-untyped-def]
    """An advisory lock lives as long as its database session. If that session ends under a
    running job (server restart, failover, a dropped connection), another run could take the lock:
    the supervisor notices within ELT_LOCK_CHECK_S and kills the attempt rather than overlap."""
    supervisor = pg_project.popen("run-job", "slow", SLOW_S="120", ELT_LOCK_CHECK_S="0.5")
    wait_for(lambda: any(r.status == "running" and r.pid != supervisor.pid
                         for r in pg_project.history().recent(5, "slow")), what="attempt started")
    with psycopg2.connect(pg_db.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        [(holder,)] = cur.fetchall()
        cur.execute("SELECT pg_terminate_backend(%s)", [holder])
    assert supervisor.wait(timeout=30) == 1
    [record] = pg_project.history().recent(5, "slow")
    assert record.status == "failed" and record.error_class == "LockLost", record
    assert "lost its lock" in (record.error or "")
    from tests.orchestrator.test_runs import _alive

    assert record.pid is not None and not _alive(record.pid)  # the attempt was killed


def _late_forwarder(target_port: int, after_s: float) -> int:
    """A loopback port that refuses connections (as a restarting server does) for ``after_s`` seconds,
    then forwards them to ``target_port``."""
    import socket
    import threading
    import time

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens here yet: connecting is refused

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def serve() -> None:
        time.sleep(after_s)
        server = socket.create_server(("127.0.0.1", port))
        while True:
            client, _ = server.accept()
            upstream = socket.create_connection(("127.0.0.1", target_port))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_the_run_history_waits_out_a_warehouse_restart(pg_db, settings, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """A supervisor records its attempts in the warehouse: a server restart while its job runs must
    not kill it (it died with `cannot connect`, and left the run `running` until a tick called it
    abandoned). It retries the connection, within ELT_HISTORY_CONNECT_WAIT_S."""
    from dataclasses import replace
    from datetime import datetime

    from orchestrator.observe.history import History, RunRecord
    from sources.errors import ConnectionFailed

    for key, value in pg_db.env("ELT_PG").items():
        monkeypatch.setenv(key, value)
    history = History.open(replace(settings, gateway="postgres"))
    record = RunRecord(run_id="r1", attempt=1, job="slow", trigger="manual", status="running",
                       started_at=datetime(2026, 11, 25, 6, 0))

    monkeypatch.setenv("ELT_PG_PORT", str(_late_forwarder(pg_db.port, after_s=2.0)))
    history.insert(record)  # refused at first; the connection is retried until the server answers
    assert "run history: the warehouse is unreachable, retrying" in caplog.text
    assert [(r.run_id, r.status) for r in history.recent(5, "slow")] == [("r1", "running")]

    monkeypatch.setenv("ELT_PG_PORT", str(_late_forwarder(pg_db.port, after_s=600)))
    monkeypatch.setenv("ELT_HISTORY_CONNECT_WAIT_S", "1")
    with pytest.raises(ConnectionFailed):  # an outage longer than the wait still fails, and says so
        history.update("r1", 1, status="succeeded")


class _FakeClock:
    """time.monotonic and time.sleep for the run history's retry loop: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_status_and_runs_give_up_on_an_unreachable_warehouse_in_seconds_and_a_supervisor_waits_a_minute(
        settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The on-call engineer runs `elt status` during an outage: it says the warehouse is unreachable
    after a few seconds of retries, while a job's supervisor keeps retrying for a minute (it must
    outlive a server restart). ELT_HISTORY_CONNECT_WAIT_S, when set, decides for both."""
    import io
    import socket
    from dataclasses import replace

    from orchestrator.observe import history as history_module
    from orchestrator.observe.history import History
    from orchestrator.observe.status import print_runs, print_status
    from sources.errors import ConnectionFailed

    with socket.socket() as s:  # a loopback port nothing listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"ELT_PG_HOST": "127.0.0.1", "ELT_PG_PORT": str(port), "ELT_PG_USER": "elt",
                       "ELT_PG_DATABASE": "warehouse", "ELT_PG_PASSWORD": ""}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ELT_HISTORY_CONNECT_WAIT_S", raising=False)
    pg = replace(settings, gateway="postgres")

    def waited(call) -> float:  # type: ignore[no-untyped-def]
        clock = _FakeClock()
        monkeypatch.setattr(history_module, "time", clock)
        with pytest.raises(ConnectionFailed):
            call()
        return sum(clock.slept)

    printed = io.StringIO()  # the error alone: no table header above it
    assert 0 < waited(lambda: print_status(pg, out=printed)) <= history_module.INTERACTIVE_CONNECT_WAIT_S
    assert 0 < waited(lambda: print_runs(pg, out=printed)) <= history_module.INTERACTIVE_CONNECT_WAIT_S
    assert printed.getvalue() == ""
    supervisor = waited(lambda: History.open(pg).recent(1))
    assert history_module.CONNECT_WAIT_S - 8 <= supervisor <= history_module.CONNECT_WAIT_S
    monkeypatch.setenv("ELT_HISTORY_CONNECT_WAIT_S", "20")
    assert 20 - 8 <= waited(lambda: print_runs(pg)) <= 20
    monkeypatch.setenv("ELT_HISTORY_CONNECT_WAIT_S", "0")
    assert waited(lambda: History.open(pg).recent(1)) == 0


def test_a_model_deploy_behind_an_open_bi_transaction_gives_up_and_names_it(pg_project: Project, pg_db,  # type: ignore[no-untyped-def]
                                                                           small_jaffle: Path) -> None:
    """A changed model replaces its mart's view (DROP VIEW ... CASCADE), which waits for every open
    transaction that read the view: a BI session left idle in a transaction held the deploy for
    ever, silently (an on-call probe). ELT_PG_LOCK_TIMEOUT_S bounds the wait; the failure names the
    cause and the query that finds the holder, and the rerun once it is gone deploys."""
    import shutil

    import psycopg2

    shutil.copytree(small_jaffle, pg_project.root / "data" / "jaffle-data")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = pg_project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    model = pg_project.root / "models" / "marts" / "locations.sql"
    model.write_text(model.read_text().replace("FROM staging.stg_jaffle_shop__locations AS locations",
                                               "FROM staging.stg_jaffle_shop__locations AS locations\nWHERE TRUE"))
    bi = psycopg2.connect(pg_db.dsn)  # BEGIN; SELECT ...; and the session stays open
    try:
        with bi.cursor() as cur:
            cur.execute("SELECT count(*) FROM marts.locations")
        proc = pg_project.elt("transform", timeout=300, ELT_PG_LOCK_TIMEOUT_S="2")
        said = proc.stdout + proc.stderr
        assert proc.returncode == 1, said
        assert "lock timeout" in said and "idle in transaction" in said and "Traceback" not in said, said
        # the limit as set, and no promise that nothing was applied: a deploy re-points views one at a time
        assert "ELT_PG_LOCK_TIMEOUT_S (2 s)" in said and "Nothing was half-applied" not in said, said
    finally:
        bi.close()
    proc = pg_project.elt("transform", timeout=300, ELT_PG_LOCK_TIMEOUT_S="2")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_end_of_a_run_survives_a_warehouse_outage_longer_than_the_history_wait(pg_project: Project,  # type: ignore[no-untyped-def]
                                                                                 monkeypatch) -> None:
    """The run history lives in the PostgreSQL warehouse. A supervisor that could not reach it past
    ELT_HISTORY_CONNECT_WAIT_S failed, the run stayed `running`, and the next tick called it
    abandoned, blaming an OOM kill or a reboot (an on-call probe). The write now waits on this
    machine and the next command that opens the history applies it."""
    from datetime import datetime

    from orchestrator.observe.history import History, RunRecord
    from sources.errors import ConnectionFailed

    history = pg_project.history()
    started = datetime(2026, 11, 25, 6, 0)
    history.insert(RunRecord(run_id="r-outage", attempt=1, job="quick", trigger="manual", status="running",
                             started_at=started))

    def down(self):  # type: ignore[no-untyped-def]
        raise ConnectionFailed("cannot connect to PostgreSQL: connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(History, "_pg_connect", down)
        history.update_or_keep("r-outage", 1, status="succeeded", finished_at=started)  # no exception: kept
    [record] = [r for r in pg_project.history().recent(5, "quick") if r.run_id == "r-outage"]
    assert record.status == "succeeded" and record.finished_at == started, record
    tick = pg_project.elt("tick", "--now", "2026-11-25T06:30", ELT_JOBS="quick")
    assert "abandoned" not in tick.stdout + tick.stderr, tick.stdout + tick.stderr


def test_a_database_name_too_long_for_the_unit_tests_is_refused_before_anything_connects(  # type: ignore[no-untyped-def]
        project: Project, pg_server) -> None:
    """Found by a newcomer walkthrough: `elt transform` on a missing database whose name is too long
    said to create it (the environment lock connected first), and once it was created refused the
    name. The name is now checked first: one step, the right one."""
    long_name = "abcdefghijklmnopqrstuvwxyz0"  # 27 characters, never created
    proc = project.elt("transform", **{**pg_server.env("ELT_PG"), "ELT_PG_DATABASE": long_name, "ELT_GATEWAY": "postgres"})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the PostgreSQL database name '{long_name}' (27 characters) is too long" in proc.stderr, proc.stderr
    assert "does not exist" not in proc.stderr and "createdb" not in proc.stderr, proc.stderr


def test_a_lock_session_sets_server_keepalives_and_a_cut_while_locking_is_one_clear_error(pg_db) -> None:  # type: ignore[no-untyped-def]
    """A network probe cut the link right after `pg_try_advisory_lock` reached the server: the load
    ended in a psycopg2 traceback, and the server kept the session, and the lock, for the kernel's
    two hours of silence (every later load refused as "held by another load"). The session now asks
    the server for keepalives (it then ends a silent session in about a minute), and the cut is one
    error that says what happened."""
    from sources.errors import ConnectionFailed
    from tests.servers import cutting_relay

    settings = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    lock = PgAdvisoryLock("job:keepalive", settings)
    assert lock.try_acquire()
    try:
        with lock.conn.cursor() as cur:
            cur.execute("SHOW tcp_keepalives_idle")
            assert cur.fetchone() == ("30",)
    finally:
        lock.release()

    # the link is cut right after the lock query reached the server, before its answer came back
    with cutting_relay(pg_db.host, pg_db.port, lambda data: b"pg_try_advisory_lock" in data) as port:
        cut = PgAdvisoryLock("job:cut", PostgresSettings("127.0.0.1", port, pg_db.user, pg_db.dbname))
        with pytest.raises(ConnectionFailed) as failed:
            cut.try_acquire()
    text = str(failed.value)
    assert text.startswith(f"lost the connection to PostgreSQL {pg_db.user}@127.0.0.1:") and "while taking the lock job:cut" in text, text
    assert "next: nothing was read or written" in text and "Traceback" not in text, text


def test_a_warehouse_gone_under_sqlmesh_is_named_not_a_traceback(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`elt transform` by hand while the server was stopped: SQLMesh's own connection to its state
    failed after elt's had succeeded, and the command ended in a psycopg2 traceback (a scheduler probe)."""
    from orchestrator import cli
    from orchestrator.settings import Settings
    from tests.servers import free_port

    port = free_port()  # nothing listens there
    for key, value in {"ELT_PG_HOST": "127.0.0.1", "ELT_PG_PORT": str(port), "ELT_PG_USER": "etl",
                       "ELT_PG_DATABASE": "wh", "ELT_PG_PASSWORD": ""}.items():
        monkeypatch.setenv(key, value)
    try:
        psycopg2.connect(host="127.0.0.1", port=port, user="etl", dbname="wh", connect_timeout=5)
    except psycopg2.OperationalError as refused:
        wrapped = RuntimeError("could not read the state")  # as SQLMesh's state sync raises it
        wrapped.__cause__ = refused
    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "unused.duckdb", landing_root=tmp_path / "landing",
                        data_dir=tmp_path, gateway="postgres")
    known = cli._warehouse_failure(wrapped, settings, "elt transform")
    assert known is not None, "a traceback"
    message, code = known
    assert code == 1 and message.startswith(f"error: cannot reach the PostgreSQL warehouse 127.0.0.1:{port}/wh: "), message
    assert f"next: check the server (`pg_isready -h 127.0.0.1 -p {port}`)" in message, message


def test_a_cut_while_a_session_is_set_up_is_a_connection_failure(pg_db) -> None:  # type: ignore[no-untyped-def]
    """Between the login and the session's settings (`SET TimeZone`): a bare psycopg2 error, which
    the run history does not retry and `elt run-job` printed as a traceback (a scheduler probe)."""
    from sources.errors import ConnectionFailed
    from tests.servers import cutting_relay

    with cutting_relay(pg_db.host, pg_db.port, lambda data: b"SET TimeZone" in data) as port:
        with pytest.raises(ConnectionFailed) as failed:
            PostgresSettings("127.0.0.1", port, pg_db.user, pg_db.dbname).connect()
    text = str(failed.value)
    assert text.startswith(f"lost the connection to PostgreSQL {pg_db.user}@127.0.0.1:{port}/{pg_db.dbname} while "
                           "setting up the session: "), text


def test_a_connection_lost_while_the_unit_tests_run_is_not_a_failing_test(tmp_path: Path, small_jaffle: Path,  # type: ignore[no-untyped-def]
                                                                          pg_db) -> None:
    """The warehouse connection goes while SQLMesh's plan runs the project's unit tests: the
    transform said "Cannot generate plan due to failing test(s)", and the scheduler did not retry
    it (a scheduler probe). No test failed."""
    from orchestrator.scheduling.worker import is_retryable
    from orchestrator.transform.run import TransformFailed
    from tests.conftest import BIN, copy_project, project_env, run
    from tests.servers import cutting_relay

    project = copy_project(tmp_path / "project")
    env = project_env(project, **pg_db.env("ELT_PG"), ELT_GATEWAY="postgres", ELT_LANDING_ROOT=str(tmp_path / "landing"))
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    with cutting_relay(pg_db.host, pg_db.port, lambda data: b"sqlmesh_test" in data) as port:
        cut = run([str(BIN / "elt"), "transform"], cwd=project, env={**env, "ELT_PG_PORT": str(port)}, check=False)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "failing test" not in cut.stderr and "lost the connection to the warehouse while the unit tests ran" in \
        cut.stderr, cut.stderr
    line = next(l for l in cut.stderr.splitlines() if "lost the connection to the warehouse" in l)
    assert is_retryable(TransformFailed("plan", [], model_errors=[line])), line
    again = run([str(BIN / "elt"), "transform"], cwd=project, env=env, check=False)
    assert again.returncode == 0, again.stderr


def test_an_alert_state_the_warehouse_could_not_take_is_kept_for_the_next_command(tmp_path: Path, pg_db,  # type: ignore[no-untyped-def]
                                                                                   monkeypatch) -> None:
    """A FAILED alert went out while the PostgreSQL server's disk was full: its state was not
    written, so when the job succeeded again the previous state read 'ok' and no RECOVERED alert
    was ever sent (a scheduler probe). The state is kept beside the history and written later."""
    from datetime import datetime

    from orchestrator.observe.history import History
    from orchestrator.settings import Settings
    from tests.servers import cutting_relay

    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "data" / "warehouse.duckdb",
                        landing_root=tmp_path / "landing", data_dir=tmp_path / "data", gateway="postgres")
    (tmp_path / "data").mkdir()
    for key, value in {**pg_db.env("ELT_PG"), "ELT_HISTORY_CONNECT_WAIT_S": "1"}.items():
        monkeypatch.setenv(key, value)
    History.open(settings).set_alert_state("job:demo", "ok", datetime(2026, 12, 6, 1, 0))
    with cutting_relay(pg_db.host, pg_db.port, lambda data: b"INSERT INTO elt_meta.alert_state" in data) as port:
        monkeypatch.setenv("ELT_PG_PORT", str(port))
        History.open(settings).set_alert_state("job:demo", "failed", datetime(2026, 12, 6, 2, 0))  # no exception
    monkeypatch.setenv("ELT_PG_PORT", str(pg_db.port))
    assert History.open(settings).alert_states()["job:demo"][0] == "failed"


def test_a_server_with_a_full_disk_is_not_called_unreachable(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A scheduler probe filled the server's disk before a tick: `elt tick`, `status` and `runs`
    said "the server is down or unreachable" (the login fails with the server's FATAL below)."""
    from sources.errors import ConnectionFailed

    def refused(**kwargs):  # type: ignore[no-untyped-def]
        raise psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  could not '
                                        'write init file')

    monkeypatch.setattr(psycopg2, "connect", refused)
    with pytest.raises(ConnectionFailed) as failed:
        PostgresSettings("127.0.0.1", 5432, "etl", "wh").connect()
    assert "the server is up but its disk is full" in str(failed.value) and "unreachable" not in str(failed.value)


def test_on_postgres_a_slot_that_ran_is_not_run_again_and_one_without_a_run_is(pg_project: Project) -> None:
    """The schedule counts from the last claimed slot a run was recorded for: on PostgreSQL too, a
    slot that ran stays done (the claim's time and the run's compare equal there), and a claim
    without a run (its COMMIT applied, its answer lost) is run by the next tick."""
    from datetime import datetime

    env = {"ELT_JOBS": "quick"}
    first = pg_project.elt("tick", "--now", "2026-11-25T00:10", **env)
    assert "quick: succeeded" in first.stdout, first.stdout + first.stderr
    again = pg_project.elt("tick", "--now", "2026-11-25T00:20", **env)
    assert "nothing due" in again.stdout, again.stdout + again.stderr
    assert pg_project.history().claim_slot("quick", datetime(2026, 11, 25, 1, 0), datetime(2026, 11, 25, 1, 0, 5))
    orphan = pg_project.elt("tick", "--now", "2026-11-25T01:30", **env)
    assert "quick: succeeded" in orphan.stdout and "left no record" in orphan.stderr, orphan.stdout + orphan.stderr
    done = pg_project.elt("tick", "--now", "2026-11-25T01:40", **env)
    assert "nothing due" in done.stdout, done.stdout + done.stderr


def test_a_plan_or_run_waits_while_another_evaluates_models_on_postgres(pg_project: Project, pg_db,  # type: ignore[no-untyped-def]
                                                                       small_jaffle: Path) -> None:
    """`sqlmesh run` by hand while `elt transform` restated new batches: both deleted and inserted
    the same intervals in their own transactions, and marts.orders kept every order twice, green (a
    probe: 147,767 rows for 73,892 orders). Every SQLMesh plan and run on PostgreSQL now takes one
    advisory lock first (config.yaml's before_all, stored with the environment, so a bare command
    takes it too): held here by a stand-in for another evaluation, the transform waits on it, and
    builds once it is free, each order once."""
    import shutil
    import time

    shutil.copytree(small_jaffle, pg_project.root / "data" / "jaffle-data")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = pg_project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    admin = psycopg2.connect(pg_db.dsn)
    admin.autocommit = True

    def stored() -> str:  # what a bare `sqlmesh run` or `sqlmesh plan` of prod executes first
        with admin.cursor() as cur:
            cur.execute("SELECT environment_statements FROM sqlmesh._environment_statements "
                        "WHERE environment_name = 'prod'")
            return str(cur.fetchall())
    assert "pg_advisory_lock" in stored() and "pg_advisory_unlock" in stored(), stored()
    # a warehouse planned before the statements existed: the next transform plans to store them
    with admin.cursor() as cur:
        cur.execute("DELETE FROM sqlmesh._environment_statements WHERE environment_name = 'prod'")
    proc = pg_project.elt("transform", timeout=300)
    assert proc.returncode == 0 and "plan applied" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "pg_advisory_lock" in stored(), stored()

    orders = pg_project.root / "data" / "jaffle-data" / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o6,c2,2018-09-02T09:00:00,s2,0,0,0\n")
    proc = pg_project.elt("load", "jaffle_shop", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    other = psycopg2.connect(pg_db.dsn)
    other.autocommit = True
    transform = None
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext('elt:sqlmesh evaluation'))")
        transform = pg_project.popen("transform")

        def waiting() -> bool:
            with admin.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query ILIKE '%pg_advisory_lock%'")
                return cur.fetchone()[0] == 1
        wait_for(waiting, timeout=120, what="the transform waiting on the evaluation lock")
        time.sleep(1)
        assert transform.poll() is None
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM marts.orders WHERE order_id = 'o6'")
            assert cur.fetchone()[0] == 0  # nothing evaluated while the other holds it
    finally:
        other.close()  # the session ends: its lock goes with it, as a killed command's does
    out, err = transform.communicate(timeout=300)
    assert transform.returncode == 0, out + err
    with admin.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT order_id), count(*) FILTER (WHERE order_id = 'o6') FROM marts.orders")
        total, distinct, new = cur.fetchone()
    admin.close()
    assert total == distinct and new == 1, (total, distinct, new)
