"""The SQLMesh UI, started on a free loopback port on the demo project, answers column lineage
for a mart column all the way down to the raw table's column."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import BIN, project_env

pytestmark = [pytest.mark.slow, pytest.mark.ui]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read()


def _start_ui(project, env) -> tuple[subprocess.Popen[bytes], str] | None:  # type: ignore[no-untyped-def]
    """Start `sqlmesh ui` on a free port; None if it could not keep that port (another process of
    the test run, such as Spark's py4j gateway on the other worker, took it between our check and
    the UI's bind: the UI then exits, and whatever answers there is not HTTP)."""
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "sqlmesh"), "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if _get(f"{base}/health", timeout=2):
                return proc, base
        except http.client.HTTPException:  # not an HTTP server: the port is someone else's
            _stop(proc)
            return None
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            if "address already in use" in output.lower():
                return None
            pytest.fail(f"sqlmesh ui did not start on {base}:\n{output}")
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(f"sqlmesh ui did not answer on {base} within 90 s")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def ui(demo_project):  # type: ignore[no-untyped-def]
    project, _ = demo_project
    env = project_env(project)
    env.pop("ELT_PROJECT_DIR")
    for _ in range(3):
        started = _start_ui(project, env)
        if started is not None:
            break
    else:
        pytest.fail("sqlmesh ui lost its port to another process three times")
    proc, base = started
    try:
        yield base
    finally:
        _stop(proc)


def _columns_reached(lineage: dict) -> set[tuple[str, str]]:
    """Every (model, column) named as a source anywhere in the lineage graph."""
    reached = set()
    for node in lineage.values():
        for column in node.values():
            for model, columns in (column.get("models") or {}).items():
                for c in columns:
                    reached.add((model.replace('"', "").split(".", 1)[-1] if model.count(".") > 1 else model.replace('"', ""), c))
    return reached


def test_mart_column_lineage_reaches_the_raw_column(ui: str) -> None:
    lineage = json.loads(_get(f"{ui}/api/lineage/marts.customers/lifetime_spend", timeout=60))
    reached = _columns_reached(lineage)
    assert ("marts.orders", "order_total") in reached
    assert ("staging.stg_jaffle_shop__orders", "order_total") in reached
    assert ("raw_jaffle_shop.orders", "order_total") in reached


def test_renamed_column_lineage_follows_the_rename(ui: str) -> None:
    lineage = json.loads(_get(f"{ui}/api/lineage/marts.order_items/product_id", timeout=60))
    assert ("raw_jaffle_shop.items", "sku") in _columns_reached(lineage)
