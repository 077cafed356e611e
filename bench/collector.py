"""Benchmark: `elt transform` with Python's default garbage collector thresholds against the
project's (``ELT_GC_TUNING=0`` against the default; docs/decisions/0083-garbage-collector.md).

    .venv/bin/python bench/collector.py [--years 1] [--repeat 3]

jafgen data (cached as bench/transform.py caches it), loaded once into a DuckDB warehouse; then,
``--repeat`` times, each setting in turn (their order alternating from one round to the next):

- full: the first `elt transform` of the loaded warehouse (plan and build of every model);
- new_day: one more day of orders loaded, then `elt transform` (the scheduled run);
- small: a first build and three later transforms of the tests' tiny shop (3 customers), in one
  process: what the SQLMesh work costs when the data costs nothing; ``small_gc_share_*`` is the
  share of that process's CPU time spent in the collector (timed by ``gc.callbacks``), which this
  machine's drifting speed moves far less than the seconds.

Figures are medians of the runs (``*_runs_s`` lists them): seconds of wall time, and ``*_cpu_*``
the CPU seconds (user and system) of the command and its children, steadier than wall time on a
noisy machine; ``*_tuned_over_default`` is the ratio of the medians (below 1: the tuning is faster).
Peak memory is each command's max RSS. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.transform import BIN, append_day, copied, jafgen, timed  # noqa: E402

SMALL = """
import gc, os, sys, time
from pathlib import Path
in_gc, started = [0.0], [0.0]
def watch(phase, info):
    if phase == "start":
        started[0] = time.process_time()
    else:
        in_gc[0] += time.process_time() - started[0]
gc.callbacks.append(watch)
cpu0 = time.process_time()
sys.path.insert(0, {root!r})
from tests.conftest import SMALL_JAFFLE, copy_project
from orchestrator.settings import Settings
from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.transform.run import transform
project = copy_project(Path({folder!r}) / "project")
data = Path({folder!r}) / "data"
data.mkdir()
for name, text in SMALL_JAFFLE.items():
    (data / name).write_text(text)
warehouse = project / "data" / "warehouse.duckdb"
os.environ["ELT_DUCKDB_PATH"] = str(warehouse)
settings = Settings(project_root=project, warehouse=warehouse, landing_root=project / "data" / "landing", data_dir=data)
load_source_into_warehouse("jaffle_shop", settings, path=data)
transform(settings, quiet=True)
orders = data / "raw_orders.csv"
for day in range(3):
    orders.write_text(orders.read_text() + f"o{{10 + day}},c2,2018-09-0{{2 + day}}T09:00:00,s2,0,0,0\\n")
    load_source_into_warehouse("jaffle_shop", settings, path=data)
    transform(settings, quiet=True)
Path(sys.argv[1]).write_text(str(round(in_gc[0] / (time.process_time() - cpu0), 3)))
"""

SETTINGS = {"default": "0", "tuned": "1"}
WHAT = ("full", "new_day", "small")


def cpu_timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds (user and system, the command and its children), peak MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, peak = timed(cmd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, round(cpu, 2), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--years", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    src = jafgen(args.years)
    work = Path(tempfile.mkdtemp(prefix="elt-bench-gc-"))
    runs: dict[str, dict[str, list[float]]] = {k: {f"{w}{u}": [] for w in WHAT for u in ("", "_cpu")}
                                              for k in SETTINGS}
    for name in SETTINGS:
        runs[name]["small_gc_share"] = []
    peaks: dict[str, float] = {}
    try:
        data, next_day = work / "jaffle-data", work / "jaffle-data-next"
        shutil.copytree(src, data)
        shutil.copytree(src, next_day)
        append_day(next_day)
        wh = work / "warehouse.duckdb"
        base = {**os.environ, "ELT_DUCKDB_PATH": str(wh), "ELT_LANDING_ROOT": str(work / "landing"),
                "ELT_JSON_LOGS": "1"}
        elt = str(BIN / "elt")
        timed([elt, "load", "jaffle_shop", "--path", str(data)], base)
        loaded, landing = work / "loaded.duckdb", work / "landing-loaded"
        shutil.copy(wh, loaded)
        shutil.copytree(work / "landing", landing)
        for i in range(args.repeat):
            for name in (list(SETTINGS) if i % 2 == 0 else list(reversed(SETTINGS))):
                env = {**base, "ELT_GC_TUNING": SETTINGS[name]}
                copied(loaded, wh)
                shutil.rmtree(work / "landing")
                shutil.copytree(landing, work / "landing")
                seconds, cpu, peak = cpu_timed([elt, "transform"], env)
                runs[name]["full"].append(seconds)
                runs[name]["full_cpu"].append(cpu)
                peaks[f"{name}_full_peak_mb"] = max(peaks.get(f"{name}_full_peak_mb", 0), peak)
                timed([elt, "load", "jaffle_shop", "--path", str(next_day)], env)
                seconds, cpu, peak = cpu_timed([elt, "transform"], env)
                runs[name]["new_day"].append(seconds)
                runs[name]["new_day_cpu"].append(cpu)
                peaks[f"{name}_new_day_peak_mb"] = max(peaks.get(f"{name}_new_day_peak_mb", 0), peak)
                small = work / f"small-{name}-{i}"
                small.mkdir()
                script = SMALL.format(root=str(ROOT), folder=str(small))
                seconds, cpu, peak = cpu_timed([sys.executable, "-c", script, str(small / "gc-share")], env)
                runs[name]["small_gc_share"].append(float((small / "gc-share").read_text()))
                runs[name]["small"].append(seconds)
                runs[name]["small_cpu"].append(cpu)
                peaks[f"{name}_small_peak_mb"] = max(peaks.get(f"{name}_small_peak_mb", 0), peak)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, object] = {"years": args.years, "repeat": args.repeat}
    for what in (f"{w}{u}" for w in WHAT for u in ("", "_cpu")):
        medians = {name: statistics.median(runs[name][what]) for name in SETTINGS}
        for name in SETTINGS:
            result[f"{what}_{name}_s"] = round(medians[name], 2)
            result[f"{what}_{name}_runs_s"] = runs[name][what]
        result[f"{what}_tuned_over_default"] = round(medians["tuned"] / medians["default"], 3)
    for name in SETTINGS:  # the share of the small runs' CPU time spent in the collector
        result[f"small_gc_share_{name}"] = statistics.median(runs[name]["small_gc_share"])
        result[f"small_gc_share_{name}_runs"] = runs[name]["small_gc_share"]
    result.update(peaks)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
