"""A table that declares ``held_rows: warn`` has its held rows (no event time, a missing parent)
kept out of staging and the marts exactly as by default, but the transform passes and says so: on
stderr, in the run history, in `elt status` and in the report. A table without it still fails the
transform, and its failure does not list the warned table's rows (docs/runbook.md#rows-without-an-event-time).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from orchestrator.scheduling import worker
from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.settings import Settings
from orchestrator.transform.run import TransformFailed, transform
from sources.config import DECLARATIONS_DIR, load_source
from tests.conftest import BIN, project_env, run
from tests.orchestrator.test_incremental_transform import START, Gateway, Shop
from tests.orchestrator.test_parent_deletions import _daily_loads

pytestmark = pytest.mark.slow


def _declarations(folder: Path, warn: tuple[str, ...]) -> Path:
    """A copy of the project's declarations whose tables in ``warn`` declare held_rows: warn, in both
    sources writing raw_jaffle_shop (files and the app database: declarations of a shared raw table
    must agree)."""
    shutil.copytree(DECLARATIONS_DIR, folder)
    for path in (folder / "jaffle_shop.yaml", folder / "jaffle_app.yaml"):
        text = path.read_text()
        for table in warn:
            text, n = re.subn(rf"(?m)^(  {table}:\n)", r"\g<1>    held_rows: warn\n", text)
            assert n == 1, f"no table {table} in {path}"
        path.write_text(text)
    return folder


def _held_at(settings: Settings) -> dict[str, list[object]]:
    """raw table -> when each of its held batches was first held (elt_meta.held_batches)."""
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        rows = con.execute("SELECT raw_table, held_at FROM elt_meta.held_batches ORDER BY raw_table, batch_id").fetchall()
    out: dict[str, list[object]] = {}
    for table, at in rows:
        out.setdefault(table, []).append(at)
    return out


def _load(settings: Settings, folder: Path) -> None:
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=folder)
    assert not [str(o.error) for o in outcomes if o.error]


def _clean_marts(tmp_path: Path, label: str, shop: Shop) -> dict[str, list[tuple[object, ...]]]:
    """The marts of one clean build of ``shop``'s files (with the same declarations)."""
    gateway = Gateway("duckdb")
    folder = tmp_path / f"{label}-files"
    shop.write(folder)
    kept = os.environ.get("ELT_DUCKDB_PATH")
    try:
        settings = gateway.settings(tmp_path, label)
        _load(settings, folder)
        transform(settings, quiet=True)
        return gateway.marts(settings)
    finally:
        os.environ["ELT_DUCKDB_PATH"] = kept or ""


def test_held_rows_warn_passes_the_transform_and_reports_the_rows_everywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    for key in ("ELT_GATEWAY", "ELT_DUCKDB_PATH"):
        monkeypatch.delenv(key, raising=False)
    declarations = _declarations(tmp_path / "declarations", warn=("orders",))
    monkeypatch.setenv("ELT_DECLARATIONS_DIR", str(declarations))
    assert load_source("jaffle_shop").tables["orders"].held_rows == "warn"
    assert load_source("jaffle_shop").tables["items"].held_rows == "fail"

    gateway = Gateway("duckdb")
    shop = Shop(random.Random(11))
    shop.customers = ["c-00", "c-01"]
    for n in range(12):
        shop.add_order(START + timedelta(days=n % 6))
    settings = gateway.settings(tmp_path, "warn")
    load = _daily_loads(shop, settings, tmp_path)

    load()
    assert not transform(settings, quiet=True).warned

    # an order loses its time: held out as by default, but the transform passes and says so
    lost = sorted(shop.orders.values(), key=lambda o: str(o["ordered_at"]))[0]
    had = lost["ordered_at"]
    lost["ordered_at"] = ""
    caplog.clear()
    load()
    # the load's warning says what the transform will do with it: warn, not fail (an on-call probe)
    said = [r.getMessage() for r in caplog.records if "row(s) have no ordered_at" in r.getMessage()]
    assert len(said) == 1 and "warns naming it (held_rows: warn) until the source fills it" in said[0], said
    summary = transform(settings, quiet=True)
    for needle in ("warning: rows of raw_jaffle_shop.orders were held out of staging", "held_rows: warn",
                   "1 key(s) of raw_jaffle_shop.orders held out of staging.stg_jaffle_shop__orders: their latest "
                   "version has no ordered_at", f"id='{lost['id']}'", "docs/runbook.md#rows-without-an-event-time"):
        assert needle in summary.warned, summary.warned
    assert summary.held == ""  # nothing failing was held
    assert summary.held_counts == [{"table": "raw_jaffle_shop.orders", "rows": 1, "warn": True, "why": "no ordered_at"}]
    served = {r[0] for r in gateway.rows(settings, "SELECT order_id FROM marts.orders")}
    assert lost["id"] not in served
    assert gateway.marts(settings) == _clean_marts(tmp_path, "clean-1", shop)
    first_held = _held_at(settings)
    assert list(first_held) == ["raw_jaffle_shop.orders"], first_held

    # an item of an order that was never loaded: items did not declare warn, so that fails, naming
    # only the item; the orders' warned key is not part of the failure
    shop.items["ghost-i0"] = {"id": "ghost-i0", "order_id": "o-ghost", "sku": "JAF-001"}
    load()
    with pytest.raises(TransformFailed) as failed:
        transform(settings, quiet=True)
    message = str(failed.value)
    assert "whose parent is missing" in message and "ghost-i0" in message, message
    assert "without their event time" not in message and lost["id"] not in message, message
    del shop.items["ghost-i0"]
    load()  # the snapshot without it deletes it from raw's latest version

    # the command line: exit 0, the summary on stdout, the warning on stderr; the scheduled job
    # records the held rows, and `elt status` and the report show them
    env = project_env(settings.project_root, ELT_DECLARATIONS_DIR=str(declarations),
                      ELT_DUCKDB_PATH=str(settings.warehouse))
    proc = run([str(BIN / "elt"), "transform"], cwd=settings.project_root, env=env)
    assert "warning: rows of raw_jaffle_shop.orders" in proc.stderr and "held_rows: warn" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    result, retry = worker.run_transform(settings)
    assert not retry and "error" not in result
    assert json.loads(result["audits_json"])["held"] == summary.held_counts
    run([str(BIN / "elt"), "run-job", "transform"], cwd=settings.project_root, env=env)
    listed = run([str(BIN / "elt"), "sources"], cwd=settings.project_root, env=env).stdout
    assert re.search(r"(?m)^  orders +raw_orders.csv key=id held_rows=warn ", listed), listed
    status = run([str(BIN / "elt"), "status"], cwd=settings.project_root, env=env).stdout
    assert "held out of staging and the marts at transform run" in status, status
    assert "raw_jaffle_shop.orders: 1 row(s), no ordered_at" in status, status
    report = tmp_path / "report.html"
    run([str(BIN / "elt"), "report", "--out", str(report)], cwd=settings.project_root, env=env)
    page = report.read_text()
    assert "held_rows: warn" in page and "raw_jaffle_shop.orders" in page and "no ordered_at" in page

    # held_rows_fail_after: warned while the row has waited less, then it fails as under fail. The wait
    # counts from the first transform that held its batch, kept while the held set changed (the ghost
    # item came and went: the record was rewritten twice)
    assert _held_at(settings) == first_held
    for path in (declarations / "jaffle_shop.yaml", declarations / "jaffle_app.yaml"):
        path.write_text(path.read_text().replace("    held_rows: warn\n", "    held_rows: warn\n    held_rows_fail_after: 7d\n", 1))
    assert load_source("jaffle_shop").tables["orders"].held_rows_fail_after_s == 7 * 86400
    assert transform(settings, quiet=True).warned  # held for seconds: still a warning
    with duckdb.connect(str(settings.warehouse)) as con:  # eight days pass
        con.execute("UPDATE elt_meta.held_batches SET held_at = held_at - INTERVAL 8 DAY")
    with pytest.raises(TransformFailed) as failed:
        transform(settings, quiet=True)
    message = str(failed.value)
    assert "raw_jaffle_shop.orders declares held_rows: warn, but its rows have been held since" in message, message
    assert "longer than held_rows_fail_after (7d) allows: they fail as under held_rows: fail" in message, message
    assert f"id='{lost['id']}'" in message and failed.value.held_counts[0]["warn"] is False, message
    listed = run([str(BIN / "elt"), "sources"], cwd=settings.project_root, env=env).stdout
    assert "held_rows=warn held_rows_fail_after=7d" in listed, listed

    # filled at the source: nothing held, nothing warned, the marts equal a clean build
    lost["ordered_at"] = had
    load()
    summary = transform(settings, quiet=True)
    assert summary.warned == "" and summary.held_counts == []
    assert gateway.marts(settings) == _clean_marts(tmp_path, "clean-2", shop)


def test_declarations_of_one_raw_table_that_disagree_on_held_rows_are_named_in_their_own_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's files and application database both write raw_jaffle_shop.orders: declaring
    held_rows: warn in one of them only stops the transform with both sources and both values."""
    from orchestrator.transform.windows import window_specs
    from sources.errors import ConfigError

    declarations = _declarations(tmp_path / "declarations", warn=("orders",))
    (declarations / "jaffle_app.yaml").write_text(
        (declarations / "jaffle_app.yaml").read_text().replace("    held_rows: warn\n", "", 1))
    monkeypatch.setenv("ELT_DECLARATIONS_DIR", str(declarations))
    with pytest.raises(ConfigError) as refused:
        window_specs()
    message = str(refused.value)
    assert "raw_jaffle_shop.orders is written by sources jaffle_app (primary_key: id, event_time: ordered_at" in message, message
    assert "held_rows: fail) and jaffle_shop (" in message and "held_rows: warn)" in message, message
    assert "WindowSpec" not in message and "warn_held" not in message, message
    # refused at the load too, before it reads anything (found by an on-call probe: loads passed and
    # the first transform with a batch to process stopped, after the batches were in raw)
    from orchestrator.scheduling.loading import load_source_into_warehouse
    from orchestrator.settings import Settings

    for source, theirs in (("jaffle_shop", "jaffle_app"), ("jaffle_app", "jaffle_shop")):
        with pytest.raises(ConfigError) as refused:
            load_source_into_warehouse(source, Settings(project_root=tmp_path, warehouse=tmp_path / "w.duckdb",
                                                        landing_root=tmp_path / "landing", data_dir=tmp_path / "data"))
        message = str(refused.value)
        assert f"raw_jaffle_shop.orders is written by sources {source} (" in message and f") and {theirs} (" in message
        assert "held_rows: warn" in message and "held_rows: fail" in message and "nothing was loaded" in message
        assert not (tmp_path / "landing").exists() and not (tmp_path / "w.duckdb").exists()
