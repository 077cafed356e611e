"""A full disk under the DuckDB warehouse: `elt load` and `elt transform` say so and where, nothing is
applied, and the same landed batch applies once there is room.

The disk is real: a 2 MB tmpfs mounted by the test (root with mount rights, as on CI; skipped
elsewhere). Before the fix the error read `unexpected TransactionException: cannot rollback - no
transaction is active`: DuckDB ends the transaction when its commit cannot write the WAL, and the
loader's ROLLBACK then raised over the error that mattered.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from tests.conftest import BIN, copy_project, project_env, run

ROWS = 100_000


def _many_orders(small_jaffle: Path, folder: Path) -> Path:
    """The small shop's files with ROWS orders: more than a 2 MB disk holds."""
    shutil.copytree(small_jaffle, folder)
    with (folder / "raw_orders.csv").open("w") as orders:
        orders.write("id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n")
        for n in range(ROWS):
            orders.write(f"order-{n:07d},c{n % 3 + 1},2018-09-{n % 28 + 1:02d}T12:00:00,s1,{n % 900},{n % 50},"
                         f"{n % 900 + n % 50}\n")
    return folder


def test_a_full_warehouse_disk_is_named_and_the_landed_batch_applies_once_there_is_room(
        tmp_path: Path, small_jaffle: Path, small_disk: Path) -> None:
    folder = _many_orders(small_jaffle, tmp_path / "files")
    project = copy_project(tmp_path / "project")
    warehouse = small_disk / "warehouse.duckdb"
    env = project_env(project, ELT_DUCKDB_PATH=str(warehouse), ELT_LANDING_ROOT=str(tmp_path / "landing"))
    elt = str(BIN / "elt")

    full = run([elt, "load", "jaffle_shop", "--path", str(folder)], cwd=project, env=env, check=False)
    assert full.returncode == 1, full.stdout + full.stderr
    report = full.stdout + full.stderr
    failed = next(line for line in report.splitlines() if line.startswith("FAILED orders:"))
    assert "No space left on device" in failed and "appending to raw_jaffle_shop.orders failed and was rolled back" in failed, report
    assert "cannot rollback" not in report and "unexpected" not in report, report
    assert ("next: nothing of the batch was applied (it stays in landing and is applied by the rerun); free space "
            f"on the disk holding the warehouse {warehouse}" in report), report

    # a transform on the same full disk says the same, not a traceback, and not that the SQL is wrong
    transform = run([elt, "transform"], cwd=project, env=env, check=False)
    assert transform.returncode == 1, transform.stderr
    assert "Traceback" not in transform.stderr and "in the model's SQL" not in transform.stderr, transform.stderr
    assert "No space left on device" in transform.stderr and "free space" in transform.stderr, transform.stderr

    # room again (the warehouse moved to a larger disk): the landed batch applies, once
    roomy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, roomy)
    env["ELT_DUCKDB_PATH"] = str(roomy)
    run([elt, "load", "jaffle_shop", "--path", str(folder)], cwd=project, env=env)
    with duckdb.connect(str(roomy), read_only=True) as con:
        rows, keys, batches = con.execute(
            "SELECT count(*), count(DISTINCT id), count(DISTINCT _batch_id) FROM raw_jaffle_shop.orders").fetchone()
        ledger = con.execute("SELECT count(*) FROM elt_meta.loaded_batches WHERE table_name = 'orders'").fetchone()[0]
    assert (rows, keys, batches, ledger) == (ROWS, ROWS, 1, 1)


def test_a_full_project_disk_is_named_as_such_not_as_the_warehouse(
        tmp_path: Path, small_jaffle: Path, small_disk: Path) -> None:
    """SQLMesh writes its cache in the project (`.cache`). With the project's disk full and the
    warehouse's roomy, the transform was reported as "the warehouse ... could not be written",
    with advice to free space beside the warehouse, and the line stopped before the cause (an
    interrupt probe)."""
    project = copy_project(small_disk / "project")
    warehouse = tmp_path / "warehouse.duckdb"
    env = project_env(project, ELT_DUCKDB_PATH=str(warehouse), ELT_LANDING_ROOT=str(tmp_path / "landing"))
    elt = str(BIN / "elt")
    run([elt, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as fh:  # every block left on the disk
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass

    full = run([elt, "transform"], cwd=project, env=env, check=False)
    assert full.returncode == 1, full.stdout + full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith(("error:", "  next:"))]
    assert errors == [f"error: the disk holding {project} is full: [Errno 28] No space left on device",
                      f"  next: free space there (`df -h {project}`), then rerun `elt transform`: what failed was rolled "
                      "back, and what committed before it is kept"], full.stderr
    assert str(warehouse) not in "\n".join(errors) and "Traceback" not in full.stderr, full.stderr

    filler.unlink()
    run([elt, "transform"], cwd=project, env=env)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM marts.orders").fetchone() == (4,)


@pytest.fixture
def small_server_disk() -> Iterator[Path]:
    """A 2 MB tmpfs the PostgreSQL server's user can reach (tmp_path's parents are closed to it)."""
    import os
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="elt-tiny-"))
    mount = base / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        if os.geteuid() == 0:  # the test server runs as postgres
            shutil.chown(base, "postgres", "postgres")
            shutil.chown(mount, "postgres", "postgres")
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_full_postgresql_warehouse_disk_is_the_servers(tmp_path: Path, small_jaffle: Path,
                                                         small_server_disk: Path) -> None:
    """The PostgreSQL server's disk is full (raw tables in a tablespace on a small tmpfs; its WAL has
    room): the load's hint said to set the healthy batch aside, and a review found the full-disk
    check of the project's disk naming the server's own file (`base/16384/16397`) as a path here."""
    import os

    import psycopg2

    from orchestrator import cli
    from orchestrator.settings import Settings
    from tests.servers import postgres_server

    folder = _many_orders(small_jaffle, tmp_path / "files")
    with postgres_server() as pg:
        admin = psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname=pg.dbname)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"CREATE TABLESPACE tiny LOCATION '{small_server_disk}'")
            cur.execute("CREATE DATABASE wh")
            cur.execute("ALTER DATABASE wh SET default_tablespace = tiny")
        admin.close()
        project = copy_project(tmp_path / "project")
        env = project_env(project, ELT_GATEWAY="postgres", ELT_PG_HOST=pg.host, ELT_PG_PORT=str(pg.port),
                          ELT_PG_USER=pg.user, ELT_PG_DATABASE="wh", ELT_PG_PASSWORD="",
                          ELT_LANDING_ROOT=str(tmp_path / "landing"))
        full = run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(folder)], cwd=project, env=env, check=False)
        report = full.stdout + full.stderr
        assert full.returncode == 1, report
        failed = next(line for line in report.splitlines() if line.startswith("FAILED orders:"))
        assert "No space left on device" in failed, report
        assert ("next: the PostgreSQL warehouse's server has no disk space left: free space on its data disk" in report
                and "set-aside" not in report), report

        # the same error reaching the command's top (a transform): the server's disk, not a path here
        with psycopg2.connect(host=pg.host, port=pg.port, user=pg.user, dbname="wh") as con, con.cursor() as cur:
            with pytest.raises(psycopg2.errors.DiskFull) as disk_full:
                cur.execute("CREATE TABLE filler AS SELECT repeat('x', 1000) AS x FROM generate_series(1, 100000)")
        settings = Settings(project_root=project, warehouse=tmp_path / "unused.duckdb", landing_root=tmp_path / "landing",
                            data_dir=tmp_path, gateway="postgres")
        for key, value in env.items():
            if key.startswith("ELT_PG_"):
                os.environ[key] = value
        try:
            message, code = cli._warehouse_failure(RuntimeError("a model failed"), settings, "elt transform") or ("", 0)
            assert code == 0, message  # nothing of a disk in it: not named
            wrapped = RuntimeError("Failed to execute SQL for model marts.orders")
            wrapped.__cause__ = disk_full.value
            message, code = cli._warehouse_failure(wrapped, settings, "elt transform")  # type: ignore[misc]
        finally:
            for key in env:
                if key.startswith("ELT_PG_"):
                    os.environ.pop(key, None)
        assert code == 1 and message.startswith(f"error: the PostgreSQL warehouse {pg.host}:{pg.port}/wh has no disk "
                                                "space left: could not extend file"), message
        assert "next: free space on the server's data disk" in message and "df -h" not in message, message


def test_a_spill_that_cannot_grow_is_named_as_a_disk_not_as_memory(tmp_path: Path) -> None:
    """DuckDB calls a spill file that cannot grow (its disk full, or max_temp_directory_size) an
    "Out of Memory Error": the loader advised setting the batch aside, the transform died in a
    traceback, and the alert sent on-call to raise the memory limit."""
    from sources.errors import WAREHOUSE_WRITE_FAILED, warehouse_write_problem

    warehouse = tmp_path / "w.duckdb"
    con = duckdb.connect(str(warehouse))
    con.execute("SET memory_limit = '16MB'; SET max_temp_directory_size = '1MB'; SET threads = 1")
    with pytest.raises(duckdb.OutOfMemoryException) as err:  # the real error, as a full spill disk gives it
        con.execute("CREATE TABLE t AS SELECT i, md5(i::varchar) AS h FROM range(3000000) r(i) ORDER BY h")
    con.close()
    advice = warehouse_write_problem(err.value, warehouse)
    assert advice is not None and "could not spill to" in advice and f"{warehouse}.tmp" in advice, advice
    assert "free space on the disk holding the warehouse" in advice, advice
    assert WAREHOUSE_WRITE_FAILED.search(str(err.value))  # a transform's model error is read the same way


def test_a_duckdb_file_left_empty_by_a_full_disk_is_not_called_damaged(tmp_path: Path) -> None:
    """DuckDB creates its file before writing the header and leaves it at 0 bytes when that write
    fails: after the disk was freed, every command called it damaged and said to rebuild the
    warehouse from landing, and nothing ran until someone deleted it."""
    from sources.errors import unreadable_duckdb_file

    empty = tmp_path / "elt_history.duckdb"
    empty.touch()
    with pytest.raises(duckdb.Error) as err:
        duckdb.connect(str(empty))
    message = unreadable_duckdb_file(err.value, tmp_path / "warehouse.duckdb")
    assert message is not None and "is empty (0 bytes)" in message and f"rm {empty}" in message, message
    assert "damaged" not in message and "rebuild" not in message, message


def test_sqlmesh_cache_on_a_mount_of_its_own_is_the_folder_named(tmp_path: Path) -> None:
    """SQLMesh's worker processes report a full disk without a file name: with `.cache` on a mount
    of its own, `elt` said to free space on the project's disk, which had room."""
    from orchestrator.cli import _project_folders
    from orchestrator.settings import Settings
    from sources.errors import full_disk_elsewhere

    project = tmp_path / "project"
    cache = project / ".cache"
    cache.mkdir(parents=True)
    settings = Settings(project_root=project, warehouse=tmp_path / "w.duckdb", landing_root=tmp_path / "landing",
                        data_dir=tmp_path / "data")
    assert _project_folders(settings) == (project,)  # one disk: the project is named
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(cache)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        with (cache / "filler").open("wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        assert _project_folders(settings) == (cache, project)
        found = full_disk_elsewhere(OSError(28, "No space left on device"), tmp_path / "w.duckdb", _project_folders(settings))
        assert found is not None and found[0] == str(cache), found
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
