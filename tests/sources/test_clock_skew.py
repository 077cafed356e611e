"""Extraction stamps never go back (decision 0057): the latest version of a key is decided by
``_extracted_at`` first, and ``_extracted_at`` is the loading machine's clock. A load run once with
a clock a day ahead, or a correction loaded with a clock behind, made staging keep the old version
(and every later load land the correction again) until the wall clock passed the skewed stamp.

The clock is moved in-process: ``Landing.open_batch`` receives the clock's time from the pipeline,
and a wrapper shifts it, as a machine with a wrong clock would read it (no libfaketime).
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlglot import parse_one
from sqlmesh.core.macros import MacroEvaluator

import macros.dedupe  # noqa: F401 - registers @latest_row_per_key
from sources.config import load_source
from sources.landing.store import Landing, LocalLanding
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import load_file_source
from tests.sources.test_batch_contract import _rows

SPEC = load_source("jaffle_shop")
# o1 moved from customer c1 to c2 at the source: the correction
CORRECTED = "o1,c2,2018-09-01T09:00:00,s1,1700,102,1802\n"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``clock(offset)``: from now on the loader's clock reads the true time plus ``offset``."""
    original = Landing.open_batch
    skew = {"offset": timedelta(0)}

    def open_batch(self, source, table, schema, extracted_at=None, **kw):  # type: ignore[no-untyped-def]
        return original(self, source, table, schema, (extracted_at or datetime.now(UTC)) + skew["offset"], **kw)

    monkeypatch.setattr(Landing, "open_batch", open_batch)
    return lambda offset: skew.update(offset=offset)


def _load(folder: Path, tmp_path: Path, landing: Landing | None = None, **kw):  # type: ignore[no-untyped-def]
    landing = landing or LocalLanding(tmp_path / "landing")
    with DuckDBRaw(tmp_path / "wh.duckdb") as raw:
        return load_file_source(SPEC, path=folder, landing=landing, raw=raw, lock_dir=tmp_path / "locks", tables=["orders"], **kw)


def _staged(tmp_path: Path) -> dict[str, str]:
    """Each order's customer as staging keeps it: raw deduplicated by the staging macro itself."""
    query = MacroEvaluator(dialect="duckdb").transform(parse_one(
        "SELECT raw.id, raw.customer FROM raw_jaffle_shop.orders AS raw QUALIFY @latest_row_per_key(raw.id)",
        dialect="duckdb")).sql("duckdb")
    return dict(_rows(tmp_path, query))


def _correct(folder: Path) -> None:
    orders = folder / "raw_orders.csv"
    lines = orders.read_text().splitlines(keepends=True)
    orders.write_text("".join([lines[0], CORRECTED, *lines[2:]]))


def _landed_last(tmp_path: Path, batch_id: str, landing: Landing | None = None) -> None:
    """The batch is the newest in landing, for the loader and for `ls <table> | tail -1`."""
    ids = (landing or LocalLanding(tmp_path / "landing")).batch_ids("jaffle_shop", "orders")
    assert ids[-1] == batch_id, ids
    if landing is None:
        assert sorted(p.name for p in (tmp_path / "landing" / "jaffle_shop" / "orders").iterdir())[-1] == batch_id


def test_a_correction_after_a_load_with_the_clock_a_day_ahead_is_the_latest(
        small_jaffle: Path, tmp_path: Path, clock, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """F1: one load with the clock a day ahead, then a correction with the right clock. Before: staging
    kept the old version for a day, and every load landed the correction again (raw held it twice)."""
    clock(timedelta(days=1))
    (ahead,) = _load(small_jaffle, tmp_path)
    assert ahead.status == "loaded" and _staged(tmp_path)["o1"] == "c1"
    skewed = _rows(tmp_path, "SELECT max(extracted_at) FROM elt_meta.loaded_batches")[0][0]

    clock(timedelta(0))
    _correct(small_jaffle)
    before = datetime.now(UTC).replace(tzinfo=None)
    with caplog.at_level(logging.WARNING, logger="sources.landing"):
        (fixed,) = _load(small_jaffle, tmp_path)
    assert fixed.status == "loaded" and fixed.rows_applied == 1, fixed.error
    assert _staged(tmp_path) == {"o1": "c2", "o2": "c1", "o3": "c2", "o4": "c2"}
    (batch,) = fixed.applied
    stamp = _rows(tmp_path, f"SELECT extracted_at FROM elt_meta.loaded_batches WHERE batch_id = '{batch}'")[0][0]
    assert stamp == skewed + timedelta(microseconds=1)  # 1 µs after the newest stamp, not the clock's time
    _landed_last(tmp_path, batch)
    # the clock is named as behind, with the stamp used and what to check
    (warned,) = [r for r in caplog.records if "clock" in r.getMessage()]
    fields = warned.fields  # type: ignore[attr-defined]
    assert (fields["source"], fields["table"]) == ("jaffle_shop", "orders")
    assert datetime.fromisoformat(fields["clock"]).replace(tzinfo=None) >= before
    assert datetime.fromisoformat(fields["stamp"]).replace(tzinfo=None) == stamp
    assert "NTP" in fields["next"] and "elt freshness" in fields["next"]
    assert any("is behind the table's newest extraction stamp" in n for n in fixed.notes), fixed.notes

    # the same file again: unchanged, and raw holds the correction once
    (again,) = _load(small_jaffle, tmp_path)
    assert again.status == "unchanged", again
    assert _rows(tmp_path, "SELECT customer FROM raw_jaffle_shop.orders WHERE id = 'o1' ORDER BY _extracted_at") == [
        ("c1",), ("c2",)]
    assert _staged(tmp_path)["o1"] == "c2"


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_correction_loaded_with_the_clock_behind_is_the_latest(
        small_jaffle: Path, tmp_path: Path, clock, caplog: pytest.LogCaptureFixture, request, where: str) -> None:  # type: ignore[no-untyped-def]
    """F1b: a correction loaded by a machine whose clock is 2 h behind the previous load's, landing
    in a folder or on S3. A load with the clock right is stamped with the clock's time and says nothing."""
    landing = Landing.from_url(f"s3://{request.getfixturevalue('s3_bucket')}/landing") if where == "s3" else None
    started = datetime.now(UTC).replace(tzinfo=None)
    with caplog.at_level(logging.WARNING, logger="sources.landing"):
        (first,) = _load(small_jaffle, tmp_path, landing)
    assert first.status == "loaded" and not first.notes
    assert not [r for r in caplog.records if "clock" in r.getMessage()]
    stamp = _rows(tmp_path, f"SELECT extracted_at FROM elt_meta.loaded_batches WHERE batch_id = '{first.applied[0]}'")[0][0]
    assert started <= stamp <= datetime.now(UTC).replace(tzinfo=None)
    caplog.clear()
    clock(-timedelta(hours=2))
    _correct(small_jaffle)
    with caplog.at_level(logging.WARNING, logger="sources.landing"):
        (behind,) = _load(small_jaffle, tmp_path, landing)
    assert behind.status == "loaded" and behind.rows_applied == 1, behind.error
    assert _staged(tmp_path)["o1"] == "c2"
    _landed_last(tmp_path, behind.applied[0], landing)
    (warned,) = [r for r in caplog.records if "clock" in r.getMessage()]
    assert warned.levelno == logging.WARNING and warned.fields["table"] == "orders"  # type: ignore[attr-defined]
    assert "behind the newest extraction stamp of jaffle_shop.orders" in warned.getMessage()
    (again,) = _load(small_jaffle, tmp_path, landing)
    assert again.status == "unchanged" and _staged(tmp_path)["o1"] == "c2"


def test_the_ledger_keeps_stamps_going_forward_when_landing_lost_the_newest_batch(
        small_jaffle: Path, tmp_path: Path, clock) -> None:  # type: ignore[no-untyped-def]
    """The newest stamp is taken from raw's ledger too: a batch loaded with the clock ahead and then
    lost from landing (a restored backup, a moved landing) still orders what comes after it."""
    (first,) = _load(small_jaffle, tmp_path)
    clock(timedelta(days=365))
    _correct(small_jaffle)
    (ahead,) = _load(small_jaffle, tmp_path)
    shutil.rmtree(tmp_path / "landing" / "jaffle_shop" / "orders" / ahead.applied[0])
    clock(timedelta(0))
    orders = small_jaffle / "raw_orders.csv"  # o1 moves again, to c3
    orders.write_text(orders.read_text().replace(CORRECTED, CORRECTED.replace(",c2,", ",c3,")))
    (after,) = _load(small_jaffle, tmp_path)
    assert after.error is None and len(after.applied) == 1
    assert _staged(tmp_path) == {"o1": "c3", "o2": "c1", "o3": "c2", "o4": "c2"}
    stamps = dict(_rows(tmp_path, "SELECT batch_id, extracted_at FROM elt_meta.loaded_batches"))
    assert stamps[after.applied[0]] == stamps[ahead.applied[0]] + timedelta(microseconds=1)
