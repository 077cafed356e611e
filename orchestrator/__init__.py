"""Runs the pipeline: the ``elt`` command (demo, load, transform, preview, BI role), and the
scheduler around it (jobs, tick/serve, locks, retries, run history, freshness, alerts, backfills,
status report, Airflow hand-over). See docs/decisions/0009-orchestrator.md.
"""
