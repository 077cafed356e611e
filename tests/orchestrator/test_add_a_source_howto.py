"""docs/how-to/add-a-source.md followed step by step, as a newcomer would, with the doc's own code
blocks (the declaration and the staging model are read from the page, so it cannot rot): on a
running prod, declare, load, add the staging model, and `elt transform` is green with no
`sqlmesh plan` by hand; later deliveries (a new invoice, a deleted one) reach staging."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, copy_project, duck_rows, project_env, run

pytestmark = pytest.mark.slow
HOWTO = ROOT / "docs" / "how-to" / "add-a-source.md"


def _block(section: str, lang: str) -> str:
    """The first ```lang block after the heading that starts with ``section``."""
    text = HOWTO.read_text()
    start = text.index(f"\n## {section}")
    match = re.search(rf"```{lang}\n(.*?)```", text[start:], re.S)
    assert match, f"no {lang} block in section {section!r} of {HOWTO}"
    return match.group(1)


def test_the_add_a_source_howto_ends_in_a_green_transform(tmp_path: Path, small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")
    declarations = tmp_path / "declarations"
    shutil.copytree(ROOT / "sources" / "declarations", declarations)
    warehouse = project / "data" / "warehouse.duckdb"
    env = project_env(project, ELT_DUCKDB_PATH=str(warehouse), ELT_DECLARATIONS_DIR=str(declarations))
    elt = str(BIN / "elt")
    # prod is running already (the demo's source)
    run([elt, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    run([elt, "transform"], cwd=project, env=env)

    # 1. the files (the page's example)
    billing = project / "data" / "billing"
    billing.mkdir(parents=True)
    csv_text = _block("1.", "")
    (billing / "invoices.csv").write_text(csv_text)
    # 2. the declaration, as on the page
    (declarations / "billing.yaml").write_text(_block("2.", "yaml"))
    # 3. validate
    listed = run([elt, "sources"], cwd=project, env=env)
    assert "raw_billing.invoices" in listed.stdout
    # checked for freshness from the start (the page's example had no `freshness`: never checked, unsaid)
    fresh = subprocess.run([elt, "freshness"], cwd=project, env=env, capture_output=True, text=True)
    assert "raw_billing.invoices: unknown (never loaded, max 26.0h)" in fresh.stdout, fresh.stdout + fresh.stderr
    # 4. the raw tables for SQLMesh
    run([elt, "sources", "--write-external-models"], cwd=project, env=env)
    assert "raw_billing.invoices" in (project / "external_models.yaml").read_text()
    # 5. load
    run([elt, "load", "billing"], cwd=project, env=env)
    # 6. the staging model, as on the page
    new_model = project / "models" / "staging" / "stg_billing__invoices.sql"
    new_model.write_text(_block("6.", "sql"))
    # ... then format the new file and lint, with the page's commands: nothing else of the project changes
    others = {p: p.read_bytes() for folder in ("models", "audits") for p in (project / folder).rglob("*.sql")
              if p != new_model}
    for line in _block("6.", "sh").splitlines():
        command = shlex.split(line.split("#")[0])
        if command:
            assert command[0].startswith(".venv/bin/"), line
            run([str(BIN / command[0].removeprefix(".venv/bin/")), *command[1:]], cwd=project, env=env)
    assert {p: p.read_bytes() for p in others} == others
    # 7. deploy (the page's `elt transform`; no `sqlmesh plan` by hand)
    first = run([elt, "transform"], cwd=project, env=env)
    assert "Cannot restate" not in first.stdout + first.stderr
    assert duck_rows(warehouse, "SELECT invoice_id, CAST(amount AS DOUBLE) FROM staging.stg_billing__invoices ORDER BY 1") == [
        ("inv-001", 12.50), ("inv-002", 4.80)]
    # and again: nothing new, nothing to do, still green
    again = run([elt, "transform"], cwd=project, env=env)
    assert "restated nothing" in again.stdout, again.stdout

    # later deliveries: a new invoice arrives, inv-001 is deleted at the source
    lines = csv_text.strip().splitlines()
    (billing / "invoices.csv").write_text("\n".join([lines[0], lines[2], "inv-003,c-30,2024-03-02T09:00:00,999,open"]) + "\n")
    run([elt, "load", "billing"], cwd=project, env=env)
    later = run([elt, "transform"], cwd=project, env=env)
    assert "stg_billing__invoices (2 day(s): 2024-03-01..2024-03-02)" in later.stdout, later.stdout
    assert duck_rows(warehouse, "SELECT invoice_id FROM staging.stg_billing__invoices ORDER BY 1") == [
        ("inv-002",), ("inv-003",)]

    # a warehouse where billing was never loaded (a fresh clone's demo, a restored or dev warehouse):
    # the transform makes its raw table empty from the declaration and stays green; billing's first
    # load then applies to that table as to one it made itself
    fresh = project / "data" / "fresh.duckdb"
    fresh_env = {**env, "ELT_DUCKDB_PATH": str(fresh), "ELT_LANDING_ROOT": str(project / "data" / "fresh-landing")}
    run([elt, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=fresh_env)
    built = run([elt, "transform"], cwd=project, env=fresh_env)
    assert "created empty raw table raw_billing.invoices" in built.stderr, built.stderr
    assert duck_rows(fresh, "SELECT count(*) FROM staging.stg_billing__invoices") == [(0,)]
    assert duck_rows(fresh, "SELECT count(*) FROM marts.orders") == duck_rows(warehouse, "SELECT count(*) FROM marts.orders")
    run([elt, "load", "billing"], cwd=project, env=fresh_env)
    run([elt, "transform"], cwd=project, env=fresh_env)
    assert duck_rows(fresh, "SELECT invoice_id FROM staging.stg_billing__invoices ORDER BY 1") == [("inv-002",), ("inv-003",)]
