"""An order the source marks deleted (the table's ``soft_delete`` column) leaves staging and the
marts at the next transform, and its customer's later orders are renumbered, exactly as a clean
build of the source without it; unmarked again, it comes back (docs/runbook.md#deleted-rows).
"""

from __future__ import annotations

import copy
import csv
import random
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.transform.run import transform
from sources.config import DECLARATIONS_DIR, load_source
from tests.orchestrator.test_incremental_transform import (  # noqa: F401 (gateway: the fixture)
    START, Gateway, Shop, gateway)
from tests.orchestrator.test_rows_without_event_time import _clean_marts
from tests.orchestrator.test_parent_deletions import _daily_loads

pytestmark = pytest.mark.slow


class MarkingShop(Shop):
    """The shop, whose orders file has a deleted_at column: set on the orders in ``deleted``."""

    deleted: dict[str, str]

    def write(self, folder: Path) -> None:
        super().write(folder)
        path = folder / "raw_orders.csv"
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, [*rows[0].keys(), "deleted_at"] if rows else ["id", "deleted_at"])
            writer.writeheader()
            writer.writerows({**r, "deleted_at": getattr(self, "deleted", {}).get(r["id"], "")} for r in rows)


def test_an_order_marked_deleted_leaves_the_marts_and_comes_back_when_unmarked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gateway: Gateway) -> None:
    declarations = tmp_path / "declarations"
    shutil.copytree(DECLARATIONS_DIR, declarations)
    for path in (declarations / "jaffle_shop.yaml", declarations / "jaffle_app.yaml"):  # both write its raw table
        text, n = re.subn(r"(?m)^(  orders:\n)", r"\g<1>    soft_delete: deleted_at\n", path.read_text())
        text, m = re.subn(r"(?m)^(      order_total: .*\n)", r"\g<1>      deleted_at: timestamp\n", text, count=1)
        assert n == m == 1, path
        path.write_text(text)
    monkeypatch.setenv("ELT_DECLARATIONS_DIR", str(declarations))
    assert load_source("jaffle_shop").tables["orders"].soft_delete == "deleted_at"

    shop = MarkingShop(random.Random(5))
    shop.customers = ["c-00", "c-01"]  # few customers: a deleted order renumbers later ones
    for n in range(14):
        shop.add_order(START + timedelta(days=n % 7))
    # an early order without items (its items would be held as rows of a deleted parent), with a
    # later order of the same customer
    first = sorted(shop.orders.values(), key=lambda o: str(o["ordered_at"]))[0]
    for key in [k for k, v in shop.items.items() if v["order_id"] == first["id"]]:
        del shop.items[key]
    first.update(subtotal=0, tax_paid=0, order_total=0)  # the marts' audit: totals add up to the items
    assert any(o["customer"] == first["customer"] and str(o["ordered_at"]) > str(first["ordered_at"])
               for o in shop.orders.values())
    settings = gateway.settings(tmp_path, "soft")
    load = _daily_loads(shop, settings, tmp_path)

    load()
    transform(settings, quiet=True)
    assert first["id"] in {r[0] for r in gateway.rows(settings, "SELECT order_id FROM marts.orders")}

    shop.deleted = {first["id"]: f"{(START + timedelta(days=9)).isoformat()}T12:00:00"}
    load()
    summary = transform(settings, quiet=True)
    assert "marts.orders" in summary.restated_windows, summary.restated_windows
    assert first["id"] not in {r[0] for r in gateway.rows(settings, "SELECT order_id FROM marts.orders")}
    assert gateway.rows(settings, "SELECT _deleted, customer FROM raw_jaffle_shop.orders WHERE id = "
                                  f"'{first['id']}' ORDER BY _loaded_at DESC LIMIT 1") == [(True, first["customer"])]
    without = copy.deepcopy(shop)
    without.deleted = {}
    del without.orders[first["id"]]
    assert gateway.marts(settings) == _clean_marts(gateway, tmp_path, "clean-1", without)

    shop.deleted = {}  # unmarked at the source
    load()
    transform(settings, quiet=True)
    assert gateway.marts(settings) == _clean_marts(gateway, tmp_path, "clean-2", shop)
