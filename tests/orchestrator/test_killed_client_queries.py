"""A query of a killed `elt` process does not run on in the warehouse.

PostgreSQL runs a statement to its end after its client died unless it checks the connection while
the query runs (``client_connection_check_interval``, PostgreSQL 14+). A transform killed by a
timeout left its INSERT running, with its locks, against the retry. Both kinds of connection are
checked: SQLMesh's (which take no session settings, so `elt` passes it through PGOPTIONS, keeping
what PGOPTIONS already held) and `elt`'s own (the loader, locks, history).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg2

from tests.conftest import BIN, copy_project, project_env

SLEEP_S = 300  # how long the killed query would run on without the check

# make_context as `elt transform` builds it, then one long query on SQLMesh's connection
SQLMESH_QUERY = f"""
from orchestrator.settings import Settings
from orchestrator.transform.run import make_context
ctx, _ = make_context(Settings.from_env(), quiet=True)
for name in ("client_connection_check_interval", "statement_timeout"):
    print(name, ctx.engine_adapter.fetchone(f"SHOW {{name}}")[0], flush=True)
ctx.engine_adapter.execute("SELECT pg_sleep({SLEEP_S}) AS sqlmesh_sleep")
"""

# the loader's connection (sources/connections.py), after make_context changed PGOPTIONS
OWN_QUERY = f"""
from orchestrator.settings import Settings
from orchestrator.transform.run import make_context
from sources.connections import PostgresSettings
make_context(Settings.from_env(), quiet=True)
con = PostgresSettings.from_env("ELT_PG_").connect()
with con.cursor() as cur:
    for name in ("client_connection_check_interval", "statement_timeout"):
        cur.execute(f"SHOW {{name}}")
        print(name, cur.fetchone()[0], flush=True)
    cur.execute("SELECT pg_sleep({SLEEP_S}) AS own_sleep")
"""


def _running(admin, marker: str) -> list[int]:  # type: ignore[no-untyped-def]
    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                    (f"%{marker}%",))
        return [r[0] for r in cur.fetchall()]


def _kill_during_query(code: str, marker: str, env: dict[str, str], cwd: Path, admin) -> tuple[str, float]:  # type: ignore[no-untyped-def]
    """Start ``code``, SIGKILL it once its query runs; (its output, seconds until the server ended the query)."""
    proc = subprocess.Popen([str(BIN / "python"), "-c", code], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _running(admin, marker):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the query never started"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = time.monotonic()
    while _running(admin, marker) and time.monotonic() - killed < 60:
        time.sleep(0.2)
    return output, time.monotonic() - killed


def test_the_server_ends_the_queries_of_a_killed_elt_process(tmp_path: Path, pg_db) -> None:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project")
    env = project_env(project, **pg_db.env("ELT_PG"), ELT_GATEWAY="postgres", ELT_PG_CLIENT_CHECK_S="1",
                      PGOPTIONS="-c statement_timeout=600s")
    admin = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=pg_db.user, dbname=pg_db.dbname)
    admin.autocommit = True
    try:
        for code, marker in ((SQLMESH_QUERY, "sqlmesh_sleep"), (OWN_QUERY, "own_sleep")):
            output, ended_after = _kill_during_query(code, marker, env, project, admin)
            assert "client_connection_check_interval 1s" in output, output
            assert "statement_timeout 10min" in output, output  # the user's PGOPTIONS still apply
            assert not _running(admin, marker), f"{marker}: still running {ended_after:.0f} s after its client was killed"
            assert ended_after < 20, ended_after
    finally:
        for pid in _running(admin, "_sleep"):
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
