"""Shared fixtures. Everything runs on real components: DuckDB files, Parquet on disk, the real
`elt` and `sqlmesh` commands in subprocesses. Data is either written by the tests themselves
(small and readable) or generated once per session with jafgen.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.prestarted import Prestarted

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a SQLMesh project needs; copied so tests never touch the developer's data/ folder.
PROJECT_FILES = ("config.yaml", "external_models.yaml", "models", "audits", "macros", "tests/models")


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        target = dest / name
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """Environment for `elt`/`sqlmesh` subprocesses working on a copied project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELT_", "JAFFLE_"))}
    env.update(ELT_PROJECT_DIR=str(project), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    # a local Spark driver compiles with C1 only: the tests' JVMs live a minute or less, and their
    # JIT compiling was a quarter of their CPU (docs/reference/configuration.md)
    env["ELT_SPARK_DRIVER_JAVA_OPTIONS"] = "-XX:TieredStopAtLevel=1"
    env.update(extra)
    return env


_PRESTARTED = Prestarted()
atexit.register(_PRESTARTED.close)


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``cmd`` to its end, its output captured as text. `elt` and `sqlmesh` start forked from a
    process that imported their libraries (tests/prestarted.py) where that cannot change what they do."""
    proc = _prestarted(cmd, cwd, env, timeout)
    if proc is None:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _prestarted(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    if not _PRESTARTED.accepts(cmd, env):
        return None
    with tempfile.TemporaryDirectory(prefix="elt-cmd-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        code = _PRESTARTED.run(cmd, cwd, env, timeout, out, err)
        if code is None:
            return None

        def text(path: Path) -> str:  # as subprocess's text mode reads it (universal newlines)
            data = path.read_bytes().decode() if path.exists() else ""
            return data.replace("\r\n", "\n").replace("\r", "\n")

        return subprocess.CompletedProcess(cmd, code, text(out), text(err))


# `make test` runs the files on three workers (pytest-xdist, --dist loadfile: a file's tests share
# one worker and its module fixtures; --no-loadscope-reorder keeps this order, which xdist would
# otherwise replace by the number of tests per file). The longest files start first, so no worker
# is left with a long file at the end while the others idle. The order is each file's total time
# (setup, call and teardown of its tests) measured by a whole run with `--durations=0
# --junitxml=...` on CI's machine kind (2026-12-06: 3,551 s of tests on three workers). A file
# missing from the list runs after these, in collection order; one that grows past about 30 s
# belongs in the list at its place. Left out before, the longest file (test_user_model_kinds.py,
# 423 s) started two thirds into the run and one worker finished 200 s after the others: 1,337 s
# for work that fills three workers in 1,184 s.
LONGEST_FIRST = ("tests/orchestrator/test_user_model_kinds.py", "tests/orchestrator/test_transform_kills.py",
                 "tests/orchestrator/test_spark_gateway.py", "tests/orchestrator/test_backfill.py",
                 "tests/orchestrator/test_incremental_transform.py", "tests/pipeline/test_demo_sources.py",
                 "tests/production/test_postgres_gateway.py", "tests/pipeline/test_layer_audits.py",
                 "tests/orchestrator/test_airflow_real.py",
                 "tests/orchestrator/test_rows_without_event_time.py",
                 "tests/orchestrator/test_spark_class_archive.py",
                 "tests/orchestrator/test_spark_metastore.py", "tests/orchestrator/test_parent_deletions.py",
                 "tests/orchestrator/test_soft_delete.py", "tests/orchestrator/test_runs.py",
                 "tests/orchestrator/test_model_change.py", "tests/orchestrator/test_held_rows_warn.py",
                 "tests/orchestrator/test_postgres_backend.py", "tests/orchestrator/test_freshness.py",
                 "tests/orchestrator/test_preview.py", "tests/sources/test_batch_contract.py",
                 "tests/orchestrator/test_outside_plan.py", "tests/test_no_usage_analytics.py",
                 "tests/sources/test_rest_source.py", "tests/orchestrator/test_pipeline_jobs.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the other files is kept


@pytest.fixture(autouse=True)
def _environment_restored():  # type: ignore[no-untyped-def]
    """Every test leaves os.environ as it found it: some set variables directly (or run code that
    does, such as the production demo's app settings), and a variable left behind would change
    what a later test in the same process connects to (a PostgreSQL gateway instead of DuckDB)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def jaffle_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One year of jafgen data, generated once per session (jafgen is not deterministic)."""
    base = tmp_path_factory.mktemp("jafgen")
    subprocess.run([str(BIN / "jafgen"), "1"], cwd=base, check=True, capture_output=True, timeout=300)
    return base / "jaffle-data"


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory: pytest.TempPathFactory, jaffle_data: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A copy of the project on which `elt demo` ran once, on the session's jafgen data.

    The warehouse is at the default relative path data/warehouse.duckdb inside the copy, exactly
    as after `make demo` in a fresh clone.
    """
    project = copy_project(tmp_path_factory.mktemp("demo") / "project")
    proc = run([str(BIN / "elt"), "demo"], cwd=project, env=project_env(project, JAFFLE_DATA_DIR=str(jaffle_data)))
    return project, proc


# A tiny, readable Jaffle Shop written by the tests: 3 customers, 4 orders, 5 items.
SMALL_JAFFLE = {
    "raw_customers.csv": "id,name\nc1,Ann\nc2,Bob\nc3,Cyd\n",
    "raw_orders.csv": (
        "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"
        "o1,c1,2018-09-01T09:00:00,s1,1700,102,1802\n"
        "o2,c1,2018-09-03T10:00:00,s1,1100,66,1166\n"
        "o3,c2,2018-09-03T11:00:00,s2,600,24,624\n"
        "o4,c2,2018-09-04T12:00:00,s2,0,0,0\n"
    ),
    "raw_items.csv": "id,order_id,sku\ni1,o1,JAF-001\ni2,o1,BEV-001\ni3,o2,JAF-001\ni4,o3,BEV-001\ni5,o3,BEV-002\n",
    "raw_products.csv": (
        "sku,name,type,price,description\n"
        "JAF-001,doctor stew,jaffle,1100,house-made beef stew jaffle\n"
        "BEV-001,tangaroo,beverage,600,mango and tangerine smoothie\n"
        "BEV-002,chai and mighty,beverage,0,oatmilk chai latte\n"
    ),
    "raw_stores.csv": "id,name,opened_at,tax_rate\ns1,Philadelphia,2018-09-01T00:00:00,0.06\ns2,Brooklyn,2018-09-02T00:00:00,0.04\n",
    "raw_supplies.csv": (
        "id,name,cost,perishable,sku\n"
        "SUP-001,bread,350,True,JAF-001\n"
        "SUP-002,stew,500,True,JAF-001\n"
        "SUP-003,cup,50,False,BEV-001\n"
        "SUP-003,cup,50,False,BEV-002\n"
    ),
    "raw_tweets.csv": "id,user_id,tweeted_at,content\nt1,c1,2018-09-01T10:00:00.123456,\"Great, jaffles\"\n",
}


@pytest.fixture
def small_jaffle(tmp_path: Path) -> Path:
    folder = tmp_path / "jaffle-data"
    folder.mkdir()
    for name, text in SMALL_JAFFLE.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real 2 MB disk (a tmpfs mounted under ``tmp_path``), for tests of a full disk; skipped where
    no tmpfs can be mounted (root with mount rights, as on CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def duck_rows(warehouse: Path, sql: str) -> list[tuple[object, ...]]:
    """``sql``'s rows from the DuckDB file ``warehouse``, opened read-only and closed again."""
    import duckdb

    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def project_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: Path | None = None):  # type: ignore[no-untyped-def]
    """Settings of a copied project (of ``built``, a project folder with its data, when given) with
    its own warehouse and landing under ``tmp_path/project``; ELT_DUCKDB_PATH points at it."""
    from orchestrator.settings import Settings

    if built is None:
        project = copy_project(tmp_path / "project")
    else:  # nothing in the warehouse or in landing names the project's folder
        project = tmp_path / "project"
        shutil.copytree(built, project, ignore=shutil.ignore_patterns(".cache"))
    warehouse = project / "data" / "warehouse.duckdb"
    monkeypatch.setenv("ELT_DUCKDB_PATH", str(warehouse))
    return Settings(project_root=project, warehouse=warehouse, landing_root=project / "data" / "landing",
                    data_dir=project / "data" / "jaffle-data")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Settings pointing at a copied project with its own warehouse and landing under tmp_path."""
    return project_settings(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def _built_tiny_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped project with the tiny shop (SMALL_JAFFLE) loaded and transformed, once per test
    process; ``built_settings`` copies it."""
    from orchestrator.scheduling.loading import load_source_into_warehouse
    from orchestrator.transform.run import transform

    base = tmp_path_factory.mktemp("built-tiny-shop")
    folder = base / "jaffle-data"
    folder.mkdir()
    for name, text in SMALL_JAFFLE.items():
        (folder / name).write_text(text)
    with pytest.MonkeyPatch.context() as monkeypatch:
        built = project_settings(base, monkeypatch)
        outcomes = load_source_into_warehouse("jaffle_shop", built, path=folder)
        assert not [o.error for o in outcomes if o.error]
        transform(built, quiet=True)
    return built.project_root


@pytest.fixture
def built_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _built_tiny_shop: Path):  # type: ignore[no-untyped-def]
    """As ``settings``, of a project where the tiny shop (``small_jaffle``'s files as that fixture
    writes them) was loaded with the jaffle_shop source and transformed: for tests whose checks
    come after a first build. Built once per test process and copied (the build costs seconds, a
    copy milliseconds); a test that checks the first build itself uses ``settings``. The copy's
    first transform plans metadata-only changes of every model, no data: in a process that loaded
    another project folder before, SQLMesh serializes the project's metadata-only macro
    (``@analyze_written_table``) as an import from that folder. A test that needs its next transform
    to be a run without a plan (a failure's ``step``, SQLMesh's own snapshots) uses ``settings``."""
    return project_settings(tmp_path, monkeypatch, _built_tiny_shop)


@pytest.fixture(scope="session")
def pg_server():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server for the session (initdb in a temp folder, loopback only)."""
    from tests.servers import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_db(pg_server, request):  # type: ignore[no-untyped-def]
    """A fresh database on the session's server, dropped after the test."""
    import re

    import psycopg2

    from tests.servers import Postgres

    import hashlib

    # At most 23 characters: SQLMesh's unit tests on PostgreSQL name fixture tables
    # <database>__<schema>__<table>, which must fit in 63 (see docs/reference/configuration.md).
    name = "t_" + re.sub(r"[^a-z0-9]", "_", request.node.originalname.lower())[:12] + "_" + \
        hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:8]
    admin = psycopg2.connect(pg_server.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    yield Postgres(pg_server.host, pg_server.port, pg_server.user, name)
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def s3_endpoint():  # type: ignore[no-untyped-def]
    """A real S3-compatible HTTP endpoint on loopback (moto's server)."""
    from tests.servers import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch, request):  # type: ignore[no-untyped-def]
    import re

    import boto3

    for key, value in s3_endpoint.env().items():
        monkeypatch.setenv(key, value)
    import hashlib

    # unique per test and parameter (S3 bucket names are at most 63 characters)
    bucket = "b-" + re.sub(r"[^a-z0-9]", "-", request.node.originalname.lower())[:30].strip("-") + "-" + \
        hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:10]
    boto3.client("s3", endpoint_url=s3_endpoint.endpoint).create_bucket(Bucket=bucket)
    return bucket
