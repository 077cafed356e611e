"""Runs the pipeline: the ``elt`` command, the demo, and SQLMesh plans and runs.

Thin for now; schedules, retries, run history, freshness and backfills grow here.
"""
