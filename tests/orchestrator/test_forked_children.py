"""A killed `elt` leaves no lock behind, even when a library forked worker processes that outlive it.

Found by bench/kill_transform.py: SQLMesh loads a project in a pool of forked workers. A SIGKILL
while they lived orphaned them for good, and they kept copies of the transform's lock file
descriptor: every later `elt transform` waited an hour for the lock (decision 0024). `elt` now
loads without forking (MAX_FORK_WORKERS=1), and a process forked from Python never keeps our locks
(sources/forks.py), which the tests below check with a user who asks SQLMesh to fork again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.scheduling.locks import FileLock, PgAdvisoryLock
from sources.connections import PostgresSettings
from tests.conftest import BIN, copy_project, project_env, run

# Records every fork made from Python (not subprocess's fork+exec) in the file named by the variable.
FORK_HOOK = '''
import os

def _record():
    with open(os.environ["ELT_TEST_FORK_LOG"], "a") as fh:
        fh.write(f"{os.getpid()}\\n")

os.register_at_fork(after_in_parent=_record)
'''

# Takes a lock the way `elt` does, forks a child that outlives it, and waits to be killed.
HOLD_AND_FORK = '''
import os, sys, time
from pathlib import Path
from orchestrator.scheduling.locks import FileLock, PgAdvisoryLock
from sources.connections import PostgresSettings

kind, where = sys.argv[1], sys.argv[2]
lock = FileLock("sqlmesh:prod", Path(where)) if kind == "file" else PgAdvisoryLock("sqlmesh:prod", PostgresSettings.from_env("ELT_PG_"))
assert lock.try_acquire()
if os.fork() == 0:
    time.sleep(120)  # an orphan that never lets go of what it inherited
    os._exit(0)
print("held", flush=True)
time.sleep(120)
'''


def _hooked_env(tmp_path: Path, project: Path, **extra: str) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(FORK_HOOK)
    return project_env(project, PYTHONPATH=str(hook), ELT_TEST_FORK_LOG=str(tmp_path / "forks.txt"),
                       ELT_DUCKDB_PATH=str(project / "data" / "warehouse.duckdb"), **extra)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_elt_transform_forks_no_worker_processes(tmp_path: Path, small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")  # no SQLMesh cache yet: the load that forks
    env = _hooked_env(tmp_path, project)
    forks = tmp_path / "forks.txt"
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env, timeout=120)
    run([str(BIN / "elt"), "transform"], cwd=project, env=env, timeout=300)
    assert not forks.exists(), f"elt forked: {forks.read_text()}"
    # the hook sees SQLMesh's forks when they are allowed (the check above can fail)
    other = copy_project(tmp_path / "other")
    run([str(BIN / "sqlmesh"), "info"], cwd=other, env={**_hooked_env(tmp_path, other), "MAX_FORK_WORKERS": "2"}, timeout=120)
    assert forks.exists() and forks.read_text().strip()


def test_a_transform_killed_among_forked_workers_leaves_its_lock_free(tmp_path: Path, small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")
    env = _hooked_env(tmp_path, project, MAX_FORK_WORKERS="2")  # a user who wants parallel loading back
    forks = tmp_path / "forks.txt"
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env, timeout=120)
    proc = subprocess.Popen([str(BIN / "elt"), "transform"], cwd=project, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not forks.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert forks.exists(), "SQLMesh did not fork its loading workers"
        proc.send_signal(signal.SIGKILL)  # while the lock is held and the workers live
        proc.wait(timeout=30)
        os.killpg(proc.pid, 0)  # orphaned workers are alive in the killed process's group
        lock = FileLock("sqlmesh:prod", project / "data" / "locks")
        assert lock.try_acquire(), "the killed transform's orphaned workers still hold its lock"
        lock.release()
        run([str(BIN / "elt"), "transform"], cwd=project, env={**env, "ELT_SQLMESH_LOCK_WAIT_S": "10"}, timeout=300)
    finally:
        _kill_group(proc.pid)


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_a_lock_is_released_when_its_holder_dies_though_a_forked_child_lives(tmp_path: Path, kind: str, request) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELT_PG_")}
    if kind == "postgres":
        env.update(request.getfixturevalue("pg_db").env("ELT_PG"))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, kind, str(tmp_path)], env=env, text=True,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        other = FileLock("sqlmesh:prod", tmp_path) if kind == "file" else \
            PgAdvisoryLock("sqlmesh:prod", PostgresSettings.from_env("ELT_PG_", env))
        assert not other.try_acquire()  # held while the holder lives
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        os.killpg(holder.pid, 0)  # its forked child is still alive
        assert other.acquire(timeout=10, poll=0.1), "the dead holder's forked child kept the lock"
        other.release()
    finally:
        _kill_group(holder.pid)

