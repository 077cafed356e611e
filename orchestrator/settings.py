"""Where things are: the project root, the warehouse file and the landing root.

Everything is overridable by environment variable so tests, CI and production point the same code
at different places. Relative values are taken from the project root, never from the current
directory, so ``elt`` behaves the same wherever it is started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("ELT_PROJECT_DIR") or Path(__file__).resolve().parents[1])


def _path(env: str, default: str) -> Path:
    value = Path(os.environ.get(env) or default)
    return value if value.is_absolute() else PROJECT_ROOT / value


@dataclass(frozen=True)
class Settings:
    project_root: Path
    warehouse: Path  # the DuckDB file of the default gateway
    landing_root: Path
    data_dir: Path  # generated demo data

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            project_root=PROJECT_ROOT,
            warehouse=_path("ELT_DUCKDB_PATH", "data/warehouse.duckdb"),
            landing_root=_path("ELT_LANDING_ROOT", "data/landing"),
            data_dir=_path("ELT_DEMO_DIR", "data/jaffle-data"),
        )
