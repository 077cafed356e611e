"""On the production gateway the run history lives in the warehouse's PostgreSQL (elt_meta) and
job locks are advisory locks, which the server frees when a killed run's session ends."""

from __future__ import annotations

import os
import signal

import psycopg2
import pytest

from orchestrator.locks import PgAdvisoryLock
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
    assert not PgAdvisoryLock("job:slow", PostgresSettings.from_env("ELT_PG_")).try_acquire()

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
