"""A Spark Connect server that does not answer fails `elt` at once, naming the server.

pyspark's client retries a refused connection for minutes and prints nothing meanwhile: before the
check in ``sources.spark.check_reachable``, `elt transform` against a stopped server sat silent
past two minutes. No JVM is needed: the check runs before any Spark session exists.
"""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import BIN, copy_project, project_env, run

TOKEN = "S3CR3T-spark-connect-token"


def _closed_port() -> int:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_transform_and_load_fail_at_once_naming_the_server_and_never_the_token(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    port = _closed_port()
    env = project_env(project, ELT_GATEWAY="spark", ELT_SPARK_REMOTE=f"sc://127.0.0.1:{port}/;user_id=etl;token={TOKEN}",
                      ELT_SPARK_HOME=str(tmp_path / "spark"), ELT_DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"),
                      ELT_LANDING_ROOT=str(tmp_path / "landing"))
    (tmp_path / "files").mkdir()  # the raw store is opened before any file is read
    for cmd in ([str(BIN / "elt"), "transform"], [str(BIN / "elt"), "load", "jaffle_shop", "--path", str(tmp_path / "files")]):
        # the timeout is a hang guard (pyspark alone retried for minutes), not a speed assertion
        proc = run(cmd, cwd=project, env=env, timeout=120, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert f"cannot reach the Spark Connect server 127.0.0.1:{port} (ELT_SPARK_REMOTE)" in out, out
        assert "next: start the server, or fix ELT_SPARK_REMOTE" in out, out
        assert TOKEN not in out, out
