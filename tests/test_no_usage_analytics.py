"""Nothing leaves the machine for SQLMesh's vendor: its anonymized usage analytics, on by default,
are turned off in config.yaml (docs/decisions/0023-no-usage-analytics.md).

The commands run in subprocesses whose name lookups are recorded and refused (a
``sitecustomize`` on PYTHONPATH), so the test observes the network calls themselves: with
analytics on, both `sqlmesh info` and `elt transform` look up SQLMesh's collector host.

With analytics off, `elt` also skips the wrapper SQLMesh puts around its Python API
(``skip_usage_wrappers``): it reads every stack frame's source and imports ``sqlmesh.magics`` on
each call before asking whether analytics are on, about 0.4 s of every transform.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import BIN, copy_project, project_env, run

COLLECTOR_HOST = "analytics.tobikodata.com"  # sqlmesh.core.analytics.dispatcher.TOBIKO_COLLECTOR_URL

LOOKUP_HOOK = '''
import os, socket

def getaddrinfo(host, *args, **kwargs):
    with open(os.environ["ELT_TEST_LOOKUP_LOG"], "a") as fh:
        fh.write(f"{host}\\n")
    raise socket.gaierror(socket.EAI_NONAME, "name lookups are refused in this test")

socket.getaddrinfo = getaddrinfo

if os.environ.get("ELT_TEST_MODULES_LOG"):
    import atexit, sys

    def modules():
        with open(os.environ["ELT_TEST_MODULES_LOG"], "a") as fh:
            fh.write(f"{os.path.basename(sys.argv[0])} {sys.argv[1:2]} magics={'sqlmesh.magics' in sys.modules}\\n")

    atexit.register(modules)
'''


def test_neither_sqlmesh_nor_elt_contacts_the_analytics_collector(tmp_path: Path, small_jaffle: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LOOKUP_HOOK)
    lookups = tmp_path / "lookups.txt"
    project = copy_project(tmp_path / "project")
    env = project_env(project, PYTHONPATH=str(hook), ELT_TEST_LOOKUP_LOG=str(lookups),
                      ELT_DUCKDB_PATH=str(project / "data" / "warehouse.duckdb"))

    # the hook is live in these subprocesses: an empty log below is not an empty log by construction
    probe = run([sys.executable, "-c", "import socket\ntry: socket.getaddrinfo('probe.invalid', 443)\nexcept OSError: pass"],
                cwd=project, env=env)
    assert probe.returncode == 0 and lookups.read_text() == "probe.invalid\n"
    lookups.unlink()

    run([str(BIN / "sqlmesh"), "info"], cwd=project, env=env, timeout=120)
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env, timeout=120)
    run([str(BIN / "elt"), "transform"], cwd=project, env=env, timeout=300)

    looked_up = lookups.read_text().split() if lookups.exists() else []
    assert COLLECTOR_HOST not in looked_up, f"usage analytics were sent: {looked_up}"


def test_with_analytics_off_elt_skips_sqlmesh_analytics_wrapper(tmp_path: Path, small_jaffle: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LOOKUP_HOOK)
    project = copy_project(tmp_path / "project")
    modules = tmp_path / "modules.txt"
    env = project_env(project, PYTHONPATH=str(hook), ELT_TEST_LOOKUP_LOG=str(tmp_path / "lookups.txt"),
                      ELT_TEST_MODULES_LOG=str(modules), ELT_DUCKDB_PATH=str(project / "data" / "warehouse.duckdb"))
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env, timeout=120)
    run([str(BIN / "elt"), "transform"], cwd=project, env=env, timeout=300)
    assert modules.read_text().splitlines()[-1] == "elt ['transform'] magics=False", modules.read_text()

    # the control: with analytics on, the same command goes through the wrapper, which imports it
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("disable_anonymized_analytics: true", "disable_anonymized_analytics: false"))
    run([str(BIN / "elt"), "transform"], cwd=project, env=env, timeout=300)
    assert modules.read_text().splitlines()[-1] == "elt ['transform'] magics=True", modules.read_text()
