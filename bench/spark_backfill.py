"""`elt backfill` on the Spark gateway: this checkout against an earlier commit, in the same run.

    .venv/bin/python bench/spark_backfill.py [--baseline-ref 5387333] [--rounds 2]

Builds the small shop of tests/orchestrator/test_spark_gateway.py with `elt demo` on Spark (local
mode, Java needed), then runs the same backfill of its last week alternately with this checkout's
code and with the baseline commit's (a git worktree put first on PYTHONPATH, so every process of
the backfill runs that code). 5387333 ran the backfill's first steps in two child processes, each
starting its own JVM; later commits run them in the backfill's own process (decision 0012).

Every backfill after the first changes nothing, so the rounds do the same work. Prints one line
per backfill and, last, one JSON object: the seconds of each, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default="5387333", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("java") is None:
        print("error: Spark needs Java 17+ (`apt-get install default-jre-headless`)", file=sys.stderr)
        return 2

    from tests.conftest import BIN
    from tests.orchestrator.test_spark_gateway import WEEK, Project, shop_with_history

    base = Path(tempfile.mkdtemp(prefix="bench-spark-backfill-"))
    baseline = base / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(baseline), args.baseline_ref],
                   check=True, capture_output=True)
    try:
        shop = shop_with_history()
        files = base / "files"
        shop.write(files)
        project = Project(base / "spark", "spark")
        started = time.monotonic()
        project.elt("demo", JAFFLE_DATA_DIR=str(files))
        print(f"demo on Spark: {time.monotonic() - started:.1f} s", flush=True)
        command = [str(BIN / "python"), "-m", "orchestrator.cli", "backfill", "jaffle_shop", "--start",
                   WEEK[0].isoformat(), "--end", WEEK[1].isoformat(), "--path", str(files)]
        seconds: dict[str, list[float]] = {"current": [], "baseline": []}
        for round_ in range(args.rounds):
            for label, code in (("current", ROOT), ("baseline", baseline)):
                started = time.monotonic()
                proc = subprocess.run(command, cwd=project.root, env={**project.env, "PYTHONPATH": str(code)},
                                      capture_output=True, text=True)
                took = time.monotonic() - started
                if proc.returncode != 0:
                    print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
                    return 1
                seconds[label].append(round(took, 1))
                print(f"round {round_ + 1}: {label} {took:.1f} s", flush=True)
        medians = {k: statistics.median(v) for k, v in seconds.items()}
        print(json.dumps({"baseline_ref": args.baseline_ref, "backfill_s": seconds, "current_s": medians["current"],
                          "baseline_s": medians["baseline"],
                          "current_over_baseline": round(medians["current"] / medians["baseline"], 2)}))
        return 0
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
