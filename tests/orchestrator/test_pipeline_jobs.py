"""The real jobs on the real warehouse: a tick loads the file source, then runs the transformation;
a broken source does not stop the transformation of the models that only need healthy data."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb

from tests.orchestrator.conftest import Project


def test_tick_loads_then_transforms_and_records_rows(project: Project, small_jaffle: Path) -> None:
    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    # two sources are due; the catalog API's is broken (its URL is not configured)
    project.env.pop("JAFFLE_CATALOG_URL", None)
    env = {"ELT_JOBS": "jaffle_catalog,jaffle_shop,transform"}
    tick = project.elt("tick", "--now", "2026-11-25T00:05", timeout=600, **env)
    assert tick.returncode == 1, tick.stdout + tick.stderr  # one job failed ...
    assert "jaffle_catalog: failed" in tick.stdout  # ... but the other source loaded, then the transform ran
    assert tick.stdout.index("jaffle_shop: succeeded") < tick.stdout.index("transform: succeeded")
    [catalog] = project.history().recent(5, "jaffle_catalog")
    assert catalog.error_class == "ConfigError" and "JAFFLE_CATALOG_URL" in (catalog.error or "")
    assert catalog.attempt == 1  # configuration is not worth retrying
    env = {"ELT_JOBS": "jaffle_shop,transform"}

    [load] = project.history().recent(5, "jaffle_shop")
    assert load.rows_loaded == 22 and load.bytes_loaded and load.bytes_loaded > 0
    assert load.tables["orders"]["rows"] == 4 and load.tables["orders"]["status"] == "loaded"
    [transform] = project.history().recent(5, "transform")
    audits = json.loads(transform.audits_json or "{}")
    assert audits["run"] > 0 and audits["run"] == audits["passed"]
    # rows per layer as the build left them, for the report's chart: 22 raw rows of 7 tables; staging
    # keeps them all; 3 products summed from supplies; marts: 3+4+5+3+2+4 (customers ... supplies)
    assert transform.tables["rows_by_layer"] == {"raw": 22, "staging": 22, "intermediate": 3, "marts": 21}
    # the transform's watermark: nothing seen before the first run, the load's time after it
    assert json.loads(transform.watermark_before or "{}") == {"loaded_through": None}
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        newest = con.execute("SELECT max(loaded_at) FROM elt_meta.loaded_batches").fetchone()[0]
    assert json.loads(transform.watermark_after or "{}") == {"loaded_through": str(newest)}
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.orders").fetchone()[0] == 4

    # the source breaks (its folder is gone): the load fails (not retried: bad input), the
    # transformation still runs on the raw data already there
    shutil.rmtree(project.root / "data" / "jaffle-data")
    tick = project.elt("tick", "--now", "2026-11-26T00:05", timeout=600, **env)
    assert tick.returncode == 1
    assert "jaffle_shop: failed" in tick.stdout and "transform: succeeded" in tick.stdout
    # a transform that evaluated nothing does not count the tables again: the last record holds
    [nothing, _] = project.history().recent(5, "transform")
    assert nothing.tables["rows_by_layer"] is None and "rows_by_layer" in nothing.tables, nothing.tables
    failed = project.history().recent(1, "jaffle_shop")[0]
    assert failed.attempt == 1 and failed.error_class == "ConfigError" and "does not exist" in (failed.error or "")
    # the history keeps the error's next step with its first line (`elt runs` and `elt run-show` showed the cause only)
    assert "; next: " in (failed.error or ""), failed.error
    assert "; next: " in project.elt("run-show", failed.run_id).stdout


def test_transform_waits_for_a_running_load(project: Project, small_jaffle: Path, tmp_path: Path) -> None:
    import subprocess

    from orchestrator.scheduling.locks import FileLock, lock_dir
    from tests.conftest import BIN
    from tests.orchestrator.conftest import wait_for

    shutil.copytree(small_jaffle, project.root / "data" / "jaffle-data")
    assert project.elt("run-job", "jaffle_shop", timeout=300).returncode == 0
    load = FileLock("job:jaffle_shop", lock_dir(project.settings()))
    assert load.try_acquire()  # a load of jaffle_shop is running
    log = tmp_path / "transform.log"
    try:
        with log.open("w") as err:
            transform = subprocess.Popen([str(BIN / "elt"), "run-job", "transform"], cwd=project.root, env=project.env,
                                         stdout=subprocess.DEVNULL, stderr=err, text=True)
        # it reached the lock and is waiting on it (not merely slow to start)
        line = wait_for(lambda: next((json.loads(x) for x in log.read_text().splitlines()
                                      if "transform waits for a lock" in x), None), timeout=120, what="the wait")
        assert line["lock"] == "job:jaffle_shop"
        assert transform.poll() is None  # still waiting
        assert project.history().recent(5, "transform") == []  # no attempt started
    finally:
        load.release()
    assert transform.wait(timeout=300) == 0
    [record] = project.history().recent(5, "transform")
    assert record.status == "succeeded"


def test_a_hand_run_load_never_overlaps_a_running_job_of_its_source(project: Project, small_jaffle: Path) -> None:
    from orchestrator.scheduling.locks import FileLock, lock_dir

    running = FileLock("job:jaffle_shop", lock_dir(project.settings()))
    assert running.try_acquire()  # a scheduled load (or a backfill) of jaffle_shop is running
    try:
        busy = project.elt("load", "jaffle_shop", "--path", str(small_jaffle))
        assert busy.returncode == 75, busy.stdout + busy.stderr
        assert f"job:jaffle_shop is held by pid {os.getpid()} (" in busy.stderr, busy.stderr
        assert ": by another load of jaffle_shop" in busy.stderr
        assert "or by a scheduled transform, which holds every source's lock" in busy.stderr
        assert "elt runs --job jaffle_shop" in busy.stderr and "ELT_LOAD_LOCK_WAIT_S" in busy.stderr
        assert not (project.root / "data" / "landing" / "jaffle_shop").exists()  # nothing was read or landed
    finally:
        running.release()
    done = project.elt("load", "jaffle_shop", "--path", str(small_jaffle), timeout=300)
    assert done.returncode == 0, done.stderr
