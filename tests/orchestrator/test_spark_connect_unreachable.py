"""A Spark Connect server that does not answer, or a port that is not one, fails `elt` at once,
naming the server.

pyspark's client retries a refused connection for minutes and prints nothing meanwhile: before the
check in ``sources.spark.check_reachable``, `elt transform` against a stopped server sat silent
past two minutes, and so did one against a port that accepts TCP but speaks no gRPC (a web server
here). No JVM is needed: the check runs before any Spark session exists; the gRPC side is checked
against a real gRPC server (grpcio's, with no services) on loopback.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sources.errors import ConnectionFailed
from sources.spark import check_reachable
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


@contextmanager
def _web_server() -> Iterator[int]:
    """A real HTTP/1.1 server on loopback: it accepts TCP and answers, but not in gRPC."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _grpc_server() -> Iterator[int]:
    """A real gRPC server on loopback, plaintext, with no services."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def test_a_port_that_is_not_spark_connect_fails_at_once_naming_the_server(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    with _web_server() as port:
        env = project_env(project, ELT_GATEWAY="spark", ELT_SPARK_REMOTE=f"sc://127.0.0.1:{port}/;user_id=etl;token={TOKEN}",
                          ELT_SPARK_CONNECT_TIMEOUT_S="3", ELT_SPARK_HOME=str(tmp_path / "spark"),
                          ELT_DUCKDB_PATH=str(tmp_path / "warehouse.duckdb"), ELT_LANDING_ROOT=str(tmp_path / "landing"))
        # the timeout is a hang guard (pyspark alone retried for minutes), not a speed assertion
        proc = run([str(BIN / "elt"), "transform"], cwd=project, env=env, timeout=120, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert (f"the Spark Connect server 127.0.0.1:{port} (ELT_SPARK_REMOTE) accepted a connection but did not "
            "complete a gRPC handshake over TLS") in out, out
    assert "next: check that ELT_SPARK_REMOTE names the Spark Connect port" in out, out
    assert "Handshake failed" not in out, out  # gRPC's log line at each retry: the error says it once
    assert TOKEN not in out, out


def test_the_grpc_check_passes_a_grpc_server_and_names_tls_when_the_server_has_none() -> None:
    with _grpc_server() as port:
        check_reachable(f"sc://127.0.0.1:{port}/;user_id=etl", timeout_s=10)  # plaintext: ready
        with pytest.raises(ConnectionFailed) as tls:  # a token makes pyspark's channel use TLS
            check_reachable(f"sc://127.0.0.1:{port}/;user_id=etl;token={TOKEN}", timeout_s=2)
    assert "did not complete a gRPC handshake over TLS" in str(tls.value) and TOKEN not in str(tls.value)
    with _web_server() as port, pytest.raises(ConnectionFailed) as web:
        check_reachable(f"sc://127.0.0.1:{port}/", timeout_s=2)
    assert f"127.0.0.1:{port} (ELT_SPARK_REMOTE) accepted a connection but did not complete a gRPC handshake within 2 s" \
        in str(web.value), str(web.value)
