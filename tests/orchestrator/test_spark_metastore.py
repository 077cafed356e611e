"""Local Spark's embedded metastore admits one process at a time: `elt` commands queue for it (the
waiting one says whom it waits for), and a process outside `elt` that holds it (`sqlmesh ui`, a
notebook) makes an `elt` command fail with one line and exit 75, not with Derby's stack traces
(18,476 lines before this test existed).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN

pytestmark = [pytest.mark.slow, pytest.mark.spark]

if shutil.which("java") is None:  # .ci/run installs it; a developer machine may lack it
    pytest.skip("Spark needs Java 17+ (`apt-get install default-jre-headless`)", allow_module_level=True)

from tests.orchestrator.test_spark_gateway import Project  # noqa: E402 - after the skip

# Opens the metastore and keeps it until stdin closes: through `elt`'s session ("elt"), or as a
# tool outside elt would, with its own session on the same settings ("outside").
HOLD = """
import sys
from pathlib import Path
project, how = Path(sys.argv[1]), sys.argv[2]
if how == "elt":
    from sources import logs
    from sources.spark import session
    logs.configure()  # as `elt` does
    spark = session(project)
else:
    import os
    from pyspark.conf import SparkConf
    from pyspark.sql import SparkSession
    from sources.spark import spark_conf
    conf = SparkConf()
    for key, value in spark_conf(project).items():
        conf.set(key, value)
    spark = SparkSession.builder.config(conf=conf).enableHiveSupport().getOrCreate()
spark.sql("SHOW DATABASES").collect()
if how == "elt":  # an existence probe's failure is not logged as an ERROR (pyspark logs every failure)
    for sql in ("DESCRIBE TABLE elt_meta.no_such_table", "DESCRIBE TABLE no_such_schema.t"):
        try:
            spark.sql(sql)
        except Exception as exc:
            print("probe failed as expected:", type(exc).__name__, flush=True)
print("READY", flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, project: Project, how: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "python"), "-c", HOLD, str(project.root), how], cwd=project.root,
            env={**project.env, "ELT_SPARK_CLASS_ARCHIVE": "off", **env}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = ""

    def wait_for(self, text: str, timeout: float) -> bool:
        """Read the holder's output until ``text`` appears (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()  # read unbuffered: a buffered reader could hold lines select() no longer sees
        while text not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.output += chunk.decode(errors="replace")
        return text in self.output

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def test_elt_commands_queue_for_the_metastore_and_an_outside_holder_fails_in_one_line(tmp_path: Path) -> None:
    project = Project(tmp_path, "spark")

    outside = Holder(project, "outside")
    try:
        assert outside.wait_for("READY", 180), outside.output[-3000:]
        proc = project.elt("transform", check=False)
    finally:
        outside.release()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 75, out[-3000:]
    assert f"the local Spark metastore {project.root / 'data' / 'spark' / 'metastore_db'} is open in a process outside elt" in proc.stderr, proc.stderr
    assert "next: stop that process" in proc.stderr
    assert "XSDB6" not in out and "Traceback" not in out
    assert len(out.splitlines()) < 30, out  # the JVM's few start-up lines and ours

    first = Holder(project, "elt")
    second = None
    try:
        assert first.wait_for("READY", 180), first.output[-3000:]
        assert first.output.count("probe failed as expected: AnalysisException") == 2, first.output[-3000:]
        assert "TABLE_OR_VIEW_NOT_FOUND" not in first.output and "SCHEMA_NOT_FOUND" not in first.output, first.output[-3000:]
        # a command that may wait only a second gives up with whom it waited for, before any JVM starts
        busy = project.elt("transform", check=False, ELT_SPARK_METASTORE_WAIT_S="1")
        assert busy.returncode == 75, busy.stdout + busy.stderr
        assert f"stayed in use by PID {first.proc.pid} (" in busy.stderr, busy.stderr
        assert "Using Spark's default log4j profile" not in busy.stdout + busy.stderr

        second = Holder(project, "elt", ELT_SPARK_METASTORE_WAIT_S="300")
        assert second.wait_for("waiting for the local Spark metastore", 60), second.output[-3000:]
        assert f"in use by PID {first.proc.pid} (" in second.output
        time.sleep(3)
        assert second.proc.poll() is None and "READY" not in second.output  # still queued
        first.release()
        assert first.proc.returncode == 0, first.output[-3000:]
        assert second.wait_for("READY", 240), second.output[-3000:]  # it goes on once the first ends
        assert "XSDB6" not in second.output
    finally:
        first.release()
        if second is not None:
            second.release()
    assert second.proc.returncode == 0, second.output[-3000:]
    assert os.path.exists(project.root / "data" / "spark" / "metastore_db.elt-lock")
