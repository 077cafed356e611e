"""The SQLMesh unit tests (tests/models/test_*.yaml) pass; each can fail, as SQLMesh compares
every output row with the expected one."""

from __future__ import annotations

from sqlmesh import Context

from tests.conftest import copy_project


def test_sqlmesh_unit_tests_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = copy_project(tmp_path / "project")
    ctx = Context(paths=str(project))
    result = ctx.test()
    assert result.testsRun >= 8
    assert result.wasSuccessful(), [str(e) for e in result.failures + result.errors]
