"""`elt preview` on the DuckDB gateway: a column whose type changed is reported with both types and
its values are compared too; SQLMesh's `Executing SQL` lines stay out unless `--verbose`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BIN, copy_project, project_env, run

HEAD = "marts.locations: prod 2 rows, dev 2 rows; on location_id: 2 matched"
RETYPED = "tax_rate DECIMAL(9, 4) in prod -> DOUBLE in dev (values compared as numbers to 9 decimal places"


def test_preview_reports_a_type_change_and_counts_changed_values(small_jaffle: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    (tmp_path / "tmp").mkdir()  # the loader's per-source lock lives under TMPDIR
    env = project_env(project, TMPDIR=str(tmp_path / "tmp"))
    elt = str(BIN / "elt")
    run([elt, "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)
    run([elt, "transform"], cwd=project, env=env)

    # the same tax rates (s1 0.06, s2 0.04) as DOUBLE instead of DECIMAL(9,4): a type change, no value change
    model = project / "models" / "marts" / "locations.sql"
    original = model.read_text()
    assert "  locations.tax_rate,\n" in original
    model.write_text(original.replace("  locations.tax_rate,\n", "  CAST(locations.tax_rate AS DOUBLE) AS tax_rate,\n"))
    retyped = run([elt, "preview", "dev"], cwd=project, env=env, timeout=120)
    assert f"{HEAD} (0 changed), 0 only in prod, 0 only in dev" in retyped.stdout, retyped.stdout
    assert f"type changed: {RETYPED}: 100.0% equal)" in retyped.stdout, retyped.stdout
    # the models rebuilt only because they are downstream have the same rows: not counted as differing
    # (the headline said "3 model(s) differ from prod" above their "0 changed")
    head = next(line for line in retyped.stdout.splitlines() if line.startswith("environment dev:"))
    assert "model(s) rebuilt (changed, or downstream of a change); 1 of them differ" in head, retyped.stdout
    assert not head.startswith("environment dev: 1 model(s)"), head  # downstream models were rebuilt too
    assert "Executing SQL" not in retyped.stdout + retyped.stderr, retyped.stderr[:2000]

    # s2's rate moves by 1e-8, which SQLMesh's default 3 decimal places would hide
    model.write_text(original.replace(
        "  locations.tax_rate,\n",
        "  CAST(locations.tax_rate AS DOUBLE) + CASE WHEN locations.location_id = 's2' THEN 0.00000001 ELSE 0 END"
        " AS tax_rate,\n"))
    changed = run([elt, "preview", "dev"], cwd=project, env=env, timeout=120)
    assert f"{HEAD} (1 changed), 0 only in prod, 0 only in dev" in changed.stdout, changed.stdout
    assert f"type changed: {RETYPED}: 50.0% equal)" in changed.stdout, changed.stdout
    assert "Executing SQL" not in changed.stdout + changed.stderr, changed.stderr[:2000]

    # the statements are still there for whoever asks
    verbose = run([elt, "preview", "dev", "--verbose"], cwd=project, env=env, timeout=120)
    assert "Executing SQL" in verbose.stdout + verbose.stderr
    assert f"{HEAD} (1 changed)" in verbose.stdout, verbose.stdout
