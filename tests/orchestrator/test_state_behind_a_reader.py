"""A BI reader that opens the DuckDB warehouse for a moment, just as a command starts, must never
make SQLMesh take the live state for an empty one (a probe, decision 0080).

SQLMesh's first look at its state (``table_exists`` on its versions table) swallows every error.
When another process held the file at that instant, the state read as missing, and SQLMesh ran
every migration on it as soon as the reader let go: every snapshot lost ``forward_only``,
``dev_version`` and ``fingerprint``, and every later deploy failed. Here the reader lets go exactly
after that first look, which makes the race certain instead of 1 in 51."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_project, duck_rows, project_env, run

HOLDER = """
import duckdb, pathlib, sys, time
con = duckdb.connect(sys.argv[1]); print("held", flush=True)
release, released = pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
while not release.exists():
    time.sleep(0.02)
con.close(); released.touch(); time.sleep(120)
"""

COMMAND = """
import pathlib, sys, time
from sqlmesh.core.engine_adapter.base import EngineAdapter
from orchestrator.settings import Settings
from orchestrator.transform.run import make_context

release, released = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
first_look = EngineAdapter.table_exists

def look_then_let_the_reader_go(self, name):
    found = first_look(self, name)
    if not release.exists():  # the reader closes right after SQLMesh's first look
        release.touch()
        while not released.exists():
            time.sleep(0.02)
    return found

EngineAdapter.table_exists = look_then_let_the_reader_go
try:
    make_context(Settings.from_env(), quiet=True)[0].close()
    print("OUTCOME: opened")
except Exception as exc:
    print("OUTCOME:", type(exc).__name__, str(exc).splitlines()[0][:300])
"""


def test_a_reader_that_lets_go_during_the_first_state_look_never_gets_the_state_migrated(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    env = project_env(project)
    warehouse = project / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    run([sys.executable, "-c", "from orchestrator.settings import Settings\n"
         "from orchestrator.transform.run import make_context\n"
         "make_context(Settings.from_env(), quiet=True)[0].close()"], cwd=project, env=env)
    state = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sqlmesh' ORDER BY 1"
    versions = "SELECT * FROM sqlmesh._versions"
    before_tables, before_versions = duck_rows(warehouse, state), duck_rows(warehouse, versions)

    release, released = tmp_path / "release", tmp_path / "released"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(warehouse), str(release), str(released)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        proc = run([sys.executable, "-c", COMMAND, str(release), str(released)], cwd=project, env=env,
                   timeout=300, check=False)
    finally:
        holder.kill()
        holder.wait()
    outcome = next((line for line in proc.stdout.splitlines() if line.startswith("OUTCOME:")), proc.stdout + proc.stderr)
    # stopped at the held file, before SQLMesh looked at its state: the reader was never let go
    assert "Could not set lock on file" in outcome, outcome
    assert not release.exists()
    assert duck_rows(warehouse, state) == before_tables  # no migration ran: no _backup tables either
    assert duck_rows(warehouse, versions) == before_versions
