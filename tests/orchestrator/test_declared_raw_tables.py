"""`elt transform` makes the raw table of a declared, never-loaded source table empty, as the
loader would make it from a first batch, and leaves alone the tables it cannot make unambiguously
(orchestrator/transform/run.py, create_declared_raw_tables)."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import psycopg2

from orchestrator.settings import Settings
from orchestrator.transform.run import create_declared_raw_tables
from sources.config import parse_source
from sources.connections import PostgresSettings
from sources.landing.store import LocalLanding
from sources.load.duckdb_raw import DuckDBRaw
from sources.load.postgres_raw import PostgresRaw
from sources.pipeline import load_file_source

BILLING = {"name": "billing", "kind": "files", "owner": "o", "path": "data/billing",
           "tables": {"invoices": {"file": "invoices.csv", "primary_key": "id",
                                   "columns": {"id": "string", "amount": "decimal(12,2)", "issued_at": "timestamp"}}}}
OTHERS = [
    # strict: its first batch must match exactly, so the loader makes it
    {"name": "ledger", "kind": "files", "owner": "o", "path": "d", "tables": {"entries": {
        "file": "e.csv", "primary_key": "id", "schema_policy": "strict", "columns": {"id": "string"}}}},
    # typed from the source's catalog at read time: no declared columns
    {"name": "app", "kind": "postgres", "owner": "o", "env_prefix": "APP_", "tables": {"accounts": {
        "source_table": "public.accounts", "primary_key": "id"}}},
    # one raw table, two declarations with different columns
    {"name": "crm_a", "kind": "files", "owner": "o", "path": "d", "raw_schema": "raw_crm", "tables": {"people": {
        "file": "p.csv", "primary_key": "id", "columns": {"id": "string"}}}},
    {"name": "crm_b", "kind": "files", "owner": "o", "path": "d", "raw_schema": "raw_crm", "tables": {"people": {
        "file": "p.csv", "primary_key": "id", "columns": {"id": "string", "email": "string"}}}},
]


def _specs():  # type: ignore[no-untyped-def]
    return [parse_source(d) for d in [BILLING, *OTHERS]]


def test_a_declared_table_is_made_as_its_first_batch_would_make_it_and_that_batch_applies(tmp_path: Path) -> None:
    warehouse = tmp_path / "wh.duckdb"
    settings = Settings(project_root=tmp_path, warehouse=warehouse, landing_root=tmp_path / "landing", data_dir=tmp_path)
    assert create_declared_raw_tables(settings, _specs()) == ["raw_billing.invoices"]
    assert create_declared_raw_tables(settings, _specs()) == []  # made once

    # the same declaration loaded into another warehouse by the loader itself
    folder = tmp_path / "billing"
    folder.mkdir()
    (folder / "invoices.csv").write_text("id,amount,issued_at\ni1,12.50,2024-03-01T10:00:00\n")
    loaded = tmp_path / "loaded.duckdb"
    spec = parse_source(BILLING)
    with DuckDBRaw(loaded) as raw:
        load_file_source(spec, path=folder, landing=LocalLanding(tmp_path / "landing-a"), raw=raw, lock_dir=tmp_path)

    def columns(path: Path) -> list[tuple[str, str]]:
        con = duckdb.connect(str(path), read_only=True)
        try:
            return con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                               "'raw_billing' AND table_name = 'invoices' ORDER BY ordinal_position").fetchall()
        finally:
            con.close()

    assert columns(warehouse) == columns(loaded)
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema IN "
                       "('raw_ledger', 'raw_app', 'raw_crm')").fetchone() == (0,)
    con.close()
    with DuckDBRaw(warehouse) as raw:
        (outcome,) = load_file_source(spec, path=folder, landing=LocalLanding(tmp_path / "landing-b"), raw=raw,
                                      lock_dir=tmp_path)
    assert outcome.error is None and outcome.rows_applied == 1 and not outcome.schema_notes


def test_a_column_declared_after_the_table_was_loaded_is_added_before_a_model_reads_it(tmp_path: Path) -> None:
    """A team declares a new column and reads it in staging: the transform must not fail on raw
    lacking it ('Table "raw" does not have a column named "channel"') until a batch holding the
    column arrives, which for a table read by cursor may be never (found by a schema probe)."""
    warehouse = tmp_path / "wh.duckdb"
    settings = Settings(project_root=tmp_path, warehouse=warehouse, landing_root=tmp_path / "landing", data_dir=tmp_path)
    folder = tmp_path / "billing"
    folder.mkdir()
    (folder / "invoices.csv").write_text("id,amount,issued_at\ni1,12.50,2024-03-01T10:00:00\n")
    with DuckDBRaw(warehouse) as raw:
        load_file_source(parse_source(BILLING), path=folder, landing=LocalLanding(tmp_path / "landing"), raw=raw,
                         lock_dir=tmp_path)
    invoices = BILLING["tables"]["invoices"]
    declared = {**BILLING, "tables": {"invoices": {**invoices, "columns": {**invoices["columns"], "channel": "string"}}}}
    assert create_declared_raw_tables(settings, [parse_source(declared)]) == []
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("SELECT id, channel FROM raw_billing.invoices").fetchall() == [("i1", None)]
    con.close()
    (folder / "invoices.csv").write_text("id,amount,issued_at,channel\ni2,1.00,2024-03-02T10:00:00,web\n")
    with DuckDBRaw(warehouse) as raw:
        (outcome,) = load_file_source(parse_source(declared), path=folder, landing=LocalLanding(tmp_path / "landing"),
                                      raw=raw, lock_dir=tmp_path)
        assert raw.add_declared_columns("raw_billing", "invoices", [{"name": "channel", "type": "string"}]) == []
    assert outcome.error is None and outcome.rows_landed == 1 and not outcome.schema_notes, outcome  # nothing to add


def test_on_postgresql_it_never_waits_for_a_load_and_makes_what_a_load_makes(pg_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pg = PostgresSettings(pg_db.host, pg_db.port, pg_db.user, pg_db.dbname)
    holder = psycopg2.connect(host=pg_db.host, port=pg_db.port, user=pg_db.user, dbname=pg_db.dbname)
    holder.autocommit = False
    with holder.cursor() as cur:  # a load applying a batch to raw_billing.invoices holds this lock
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('elt:raw:raw_billing.invoices'))")
    columns = [{"name": c.name, "type": c.type.name} for c in parse_source(BILLING).tables["invoices"].columns]
    with PostgresRaw(pg) as raw:
        answer: list[bool] = []
        attempt = threading.Thread(target=lambda: answer.append(raw.create_declared("raw_billing", "invoices", columns, ["id"])))
        attempt.start()
        attempt.join(timeout=10)
        waited = attempt.is_alive()
        holder.rollback()  # the load ended (and frees an attempt that waited for it)
        attempt.join()
        assert not waited and answer == [False], "create_declared waited for a load's lock"
        assert raw.create_declared("raw_billing", "invoices", columns, ["id"]) is True
        assert raw.create_declared("raw_billing", "invoices", columns, ["id"]) is False
        later = [*columns, {"name": "channel", "type": "string"}]  # declared after the table was made
        assert raw.add_declared_columns("raw_billing", "invoices", later) == ["channel"]
        assert raw.add_declared_columns("raw_billing", "invoices", later) == []
        with raw.con.cursor() as cur:
            cur.execute("SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
                        "WHERE table_schema = 'raw_billing' AND table_name = 'invoices' ORDER BY ordinal_position")
            made = cur.fetchall()
            cur.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'raw_billing' AND tablename = 'invoices'")
            indexes = cur.fetchone()[0]
    holder.close()
    assert [c[0] for c in made[:3]] == ["id", "amount", "issued_at"] and made[-1][:2] == ("channel", "text")
    assert made[1][1:] == ("numeric", 12, 2) and made[2][1] == "timestamp without time zone"
    assert indexes >= 1  # the loader's index on the key, as for a table a load creates


def test_an_unchanged_warehouse_costs_one_read_of_the_catalog_whatever_the_number_of_tables(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each transform asks whether every declared raw table exists and holds its declared columns.
    It asked the catalog twice per table, and in DuckDB each question reads the whole catalog, so
    the cost grew with tables x catalog (1.8 s of a 10.7 s transform at 200 tables, a probe).
    Once the tables exist, one read of the catalog answers for all of them."""
    many = [{"name": f"shop{n}", "kind": "files", "owner": "o", "path": "d", "tables": {
        f"t{k}": {"file": f"t{k}.csv", "primary_key": "id", "columns": {"id": "string", "v": "integer"}}
        for k in range(10)}} for n in range(4)]
    specs = [parse_source(d) for d in many]
    settings = Settings(project_root=tmp_path, warehouse=tmp_path / "wh.duckdb", landing_root=tmp_path / "landing",
                        data_dir=tmp_path)
    assert len(create_declared_raw_tables(settings, specs)) == 40
    calls: list[str] = []
    for name in ("column_names", "create_declared", "add_declared_columns"):
        real = getattr(DuckDBRaw, name)

        def counted(self, *args, _real=real, _name=name):  # type: ignore[no-untyped-def]
            calls.append(_name)
            return _real(self, *args)
        monkeypatch.setattr(DuckDBRaw, name, counted)
    assert create_declared_raw_tables(settings, specs) == []
    assert calls == ["column_names"], calls
    # a column declared later is still added, to that table only
    many[2]["tables"]["t3"]["columns"]["note"] = "string"
    calls.clear()
    assert create_declared_raw_tables(settings, [parse_source(d) for d in many]) == []
    assert calls == ["column_names", "add_declared_columns"], calls
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE "
                                          "table_schema = 'raw_shop2' AND table_name = 't3'").fetchall()][-1] == "note"
    finally:
        con.close()


def test_the_transform_summary_says_the_outcome_first_and_names_a_bounded_number_of_models() -> None:
    """At 200 tables the summary was one 29,000-character line naming every restated model, with
    the audits' result at its very end (a probe)."""
    from orchestrator.transform.run import SHOWN_RESTATED, TransformSummary

    summary = TransformSummary("prod", True, [], 45, 45, 14, 3.2, run_status="success")
    summary.restated_windows = {f"staging.stg_shop__t{n:03d}s": "1 day(s): 2024-01-01" for n in range(200)}
    line = summary.render()
    assert line.startswith("environment prod: plan applied, run success, 0 interval(s) evaluated; "
                           "audits: 45/45 passed on 14 models (3.2s); restated staging.stg_shop__t000s"), line
    assert line.count("staging.stg_shop__") == SHOWN_RESTATED and f"and {200 - SHOWN_RESTATED} more model(s)" in line
    assert len(line) < 1500, len(line)
    summary.restated_windows = {}
    assert summary.render().endswith("(3.2s); restated nothing")
