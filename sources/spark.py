"""One Spark session per process, configured exactly as the SQLMesh `spark` gateway in config.yaml.

The loader and SQLMesh must share the session: in local mode the Hive metastore is an embedded
Derby database that one JVM at a time may open, and a second session with other settings would
silently read other tables. So the settings are read from config.yaml's `spark` gateway (rendered
with the environment, as SQLMesh renders them) and the session is built the way SQLMesh builds it
(Hive support on); SQLMesh's ``getOrCreate`` then returns this same session.

Local mode's embedded metastore admits one JVM at a time. Two `elt` processes (two sources'
scheduled loads, a load and a transform) queue for it on a file lock beside it, each saying whom
it waits for; a process outside `elt` that has it open (`sqlmesh ui`, a notebook's session) makes
the command fail with one line and exit 75 (worth retrying), not with Derby's stack traces.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from sources import forks
from sources.errors import ResourceBusy
from sources.logs import get_logger, register_secret

log = get_logger("sources.spark")

_SESSION: Any = None
_METASTORE_LOCK: int | None = None  # the descriptor of the held flock, for the process's life
METASTORE_WAIT_S = 600.0  # ELT_SPARK_METASTORE_WAIT_S: how long a command queues for the local metastore
SPARK_CONNECT_PORT = 15002  # Spark Connect's default, when the URL names none


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
    _quiet_existence_probes()
    try:
        from pyspark.conf import SparkConf
        from pyspark.sql import SparkSession
    except ImportError as exc:
        from sources.errors import ConfigError

        raise ConfigError(f"the spark gateway (ELT_GATEWAY=spark) needs pyspark, which this environment lacks ({exc})",
                          hint="install the pinned packages as `make` does (`pip install -r requirements.lock`, which holds "
                               "pyspark; the container image leaves it out), or use another gateway "
                               "(ELT_GATEWAY=duckdb or postgres)") from None

    # config.yaml renders its paths from ELT_SPARK_HOME: make it absolute (the project root's
    # data/spark by default) so the metastore never lands in the current directory
    os.environ["ELT_SPARK_HOME"] = str(spark_home(project_root))
    conf = SparkConf()
    settings = spark_conf(project_root)
    for key, value in settings.items():
        conf.set(key, value)
    spark_home(project_root).mkdir(parents=True, exist_ok=True)  # SQLMesh's state file lives there
    if "spark.remote" in settings:  # Spark Connect: the server has its catalog, logs and JVM
        for param in settings["spark.remote"].split(";")[1:]:  # sc://host:port/;token=...;user_id=...
            name, _, value = param.partition("=")
            if name.strip().lower() == "token":
                register_secret(value)
        check_reachable(settings["spark.remote"])
        _SESSION = SparkSession.builder.config(conf=conf).getOrCreate()
        return _SESSION
    from sources.spark_class_archive import ClassArchive, _java

    if _java() is None:  # pyspark would print a 20-line traceback ending in JAVA_GATEWAY_EXITED
        from sources.errors import ConfigError

        home = os.environ.get("JAVA_HOME")
        where = f"JAVA_HOME={home} has no bin/java" if home else "JAVA_HOME is not set and no java is on PATH"
        raise ConfigError(f"the spark gateway runs Spark in a local JVM, and no Java was found ({where})",
                          hint="install Java 17 or newer (Debian: apt-get install default-jre-headless) or set "
                               "JAVA_HOME to one; or use a Spark Connect server (ELT_SPARK_REMOTE), which needs "
                               "no local Java (docs/how-to/run-on-a-spark-cluster.md)")
    metastore = embedded_metastore(settings)
    if metastore is not None:
        _metastore_lock(metastore)  # before the JVM: the class archive's writer runs under it too
    archive = ClassArchive.for_this_process()  # docs/decisions/0028: the driver JVM starts faster
    java_options = conf.get("spark.driver.extraJavaOptions") or ""
    extra = archive.java_options() if archive else []
    if extra:
        conf.set("spark.driver.extraJavaOptions", " ".join([java_options, *extra]).strip())
    try:
        _SESSION = SparkSession.builder.config(conf=conf).enableHiveSupport().getOrCreate()
    except Exception as exc:
        # only a JVM that died before it answered can be the archive's fault (a damaged archive
        # aborts it at start); a master that cannot be reached fails after the JVM is up, and
        # removing a sound archive then cost the next command its fast start (found by a walkthrough)
        if not extra or archive is None or "JAVA_GATEWAY_EXITED" not in str(exc):
            raise
        archive.discard(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        conf.set("spark.driver.extraJavaOptions", java_options)
        _SESSION = SparkSession.builder.config(conf=conf).enableHiveSupport().getOrCreate()
    level = os.environ.get("ELT_SPARK_LOG_LEVEL", "ERROR")
    _SESSION.sparkContext.setLogLevel(level)
    if metastore is not None:
        _open_metastore(_SESSION, metastore, level)
    if archive is not None:
        archive.finish_at_exit(_SESSION)
    return _SESSION


# pyspark (4.x) logs every failed statement at ERROR with the JVM's stack trace, before raising it.
# A missing table is how SQLMesh's `table_exists` (and ours) learn that it is missing: on a first
# run each probe printed a 60-line ERROR for a run that went well. Other failures are still logged.
PROBE_ERRORS = frozenset({"TABLE_OR_VIEW_NOT_FOUND", "SCHEMA_NOT_FOUND"})


class _NotAProbe(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = getattr(record, "context", None)
        return not (isinstance(context, dict) and context.get("errorClass") in PROBE_ERRORS)


def _quiet_existence_probes() -> None:
    try:
        from pyspark.logger import PySparkLogger  # the class pyspark's loggers must have (their keyword arguments)
    except ImportError:  # pyspark 3: no such log
        return
    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        logger = PySparkLogger.getLogger(name)
        if not any(isinstance(f, _NotAProbe) for f in logger.filters):
            logger.addFilter(_NotAProbe())


class SparkMetastoreBusy(ResourceBusy):
    """Local mode's embedded metastore is held by another process; worth retrying (exit 75)."""


def embedded_metastore(settings: dict[str, str]) -> Path | None:
    """The folder of the embedded Derby metastore the settings name, or None (a shared metastore).

    >>> embedded_metastore({"spark.hadoop.javax.jdo.option.ConnectionURL": "jdbc:derby:;databaseName=/s/metastore_db;create=true"})
    PosixPath('/s/metastore_db')
    >>> embedded_metastore({"spark.hadoop.javax.jdo.option.ConnectionURL": "jdbc:postgresql://db/hive"}) is None
    True
    """
    url = settings.get("spark.hadoop.javax.jdo.option.ConnectionURL", "")
    match = re.search(r"databaseName=([^;]+)", url) if url.startswith("jdbc:derby:") else None
    return Path(match[1]) if match else None


def _metastore_lock(metastore: Path) -> None:
    """Hold the flock beside ``metastore`` for the rest of the process (the kernel drops it when the
    process dies), waiting up to ELT_SPARK_METASTORE_WAIT_S for the `elt` command holding it."""
    global _METASTORE_LOCK
    if _METASTORE_LOCK is not None:
        return
    path = metastore.parent / f"{metastore.name}.elt-lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        wait_s = float(os.environ.get("ELT_SPARK_METASTORE_WAIT_S", METASTORE_WAIT_S))
    except ValueError:
        from sources.errors import ConfigError

        raise ConfigError(f"ELT_SPARK_METASTORE_WAIT_S={os.environ['ELT_SPARK_METASTORE_WAIT_S']!r} is not a number of seconds",
                          hint="set it to e.g. 600, or unset it") from None
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    started = time.monotonic()
    told = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - started
            if waited >= wait_s:
                os.close(fd)
                raise SparkMetastoreBusy(
                    f"the local Spark metastore {metastore} stayed in use by {_holder(path)} for {waited:.0f} s "
                    "(local mode's embedded metastore admits one process at a time)",
                    hint="rerun when that command ends (the scheduler retries by itself); raise "
                         "ELT_SPARK_METASTORE_WAIT_S to queue longer, or use a shared metastore or Spark "
                         "Connect for commands that must run at once (docs/how-to/run-on-a-spark-cluster.md)") from None
            if told is None or time.monotonic() - told >= 60:
                told = time.monotonic()
                log.info(f"waiting for the local Spark metastore, in use by {_holder(path)} (local mode runs one Spark "
                         f"command at a time; waited {waited:.0f} s of up to {wait_s:.0f} s)",
                         extra={"fields": {"metastore": str(metastore), "waited_s": round(waited, 1)}})
            time.sleep(0.5)
    forks.hold(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()} ({forks.command_line(fallback='python')})".encode(errors="replace"), 0)
    _METASTORE_LOCK = fd


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another elt command"


def _open_metastore(spark: Any, metastore: Path, level: str) -> None:
    """Open the metastore now, with Spark's logging off: when another process has it, Derby logs
    thousands of lines of stack traces at ERROR before the one error that matters."""
    spark.sparkContext.setLogLevel("OFF")
    try:
        spark.sql("SHOW DATABASES").collect()
    except Exception as exc:
        trace = f"{exc}\n{getattr(exc, '_stackTrace', '') or ''}"
        if "XSDB6" not in trace:  # not another process: Spark's own error
            raise
        raise SparkMetastoreBusy(
            f"the local Spark metastore {metastore} is open in a process outside elt (`sqlmesh ui`, "
            "`sqlmesh plan`, a notebook's Spark session: local mode's embedded metastore admits one "
            "process at a time)",
            hint="stop that process (or wait for it), then rerun; the scheduler retries by itself. "
                 "`elt` commands queue for each other; for tools to run beside them, use a shared "
                 "metastore or Spark Connect (docs/how-to/run-on-a-spark-cluster.md)") from None
    finally:
        spark.sparkContext.setLogLevel(level)


def check_reachable(remote: str, timeout_s: float | None = None) -> None:
    """Fail at once, naming the server, when a Spark Connect server does not accept connections
    or does not answer as one.

    pyspark's client retries a refused connection with growing pauses for minutes and prints
    nothing meanwhile, so a stopped server looked like a hung `elt transform`; so did a port that
    accepts TCP but is another service (a web server, a database), or a plaintext server asked
    for TLS (a ``token=`` makes pyspark's channel use TLS). One TCP connection, then pyspark's own
    gRPC channel for the URL brought to ready (each within ``ELT_SPARK_CONNECT_TIMEOUT_S``, 10 s),
    tell; what the URL carries after its address (``;token=...``) is never shown. Raises
    ``ConnectionFailed``, which the scheduler retries.

    >>> check_reachable("sc://127.0.0.1:1/;token=S3CR3T", timeout_s=2)
    Traceback (most recent call last):
    ...
    sources.errors.ConnectionFailed: cannot reach the Spark Connect server 127.0.0.1:1 (ELT_SPARK_REMOTE): ...
      next: start the server, or fix ELT_SPARK_REMOTE (sc://host:15002); the scheduler retries a failed run
    """
    from sources.errors import ConfigError, ConnectionFailed

    parts = urllib.parse.urlsplit(remote)
    try:
        host, port = parts.hostname, parts.port or SPARK_CONNECT_PORT
    except ValueError:  # a port that is not a number
        host, port = None, None
    if parts.scheme != "sc" or not host or port is None:
        raise ConfigError(f"ELT_SPARK_REMOTE is not a Spark Connect URL (sc://host:port): {parts.scheme}://{parts.hostname or ''}...",
                          hint="set it as sc://host:15002 (docs/how-to/run-on-a-spark-cluster.md)")
    timeout = timeout_s if timeout_s is not None else float(os.environ.get("ELT_SPARK_CONNECT_TIMEOUT_S", "10"))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ConnectionFailed(f"cannot reach the Spark Connect server {host}:{port} (ELT_SPARK_REMOTE): {reason}",
                               hint="start the server, or fix ELT_SPARK_REMOTE (sc://host:15002); "
                                    "the scheduler retries a failed run") from None
    secure = _grpc_ready(remote, timeout)
    if secure is not None:
        tls = (" over TLS (the URL sets a token or use_ssl, so the client uses TLS, and the server must too)"
               if secure else "")
        raise ConnectionFailed(f"the Spark Connect server {host}:{port} (ELT_SPARK_REMOTE) accepted a connection but "
                               f"did not complete a gRPC handshake{tls} within {timeout:g} s",
                               hint="check that ELT_SPARK_REMOTE names the Spark Connect port (15002 unless the server "
                                    "sets spark.connect.grpc.binding.port), not another service; "
                                    "the scheduler retries a failed run") from None


def _grpc_ready(remote: str, timeout: float) -> bool | None:
    """None when the channel pyspark would open for ``remote`` becomes ready (its HTTP/2 and, with
    a token or use_ssl, TLS handshakes done) within ``timeout`` seconds; else whether it used TLS.
    gRPC's own log lines (a failed TLS handshake at each retry) stay out of the output unless
    GRPC_VERBOSITY asks for them: the error above says what happened once."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # read when gRPC's core starts (its first channel)
    import grpc
    from pyspark.sql.connect.client.core import DefaultChannelBuilder

    builder = DefaultChannelBuilder(remote)
    channel = builder.toChannel()
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return None
    except grpc.FutureTimeoutError:
        return bool(builder.secure)
    finally:
        channel.close()
