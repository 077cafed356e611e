"""The local Spark driver's class-data archive (sources/spark_class_archive.py, decision 0028):
the first local Spark process writes it at its end, later ones start with it, a damaged one is
removed and the session starts without it, and ELT_SPARK_CLASS_ARCHIVE=off leaves Java alone.

What the JVM was started with is read from the JVM itself (its input arguments, and the files mapped
into it), not from our code's intentions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from sources.spark_class_archive import ClassArchive, _java
from tests.conftest import BIN, ROOT, project_env, run

# Runs in its own process, as `elt` does: a session, one query, what the JVM was started with.
PROBE = """
import json, sys
from pathlib import Path
from sources import logs
from sources.spark import session
logs.configure(json_lines=True)
spark = session(Path(sys.argv[1]))
jvm = spark.sparkContext._jvm
args = [str(a) for a in jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments()]
pid = jvm.java.lang.ProcessHandle.current().pid()
mapped = sorted({line.split()[-1] for line in open(f"/proc/{pid}/maps") if line.rstrip().endswith(".jsa")})
print(json.dumps({"one": spark.sql("SELECT 1").collect()[0][0], "vm_info": str(jvm.java.lang.System.getProperty("java.vm.info")),
                  "args": [a for a in args if "Archive" in a or "Shared" in a], "mapped": mapped}))
"""


def _probe(tmp_path: Path, **extra: str) -> tuple[dict[str, object], str]:
    env = project_env(ROOT, ELT_GATEWAY="spark", ELT_SPARK_HOME=str(tmp_path / "spark"),
                      ELT_SPARK_CLASS_ARCHIVE_DIR=str(tmp_path / "archive"), **extra)
    proc = run([str(BIN / "python"), "-c", PROBE, str(ROOT)], cwd=tmp_path, env=env, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs Java 17+ (`apt-get install default-jre-headless`)")
def test_the_first_spark_process_writes_the_archive_the_next_uses_it_and_a_damaged_one_is_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    first, log = _probe(tmp_path)
    assert first["one"] == 1 and not [m for m in first["mapped"] if str(folder) in m], first  # type: ignore[union-attr]
    assert any(a.startswith("-XX:ArchiveClassesAtExit=") for a in first["args"]), first  # type: ignore[union-attr]
    archives = list(folder.glob("*.jsa"))
    assert len(archives) == 1 and archives[0].stat().st_size > 10_000_000, sorted(os.listdir(folder))
    assert not list(folder.glob("*.tmp")), "the temporary archive was left behind"
    assert "wrote Spark's class-data archive" in log, log[-3000:]

    second, _ = _probe(tmp_path)
    assert second["one"] == 1
    assert second["args"] == [f"-XX:SharedArchiveFile={archives[0]}"], second
    assert "sharing" in str(second["vm_info"]), second
    assert str(archives[0]) in second["mapped"], second  # the JVM really mapped it (/proc/PID/maps), not only was told to

    # damaged (a copy cut short): Java aborts at start instead of ignoring it; the session starts anyway
    archives[0].chmod(0o644)
    with open(archives[0], "r+b") as fh:
        fh.truncate(archives[0].stat().st_size // 2)
    third, log = _probe(tmp_path)
    assert third["one"] == 1 and third["args"] == [], third
    assert "did not start with the class-data archive" in log and "removed it" in log, log[-3000:]
    assert not archives[0].exists(), "the damaged archive is still in place"
    assert not list(tmp_path.glob("hs_err*")), "Java's crash report landed in the working directory"


def test_off_leaves_java_alone_a_failed_build_waits_a_day_and_a_blank_in_the_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELT_SPARK_CLASS_ARCHIVE_DIR", str(tmp_path))
    monkeypatch.setenv("ELT_SPARK_CLASS_ARCHIVE", "off")
    assert ClassArchive.for_this_process() is None
    monkeypatch.setenv("ELT_SPARK_CLASS_ARCHIVE", "auto")
    if _java() is None:
        pytest.skip("no java")
    archive = ClassArchive.for_this_process()
    assert archive is not None and archive.mode == "build"
    assert any(o.startswith("-XX:ArchiveClassesAtExit=") for o in archive.java_options())
    archive.failed.write_text("2026-12-03T00:00:00Z the disk was full\n")
    again = ClassArchive.for_this_process()
    assert again is not None and again.mode == "none" and again.java_options() == []
    day_ago = time.time() - 25 * 3600
    os.utime(archive.failed, (day_ago, day_ago))
    assert ClassArchive.for_this_process().mode == "build"  # type: ignore[union-attr]
    # a JVM that would not start with the build's options: no archive, and the next try waits a day too
    archive.failed.unlink()
    building = ClassArchive.for_this_process()
    assert building is not None and building.mode == "build"
    building.discard("[JAVA_GATEWAY_EXITED] Java gateway process exited before sending its port number.")
    assert building.mode == "none" and building.java_options() == [] and "JAVA_GATEWAY_EXITED" in building.failed.read_text()
    assert ClassArchive.for_this_process().mode == "none"  # type: ignore[union-attr]
    # Spark splits extraJavaOptions on blanks: a folder with one is not used (a warning says why)
    monkeypatch.setenv("ELT_SPARK_CLASS_ARCHIVE_DIR", str(tmp_path / "with blank"))
    assert ClassArchive.for_this_process() is None


def test_a_file_that_is_not_a_whole_archive_never_gets_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = _java()
    if java is None:
        pytest.skip("no java")
    monkeypatch.setenv("ELT_SPARK_CLASS_ARCHIVE_DIR", str(tmp_path))
    archive = ClassArchive.for_this_process()
    assert archive is not None
    archive.temp.write_bytes(os.urandom(1_000_000))
    problem = archive._check(java, str(tmp_path))
    assert problem and "did not pass a JVM's check" in problem, problem
    assert not list(tmp_path.glob("hs_err*")) and not list(Path.cwd().glob("hs_err_check*"))


def test_a_session_that_fails_after_its_jvm_started_keeps_the_archive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An unreachable master fails after the JVM is up: the archive is not the cause, and removing it
    cost the next command its fast start (found by a walkthrough). Only a JVM that exited before it
    answered (JAVA_GATEWAY_EXITED, what a damaged archive gives) is retried without it."""
    from pyspark.sql import SparkSession

    import sources.spark as spark_module

    discarded: list[str] = []

    class Archive:
        def java_options(self) -> list[str]:
            return ["-XX:SharedArchiveFile=/nowhere.jsa"]

        def discard(self, reason: str) -> None:
            discarded.append(reason)

    starts: list[str] = []

    def get_or_create(self: object) -> object:
        starts.append("start")
        raise RuntimeError(errors.pop(0))

    monkeypatch.setattr(ClassArchive, "for_this_process", classmethod(lambda cls: Archive()))
    monkeypatch.setattr(SparkSession.Builder, "getOrCreate", get_or_create)
    monkeypatch.setattr(spark_module, "_SESSION", None)
    monkeypatch.setenv("ELT_SPARK_HOME", str(tmp_path / "spark"))
    monkeypatch.delenv("ELT_SPARK_REMOTE", raising=False)
    monkeypatch.setenv("ELT_GATEWAY", "spark")  # config.yaml defines the gateway only then

    errors = ["Could not connect to spark://127.0.0.1:7077: Connection refused"]
    with pytest.raises(RuntimeError, match="Connection refused"):
        spark_module.session(ROOT)
    assert discarded == [] and len(starts) == 1

    errors = ["[JAVA_GATEWAY_EXITED] Java gateway process exited before sending its port number.", "second start"]
    with pytest.raises(RuntimeError, match="second start"):
        spark_module.session(ROOT)
    assert len(discarded) == 1 and "JAVA_GATEWAY_EXITED" in discarded[0] and len(starts) == 3


def test_no_java_is_a_config_error_that_says_what_to_install(tmp_path: Path) -> None:
    from tests.conftest import copy_project

    project = copy_project(tmp_path / "project")
    env = project_env(project, ELT_GATEWAY="spark", JAVA_HOME=str(tmp_path / "no-jdk"))
    proc = run([str(BIN / "elt"), "transform"], cwd=project, env=env, check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no Java was found" in proc.stderr and "default-jre-headless" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
