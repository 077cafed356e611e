"""Each layer's audits catch a deliberately broken input, stop what depends on it, and say which
model, which audit and which row."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import duckdb
import pytest

from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.transform.run import TransformFailed, transform


def _build(settings, folder: Path):  # type: ignore[no-untyped-def]
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=folder)
    assert not [o.error for o in outcomes if o.error]
    return transform(settings, quiet=True)


def _warehouse(settings):  # type: ignore[no-untyped-def]
    """The test's DuckDB warehouse, read-only, closed at the end of the ``with`` block."""
    return duckdb.connect(str(settings.warehouse), read_only=True)


def _replace_line(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_clean_small_data_passes_every_audit(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    summary = _build(settings, small_jaffle)
    assert summary.audits_run > 40 and summary.audits_passed == summary.audits_run
    with _warehouse(settings) as con:
        assert con.execute("SELECT count(*) FROM marts.orders").fetchone() == (4,)
        assert con.execute("SELECT customer_id, customer_type, count_lifetime_orders FROM marts.customers ORDER BY 1").fetchall() == [
            ("c1", "returning", 2), ("c2", "returning", 2), ("c3", "new", 0)
        ]


@pytest.mark.parametrize(
    ("file", "old", "new", "model", "audit", "row_key", "skipped"),
    [
        # staging: order_total - tax_paid must equal subtotal
        ("raw_orders.csv", "o3,c2,2018-09-03T11:00:00,s2,600,24,624", "o3,c2,2018-09-03T11:00:00,s2,600,24,999",
         "staging.stg_jaffle_shop__orders", "forall", ("order_id", "o3"), "marts.orders"),
        # staging: every item's order exists (checked on raw, where the item is held: items are placed on
        # their order's day, so one without an order never reaches staging; the rest is built)
        ("raw_items.csv", "i5,o3,BEV-002", "i5,o404,BEV-002",
         "staging.stg_jaffle_shop__order_items", "assert_relationship", ("id", "i5"), None),
        # intermediate: a negative supply cost passes staging but not the product roll-up
        ("raw_supplies.csv", "SUP-003,cup,50,False,BEV-001", "SUP-003,cup,-900,False,BEV-001",
         "intermediate.int_supplies_summed_to_products", "forall", ("product_id", "BEV-001"), "marts.order_items"),
        # marts: the items' prices no longer add up to the order's subtotal
        ("raw_products.csv", "BEV-002,chai and mighty,beverage,0,", "BEV-002,chai and mighty,beverage,50,",
         "marts.orders", "forall", ("order_id", "o3"), "marts.customers"),
        # staging: a store without a name (an empty CSV field is '' in raw, which not_null let through)
        ("raw_stores.csv", "s2,Brooklyn,2018-09-02T00:00:00,0.04", "s2,,2018-09-02T00:00:00,0.04",
         "staging.stg_jaffle_shop__locations", "not_blank", ("location_id", "s2"), "marts.locations"),
    ],
    ids=["staging-expression", "staging-relationship", "intermediate", "marts", "staging-blank-text"],
)
def test_a_broken_input_fails_its_layer_and_stops_downstream(  # type: ignore[no-untyped-def]
    settings, small_jaffle: Path, file: str, old: str, new: str, model: str, audit: str, row_key: tuple[str, str], skipped: str
) -> None:
    _replace_line(small_jaffle / file, old, new)
    with pytest.raises(TransformFailed) as err:
        _build(settings, small_jaffle)
    failures = err.value.failures
    assert [(f.model, f.audit) for f in failures] == [(model, audit)]
    key, value = row_key
    assert failures[0].failing_row is not None and failures[0].failing_row[key] == value
    if skipped:
        assert skipped in err.value.skipped
    else:  # held back at its layer: nothing downstream carries it
        with _warehouse(settings) as con:
            assert con.execute(f"SELECT count(*) FROM marts.order_items WHERE order_item_id = '{value}'").fetchone() == (0,)
    message = str(err.value)
    assert f"audit '{audit}' failed on model {model}" in message
    if audit == "forall":  # which rule failed: a model has two `forall` audits (a data-quality probe)
        assert "    checks: criteria := " in message, message
    assert f"{key}={value!r}" in message
    assert "next:" in message
    if skipped:
        assert "docs/runbook.md#failed-audit" in message
        # a first build is a plan: nothing it added is promoted, and the message does not claim otherwise
        assert err.value.step == "plan" and "not promoted: prod keeps its previous version" in message
        schema, name = model.split(".")
        with _warehouse(settings) as con:  # prod had no previous version: the failing model has no view in prod at all
            assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                               [schema, name]).fetchone() == (0,)
    else:  # the run completed: the message must not claim models were skipped, and says how to heal it
        assert "were skipped" not in message and "docs/runbook.md#orphan-rows" in message
        assert "load the missing parent rows" in message


def test_new_extract_restates_and_staging_shows_each_key_once(built_settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    settings = built_settings  # the tiny shop loaded and transformed
    _replace_line(small_jaffle / "raw_customers.csv", "c1,Ann", "c1,Ann Renamed")
    _replace_line(small_jaffle / "raw_orders.csv", "o4,c2,2018-09-04T12:00:00,s2,0,0,0", "o4,c3,2018-09-04T12:00:00,s2,0,0,0")
    summary = _build(settings, small_jaffle)
    assert "staging.stg_jaffle_shop__orders" in summary.restated
    with _warehouse(settings) as con:
        # the snapshot file adds its one change to raw, not a second copy
        assert con.execute("SELECT count(*) FROM raw_jaffle_shop.customers").fetchone() == (4,)
        assert con.execute("SELECT customer_id, customer_name FROM staging.stg_jaffle_shop__customers ORDER BY 1").fetchall() == [
            ("c1", "Ann Renamed"), ("c2", "Bob"), ("c3", "Cyd")
        ]
        assert con.execute("SELECT count(*), count(DISTINCT order_id) FROM staging.stg_jaffle_shop__orders").fetchone() == (4, 4)
        assert con.execute("SELECT customer_id, count_lifetime_orders, customer_type FROM marts.customers ORDER BY 1").fetchall() == [
            ("c1", 2, "returning"), ("c2", 1, "new"), ("c3", 1, "new")
        ]


def test_a_failed_restatement_is_retried_once_the_data_is_fixed(built_settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """`elt load` then `elt transform`, separately: the transform finds the new batches itself."""
    settings = built_settings  # the tiny shop loaded and transformed
    good = "o3,c2,2018-09-03T11:00:00,s2,600,24,624"
    _replace_line(small_jaffle / "raw_orders.csv", good, "o3,c2,2018-09-03T11:00:00,s2,600,24,999")
    with pytest.raises(TransformFailed) as err:
        _build(settings, small_jaffle)
    # a later transform is a run: SQLMesh wrote the staging rows before auditing them, so prod's
    # staging view already shows the failing row, and the message must say so (not "previous data")
    assert err.value.step == "run"
    assert "already serves the failing rows in prod" in str(err.value), str(err.value)
    with _warehouse(settings) as con:
        assert con.execute("SELECT order_total_cents FROM staging.stg_jaffle_shop__orders WHERE order_id = 'o3'"
                           ).fetchone() == (999,)
        assert con.execute("SELECT order_total_cents FROM marts.orders WHERE order_id = 'o3'").fetchone() == (624,)
    with pytest.raises(TransformFailed):  # nothing new loaded: the restatement is retried, and fails again
        transform(settings, quiet=True)
    _replace_line(small_jaffle / "raw_orders.csv", "o3,c2,2018-09-03T11:00:00,s2,600,24,999", good)
    load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle)  # reverted content = a new extract
    summary = transform(settings, quiet=True)
    assert "staging.stg_jaffle_shop__orders" in summary.restated
    assert summary.audits_passed == summary.audits_run
    with _warehouse(settings) as con:
        assert con.execute("SELECT order_total_cents FROM marts.orders WHERE order_id = 'o3'").fetchone() == (624,)
        assert con.execute("SELECT count(DISTINCT _batch_id) FROM raw_jaffle_shop.orders").fetchone() == (3,)
    assert transform(settings, quiet=True).restated == []  # nothing new since: nothing restated


def test_raw_is_restored_from_landing_without_the_source_files(built_settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    settings = built_settings  # the tiny shop loaded and transformed
    con = duckdb.connect(str(settings.warehouse), read_only=True)
    before = con.execute("SELECT * EXCLUDE (_loaded_at) FROM raw_jaffle_shop.orders ORDER BY id").fetchall()
    con.close()
    settings.warehouse.unlink()
    for f in small_jaffle.iterdir():
        f.unlink()
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle, extract=False)
    assert all(o.status == "loaded" and not o.landed for o in outcomes)
    summary = transform(settings, quiet=True)
    assert summary.audits_passed == summary.audits_run
    with _warehouse(settings) as con:
        assert con.execute("SELECT * EXCLUDE (_loaded_at) FROM raw_jaffle_shop.orders ORDER BY id").fetchall() == before
        assert con.execute("SELECT count(*) FROM marts.orders").fetchone() == (4,)


def test_a_warehouse_rebuilt_under_its_old_name_is_not_served_from_sqlmeshs_cache_of_the_old_one(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLMesh keeps each snapshot it reads from state in the project's `.cache`, keyed by model
    and fingerprint, with the table version the state gave it. A model edited without breaking
    its children leaves them on their old versions; a warehouse rebuilt from landing under the
    same file name builds them under new ones. A probe followed the runbook's restore: the marts
    came out right, and every later load reached raw and no mart (the restatement and the run
    used the cached versions, tables nothing reads), every command succeeding."""
    _build(settings, small_jaffle)
    model = settings.project_root / "models" / "staging" / "stg_jaffle_shop__order_items.sql"
    _replace_line(model, "  orders.ordered_at AS ordered_at\n", "  orders.ordered_at AS ordered_at,\n  latest.sku AS sku\n")
    _replace_line(model, "    ordered_at = 'Day the item", "    sku = 'The SKU as the source wrote it.',\n    ordered_at = 'Day the item")
    transform(settings, quiet=True)  # a non-breaking change: the models reading it keep their tables
    assert (settings.project_root / ".cache").is_dir()

    caplog.set_level(logging.INFO, logger="orchestrator.transform.run")
    old_cache = settings.project_root / "old-cache"
    shutil.copytree(settings.project_root / ".cache", old_cache)

    settings.warehouse.rename(settings.warehouse.with_name("warehouse.duckdb.broken"))  # the runbook's restore
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle, extract=False)
    assert all(o.status == "loaded" for o in outcomes)
    transform(settings, quiet=True)
    assert [r.getMessage() for r in caplog.records if "cache" in r.getMessage()] == [
        f"SQLMesh's cache {settings.project_root / '.cache'} holds model versions while this warehouse's state "
        "holds none (a new or rebuilt warehouse): cleared"]
    # the old cache back (from a backup, or written by a bare `sqlmesh plan` that built the new state)
    shutil.rmtree(settings.project_root / ".cache")
    old_cache.rename(settings.project_root / ".cache")
    caplog.clear()
    with open(small_jaffle / "raw_orders.csv", "a") as orders, open(small_jaffle / "raw_items.csv", "a") as items:
        orders.write("o5,c1,2018-09-05T09:00:00,s1,1100,66,1166\n")
        items.write("i6,o5,JAF-001\n")
    summary = _build(settings, small_jaffle)
    assert summary.audits_passed == summary.audits_run
    with _warehouse(settings) as con:
        assert con.execute("SELECT order_id, order_total_cents FROM marts.orders WHERE order_id = 'o5'").fetchall() == [("o5", 1166)]
        assert con.execute("SELECT order_item_id FROM marts.order_items WHERE order_id = 'o5'").fetchall() == [("i6",)]
        assert con.execute("SELECT count_lifetime_orders FROM marts.customers WHERE customer_id = 'c1'").fetchone() == (3,)
    cleared = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(cleared) == 1 and "model version(s) of another state" in cleared[0], cleared
    assert "marts" in cleared[0] and "stg_jaffle_shop__order_items (" not in cleared[0], cleared  # its children's


def test_sqlmesh_cache_is_emptied_in_place_and_a_cache_that_cannot_be_is_named(  # type: ignore[no-untyped-def]
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the container image the service user owns `.cache` but not the project folder, so the
    folder itself cannot be removed (SQLMesh's own clear_caches failed there with a bare
    PermissionError): its contents are. If even they cannot be, the command stops and says how."""
    from types import SimpleNamespace

    from orchestrator.transform import run as run_module
    from sources.errors import ConfigError

    cache = tmp_path / ".cache"
    (cache / "snapshot").mkdir(parents=True)
    (cache / "snapshot" / "entry").write_text("x")
    (cache / "elt-verified-snapshots.json").write_text("{}")
    cleared = []
    ctx = SimpleNamespace(cache_dir=cache, configs={tmp_path: None},
                          _state_sync=SimpleNamespace(clear_cache=lambda: cleared.append(True)))
    run_module._empty_sqlmesh_cache(ctx, "holds model versions of another state")
    assert cache.is_dir() and list(cache.iterdir()) == [] and cleared == [True]

    (cache / "snapshot").mkdir()

    def refused(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(ConfigError) as refusal:
        run_module._empty_sqlmesh_cache(ctx, "holds model versions of another state")
    assert f"SQLMesh's cache {cache} holds model versions of another state, and it could not be emptied" in str(refusal.value)
    assert f"rm -rf {cache}/*" in str(refusal.value)


def test_relationship_audits_return_exactly_the_orphan_rows(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """Both relationship audits, run by SQLMesh on tables where a parent row was removed after the
    build: they return the child rows whose key lost its parent, all of them and only those, and the
    windowed one only inside the window it is given."""
    from orchestrator.transform.run import make_context

    _build(settings, small_jaffle)
    ctx, _ = make_context(settings, quiet=True)
    try:
        adapter, snapshots = ctx.engine_adapter, ctx.snapshots
        table = {name: ctx.get_snapshot(name, raise_if_missing=True).table_name()
                 for name in ("marts.orders", "staging.stg_jaffle_shop__customers")}
        adapter.execute(f"DELETE FROM {table['marts.orders']} WHERE order_id = 'o3'")  # items i4, i5
        adapter.execute(f"DELETE FROM {table['staging.stg_jaffle_shop__customers']} WHERE customer_id = 'c2'")  # o3, o4

        def orphans(model: str, audit: str, column: str, start: str, end: str) -> list[str]:
            results = [r for r in ctx.snapshot_evaluator.audit(
                snapshot=ctx.get_snapshot(model, raise_if_missing=True), start=start, end=end, snapshots=snapshots)
                if r.audit.name == audit and r.audit_args["column"].name == column]
            assert len(results) == 1
            rows = adapter.fetchall(results[0].query) if results[0].count else []
            assert len(rows) == (results[0].count or 0)
            return sorted(row[0] for row in rows)

        in_window = ("marts.orders", "assert_relationship_in_window", "order_id")
        assert orphans(*in_window, "2018-09-03", "2018-09-03") == ["i4", "i5"]
        assert orphans(*in_window, "2018-09-01", "2018-09-01") == []  # o1's items keep their order
        assert orphans("staging.stg_jaffle_shop__orders", "assert_relationship", "customer_id",
                       "2018-09-01", "2018-09-04") == ["o3", "o4"]
        assert orphans("staging.stg_jaffle_shop__orders", "assert_relationship", "location_id",
                       "2018-09-01", "2018-09-04") == []
    finally:
        ctx.close()


def test_a_transform_after_a_first_load_whose_orders_failed_names_the_cause_and_heals_once_they_load(  # type: ignore[no-untyped-def]
        settings, small_jaffle: Path) -> None:
    """A fresh warehouse whose first load of orders failed (a bad value) while its items loaded: raw
    orders does not exist (a raw table two sources declare is made by its first load). The
    transform is what a schedule runs next: it must fail with the cause named, not crash (it crashed
    on the missing parent table while looking for orphan items); once orders load, it builds everything."""
    _replace_line(small_jaffle / "raw_orders.csv", "o3,c2,2018-09-03T11:00:00,s2,600,24,624",
                  "o3,c2,2018-09-03T11:00:00,s2,abc,24,624")
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle)
    assert [o.table for o in outcomes if o.error] == ["orders"]
    with pytest.raises(TransformFailed) as err:
        transform(settings, quiet=True)
    message = str(err.value)
    assert "model failed: staging.stg_jaffle_shop__orders" in message and "orders does not exist" in message, message
    assert "next: a missing raw table means its source was never loaded here" in message, message
    _replace_line(small_jaffle / "raw_orders.csv", "o3,c2,2018-09-03T11:00:00,s2,abc,24,624",
                  "o3,c2,2018-09-03T11:00:00,s2,600,24,624")
    assert not [o.error for o in load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle) if o.error]
    summary = transform(settings, quiet=True)
    assert summary.audits_passed == summary.audits_run
    with _warehouse(settings) as con:
        assert con.execute("SELECT count(*) FROM marts.orders").fetchone() == (4,)
        assert con.execute("SELECT count(*) FROM marts.order_items").fetchone() == (5,)


def test_a_failed_non_blocking_audit_is_not_counted_as_passed(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """Found by a probe: a non-blocking audit failing on 27,712 rows printed SQLMesh's warning, then
    `audits: 6/6 passed`. It stops nothing, and is counted, named and recorded as failed."""
    _replace_line(settings.project_root / "models" / "marts" / "orders.sql", "    unique_key(column := order_id),",
                  "    unique_key(column := order_id),\n    forall_non_blocking(criteria := (customer_order_number < 2)),")
    summary = _build(settings, small_jaffle)  # no exception: nothing was blocked
    with _warehouse(settings) as con:
        assert con.execute("SELECT count(*) FROM marts.orders").fetchone() == (4,)
        second = con.execute("SELECT count(*) FROM marts.orders WHERE customer_order_number >= 2").fetchone()[0]
    assert second == 2
    assert summary.audits_warned == [("marts.orders", "forall_non_blocking", second)]
    assert summary.audits_passed == summary.audits_run - 1, summary.render()
    assert (f"passed on {summary.models_audited} models, 1 failed without blocking: "
            f"forall_non_blocking on marts.orders (2 rows)") in summary.render()


def test_a_failed_run_names_the_other_models_it_wrote(settings, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    """A price read in the wrong unit failed only marts.orders, while marts.products and
    marts.order_items, rewritten by the same run, already served it; the message named the failing
    model alone (a data-quality probe)."""
    _build(settings, small_jaffle)
    _replace_line(small_jaffle / "raw_products.csv", "BEV-002,chai and mighty,beverage,0,",
                  "BEV-002,chai and mighty,beverage,50,")
    with pytest.raises(TransformFailed) as err:
        _build(settings, small_jaffle)
    assert err.value.step == "run" and [f.model for f in err.value.failures] == ["marts.orders"]
    message = str(err.value)
    also = next(line for line in message.splitlines() if "Also written and served by this run" in line)
    assert "marts.order_items" in also and "marts.products" in also and "marts.orders," not in also, message
