"""`elt`'s messages where a user would otherwise read a traceback or a wrong hint: a warehouse file
held by another process, an environment whose lock is held, a missing data folder, a reader that
stops early, arguments without help, `--path` relative to the current directory, a tick in the
future, and the production demo's missing database or bucket.
Everything runs the real `elt` in a subprocess on a copied project.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from orchestrator.cli import build_parser
from tests.conftest import BIN, copy_project, project_env, run

ELT = str(BIN / "elt")


def test_every_argument_of_every_command_has_a_help_text() -> None:
    missing = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{where} {name} (the command)")
                    walk(sub, f"{where} {name}")
            elif not action.help:
                missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "elt")
    assert not missing, f"arguments without help=: {missing}"


@pytest.fixture
def holder(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A separate process holding the project's warehouse file open read-write, as `sqlmesh ui` does."""
    project = copy_project(tmp_path / "project")
    warehouse = project / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir(parents=True)
    code = "import duckdb, sys, time; con = duckdb.connect(sys.argv[-1]); print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code, "--marker-of-the-holder", str(warehouse)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield project, proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("command", [["load", "jaffle_shop"], ["transform"], ["demo"], ["freshness"]])
def test_a_held_warehouse_names_the_process_and_what_to_do(holder, small_jaffle: Path, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    project, pid = holder
    args = [*command, "--path", str(small_jaffle)] if command[0] == "load" else command
    proc = run([ELT, *args], cwd=project, env=project_env(project, JAFFLE_DATA_DIR=str(small_jaffle)), timeout=120,
               check=False)
    assert proc.returncode == 75, proc.stderr
    assert "Traceback" not in proc.stderr and "IOException" not in proc.stderr, proc.stderr
    message = proc.stderr[proc.stderr.index("error: the warehouse"):]
    assert str(project / "data" / "warehouse.duckdb") in message
    assert f"PID {pid} " in message and "--marker-of-the-holder" in message  # its command line, from /proc
    assert "next: close that program" in message and f"kill {pid}" in message
    assert f"rerun `elt {' '.join(args)}`" in message


def test_a_scheduled_job_blocked_by_a_held_warehouse_records_who_holds_it(holder) -> None:  # type: ignore[no-untyped-def]
    """The same in the run history of a scheduled job: before, DuckDB's raw text with its advice
    to open the file read-only, class IOException, no program named (a signals probe)."""
    project, pid = holder
    env = project_env(project, ELT_JOB_ATTEMPTS="1")
    proc = run([ELT, "run-job", "transform"], cwd=project, env=env, timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_id = proc.stdout.split("(run ")[1].split(",")[0]
    shown = run([ELT, "run-show", run_id], cwd=project, env=env).stdout
    assert "WarehouseBusy" in shown and f"is open in another process, PID {pid} " in shown, shown
    assert "--marker-of-the-holder" in shown and "rerun `elt run-job transform`" in shown, shown


def test_a_missing_data_folder_is_named_as_missing(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    folder = tmp_path / "nonexistent"
    proc = run([ELT, "demo"], cwd=project, env=project_env(project, JAFFLE_DATA_DIR=str(folder)), check=False)
    assert proc.returncode == 2
    assert f"JAFFLE_DATA_DIR={folder} does not exist" in proc.stderr
    assert "lacks" not in proc.stderr and "next: point JAFFLE_DATA_DIR at a folder" in proc.stderr


def test_a_model_reading_a_column_no_longer_declared_gets_the_linter_errors_and_a_next_step(tmp_path: Path) -> None:
    """A column dropped from a declaration while staging still reads it: SQLMesh's linter lists the
    model; `elt transform` used to follow that with a 25-line traceback and no next step."""
    project = copy_project(tmp_path / "project")
    external = project / "external_models.yaml"  # as `elt sources --write-external-models` writes it then
    text = external.read_text()
    assert text.index("    id: TEXT\n    name: TEXT\n") < text.index("- name: raw_jaffle_shop.orders")  # customers' columns
    external.write_text(text.replace("    id: TEXT\n    name: TEXT\n", "    id: TEXT\n", 1))
    proc = run([ELT, "transform"], cwd=project, env=project_env(project), check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in report, report
    assert "stg_jaffle_shop__customers.sql" in report and "Unknown column: name" in report, report
    assert "error: SQLMesh's linter refused the models listed above; no model was built" in report, report
    assert "`elt sources --write-external-models`" in report, report


def test_a_model_sqlmesh_refuses_to_load_is_named_without_a_traceback(tmp_path: Path) -> None:
    """A model reading itself (@this_model) with no column types: SQLMesh refuses to load it with a
    clear message, which `elt transform` printed at the end of a 25-line traceback (a probe)."""
    project = copy_project(tmp_path / "project")
    (project / "models" / "marts" / "latest_day.sql").write_text(
        "MODEL (name marts.latest_day, kind INCREMENTAL_BY_TIME_RANGE (time_column order_day));\n"
        "SELECT orders.ordered_at AS order_day, (SELECT MAX(t.order_day) FROM @this_model AS t) AS last_day\n"
        "FROM staging.stg_jaffle_shop__orders AS orders WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts\n")
    proc = run([ELT, "transform"], cwd=project, env=project_env(project), check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in report, report
    assert "error: SQLMesh could not load the project's models: Self-referencing models require inferrable " \
           "column types" in proc.stderr, report
    assert "latest_day.sql" in proc.stderr and "next: fix the model file named above" in proc.stderr, report


def test_a_config_yaml_sqlmesh_cannot_read_is_named_as_the_configuration(tmp_path: Path) -> None:
    """A YAML typo in config.yaml ended `elt transform` in a 40-line parser traceback naming no file,
    and an unknown key got the hint to fix "the model file named above"."""
    project = copy_project(tmp_path / "project")
    config = project / "config.yaml"
    text = config.read_text()
    assert "\nmodel_defaults:\n  dialect: duckdb\n" in text
    config.write_text(text.replace("\nmodel_defaults:\n  dialect: duckdb\n", "\nmodel_defaults:\n  dialect: [duckdb\n", 1))
    proc = run([ELT, "transform"], cwd=project, env=project_env(project), check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in report, report
    assert f"error: SQLMesh could not read the project's configuration, {config}: " in proc.stderr, report
    assert "dialect: [duckdb" in proc.stderr and "next: fix config.yaml where the error above points" in proc.stderr, report

    config.write_text(text.replace("\nmodel_defaults:\n  dialect: duckdb\n", "\nmodel_defaults:\n  dialect: duckdb\n  dialekt: duckdb\n", 1))
    proc = run([ELT, "transform"], cwd=project, env=project_env(project), check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in report, report
    assert "could not read the project's configuration" in proc.stderr and "dialekt" in proc.stderr, report
    assert "model file" not in proc.stderr, report


def test_a_tick_in_the_future_is_refused_before_it_touches_anything(tmp_path: Path) -> None:
    """A tick as of a later time would record slots that real ticks then skip, and kill running jobs as
    past their timeout: `--now` only replays the past."""
    from datetime import UTC, datetime, timedelta

    project = copy_project(tmp_path / "project")
    later = (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    proc = run([ELT, "tick", "--now", later], cwd=project, env=project_env(project), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"--now '{later}' is later than this machine's clock" in proc.stderr and "elt run-job" in proc.stderr
    assert not (project / "data").exists()  # no run history, lock or slot was written


def test_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    for command in (["status"], ["sources"]):
        proc = subprocess.Popen([ELT, *command], cwd=project, env=project_env(project), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # like `| head -0`: the reader is gone before elt writes its first line
        stderr = proc.stderr.read()
        assert proc.wait(timeout=60) == 141, stderr
        assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_a_transform_that_waits_for_its_environment_says_so_and_names_the_lock(tmp_path: Path) -> None:
    from orchestrator.scheduling.locks import FileLock

    project = copy_project(tmp_path / "project")
    locks = tmp_path / "locks"
    held = FileLock("sqlmesh:prod", locks)
    assert held.try_acquire()  # another plan or run of prod
    try:
        proc = run([ELT, "transform"], cwd=project, timeout=120, check=False,
                   env=project_env(project, ELT_LOCK_DIR=str(locks), ELT_SQLMESH_LOCK_WAIT_S="1"))
    finally:
        held.release()
    assert proc.returncode == 75, proc.stderr  # busy, as `elt --help` says of a held lock: retried, not paged
    waiting, error = proc.stderr.splitlines()[:2]
    holder = f"held by pid {os.getpid()} ("  # this test's process holds it, as its lock file says
    assert waiting.startswith("waiting up to 1s for environment prod: another plan or run of it holds its lock "
                              f"(the file {locks / 'sqlmesh_prod.lock'}, {holder}"), proc.stderr
    assert " UTC; `elt runs`" in waiting, proc.stderr
    assert error.startswith(f"error: another plan or run of environment prod held its lock for 1s ({holder}"), proc.stderr
    assert "  next: let it finish (`elt runs`)" in proc.stderr, proc.stderr


def test_load_path_is_relative_to_the_current_directory(tmp_path: Path, small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")
    elsewhere = small_jaffle.parent  # not the project root: `--path jaffle-data` means ./jaffle-data here
    assert not (project / "jaffle-data").exists()
    proc = run([ELT, "load", "jaffle_shop", "--path", "jaffle-data", "--table", "customers"], cwd=elsewhere,
               env=project_env(project), timeout=120)
    assert "customers    loaded                3" in proc.stdout, proc.stdout


def test_the_production_demo_creates_its_missing_database_and_bucket(pg_server, s3_endpoint, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Both prerequisites are created before anything is seeded (the missing data folder then stops
    the run, so the test does not run the whole demo)."""
    import boto3
    import psycopg2

    project = copy_project(tmp_path / "project")
    db, bucket = f"wh_created_{uuid.uuid4().hex[:6]}", f"created-{uuid.uuid4().hex[:6]}"
    env = project_env(project, **pg_server.env("ELT_PG"), **s3_endpoint.env(), ELT_LANDING_URL=f"s3://{bucket}/landing",
                      JAFFLE_DATA_DIR=str(tmp_path / "no-data-here"))
    env["ELT_PG_DATABASE"] = db
    proc = run([ELT, "demo", "--production"], cwd=project, env=env, check=False, timeout=60)
    assert f"created the warehouse database {db} on 127.0.0.1:{pg_server.port}" in proc.stdout, proc.stdout + proc.stderr
    assert f"created the landing bucket {bucket} (s3://{bucket}/landing)" in proc.stdout
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "no-data-here" in proc.stderr, proc.stderr
    con = psycopg2.connect(pg_server.dsn)
    with con.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db])
        assert cur.fetchone() == (1,)
    con.close()
    s3 = boto3.client("s3", endpoint_url=s3_endpoint.endpoint, **{k.lower(): v for k, v in s3_endpoint.env().items()
                                                                   if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
                      region_name="us-east-1")
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_a_missing_database_the_role_may_not_create_says_how_to_create_it(pg_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import psycopg2

    role = f"nocreate_{uuid.uuid4().hex[:6]}"
    con = psycopg2.connect(pg_server.dsn)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')  # a name made here, not from data
    con.close()
    project = copy_project(tmp_path / "project")
    env = project_env(project, **pg_server.env("ELT_PG"), ELT_LANDING_URL="s3://some-bucket/landing")
    env.update(ELT_PG_DATABASE="warehouse_missing", ELT_PG_USER=role)
    proc = run([ELT, "demo", "--production"], cwd=project, env=env, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert 'database "warehouse_missing" does not exist' in proc.stderr
    assert "creating it failed: permission denied to create database" in proc.stderr, proc.stderr
    assert (f"next: create it, owned by {role}, as a role that may create databases (`createdb -h 127.0.0.1 "
            f"-p {pg_server.port} -U <admin-role> -O {role} warehouse_missing`") in proc.stderr
    assert "Traceback" not in proc.stderr
    # following the hint as the administrator gives the role a database it can build in
    statement = proc.stderr.split("or in psql `")[1].split("`")[0]
    assert statement == f'CREATE DATABASE "warehouse_missing" OWNER "{role}";'
    admin = psycopg2.connect(pg_server.dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(statement)
        con = psycopg2.connect(host=pg_server.host, port=pg_server.port, user=role, dbname="warehouse_missing")
        with con, con.cursor() as cur:
            cur.execute("CREATE SCHEMA raw_jaffle_shop")  # what the loader does first
        con.close()
    finally:
        with admin.cursor() as cur:
            cur.execute('DROP DATABASE IF EXISTS "warehouse_missing" WITH (FORCE)')
        admin.close()


def test_landing_in_a_missing_bucket_fails_with_the_bucket_named(s3_endpoint, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """What `elt load` reports per table when the bucket is gone (instead of "unexpected OSError ... report it")."""
    import pyarrow as pa

    from sources.errors import ConfigError
    from sources.landing.store import Landing

    for key, value in s3_endpoint.env().items():
        monkeypatch.setenv(key, value)
    landing = Landing.from_url("s3://gone-bucket/landing")
    batch = landing.open_batch("shop", "orders", pa.schema([("id", pa.string())]))
    batch.write(pa.record_batch([pa.array(["o1"])], names=["id"]))
    with pytest.raises(ConfigError, match="landing bucket 'gone-bucket'") as caught:
        batch.commit([{"name": "id", "type": "VARCHAR"}], ["id"], {})
    assert "aws s3 mb s3://gone-bucket" in str(caught.value)
    batch.abort()


def test_a_transform_failure_points_where_its_cause_is() -> None:
    """A failed model (not an audit) is not sent to the failed-audit runbook, nor listed as skipped
    after itself; a failed relationship audit also names the deleted-rows entry."""
    from orchestrator.transform.run import AuditFailure, TransformFailed

    missing = TransformFailed("plan", [], skipped={"staging.stg_billing__invoices", "marts.invoices"},
                              model_errors=['staging.stg_billing__invoices: Catalog Error: Table with name '
                                            '"raw_billing.invoices" does not exist'])
    text = str(missing)
    assert "skipped (downstream of the failure): marts.invoices\n" in text, text
    assert "failed blocking audit" not in text and "#failed-audit" not in text
    assert "`elt load <source>`" in text

    parent = AuditFailure("marts.customers", "assert_relationship", 3, {"customer_id": "c9"}, "SELECT ...")
    text = str(TransformFailed("run", [parent], skipped={"marts.orders"}))
    assert "docs/runbook.md#failed-audit" in text and "docs/runbook.md#deleted-rows" in text
    text = str(TransformFailed("run", [AuditFailure("marts.orders", "unique_key", 1, None, "SELECT ...")]))
    assert "#failed-audit" in text and "#deleted-rows" not in text

    # a staging model reading a column raw has not got yet (declared before a load brought it): a
    # probe was told the error was in the model's SQL
    for error in ('Binder Error: Table "raw" does not have a column named "channel"',
                  'column raw.channel does not exist'):
        text = str(TransformFailed("run", [], skipped={"marts.orders"},
                                   model_errors=[f"staging.stg_jaffle_shop__orders: {error}"]))
        assert "reads a column its raw table does not have yet" in text, text
        assert "`elt load <source> --table <table>`" in text and "error is in the model's SQL" not in text, text
    text = str(TransformFailed("run", [], model_errors=['marts.orders: Binder Error: Table "o" does not have a column '
                                                        'named "x"']))
    assert "reads a column its raw table" not in text and "error is in the model's SQL" in text, text

    # a value the model's cast cannot hold: a probe's order of 10^14 cents was told its model's SQL
    # was wrong, and every transform failed so until the source changed it
    text = str(TransformFailed("run", [], skipped={"marts.orders"}, model_errors=[
        "staging.stg_jaffle_shop__orders: Conversion Error: Could not cast value 100000000000000 to DECIMAL(18,4) "
        "when casting from source column tax_paid"]))
    assert "A value in the data does not fit the type a model casts it to" in text, text
    assert "error is in the model's SQL" not in text, text
    assert "WHERE tax_paid = 100000000000000" in text and "`elt load <source> --table <table>`" in text, text
    text = str(TransformFailed("run", [], model_errors=["staging.stg_app__orders: numeric field overflow\nDETAIL:  A "
                                                        "field with precision 18, scale 4 must round to an absolute "
                                                        "value less than 10^14."]))
    assert "does not fit the type a model casts it to" in text and "WHERE <column> = <value>" in text, text


def test_status_says_what_never_ran_means(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after `make demo` every job 'never ran', though the demo loaded and transformed everything:
    status says that only scheduled runs are recorded and where to see how fresh the data is. The note
    goes once every job has a recorded run."""
    import io

    from orchestrator.observe import status

    project = copy_project(tmp_path / "project")
    proc = run([ELT, "status"], cwd=project, env=project_env(project))
    assert "never ran" in proc.stdout and "run by hand are not recorded" in proc.stdout, proc.stdout
    assert "`elt freshness`" in proc.stdout

    ran = {"job": "transform", "kind": "transform", "schedule": "@hourly", "last_slot": None,
           "last_status": "succeeded", "last_run": "r1", "last_success": None}
    monkeypatch.setattr(status, "job_states", lambda settings, now=None: [ran])
    monkeypatch.setattr(status, "print_set_aside", lambda settings, out: None)
    monkeypatch.setattr(status, "print_held", lambda settings, out: None)  # reads the history, as job_states
    monkeypatch.setattr(status, "print_scheduler", lambda settings, now, out: None)  # as well
    monkeypatch.setattr(status, "print_backfill", lambda settings, out: None)  # as well
    printed = io.StringIO()
    status.print_status(None, out=printed)  # type: ignore[arg-type]
    assert "succeeded" in printed.getvalue() and "not recorded" not in printed.getvalue()


def test_the_spark_gateway_without_pyspark_says_what_to_install(tmp_path: Path) -> None:
    """The container image leaves pyspark out: `ELT_GATEWAY=spark` there gets one error and a hint."""
    project = copy_project(tmp_path / "project")
    code = "import sys; sys.modules['pyspark'] = None; from orchestrator.cli import main; sys.exit(main(['transform']))"
    proc = run([str(BIN / "python"), "-c", code], cwd=project, timeout=120, check=False,
               env=project_env(project, ELT_GATEWAY="spark", ELT_SPARK_HOME=str(tmp_path / "spark")))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: the spark gateway (ELT_GATEWAY=spark) needs pyspark"), proc.stderr
    assert "next: install the pinned packages as `make` does (`pip install -r requirements.lock`" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_state_of_another_sqlmesh_version_says_to_migrate_not_a_traceback(tmp_path: Path) -> None:
    """The pin was upgraded: the state needs `sqlmesh migrate`. (State that a newer checkout migrated gets
    'update this checkout' from the same check: state_version_message's doctest.)"""
    import duckdb

    state_version, expected = "0.1.0", "the state needs one migration before any run"

    project = copy_project(tmp_path / "project")
    env = project_env(project)
    (project / "data").mkdir()
    # SQLMesh's state as a first command makes it, then marked as written by another SQLMesh version
    run([sys.executable, "-c", "from orchestrator.settings import Settings\n"
         "from orchestrator.transform.run import make_context\n"
         "make_context(Settings.from_env(), quiet=True)[0].close()"], cwd=project, env=env)
    with duckdb.connect(str(project / "data" / "warehouse.duckdb")) as con:
        con.execute("UPDATE sqlmesh._versions SET sqlmesh_version = ?", [state_version])

    proc = run([ELT, "transform"], cwd=project, env=env, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr  # a configuration problem: nothing ran, a retry cannot help
    assert "Traceback" not in proc.stderr, proc.stderr
    first, next_step = proc.stderr.strip().splitlines()[-2:]
    assert first.startswith(f"error: SQLMesh's state in {project / 'data' / 'warehouse.duckdb'} was written by "
                            f"SQLMesh {state_version} "), proc.stderr
    assert expected in first, proc.stderr
    assert next_step.startswith("next: "), proc.stderr
    assert "`sqlmesh migrate`" in next_step, proc.stderr

    # the scheduled job records the same first line and is not retried
    job = run([ELT, "run-job", "transform"], cwd=project, env=env, timeout=300, check=False)
    assert job.returncode == 1, job.stderr
    runs = run([ELT, "runs", "--job", "transform"], cwd=project, env=env).stdout
    assert f"written by SQLMesh {state_version}" in runs, runs


def _newer_duckdb_file(path: Path) -> None:
    """A DuckDB file whose header claims storage version 999, as a newer DuckDB would write it: the
    header block's checksum (DuckDB's, over the block after its first 8 bytes) is recomputed."""
    import struct

    import duckdb

    duckdb.connect(str(path)).close()
    with path.open("r+b") as handle:
        block = bytearray(handle.read(4096))
        assert block[8:12] == b"DUCK"

        def checksum(data: bytes) -> int:
            result = 5381
            for (word,) in struct.iter_unpack("<Q", data):
                result ^= (word * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
            return result

        block[12:20] = struct.pack("<Q", 999)
        block[:8] = struct.pack("<Q", checksum(bytes(block[8:])))
        handle.seek(0)
        handle.write(block)
    with pytest.raises(duckdb.IOException, match="version number 999"):  # the header is what DuckDB reads
        duckdb.connect(str(path))


def test_a_warehouse_file_duckdb_refuses_is_named_with_what_to_do_not_called_busy(tmp_path: Path,
                                                                                  small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")
    env = project_env(project)
    warehouse = project / "data" / "warehouse.duckdb"
    warehouse.parent.mkdir()

    _newer_duckdb_file(warehouse)  # a DuckDB upgrade that was rolled back, or a file from another machine
    for command in (["transform"], ["freshness"]):
        proc = run([ELT, *command], cwd=project, env=env, timeout=300, check=False)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr and "busy" not in proc.stderr, proc.stderr
        first, next_step = proc.stderr.strip().splitlines()[-2:]
        assert re.fullmatch(f"error: the DuckDB file {re.escape(str(warehouse))} has storage version 999; this "
                            r"installation's DuckDB reads versions \d+ to \d+: a newer DuckDB wrote it", first), proc.stderr
        assert next_step.startswith("  next: run the DuckDB version pinned by the checkout that wrote it"), proc.stderr

    warehouse.write_bytes(os.urandom(8192))  # damaged, or something else in its place
    load = run([ELT, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env, timeout=300, check=False)
    assert load.returncode == 1, load.stderr
    assert "Traceback" not in load.stderr, load.stderr
    assert f"error: the DuckDB file {warehouse} is damaged or is not a DuckDB database\n" in load.stderr, load.stderr
    assert "`elt load SOURCE --from-landing` for every source" in load.stderr, load.stderr
    job = run([ELT, "run-job", "transform"], cwd=project, env=env, timeout=300, check=False)
    assert job.returncode == 1, job.stderr  # not retried: no later attempt can read it either
    assert "1 attempt(s)" in job.stdout + job.stderr, job.stdout + job.stderr
    runs = run([ELT, "runs", "--job", "transform"], cwd=project, env=env).stdout
    assert f"the DuckDB file {warehouse} is damaged" in runs, runs


@pytest.mark.parametrize(("variable", "value", "command"), [
    ("ELT_DUCKDB_MEMORY_LIMIT", "lots", ["transform"]),   # SQLMesh dropped it silently and went on
    ("ELT_LOADER_MEMORY_LIMIT", "half", ["load", "jaffle_shop"]),  # the loader gave a traceback
    ("ELT_DUCKDB_THREADS", "two", ["transform"]),
])
def test_a_duckdb_size_duckdb_would_refuse_is_named_before_anything_runs(tmp_path: Path, variable: str, value: str,
                                                                        command: list[str]) -> None:
    project = copy_project(tmp_path / "project")
    proc = run([ELT, *command], cwd=project, env=project_env(project, **{variable: value}), check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {variable}={value!r} is not a "), proc.stderr
    assert "\n  next: a " in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (project / "data" / "warehouse.duckdb").exists()  # nothing ran


def test_a_warehouse_error_outside_a_model_is_a_transform_failure_with_its_hint() -> None:
    """A server restarted during the plan's view swap, or a state write, ended in SQLMesh's
    traceback (`NodeExecutionFailedError: Execution failed for node ...`), with no summary or next
    step (a PostgreSQL warehouse probe); it is now a transform failure naming the server's error."""
    import psycopg2

    from orchestrator.scheduling.worker import _TRANSIENT_TEXT
    from orchestrator.transform.run import _server_failure

    def chained() -> BaseException:
        try:
            try:
                raise psycopg2.OperationalError("server closed the connection unexpectedly")
            except psycopg2.Error as exc:
                raise RuntimeError("Execution failed for node SnapshotId<marts.orders>") from exc
        except RuntimeError as outer:
            return outer

    failure = _server_failure("plan", chained())
    assert failure is not None
    text = str(failure)
    assert text.startswith("transform failed during plan. SQLMesh's plan stopped on a warehouse error"), text
    assert "OperationalError: server closed the connection unexpectedly" in text and "next:" in text, text
    assert any(_TRANSIENT_TEXT.search(e) for e in failure.model_errors)  # the scheduler retries it
    assert _server_failure("run", ValueError("a bug of ours")) is None  # raised as before


def test_demo_years_on_data_generated_before_is_said_to_be_ignored(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`elt demo --years 2` reused the 1-year data generated before without a word (a newcomer walkthrough)."""
    from orchestrator.demo.embedded import demo_data
    from orchestrator.settings import Settings
    from sources.config import load_source

    monkeypatch.delenv("JAFFLE_DATA_DIR", raising=False)
    data = tmp_path / "jaffle-data"
    data.mkdir()
    for table in load_source("jaffle_shop").tables.values():
        (data / table.file).write_text("id\n")
    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "w.duckdb", landing_root=tmp_path / "l", data_dir=data)
    assert demo_data(settings, 2) == data
    assert "--years 2 is ignored: the data there was generated before" in capsys.readouterr().out
    assert demo_data(settings, None) == data
    assert "ignored" not in capsys.readouterr().out


def test_elt_run_inside_another_checkout_says_which_checkout_it_runs(tmp_path: Path) -> None:
    """`elt` runs the checkout it was installed from. Started inside another clone (a virtualenv
    shared between two checkouts), it silently used, and wrote into, the first one's warehouse (a
    walkthrough found it): it now says so, unless ELT_PROJECT_DIR says which project is meant."""
    other = copy_project(tmp_path / "other")
    env = project_env(other)
    env.pop("ELT_PROJECT_DIR")
    proc = run([ELT, "sources"], cwd=other / "models", env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"the current directory is in another checkout, {other.resolve()}, which is not used" in proc.stderr, proc.stderr
    assert f"next: run {other.resolve()}/.venv/bin/elt" in proc.stderr
    meant = run([ELT, "sources"], cwd=other / "models", env=project_env(other), check=False)
    assert meant.returncode == 0 and "another checkout" not in meant.stderr, meant.stderr


def test_elt_runs_from_a_deleted_current_directory(tmp_path: Path) -> None:
    """A shell left in a release folder that was removed: the check for another checkout must not
    turn every command into a traceback (a review found it)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    env = project_env(copy_project(tmp_path / "project"))
    env.pop("ELT_PROJECT_DIR")
    proc = subprocess.run(f"cd {gone} && rmdir {gone} && {ELT} sources", shell=True, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "jaffle_shop" in proc.stdout


def test_the_report_names_the_process_that_holds_the_warehouse(holder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """It said "a load holds it" for a BI tool's read-write connection, and named no process."""
    project, pid = holder
    out = tmp_path / "status.html"
    proc = run([ELT, "report", "--out", str(out)], cwd=project, env=project_env(project), timeout=120, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    page = out.read_text()
    assert f"held by PID {pid} (" in page and "freshness and rows were not checked" in page, page[:2000]
    assert "--marker-of-the-holder" in page  # its command line, not only the interpreter DuckDB names
