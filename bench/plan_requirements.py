"""Benchmark: what SQLMesh's inference of Python requirements costs a plan
(docs/decisions/0085-no-inferred-python-requirements.md).

    .venv/bin/python bench/plan_requirements.py [--repeat 15]

A copy of the project on an empty DuckDB warehouse; one SQLMesh context; then ``--repeat``
times, each setting in turn (their order alternating from one round to the next), a plan of prod
built (not applied): ``infer_python_dependencies`` true (SQLMesh's default) and false (the
project's). The plan's unit tests are skipped, so the figures are the plan's own work. Reports
the medians in seconds and their difference and ratio; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import copy_project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    from orchestrator.settings import Settings
    from orchestrator.transform.run import make_context

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        project = copy_project(Path(tmp) / "project")
        warehouse = project / "data" / "warehouse.duckdb"
        warehouse.parent.mkdir(parents=True)
        os.environ["ELT_DUCKDB_PATH"] = str(warehouse)
        settings = Settings(project_root=project, warehouse=warehouse, landing_root=project / "data" / "landing",
                            data_dir=project / "data" / "jaffle-data")
        ctx, _ = make_context(settings, quiet=True)
        try:
            runs: dict[bool, list[float]] = {True: [], False: []}
            ctx.plan_builder("prod", skip_tests=True).build()  # warm: imports, caches
            for i in range(args.repeat):
                for infer in ((True, False) if i % 2 == 0 else (False, True)):
                    ctx.config.infer_python_dependencies = infer
                    started = time.perf_counter()
                    plan = ctx.plan_builder("prod", skip_tests=True).build()
                    runs[infer].append(time.perf_counter() - started)
                    if infer:  # what the inference found for the shipped models and macros
                        requirements = plan.context_diff.requirements
        finally:
            ctx.close()
    inferred, not_inferred = statistics.median(runs[True]), statistics.median(runs[False])
    result = {"requirements_inferred": requirements, "plans_per_setting": args.repeat, "plan_inferred_s": round(inferred, 3),
              "plan_not_inferred_s": round(not_inferred, 3), "saved_per_plan_s": round(inferred - not_inferred, 3),
              "not_inferred_over_inferred": round(not_inferred / inferred, 3),
              "inferred_runs_s": [round(x, 3) for x in runs[True]],
              "not_inferred_runs_s": [round(x, 3) for x in runs[False]]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
