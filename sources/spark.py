"""One Spark session per process, configured exactly as the SQLMesh `spark` gateway in config.yaml.

The loader and SQLMesh must share the session: in local mode the Hive metastore is an embedded
Derby database that one JVM at a time may open, and a second session with other settings would
silently read other tables. So the settings are read from config.yaml's `spark` gateway (rendered
with the environment, as SQLMesh renders them) and the session is built the way SQLMesh builds it
(Hive support on); SQLMesh's ``getOrCreate`` then returns this same session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_SESSION: Any = None


def spark_conf(project_root: Path) -> dict[str, str]:
    """The `spark` gateway's Spark settings, rendered with the current environment."""
    from sqlmesh.core.config import Config
    from sqlmesh.core.config.loader import load_config_from_paths

    config = load_config_from_paths(Config, [project_root / "config.yaml"])
    gateway = config.gateways.get("spark")
    if gateway is None or gateway.connection is None:
        from sources.errors import ConfigError

        raise ConfigError("config.yaml defines no `spark` gateway",
                          hint="set ELT_GATEWAY=spark (config.yaml defines that gateway only then), or restore it from the project's config.yaml")
    conf = {k: str(v) for k, v in (getattr(gateway.connection, "config", None) or {}).items()}
    return conf


def spark_home(project_root: Path) -> Path:
    """Where local-mode Spark keeps its metastore and warehouse files (ELT_SPARK_HOME)."""
    value = Path(os.environ.get("ELT_SPARK_HOME") or "data/spark")
    return value if value.is_absolute() else project_root / value


def session(project_root: Path) -> Any:
    """The process's Spark session (created on first use)."""
    global _SESSION
    if _SESSION is not None:
        return _SESSION
    from pyspark.conf import SparkConf
    from pyspark.sql import SparkSession

    # config.yaml renders its paths from ELT_SPARK_HOME: make it absolute (the project root's
    # data/spark by default) so the metastore never lands in the current directory
    os.environ["ELT_SPARK_HOME"] = str(spark_home(project_root))
    conf = SparkConf()
    settings = spark_conf(project_root)
    for key, value in settings.items():
        conf.set(key, value)
    spark_home(project_root).mkdir(parents=True, exist_ok=True)  # SQLMesh's state file lives there
    if "spark.remote" in settings:  # Spark Connect: the server has its catalog, logs and JVM
        _SESSION = SparkSession.builder.config(conf=conf).getOrCreate()
        return _SESSION
    _SESSION = SparkSession.builder.config(conf=conf).enableHiveSupport().getOrCreate()
    _SESSION.sparkContext.setLogLevel(os.environ.get("ELT_SPARK_LOG_LEVEL", "ERROR"))
    return _SESSION
