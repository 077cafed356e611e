"""Python's garbage collector thresholds in the processes that run SQLMesh (decision 0083): `elt`
raises them at its start, a first SQLMesh context made from Python (the library's own callers,
the tests) does too, and ``ELT_GC_TUNING=0`` keeps Python's own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_project, project_env

DEFAULTS = (700, 10, 10)

# `elt --help` goes through the command's start, prints its usage and exits 0
ELT = """
import gc, sys
before = gc.get_threshold()
from orchestrator.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(repr((before, gc.get_threshold())), file=sys.stderr)
"""

CONTEXT = """
import gc, sys
from pathlib import Path
from orchestrator.settings import Settings
from orchestrator.transform.run import make_context
project = Path(sys.argv[1])
before = gc.get_threshold()
warehouse = project / "data" / "warehouse.duckdb"
warehouse.parent.mkdir()
ctx, _ = make_context(Settings(project_root=project, warehouse=warehouse, landing_root=project / "data" / "landing",
                               data_dir=project / "data" / "jaffle-data"), quiet=True)
ctx.close()
print(repr((before, gc.get_threshold())), file=sys.stderr)
"""


def _thresholds(script: str, env: dict[str, str], *args: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ast.literal_eval(proc.stderr.strip().splitlines()[-1])


def test_elt_raises_the_collectors_first_threshold_unless_turned_off(tmp_path: Path) -> None:
    from orchestrator.transform.collector import THRESHOLDS

    env = project_env(copy_project(tmp_path / "project"))
    assert _thresholds(ELT, env) == (DEFAULTS, THRESHOLDS)
    assert _thresholds(ELT, {**env, "ELT_GC_TUNING": "0"}) == (DEFAULTS, DEFAULTS)


def test_the_first_sqlmesh_context_of_a_python_process_raises_it_too(tmp_path: Path) -> None:
    from orchestrator.transform.collector import THRESHOLDS

    project = copy_project(tmp_path / "project")
    env = project_env(project)
    assert _thresholds(CONTEXT, env, str(project)) == (DEFAULTS, THRESHOLDS)
    assert THRESHOLDS[0] > DEFAULTS[0]
