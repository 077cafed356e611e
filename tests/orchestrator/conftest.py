"""Fixtures for the orchestrator: a copied project whose jobs are real commands (ELT_JOBS_FILE)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BIN, copy_project, project_env, run

PY = sys.executable


def test_jobs(tmp: Path) -> dict[str, Any]:
    """Small command jobs with known behaviour: quick, slow, a hang with a child, flaky, bad input."""
    counter = tmp / "flaky.count"
    flaky = (f"import sys, pathlib; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; "
             "p.write_text(str(n + 1)); sys.exit(75 if n < 2 else 0)")
    return {"jobs": {
        "quick": {"command": [PY, "-c", "print('ok')"], "schedule": "@hourly", "attempts": 1},
        "slow": {"command": [PY, "-c", "import time; time.sleep(float(__import__('os').environ.get('SLOW_S', '4')))"],
                 "schedule": "@daily", "attempts": 1},
        "hang": {"command": ["sh", "-c", f"sleep 300 & echo $! > {tmp / 'child.pid'}; wait"],
                 "schedule": "@daily", "timeout": "2s", "attempts": 2},
        "escape": {"command": ["sh", "-c", f"setsid sleep 300 & echo $! > {tmp / 'escape.pid'}; wait"],
                   "schedule": "@daily", "timeout": "2s", "attempts": 1},
        "orphan": {"command": ["sh", "-c", f"sleep 300 & echo $! > {tmp / 'orphan.pid'}; wait"],
                   "schedule": "@daily", "timeout": "10m", "attempts": 1},
        "flaky": {"command": [PY, "-c", flaky], "schedule": "@daily", "attempts": 3},
        "stubborn": {"command": ["sh", "-c", "trap '' TERM INT; sleep 300"], "schedule": "@daily", "attempts": 1},
        "toggle": {"command": [PY, "-c", f"import os, sys; sys.exit(1 if os.path.exists({str(tmp / 'broken')!r}) else 0)"],
                   "schedule": "@daily", "attempts": 1, "owner": "toggle-team@example.com"},
        "bad": {"command": [PY, "-c", "import sys; print('bad input', file=sys.stderr); sys.exit(1)"],
                "schedule": "@daily", "attempts": 3, "owner": "ops@example.com"},
    }}


class Project:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def elt(self, *args: str, timeout: int = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "elt"), *args], cwd=self.root, env={**self.env, **extra_env}, timeout=timeout,
                   check=False)

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(BIN / "elt"), *args], cwd=self.root, env={**self.env, **extra_env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def settings(self):  # type: ignore[no-untyped-def]
        """Settings as the subprocesses see them (for reading the history from the test)."""
        from orchestrator.settings import Settings

        data = self.root / "data"
        return Settings(project_root=self.root, warehouse=data / "warehouse.duckdb", landing_root=data / "landing",
                        data_dir=data / "jaffle-data", gateway=self.env.get("ELT_GATEWAY", "duckdb"))

    def history(self):  # type: ignore[no-untyped-def]
        from orchestrator.observe.history import History

        return History.open(self.settings())


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    root = copy_project(tmp_path / "project")
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(yaml.safe_dump(test_jobs(tmp_path)))
    tmp = tmp_path / "tmp"  # the loader's per-source lock lives under TMPDIR: keep other test runs out
    tmp.mkdir()
    env = project_env(root, ELT_JOBS_FILE=str(jobs_file), ELT_RETRY_BASE_S="0.2", ELT_RETRY_CAP_S="0.4",
                      TMPDIR=str(tmp))
    return Project(root, env)
