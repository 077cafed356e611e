"""`elt sources --write-staging SOURCE` writes a first draft of each new table's staging model
(sources/staging_models.py): a probe of 200 tables found step 6 of the add-a-source how-to (about
60 lines per table by hand) the only part that did not scale. The drafts must build, pass their
audits, follow the latest version of each key (changes and deletions at the source) and restate
only the days a change touches; they are never written over a file that exists."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, copy_project, duck_rows, project_env, run

pytestmark = pytest.mark.slow

DECLARATION = """name: billing
kind: files
path: data/billing
owner: billing-team@example.com
tables:
  invoices:
    file: invoices.csv
    primary_key: id
    event_time: issued_at
    columns:
      id: string
      order: {type: string, description: "The customer's order (a reserved word as a column name)."}
      amount: integer
      issued_at: timestamp
  lines:
    file: lines.csv
    primary_key: [invoice_id, line]
    columns:
      invoice_id: string
      line: integer
      cents: integer
"""


def test_drafts_of_a_new_source_build_audit_and_follow_changes(tmp_path: Path, small_jaffle: Path) -> None:
    project = copy_project(tmp_path / "project")
    declarations = tmp_path / "declarations"
    shutil.copytree(ROOT / "sources" / "declarations", declarations)
    (declarations / "billing.yaml").write_text(DECLARATION)
    warehouse = project / "data" / "warehouse.duckdb"
    env = project_env(project, ELT_DUCKDB_PATH=str(warehouse), ELT_DECLARATIONS_DIR=str(declarations))
    elt = str(BIN / "elt")
    billing = project / "data" / "billing"
    billing.mkdir(parents=True)
    (billing / "invoices.csv").write_text("id,order,amount,issued_at\ni1,o1,100,2024-03-01T10:00:00\n"
                                          "i2,o2,200,2024-03-01T11:00:00\ni3,o3,300,2024-03-05T09:00:00\n")
    (billing / "lines.csv").write_text("invoice_id,line,cents\ni1,1,60\ni1,2,40\ni2,1,200\n")
    run([elt, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    run([elt, "load", "billing"], cwd=project, env=env)
    run([elt, "sources", "--write-external-models"], cwd=project, env=env)

    kept = project / "models" / "staging" / "stg_billing__lines.sql"
    written = run([elt, "sources", "--write-staging", "billing"], cwd=project, env=env)
    assert "models/staging/stg_billing__invoices.sql: written" in written.stdout, written.stdout
    assert "models/staging/stg_billing__lines.sql: written" in written.stdout, written.stdout
    draft = kept.read_text()
    again = run([elt, "sources", "--write-staging", "billing"], cwd=project, env=env)
    assert again.stdout.count("kept: the file exists") == 2 and kept.read_text() == draft, again.stdout

    first = run([elt, "transform"], cwd=project, env=env)
    assert "audits:" in first.stdout and "failed" not in first.stdout.split("audits:")[1].split(";")[0], first.stdout
    assert duck_rows(warehouse, 'SELECT id, "order", amount FROM staging.stg_billing__invoices ORDER BY 1') == [
        ("i1", "o1", 100), ("i2", "o2", 200), ("i3", "o3", 300)]
    assert duck_rows(warehouse, "SELECT count(*) FROM staging.stg_billing__lines") == [(3,)]

    # the source changes: i1's amount is corrected, i2 is deleted (a snapshot without it), a line goes
    (billing / "invoices.csv").write_text("id,order,amount,issued_at\ni1,o1,150,2024-03-01T10:00:00\n"
                                          "i3,o3,300,2024-03-05T09:00:00\n")
    (billing / "lines.csv").write_text("invoice_id,line,cents\ni1,1,60\ni1,2,90\n")
    run([elt, "load", "billing"], cwd=project, env=env)
    later = run([elt, "transform"], cwd=project, env=env)
    assert "stg_billing__invoices (1 day(s): 2024-03-01)" in later.stdout, later.stdout  # only the touched day
    assert duck_rows(warehouse, "SELECT id, amount FROM staging.stg_billing__invoices ORDER BY 1") == [
        ("i1", 150), ("i3", 300)]
    assert duck_rows(warehouse, "SELECT invoice_id, line, cents FROM staging.stg_billing__lines ORDER BY 1, 2") == [
        ("i1", 1, 60), ("i1", 2, 90)]
