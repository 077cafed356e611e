"""A class-data archive for the local Spark driver's JVM: each `elt` command on the `spark`
gateway in local mode starts a JVM that loads and verifies some 20,000 classes (Spark, Hive's
metastore, Derby) before it does any work. Java's AppCDS keeps them, parsed, in an archive that
later JVMs map instead (docs/decisions/0028-spark-class-data-archive.md).

- The first local Spark command on a machine starts its JVM with ``-XX:ArchiveClassesAtExit``
  into a temporary file; at the end of the command (``atexit``) the session is stopped, the JVM's
  exit (which writes the archive) is awaited, the file is checked by a bare JVM that must map it
  and match its checksums, and only then renamed into place. A killed command leaves at most a
  temporary file, removed by a later build.
- Later commands start with ``-XX:SharedArchiveFile``. A JVM that cannot start with the archive
  (a damaged file makes Java abort, it does not fall back) is retried once without it, and the
  archive is removed, with a warning; the next command builds it again.
- A failed build is not retried for a day (``<key>.failed`` says why), so a full disk does not
  cost every command a build.

The archive belongs to one Java installation and one pyspark installation: its name is a hash of
both (a Java or pyspark upgrade builds a new one; Java also checks this itself and ignores an
archive that does not fit). ``ELT_SPARK_CLASS_ARCHIVE=off`` turns it off;
``ELT_SPARK_CLASS_ARCHIVE_DIR`` moves it (default ``~/.cache/sqlmesh-elt/spark-class-archive``).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sources.logs import get_logger

log = get_logger("sources.spark")

RETRY_FAILED_AFTER_S = 24 * 3600
STALE_TEMP_AFTER_S = 3600
QUIET = ("-Xlog:cds=off", "-Xlog:cds+dynamic=off")  # the dump lists every class it skips, on stderr


def archive_dir() -> Path:
    configured = os.environ.get("ELT_SPARK_CLASS_ARCHIVE_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sqlmesh-elt" / "spark-class-archive"


def _java() -> Path | None:
    """The java that pyspark's launcher (spark-submit) will run: $JAVA_HOME/bin/java, else PATH's."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(os.path.realpath(found)) if found and os.path.exists(found) else None


def _key(java: Path) -> str:
    """A name for the archive of this Java and this pyspark installation."""
    import pyspark

    parts = [str(java), str(java.stat().st_size), str(java.stat().st_mtime_ns)]
    libjvm = next(iter(sorted(java.parent.parent.glob("lib/server/libjvm.so"))), None)
    if libjvm is not None:  # a JDK update in place changes the VM, not always the launcher
        parts += [str(libjvm.stat().st_size), str(libjvm.stat().st_mtime_ns)]
    parts += [pyspark.__version__, os.path.realpath(os.path.dirname(pyspark.__file__))]
    return "spark-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


class ClassArchive:
    """What one process does about the archive: use it, build it, or nothing."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        self.path = folder / f"{key}.jsa"
        self.failed = folder / f"{key}.failed"
        self.temp = folder / f"{key}.{os.getpid()}.tmp"
        self.mode = "use" if self.path.is_file() else "build"
        if self.mode == "build" and self.failed.exists() and time.time() - self.failed.stat().st_mtime < RETRY_FAILED_AFTER_S:
            self.mode = "none"

    @classmethod
    def for_this_process(cls) -> ClassArchive | None:
        """None when turned off (ELT_SPARK_CLASS_ARCHIVE=off) or when there is no java to key it by."""
        if os.environ.get("ELT_SPARK_CLASS_ARCHIVE", "auto").strip().lower() in ("off", "0", "false", "no"):
            return None
        java = _java()
        if java is None:
            return None
        try:
            folder = archive_dir()
            if any(c.isspace() or c in "\"'" for c in str(folder)):  # Spark splits extraJavaOptions on blanks
                raise OSError(f"its folder {str(folder)!r} has a blank or a quote; set ELT_SPARK_CLASS_ARCHIVE_DIR")
            folder.mkdir(parents=True, exist_ok=True)
            return cls(folder, _key(java))
        except OSError as exc:
            log.warning(f"Spark's class-data archive is not used: {exc}", extra={"fields": {"folder": str(archive_dir())}})
            return None

    def java_options(self) -> list[str]:
        crash_log = f"-XX:ErrorFile={self.folder}/hs_err_pid%p.log"  # not the command's working directory
        if self.mode == "use":
            return [f"-XX:SharedArchiveFile={self.path}", *QUIET, crash_log]
        if self.mode == "build":
            self._remove_stale_temps()
            log.info(f"Spark's class-data archive is written at the end of this command, once per machine "
                     f"(up to about 230 MB in {self.folder}); later Spark commands start faster. ELT_SPARK_CLASS_ARCHIVE=off skips it",
                     extra={"fields": {"archive": str(self.path)}})
            # VerifySharedSpaces: the dump records checksums, which the check before the rename verifies
            return [f"-XX:ArchiveClassesAtExit={self.temp}", "-XX:+VerifySharedSpaces", *QUIET]
        return []

    def discard(self, reason: str) -> None:
        """The JVM did not start with this process's archive options: remove the archive it was
        to use (the next command builds it again), or, when building, wait a day before the next
        try. The caller starts the session again without the options."""
        if self.mode == "use":
            log.warning(f"Spark's JVM did not start with the class-data archive {self.path}; removed it and started "
                        f"without it (the next Spark command writes a new one): {reason}",
                        extra={"fields": {"archive": str(self.path)}})
            self.path.unlink(missing_ok=True)
        elif self.mode == "build":
            log.warning(f"Spark's JVM did not start with the options that write a class-data archive; started without "
                        f"them, and the next try is in a day: {reason}", extra={"fields": {"archive": str(self.path)}})
            self._failed(f"the JVM did not start with -XX:ArchiveClassesAtExit: {reason}")
        self.mode = "none"

    def _failed(self, problem: str) -> None:
        try:
            self.temp.unlink(missing_ok=True)
            self.failed.write_text(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {problem}\n")
        except OSError:
            pass

    def finish_at_exit(self, spark: Any) -> None:
        """When building: at the end of this process, stop the session, wait for the JVM to write
        the archive, check it and rename it into place."""
        if self.mode != "build":
            return
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        jvm = spark.sparkContext._jvm
        classpath = str(jvm.java.lang.System.getProperty("java.class.path"))
        java = Path(str(jvm.java.lang.System.getProperty("java.home"))) / "bin" / "java"
        pid = os.getpid()

        def finish() -> None:
            if os.getpid() != pid:  # a forked child inherits atexit handlers; only the builder finishes
                return
            self._finish(spark, gateway, java, classpath)

        atexit.register(finish)

    def _finish(self, spark: Any, gateway: Any, java: Path, classpath: str) -> None:
        started = time.monotonic()
        wait_s = float(os.environ.get("ELT_SPARK_CLASS_ARCHIVE_WAIT_S", "300"))
        try:
            try:
                spark.stop()
            except Exception:  # noqa: BLE001 - already stopped, or the JVM is gone: the wait below tells
                pass
            proc = getattr(gateway, "proc", None)
            if proc is None:
                raise RuntimeError("this process did not start Spark's JVM (an existing gateway was used), so it cannot wait for the archive")
            proc.stdin.close()  # Spark's gateway exits at the end of its input; the JVM writes the archive then
            proc.wait(timeout=wait_s)
            problem = self._check(java, classpath)
        except subprocess.TimeoutExpired:
            problem = f"Spark's JVM had not exited {wait_s:g} s after the command (ELT_SPARK_CLASS_ARCHIVE_WAIT_S)"
        except Exception as exc:  # noqa: BLE001 - never fail a finished command over a cache
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            try:
                os.replace(self.temp, self.path)
                size, elapsed = self.path.stat().st_size / 1e6, time.monotonic() - started
                log.info(f"wrote Spark's class-data archive {self.path} ({size:.0f} MB, {elapsed:.1f} s)",
                         extra={"fields": {"archive": str(self.path), "mb": round(size), "elapsed_s": round(elapsed, 1)}})
                return
            except OSError as exc:
                problem = f"could not rename it into place: {exc}"
        self._failed(problem)
        log.warning(f"Spark's class-data archive was not written: {problem}. Spark commands work without it; "
                    f"the next try is in a day, or at once after removing {self.failed}",
                    extra={"fields": {"archive": str(self.path)}})

    def _check(self, java: Path, classpath: str) -> str | None:
        """None when a bare JVM with the Spark driver's class path maps the archive and its
        checksums match, else what went wrong."""
        if not self.temp.is_file() or self.temp.stat().st_size == 0:
            return "the JVM wrote no archive"
        crash_log = self.folder / f"hs_err_check_{os.getpid()}.log"
        try:
            proc = subprocess.run(
                [str(java), "-Xshare:on", f"-XX:SharedArchiveFile={self.temp}", "-XX:+VerifySharedSpaces", *QUIET,
                 f"-XX:ErrorFile={crash_log}", "-XX:-CreateCoredumpOnCrash", "-cp", classpath, "-version"],
                capture_output=True, text=True, timeout=120)
        finally:
            crash_log.unlink(missing_ok=True)
        if proc.returncode != 0:
            lines = [li for li in (proc.stdout + proc.stderr).splitlines() if li.strip() and not li.startswith("#")]
            return f"the archive did not pass a JVM's check (exit {proc.returncode}: {' '.join(lines[:2])[:200]})"
        return None

    def _remove_stale_temps(self) -> None:
        now = time.time()
        for temp in self.folder.glob("*.tmp"):
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_AFTER_S:
                    temp.unlink()
            except OSError:
                pass
