"""Where things are: the project root, the warehouse file and the landing root.

Everything is overridable by environment variable so tests, CI and production point the same code
at different places. Relative values are taken from the project root, never from the current
directory, so ``elt`` behaves the same wherever it is started. The ``ELT_*`` variables are
validated by a pydantic model (``_Environment``); an unset or empty variable takes its default.

>>> _Environment.model_validate({"ELT_GATEWAY": "spark", "ELT_LANDING_ROOT": "/srv/landing"}).landing_root
PosixPath('/srv/landing')
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PROJECT_ROOT = Path(os.environ.get("ELT_PROJECT_DIR") or Path(__file__).resolve().parents[1])


def other_checkout(cwd: Path, root: Path = PROJECT_ROOT) -> Path | None:
    """The checkout of this project that ``cwd`` is in, when it is not the one ``elt`` runs (its
    code and data): ``elt`` runs the checkout it was installed from, and a virtualenv shared
    between two clones silently ran, and wrote into, the other one (a walkthrough found it).

    >>> import tempfile
    >>> a, b = (Path(tempfile.mkdtemp()) for _ in range(2))
    >>> for d in (a, b): _ = (d / "config.yaml").write_text("gateways: {}"); (d / "models").mkdir()
    >>> other_checkout(b / "models", a) == b.resolve(), other_checkout(a / "models", a), other_checkout(Path("/"), a)
    (True, None, None)
    """
    here = cwd.resolve()
    for folder in (here, *here.parents):
        if (folder / "config.yaml").is_file() and (folder / "models").is_dir():  # a SQLMesh project
            return None if folder == root.resolve() else folder
    return None


Gateway = Literal["duckdb", "postgres", "spark"]
GATEWAYS: tuple[str, ...] = get_args(Gateway)


class _Environment(BaseModel):
    """The variables ``Settings.from_env`` reads (others, ``ELT_PG_*`` and so on, are read where used)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    gateway: Gateway = Field("duckdb", alias="ELT_GATEWAY")
    warehouse: Path = Field(Path("data/warehouse.duckdb"), alias="ELT_DUCKDB_PATH", validate_default=True)
    landing_root: Path = Field(Path("data/landing"), alias="ELT_LANDING_ROOT", validate_default=True)
    data_dir: Path = Field(Path("data/jaffle-data"), alias="ELT_DEMO_DIR", validate_default=True)
    landing_url: str = Field("", alias="ELT_LANDING_URL")  # used as given (see landing_location)

    @field_validator("warehouse", "landing_root", "data_dir")
    @classmethod
    def _from_root(cls, value: Path) -> Path:
        return value if value.is_absolute() else PROJECT_ROOT / value


# DuckDB sizes read from the environment: the models' sessions (config.yaml) and the loader's
_MEMORY_VARIABLES = ("ELT_DUCKDB_MEMORY_LIMIT", "ELT_LOADER_MEMORY_LIMIT", "ELT_LOADER_SNAPSHOT_MEMORY_LIMIT")


def _check_duckdb_limits(environ: Mapping[str, str]) -> None:
    """Refuse a DuckDB memory size or thread count that DuckDB would refuse, naming the variable,
    before anything runs. The loader failed on one with a traceback; SQLMesh, given one through
    config.yaml's connector_config, swallowed the error of its first session, took the state for
    missing ("Initializing new project state...") and ran on without the setting.

    >>> _check_duckdb_limits({"ELT_DUCKDB_MEMORY_LIMIT": "2GB", "ELT_DUCKDB_THREADS": "4"})
    >>> _check_duckdb_limits({"ELT_LOADER_MEMORY_LIMIT": "lots"})
    Traceback (most recent call last):
    sources.errors.ConfigError: ELT_LOADER_MEMORY_LIMIT='lots' is not a memory size DuckDB accepts: Parser Error: Memory must have a number (e.g. 1GB)
      next: a number and a unit, e.g. 512MB or 2GB
    """
    from sources.errors import ConfigError, first_line

    threads = environ.get("ELT_DUCKDB_THREADS")
    if threads and not (threads.strip().isdigit() and int(threads) > 0):
        raise ConfigError(f"ELT_DUCKDB_THREADS={threads!r} is not a number of threads", hint="a whole number, e.g. 2")
    names = [name for name in _MEMORY_VARIABLES if environ.get(name)]
    if not names:
        return
    import duckdb

    for name in names:
        try:
            duckdb.connect(config={"memory_limit": environ[name]}).close()
        except duckdb.Error as exc:
            raise ConfigError(f"{name}={environ[name]!r} is not a memory size DuckDB accepts: {first_line(exc)}",
                              hint="a number and a unit, e.g. 512MB or 2GB") from None


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
        try:
            env = _Environment.model_validate({k: v for k, v in os.environ.items() if k.startswith("ELT_") and v})
        except ValidationError as exc:
            from sources.errors import ConfigError

            (first, *_) = exc.errors(include_url=False)  # only ELT_GATEWAY can be wrong: the others are paths
            name = str(first["loc"][0])
            raise ConfigError(f"{name} is {first['input']!r}", hint=f"use one of: {', '.join(GATEWAYS)}"
                              if name == "ELT_GATEWAY" else first["msg"]) from None
        _check_duckdb_limits(os.environ)
        return cls(project_root=PROJECT_ROOT, **env.model_dump())

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
