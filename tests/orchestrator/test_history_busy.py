"""The end of an attempt is recorded even while someone holds the DuckDB run history open (the
duckdb CLI or a notebook reading `data/elt_history.duckdb` at 3 a.m.). Before, the supervisor
gave up after ELT_META_LOCK_WAIT_S with "the warehouse ... is open", the run stayed "running",
and the next tick called the succeeded run abandoned and sent a FAILED alert (a signals probe)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.observe.history import History, RunRecord, meta_duckdb_path
from orchestrator.scheduling.runner import mark_abandoned
from orchestrator.settings import Settings
from tests.orchestrator.conftest import wait_for


def test_an_attempt_end_written_while_the_history_is_held_is_kept_and_applied_next(  # type: ignore[no-untyped-def]
        tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ELT_META_LOCK_WAIT_S", "0.5")
    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "warehouse.duckdb", landing_root=tmp_path / "l",
                        data_dir=tmp_path)
    history = History.open(settings)
    started = datetime(2026, 11, 25, 6, 0)
    history.insert(RunRecord(run_id="r1", attempt=1, job="slow", trigger="schedule", status="running",
                             started_at=started, pid=999_999_999, host="here"))
    path = meta_duckdb_path(settings)
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "c.sql('SELECT 1'); print('open', flush=True); time.sleep(120)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(Exception, match="lock"):
            History.open(settings).recent()  # held: nothing can be read or written now
        History.open(settings).update_or_keep("r1", 1, status="retrying", finished_at=datetime(2026, 11, 25, 6, 1))
        History.open(settings).insert_or_keep(RunRecord(  # the retry's attempt, and its end
            run_id="r1", attempt=2, job="slow", trigger="schedule", status="running", started_at=started, host="here"))
        History.open(settings).update_or_keep("r1", 2, status="succeeded", finished_at=datetime(2026, 11, 25, 6, 2))
        kept = sorted(path.with_name(path.name + ".pending").glob("*.json"))
        assert len(kept) == 3
    finally:
        holder.kill()
        holder.wait()
    after = History.open(settings)
    wait_for(lambda: after.recent(), timeout=10, what="the history to open")
    second, first = after.recent()
    assert (first.attempt, first.status, first.finished_at) == (1, "retrying", datetime(2026, 11, 25, 6, 1))
    assert (second.attempt, second.status, second.finished_at) == (2, "succeeded", datetime(2026, 11, 25, 6, 2))
    assert not any(file.exists() for file in kept)
    assert mark_abandoned(settings, after, datetime(2026, 11, 25, 7, 0)) == []  # no false alarm


def test_a_kept_record_that_cannot_apply_is_set_aside_and_never_blocks_the_history(tmp_path: Path) -> None:
    """A damaged kept file (cut by a power loss) must not make every later use of the history fail."""
    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "warehouse.duckdb", landing_root=tmp_path / "l",
                        data_dir=tmp_path)
    History.open(settings).insert(RunRecord(run_id="r1", attempt=1, job="slow", trigger="schedule", status="running",
                                            started_at=datetime(2026, 11, 25, 6, 0), host="here"))
    path = meta_duckdb_path(settings)
    pending = path.with_name(path.name + ".pending")
    pending.mkdir()
    (pending / "1-1.json").write_text('{"sql": "UPDATE elt_meta.job_')  # cut short
    [record] = History.open(settings).recent()
    assert record.status == "running"
    assert (pending / "1-1.failed").exists() and not (pending / "1-1.json").exists()

    # an error text naming a file whose name is not UTF-8 (lone surrogates) is stored, escaped
    History.open(settings).update("r1", 1, error="cannot read " + os.fsdecode(b"/data/caf\xe9.csv"))
    assert History.open(settings).recent()[0].error == "cannot read /data/caf\\udce9.csv"


def test_run_job_fails_with_1_not_75_when_the_history_is_held_before_any_attempt(project) -> None:  # type: ignore[no-untyped-def]
    """`elt run-job` exits 75 only when another run of the job holds its lock: the generated Airflow
    DAGs skip on 75. A run history held by another process past ELT_META_LOCK_WAIT_S exited 75 too,
    so Airflow showed the task skipped and the DAG run green while nothing ran (an Airflow
    hand-over probe). It is a failure (1), and the message says which file and which process."""
    assert project.elt("run-job", "quick", "--trigger", "airflow").returncode == 0  # the history exists
    path = meta_duckdb_path(project.settings())
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "c.sql('SELECT 1'); print('open', flush=True); time.sleep(120)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        proc = project.elt("run-job", "quick", "--trigger", "airflow", ELT_META_LOCK_WAIT_S="0.5")
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert f"the run history {path} is open in another process, PID {holder.pid}" in proc.stderr, proc.stderr[-2000:]
    assert "failed before any attempt ran (exit 1" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
