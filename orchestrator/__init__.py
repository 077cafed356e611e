"""Runs the pipeline: the ``elt`` command (demo, load, transform, preview, BI role), and the
scheduler around it (jobs, tick/serve, locks, retries, run history, freshness, alerts, backfills,
status report, Airflow hand-over). See docs/decisions/0009-orchestrator.md.
"""

import os

# SQLMesh loads a project in a pool of forked worker processes unless MAX_FORK_WORKERS is 1. A kill
# (a timeout, the OOM killer, a deploy) that lands while they live leaves them orphaned for good,
# holding copies of everything the process had open: the transform's lock and its output pipes.
# Every later transform then waited an hour for that lock. At this project's size loading in the
# process itself costs nothing measurable (decision 0024); a value set by the user wins, and the
# locks stay safe then too (sources/forks.py).
os.environ.setdefault("MAX_FORK_WORKERS", "1")
