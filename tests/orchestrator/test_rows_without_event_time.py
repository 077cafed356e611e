"""A row whose event time is empty is landed (it must not block its table), held out of staging
and the marts as a clean build of the same data holds it out, and fails every transform, naming
its key, until the source fills it; the rest of the data stays current meanwhile
(docs/runbook.md#rows-without-an-event-time).
"""

from __future__ import annotations

import os
import random
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.settings import Settings
from orchestrator.transform.run import TransformFailed, transform
from tests.orchestrator.test_incremental_transform import (  # noqa: F401 (gateway: the fixture)
    START, Gateway, Shop, gateway)
from tests.orchestrator.test_parent_deletions import _fails_naming

pytestmark = pytest.mark.slow


def _load(settings: Settings, folder: Path) -> list[str]:
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=folder)
    assert not [str(o.error) for o in outcomes if o.error]
    return [note for o in outcomes for note in o.notes]


def _clean_marts(gateway: Gateway, tmp_path: Path, label: str, shop: Shop) -> dict[str, list[tuple[object, ...]]]:
    """The marts of one clean build of ``shop``'s files, which fails the same way while a row lacks its time."""
    folder = tmp_path / f"{label}-files"
    shop.write(folder)
    kept = dict(os.environ)  # Gateway.settings points the environment at the new warehouse
    try:
        settings = gateway.settings(tmp_path, label)
        _load(settings, folder)
        try:
            transform(settings, quiet=True)
        except TransformFailed as exc:
            assert "without their event time" in str(exc), exc
        return gateway.marts(settings)
    finally:
        os.environ.clear()
        os.environ.update(kept)


def test_a_row_without_its_event_time_is_held_out_and_fails_the_transform_until_filled(
        tmp_path: Path, gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    shop = Shop(random.Random(7))
    shop.customers = ["c-00", "c-01"]  # few customers: an order that leaves changes its customer's later ranks
    for n in range(16):
        shop.add_order(START + timedelta(days=n % 8))
    settings = gateway.settings(tmp_path, "timeless")
    day = 0

    def load() -> list[str]:
        nonlocal day
        day += 1
        folder = tmp_path / f"day-{day}"
        shop.write(folder)
        return _load(settings, folder)

    load()
    transform(settings, quiet=True)

    # an old order loses its time at the source, its customer has later orders: it leaves staging
    # and the marts (as in a clean build), and so do its rank's effects on the customer's later orders
    first_day = sorted(shop.orders.values(), key=lambda o: str(o["ordered_at"]))
    lost = next(o for o in first_day if any(str(p["ordered_at"]) > str(o["ordered_at"]) and p["customer"] == o["customer"]
                                             for p in shop.orders.values()))
    had = lost["ordered_at"]
    lost["ordered_at"] = ""
    notes = load()
    assert any("1 row(s) without ordered_at" in n for n in notes), notes
    message = _fails_naming(settings, "without their event time", f"id='{lost['id']}'", "data row=",
                            "docs/runbook.md#rows-without-an-event-time", "fill the empty event time at the source",
                            "1 key(s) of raw_jaffle_shop.orders held out of staging.stg_jaffle_shop__orders: their "
                            "latest version has no ordered_at")
    assert "audit" not in message.split("next:")[0], message  # no audit failed: the rows are not there
    assert "parent" not in message.split("next:")[1], message
    # checked again with nothing new: it fails again, restating nothing (the batch was consumed;
    # kept pending, its days were restated on every transform, all of history for a first load)
    caplog.clear()
    _fails_naming(settings, f"id='{lost['id']}'")
    assert not [r.getMessage() for r in caplog.records if r.getMessage().startswith("restating")], caplog.text
    assert gateway.marts(settings) == _clean_marts(gateway, tmp_path, "clean-1", shop)
    assert lost["id"] not in {r[0] for r in gateway.rows(settings, "SELECT order_id FROM marts.orders")}

    # a new day flows meanwhile, with a new order that has no time either; nothing else pending
    # still fails: the held batches are checked again on every transform
    fresh = shop.add_order(START + timedelta(days=9))
    timeless = shop.add_order(START + timedelta(days=9))
    shop.orders[timeless]["ordered_at"] = ""
    dropped = shop.add_order(START + timedelta(days=9))  # without time, then deleted at the source
    shop.orders[dropped]["ordered_at"] = ""
    load()
    _fails_naming(settings, f"id='{lost['id']}'", "3 key(s)")
    _fails_naming(settings, f"id='{lost['id']}'")
    served = {r[0] for r in gateway.rows(settings, "SELECT order_id FROM marts.orders")}
    assert fresh in served and timeless not in served and lost["id"] not in served
    assert gateway.marts(settings) == _clean_marts(gateway, tmp_path, "clean-2", shop)

    shop.delete_order(dropped)  # a deletion releases its key too
    load()
    _fails_naming(settings, f"id='{lost['id']}'", "2 key(s)")
    assert gateway.marts(settings) == _clean_marts(gateway, tmp_path, "clean-2b", shop)

    # filled at the source (the old order on a later day than it had): the next load and transform heal
    lost["ordered_at"] = str(had).replace(str(had)[:10], (START + timedelta(days=6)).isoformat())
    shop.orders[timeless]["ordered_at"] = f"{(START + timedelta(days=9)).isoformat()}T10:00:00"
    load()
    transform(settings, quiet=True)
    assert gateway.marts(settings) == _clean_marts(gateway, tmp_path, "clean-3", shop)
    transform(settings, quiet=True)  # nothing held any more
