"""The generated DAGs in a real Airflow 3, in its own virtual environment, on a small demo project.

The environment is built once per hash of tests/airflow/requirements.lock under
``~/.cache/sqlmesh-elt/airflow-<hash>`` (``$XDG_CACHE_HOME`` if set); a ``.complete`` file written
last marks it usable, so an interrupted install is redone. Airflow's metadata database is SQLite in
a temporary AIRFLOW_HOME. A failed install fails the test: it is never skipped.

What is checked: every DAG file imports without a warning (``python -W error`` and Airflow's own
import errors), the transform DAG is scheduled on its cron or its sources' assets, ``airflow dags
test`` succeeds for each DAG and runs `elt run-job`, a successful load emits its asset and queues
the transform, and a held job lock makes the task ``skipped`` (and emits nothing).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT, SMALL_JAFFLE, copy_project, project_env
from tests.orchestrator.conftest import Project

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

LOCK_FILE = ROOT / "tests" / "airflow" / "requirements.lock"
JOBS = ("jaffle_shop", "transform")  # the file source and the transform: no server needed
DAG_IDS = tuple(f"elt_{job}" for job in JOBS)

# Runs in Airflow's interpreter: what the metadata database says (task states, asset events, the
# asset-triggered runs waiting to be created, and each serialized DAG's schedule and outlets).
STATE_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
from sqlalchemy import select
from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
from airflow.models.serialized_dag import SerializedDagModel
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session

with create_session() as s:
    out = {"tis": [[ti.dag_id, ti.task_id, ti.run_id, ti.state]
                   for ti in s.scalars(select(TaskInstance).order_by(TaskInstance.start_date))],
           "events": [[e.asset.uri, e.source_dag_id] for e in s.scalars(select(AssetEvent).order_by(AssetEvent.id))],
           "queued": [[s.get(AssetModel, q.asset_id).uri, q.target_dag_id]
                      for q in s.scalars(select(AssetDagRunQueue))],
           "dags": {}}
    for dag_id in sys.argv[1:]:
        dag = SerializedDagModel.get_dag(dag_id, session=s)
        tt = dag.timetable
        condition = getattr(tt, "asset_condition", None)
        if type(condition).__name__ == "_NullAsset":  # what a time-only timetable carries
            condition = None
        out["dags"][dag_id] = {
            "timetable": type(tt).__name__,
            "cron": getattr(getattr(tt, "timetable", tt), "_expression", None),
            "condition": type(condition).__name__.removeprefix("Serialized") if condition is not None else None,
            "schedule_assets": sorted(a.uri for _, a in condition.iter_assets()) if condition is not None else [],
            "outlets": sorted(a.uri for a in dag.get_task("run_job").outlets),
        }
print(json.dumps(out, default=str))
"""


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sqlmesh-elt"


def _fail_install(cmd: list[str], proc: subprocess.CompletedProcess[str]) -> None:
    pytest.fail(f"installing Airflow from {LOCK_FILE.relative_to(ROOT)} failed: `{' '.join(cmd)}` exited "
                f"{proc.returncode}\n{(proc.stderr or proc.stdout)[-3000:]}\nnext: run that command by hand; "
                "the lock's header says how to regenerate it", pytrace=False)


@pytest.fixture(scope="module")
def airflow_bin() -> Path:
    """The ``bin/`` of a virtual environment holding exactly the lock file's packages."""
    digest = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()[:16]
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"airflow-{digest}"
    with open(cache / f"airflow-{digest}.lock", "w") as guard:  # one builder at a time
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            started = time.monotonic()
            made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
            if made.returncode != 0:
                _fail_install(made.args, made)
            # with the uv that `make` installs beside the project (6 s on an empty cache; with pip
            # this fixture took 77 s of a clean CI run: decision 0061), else or if it fails, pip;
            # both compile the bytecode
            uv = Path(sys.executable).parent / "uv"
            run: subprocess.CompletedProcess[str] | None = None
            if uv.exists():
                run = subprocess.run([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                                      "--compile-bytecode", "-r", str(LOCK_FILE)], capture_output=True, text=True,
                                     timeout=1200, env={**os.environ, "UV_SYSTEM_CERTS": "1"})
            if run is None or run.returncode != 0:
                run = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet",
                                      "-r", str(LOCK_FILE)], capture_output=True, text=True, timeout=1200)
                if run.returncode != 0:
                    _fail_install(run.args, run)
            (venv / ".complete").write_text(f"{LOCK_FILE.name} {digest}\n")  # last: the venv is whole
            print(f"built {venv} in {time.monotonic() - started:.1f}s")
    return venv / "bin"


@dataclass
class AirflowWorld:
    bin: Path
    project: Project
    dags: Path
    env: dict[str, str]
    parsed: subprocess.CompletedProcess[str] | None = None  # `airflow dags reserialize` of the DAG files

    def airflow(self, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = subprocess.run([str(self.bin / "airflow"), *args], env=self.env, cwd=self.project.root,
                              capture_output=True, text=True, timeout=timeout)
        print(f"airflow {' '.join(args)}: exit {proc.returncode} in {time.monotonic() - started:.1f}s")
        return proc

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.airflow(*args)
        assert proc.returncode == 0, f"airflow {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc

    def state(self) -> dict[str, Any]:
        proc = subprocess.run([str(self.bin / "python"), "-c", STATE_SCRIPT, *DAG_IDS], env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def task_states(self, dag_id: str) -> list[str]:
        return [state for dag, _, _, state in self.state()["tis"] if dag == dag_id]


@pytest.fixture(scope="module")
def world(airflow_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowWorld]:
    """A demo project with the small Jaffle Shop files, its DAGs, and a migrated Airflow home."""
    base = tmp_path_factory.mktemp("airflow")
    root = copy_project(base / "project")
    data = root / "data" / "jaffle-data"  # the jaffle_shop declaration's relative path
    data.mkdir(parents=True)
    for name, text in SMALL_JAFFLE.items():
        (data / name).write_text(text)
    (base / "tmp").mkdir()
    dags = base / "dags"
    env = project_env(
        root, ELT_JOBS=",".join(JOBS), TMPDIR=str(base / "tmp"),
        AIRFLOW_HOME=str(base / "airflow-home"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",  # so a load's asset event queues the transform
    )
    project = Project(root, env)
    proc = project.elt("airflow", "--out", str(dags), "--elt-command", str(BIN / "elt"))
    assert proc.returncode == 0, proc.stderr
    world = AirflowWorld(airflow_bin, project, dags, env)
    world.ok("db", "migrate")
    world.parsed = world.ok("dags", "reserialize")
    yield world


def test_dag_files_import_without_a_warning(world: AirflowWorld) -> None:
    assert sorted(p.name for p in world.dags.glob("*.py")) == sorted(f"{d}.py" for d in DAG_IDS)
    for path in sorted(world.dags.glob("*.py")):  # any warning, e.g. a deprecated import, is an error
        proc = subprocess.run([str(world.bin / "python"), "-W", "error", str(path)], env=world.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{path.name}:\n{proc.stderr[-3000:]}"
        assert proc.stderr == "", proc.stderr
    proc = world.ok("dags", "list-import-errors", "--output", "json")
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    # and nothing Airflow logged while parsing them points at one of them
    parsed = world.parsed
    assert parsed is not None
    noisy = [line for line in (parsed.stdout + parsed.stderr).splitlines()
             if "warning" in line.lower() and str(world.dags) in line]
    assert noisy == []


def test_transform_is_scheduled_on_its_cron_or_its_sources_assets(world: AirflowWorld) -> None:
    dags = world.state()["dags"]
    assert dags["elt_jaffle_shop"] == {"timetable": "CronTriggerTimetable", "cron": "0 0 * * *",
                                       "condition": None, "schedule_assets": [],
                                       "outlets": ["x-elt://jaffle_shop"]}
    assert dags["elt_transform"] == {"timetable": "AssetOrTimeSchedule", "cron": "0 * * * *",
                                     "condition": "AssetAny", "schedule_assets": ["x-elt://jaffle_shop"],
                                     "outlets": ["x-elt://transform"]}


def test_dags_test_runs_each_job_and_a_landed_load_queues_the_transform(world: AirflowWorld) -> None:
    world.ok("dags", "test", "elt_jaffle_shop")
    assert world.task_states("elt_jaffle_shop") == ["success"]
    state = world.state()
    assert state["events"] == [["x-elt://jaffle_shop", "elt_jaffle_shop"]]
    assert state["queued"] == [["x-elt://jaffle_shop", "elt_transform"]]  # the scheduler's next transform run

    world.ok("dags", "test", "elt_transform")
    assert world.task_states("elt_transform") == ["success"]
    assert ["x-elt://transform", "elt_transform"] in world.state()["events"]
    for job in JOBS:  # elt ran the job and recorded it (Airflow only decided when)
        runs = world.project.elt("runs", "--job", job)
        assert runs.returncode == 0, runs.stderr
        assert "succeeded" in runs.stdout and "airflow" in runs.stdout, runs.stdout


def test_a_held_job_lock_makes_the_task_skipped_and_emits_nothing(world: AirflowWorld) -> None:
    from orchestrator.scheduling.locks import make_lock

    events_before = world.state()["events"]
    lock = make_lock(world.project.settings(), "job:jaffle_shop")
    assert lock.try_acquire()
    try:
        proc = world.ok("dags", "test", "elt_jaffle_shop")
    finally:
        lock.release()
    assert world.task_states("elt_jaffle_shop")[-1] == "skipped", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert world.state()["events"] == events_before  # a skipped load lands nothing: no asset event
    runs = world.project.elt("runs", "--job", "jaffle_shop")
    assert "skipped_locked" in runs.stdout, runs.stdout
