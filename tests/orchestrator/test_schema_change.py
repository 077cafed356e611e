"""A schema change at the source, taken through the runbook's steps (docs/runbook.md#schema-change):
what `elt transform` and `elt load` do when a step is missed (a probe of schema changes found each)."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.transform.run import transform
from sources import external_models
from sources.config import DECLARATIONS_DIR
from sources.errors import ConfigError


def _load(settings, folder: Path, *tables: str) -> list:  # type: ignore[no-untyped-def]
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=folder, tables=list(tables) or None)
    assert not [o.error for o in outcomes if o.error], [o.error for o in outcomes]
    return outcomes


def _tax_rates(settings) -> dict[str, object]:  # type: ignore[no-untyped-def]
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return dict(con.execute("SELECT location_id, tax_rate FROM marts.locations").fetchall())


def test_a_widened_type_is_not_built_until_external_models_yaml_follows_the_declaration(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tax rate with six places: the declaration widened to decimal(12,6) and raw migrated, as the
    runbook says, but external_models.yaml not regenerated. SQLMesh built staging and the marts as
    decimal(9,4) and rounded 0.061255 to 0.0613 with every command green; now the transform stops
    naming the column, and once the file is regenerated the value arrives exact."""
    declarations = tmp_path / "declarations"
    shutil.copytree(DECLARATIONS_DIR, declarations)
    monkeypatch.setenv("ELT_DECLARATIONS_DIR", str(declarations))
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    assert _tax_rates(settings)["s1"] == Decimal("0.0600")

    for name in ("jaffle_shop.yaml", "jaffle_catalog.yaml"):  # both sources of raw_jaffle_shop.stores
        path = declarations / name
        text = path.read_text()
        assert "decimal(9,4)" in text
        path.write_text(text.replace("decimal(9,4)", "decimal(12,6)"))
    with duckdb.connect(str(settings.warehouse)) as con:
        con.execute("ALTER TABLE raw_jaffle_shop.stores ALTER tax_rate SET DATA TYPE DECIMAL(12, 6)")
    stores = small_jaffle / "raw_stores.csv"
    stores.write_text(stores.read_text().replace(",0.06\n", ",0.061255\n"))
    _load(settings, small_jaffle, "stores")

    with pytest.raises(ConfigError) as refused:
        transform(settings, quiet=True)
    assert ("raw_jaffle_shop.stores.tax_rate: DECIMAL(9, 4) in external_models.yaml, DECIMAL(12, 6) declared"
            in str(refused.value)), refused.value
    assert "elt sources --write-external-models" in (refused.value.hint or ""), refused.value.hint
    assert _tax_rates(settings)["s1"] == Decimal("0.0600")  # nothing was built

    (settings.project_root / "external_models.yaml").write_text(external_models.render())
    transform(settings, quiet=True)
    assert _tax_rates(settings)["s1"] == Decimal("0.061255")


def _names(settings) -> dict[str, object]:  # type: ignore[no-untyped-def]
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return dict(con.execute("SELECT customer_id, customer_name FROM marts.customers").fetchall())


def _refused_customers(settings, folder: Path) -> str:  # type: ignore[no-untyped-def]
    """Load raw_customers.csv from ``folder``: it must be refused with nothing landed or applied,
    naming the `--force` command; the refusal's message and hint."""
    (outcome,) = load_source_into_warehouse("jaffle_shop", settings, path=folder, tables=["customers"])
    message = f"{outcome.error}\n{outcome.error.hint}"
    assert "Nothing was landed" in message, message
    assert f"elt load jaffle_shop --table customers --force --path {folder}" in message, message
    assert outcome.landed == [] and outcome.applied == [], outcome
    return message


def test_a_snapshot_file_that_lost_a_declared_column_is_refused_until_forced(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """raw_customers.csv exported without its `name` column: under `evolve` every customer got a new
    version with a NULL name, and marts.customers lost every name, green (a probe). The file is now
    refused, naming the column and the three ways on; `--force` takes it as it is. A column declared
    after the last read, which the file never had, is no loss."""
    _load(settings, small_jaffle)
    transform(settings, quiet=True)
    assert _names(settings) == {"c1": "Ann", "c2": "Bob", "c3": "Cyd"}

    customers = small_jaffle / "raw_customers.csv"
    customers.write_text("id\nc1\nc2\nc3\nc4\n")
    message = _refused_customers(settings, small_jaffle)
    assert "raw_customers.csv lacks the declared column(s) name, which the previous read of the table had" in message, message
    assert "set name to NULL in every row (4)" in message, message
    transform(settings, quiet=True)
    assert _names(settings) == {"c1": "Ann", "c2": "Bob", "c3": "Cyd"}

    (forced,) = load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle, tables=["customers"], force=True)
    assert forced.error is None and len(forced.applied) == 1, forced
    transform(settings, quiet=True)
    assert _names(settings) == {"c1": None, "c2": None, "c3": None, "c4": None}
    # the file keeps lacking it: the latest read lacked it too, nothing is lost again
    customers.write_text("id\nc1\nc2\nc3\nc4\nc5\n")
    (again,) = _load(settings, small_jaffle, "customers")
    assert again.error is None and len(again.applied) == 1, again


def test_a_flag_written_in_another_encoding_fails_its_audit_instead_of_turning_false(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path) -> None:
    """`perishable` exported as 1/0 instead of True/False: staging compared it with 'true' and every
    supply became not perishable, green (a probe). Text other than true or false is NULL now, and
    the not_null audit stops the transform naming the supply."""
    from orchestrator.transform.run import TransformFailed

    supplies = small_jaffle / "raw_supplies.csv"
    supplies.write_text(supplies.read_text().replace("SUP-001,bread,350,True,", "SUP-001,bread,350,1,")
                        .replace("SUP-002,stew,500,True,", "SUP-002,stew,500, TRUE ,"))
    _load(settings, small_jaffle)
    with pytest.raises(TransformFailed) as failed:
        transform(settings, quiet=True)
    message = str(failed.value)
    assert "staging.stg_jaffle_shop__supplies" in message and "not_null" in message, message
    assert "SUP-001" in message and "SUP-002" not in message, message


def test_a_snapshot_file_that_lost_most_of_its_rows_is_refused_until_forced(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """An export that wrote only its header: the snapshot file was applied as the whole table, every
    key became a deletion, and the marts emptied with exit 0 (a probe of values: header-only orders
    and items files). A file that lost more than half of the previous read's rows (and more than
    ten) is now refused as a whole read of a database or an API is, naming both counts and the
    `--force` command; a smaller loss is a delivery like any other."""
    customers = small_jaffle / "raw_customers.csv"
    rows = [f"c{i},Name {i}" for i in range(1, 41)]
    customers.write_text("id,name\n" + "\n".join(rows) + "\n")
    _load(settings, small_jaffle, "customers")

    customers.write_text("id,name\n")
    message = _refused_customers(settings, small_jaffle)
    assert "raw_customers.csv has 0 data rows where the table's previous read had 40" in message, message
    assert "would mark every key it lacks deleted" in message, message

    customers.write_text("id,name\n" + "\n".join(rows[:25]) + "\n")  # 15 of 40 gone: under half
    (fewer,) = _load(settings, small_jaffle, "customers")
    assert len(fewer.applied) == 1, fewer
    customers.write_text("id,name\n")
    (forced,) = load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle, tables=["customers"], force=True)
    assert forced.error is None and len(forced.applied) == 1, forced
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        live = con.execute("SELECT COUNT(*) FROM (SELECT id, _deleted, ROW_NUMBER() OVER (PARTITION BY id ORDER BY "
                           "_extracted_at DESC, _batch_id DESC, _batch_row DESC) AS rn FROM raw_jaffle_shop.customers) "
                           "WHERE rn = 1 AND NOT COALESCE(_deleted, FALSE)").fetchone()[0]
    assert live == 0


def test_a_value_the_staging_cast_cannot_hold_is_named_as_data(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """An order of 10^14 cents passes the contract (a 64-bit integer) but not staging's cast to
    DECIMAL(18, 4): the transform was told its model's SQL was wrong (a probe of values). It now
    names the value as data, with the query that finds its row and the load that replaces it."""
    from orchestrator.transform.run import TransformFailed

    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o9,c1,2018-09-04T09:00:00,s1,0,100000000000000,100000000000000\n")
    _load(settings, small_jaffle)
    with pytest.raises(TransformFailed) as failed:
        transform(settings, quiet=True)
    text = str(failed.value)
    assert "staging.stg_jaffle_shop__orders" in text and "100000000000000" in text, text
    assert "A value in the data does not fit the type a model casts it to" in text, text
    assert "error is in the model's SQL" not in text, text


def test_a_raw_column_description_change_deploys_as_metadata(settings, small_jaffle: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a raw column's description changed (the declaration, then `elt sources
    --write-external-models`): SQLMesh gives the raw tables config.yaml's post-statement
    @analyze_written_table() without the macro, and every `elt transform` ended in `Macro
    'analyze_written_table' does not exist ... external_models.yaml` (an upgrade probe: a pull of
    main that reworded three descriptions stopped the marts for good). It now deploys as a
    metadata change, in a fresh `elt` process as the scheduler runs it, and a bare `sqlmesh plan`
    afterwards has nothing to do."""
    from tests.conftest import BIN, project_env, run

    declarations = tmp_path / "declarations"
    shutil.copytree(DECLARATIONS_DIR, declarations)
    monkeypatch.setenv("ELT_DECLARATIONS_DIR", str(declarations))
    _load(settings, small_jaffle)
    transform(settings, quiet=True)

    path = declarations / "jaffle_shop.yaml"
    text = path.read_text()
    assert "subtotal: {type: integer, description: cents}" in text
    path.write_text(text.replace("subtotal: {type: integer, description: cents}",
                                 'subtotal: {type: integer, description: "cents, before tax"}'))
    (settings.project_root / "external_models.yaml").write_text(external_models.render())
    env = project_env(settings.project_root, ELT_DECLARATIONS_DIR=str(declarations),
                      ELT_DUCKDB_PATH=str(settings.warehouse))
    done = run([str(BIN / "elt"), "transform"], cwd=settings.project_root, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plan applied" in done.stdout + done.stderr, done.stdout + done.stderr
    plan = run([str(BIN / "sqlmesh"), "plan", "--no-prompts"], cwd=settings.project_root, env=env, timeout=300)
    assert "No changes to plan" in plan.stdout, plan.stdout
