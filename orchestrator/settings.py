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


GATEWAYS = ("duckdb", "postgres", "spark")


@dataclass(frozen=True)
class Settings:
    project_root: Path
    warehouse: Path  # the DuckDB file of the default gateway
    landing_root: Path
    data_dir: Path  # generated demo data
    landing_url: str = ""  # s3://bucket/prefix in production; empty = landing_root
    gateway: str = "duckdb"  # where raw tables and models live: duckdb, postgres or spark
    pg_prefix: str = "ELT_PG_"  # the warehouse's PostgreSQL settings: ELT_PG_HOST, ELT_PG_PASSWORD, ...

    @classmethod
    def from_env(cls) -> Settings:
        gateway = os.environ.get("ELT_GATEWAY") or "duckdb"
        if gateway not in GATEWAYS:
            from sources.errors import ConfigError

            raise ConfigError(f"ELT_GATEWAY is {gateway!r}", hint=f"use one of: {', '.join(GATEWAYS)}")
        return cls(
            project_root=PROJECT_ROOT,
            warehouse=_path("ELT_DUCKDB_PATH", "data/warehouse.duckdb"),
            landing_root=_path("ELT_LANDING_ROOT", "data/landing"),
            data_dir=_path("ELT_DEMO_DIR", "data/jaffle-data"),
            landing_url=os.environ.get("ELT_LANDING_URL", ""),
            gateway=gateway,
        )

    @property
    def landing_location(self) -> str:
        if not self.landing_url:
            return str(self.landing_root)
        if "://" in self.landing_url or Path(self.landing_url).is_absolute():
            return self.landing_url
        return str(self.project_root / self.landing_url)

    def open_landing(self):  # type: ignore[no-untyped-def]
        from sources.landing.store import Landing

        return Landing.from_url(self.landing_location)

    def open_raw(self):  # type: ignore[no-untyped-def]
        """The raw store of the configured gateway (a context manager)."""
        if self.gateway == "postgres":
            from sources.connections import PostgresSettings
            from sources.load.postgres_raw import PostgresRaw

            return PostgresRaw(PostgresSettings.from_env(self.pg_prefix))
        if self.gateway == "spark":
            from sources.load.spark_raw import SparkRaw

            return SparkRaw(self.project_root)
        from sources.load.duckdb_raw import DuckDBRaw

        return DuckDBRaw(self.warehouse)
