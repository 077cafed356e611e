"""A plan does not infer the Python packages the macros import (decision 0085): the packages are
pinned in requirements.lock, and SQLMesh's inference read every installed package's metadata on
every plan."""

from __future__ import annotations

import pytest

from orchestrator.transform.run import make_context


def test_a_plan_reads_no_package_metadata_and_records_no_requirements(  # type: ignore[no-untyped-def]
        settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlmesh.core import context_diff

    calls: list[str] = []
    real = context_diff.metadata.packages_distributions

    def counted():  # type: ignore[no-untyped-def]
        calls.append("packages_distributions")
        return real()

    monkeypatch.setattr(context_diff.metadata, "packages_distributions", counted)
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    ctx, _ = make_context(settings, quiet=True)
    try:
        plan = ctx.plan_builder("prod").build()
    finally:
        ctx.close()
    # the shipped macros import only sqlmesh and sqlglot, which the inference leaves out: it read
    # every installed package's metadata to record nothing
    assert calls == []
    assert plan.context_diff.requirements == {}
