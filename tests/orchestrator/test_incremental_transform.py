"""The transform restates only what changed (a kill at any step: test_transform_kills.py).

Small Jaffle Shop files written by the tests themselves are replayed day by day through the file
source (a snapshot per day: new days, late corrections, late-arriving and deleted orders). After
every transform the intervals SQLMesh evaluated (from its scheduler, via the transform's console)
must lie inside the days the changes touch, computed here independently of the transform; at the
end the marts must equal one clean build of the final files, row for row.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from orchestrator.scheduling.loading import load_source_into_warehouse
from orchestrator.settings import Settings
from orchestrator.transform.run import transform
from tests.conftest import copy_project, project_env

pytestmark = pytest.mark.slow
# the models that number a customer's orders (a window function): they alone restate the customer's later days
NUMBERING = ("marts.orders",)
MARTS = ("customers", "orders", "order_items", "products", "locations", "supplies")
INCREMENTAL = ("staging.stg_jaffle_shop__orders", "staging.stg_jaffle_shop__order_items", "marts.order_items",
               "marts.orders")
START = date(2018, 9, 1)
PRICES = {"JAF-001": 1100, "BEV-001": 500}


@dataclass
class Shop:
    """The source system's current state; ``write`` exports it as jafgen-like CSV snapshots."""

    rng: random.Random
    customers: list[str] = field(default_factory=lambda: [f"c-{i:02d}" for i in range(12)])
    orders: dict[str, dict[str, object]] = field(default_factory=dict)
    items: dict[str, dict[str, str]] = field(default_factory=dict)
    serial: int = 0
    stores: list[dict[str, object]] = field(default_factory=lambda: [
        {"id": "s-1", "name": "Philadelphia", "opened_at": "2016-09-01T00:00:00", "tax_rate": 0.06}])
    products: list[dict[str, object]] = field(default_factory=lambda: [
        {"sku": "JAF-001", "name": "toast", "type": "jaffle", "price": 1100, "description": "d"},
        {"sku": "BEV-001", "name": "tea", "type": "beverage", "price": 500, "description": "d"}])
    supplies: list[dict[str, object]] = field(default_factory=lambda: [
        {"id": "SUP-1", "name": "bread", "cost": 50, "perishable": "True", "sku": "JAF-001"},
        {"id": "SUP-2", "name": "cup", "cost": 10, "perishable": "False", "sku": "BEV-001"}])

    def add_order(self, day: date) -> str:
        self.serial += 1
        oid = f"o-{self.serial:04d}"
        skus = [self.rng.choice(list(PRICES)) for _ in range(self.rng.randint(0, 3))]
        subtotal = sum(PRICES[s] for s in skus)
        tax = subtotal * 6 // 100
        self.orders[oid] = {"id": oid, "customer": self.rng.choice(self.customers),
                            "ordered_at": f"{day.isoformat()}T{self.rng.randint(8, 20):02d}:00:00", "store_id": "s-1",
                            "subtotal": subtotal, "tax_paid": tax, "order_total": subtotal + tax}
        for n, sku in enumerate(skus):
            self.items[f"{oid}-i{n}"] = {"id": f"{oid}-i{n}", "order_id": oid, "sku": sku}
        return oid

    def delete_order(self, oid: str) -> None:
        del self.orders[oid]
        for key in [k for k, v in self.items.items() if v["order_id"] == oid]:
            del self.items[key]

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tables = {
            "customers": (["id", "name"], [{"id": c, "name": f"Name {c}"} for c in self.customers]),
            "orders": (["id", "customer", "ordered_at", "store_id", "subtotal", "tax_paid", "order_total"],
                       list(self.orders.values())),
            "items": (["id", "order_id", "sku"], list(self.items.values())),
            "products": (["sku", "name", "type", "price", "description"], self.products),
            "stores": (["id", "name", "opened_at", "tax_rate"], self.stores),
            "supplies": (["id", "name", "cost", "perishable", "sku"], self.supplies),
            "tweets": (["id", "user_id", "tweeted_at", "content"], []),
        }
        for name, (columns, rows) in tables.items():
            with open(folder / f"raw_{name}.csv", "w", newline="") as fh:
                writer = csv.DictWriter(fh, columns)
                writer.writeheader()
                writer.writerows(rows)


@dataclass
class Gateway:
    """Where one warehouse lives: a DuckDB file, or a PostgreSQL database (raw, models and state)."""

    name: str
    pg_server: object | None = None
    databases: dict[Path, str] = field(default_factory=dict)  # project -> its PostgreSQL database

    def settings(self, tmp_path: Path, label: str) -> Settings:
        settings = self._settings_of(copy_project(tmp_path / label))
        if self.name == "postgres":
            import psycopg2

            db = f"r_{label[:8]}_{os.urandom(3).hex()}"
            admin = psycopg2.connect(self.pg_server.dsn)  # type: ignore[union-attr]
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db}"')
            admin.close()
            self.databases[settings.project_root] = db
            for key, value in self.env(db).items():
                os.environ[key] = value
        return settings

    def copy_of(self, source: Settings, tmp_path: Path, label: str) -> Settings:
        """DuckDB only: a copy of ``source``'s project, data folder and warehouse file, the same state
        at another path (nothing in the warehouse or in landing names the project's folder). A
        PostgreSQL database cannot be copied so: SQLMesh's state names the database (the catalog)."""
        assert self.name == "duckdb"
        project = tmp_path / label
        shutil.copytree(source.project_root, project)
        return self._settings_of(project)

    def _settings_of(self, project: Path) -> Settings:
        """Settings for a project folder whose data lives under its ``data/``; points ELT_DUCKDB_PATH there."""
        settings = Settings(project_root=project, warehouse=project / "data" / "warehouse.duckdb",
                            landing_root=project / "data" / "landing", data_dir=project / "data" / "jaffle-data",
                            gateway=self.name)
        os.environ["ELT_DUCKDB_PATH"] = str(settings.warehouse)
        return settings

    def env(self, db: str) -> dict[str, str]:
        server = self.pg_server
        return {"ELT_GATEWAY": "postgres", "ELT_PG_HOST": server.host, "ELT_PG_PORT": str(server.port),  # type: ignore[union-attr]
                "ELT_PG_USER": server.user, "ELT_PG_DATABASE": db, "ELT_PG_PASSWORD": ""}  # type: ignore[union-attr]

    def rows(self, settings: Settings, sql: str) -> list[tuple[object, ...]]:
        """The rows of ``sql`` in this settings' warehouse (its DuckDB file or its own database)."""
        if self.name == "duckdb":
            con = duckdb.connect(str(settings.warehouse), read_only=True)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
        import psycopg2

        server = self.pg_server
        con = psycopg2.connect(host=server.host, port=server.port, user=server.user,  # type: ignore[union-attr]
                               dbname=self.databases[settings.project_root])
        try:
            with con.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            con.close()

    def marts(self, settings: Settings) -> dict[str, list[tuple[object, ...]]]:
        return {m: sorted(self.rows(settings, f"SELECT * FROM marts.{m}"), key=repr) for m in MARTS}

    def analyses(self, settings: Settings) -> dict[str, int]:
        """PostgreSQL: model (its prod view) -> how many times its physical table was analysed by an
        ANALYZE statement (not by autovacuum)."""
        views = self.rows(settings, "SELECT schemaname || '.' || viewname, definition FROM pg_views "
                                    "WHERE schemaname IN ('staging', 'marts')")
        counts = {f"{s}.{t}": n for s, t, n in self.rows(
            settings, "SELECT schemaname, relname, analyze_count FROM pg_stat_user_tables WHERE schemaname LIKE 'sqlmesh%'")}
        return {view: next(n for table, n in counts.items() if table in str(definition).replace('"', ""))
                for view, definition in views}

    def raw_counts(self, settings: Settings) -> tuple[int, int]:
        sql = "SELECT count(*), count(CASE WHEN _deleted THEN 1 END) FROM raw_jaffle_shop.orders"
        return self.rows(settings, sql)[0]  # type: ignore[return-value]


@pytest.fixture(params=["duckdb", "postgres"])
def gateway(request, monkeypatch):  # type: ignore[no-untyped-def]
    for key in ("ELT_GATEWAY", "ELT_PG_HOST", "ELT_PG_PORT", "ELT_PG_USER", "ELT_PG_DATABASE", "ELT_PG_PASSWORD",
                "ELT_DUCKDB_PATH"):
        monkeypatch.delenv(key, raising=False)
    if request.param == "duckdb":
        yield Gateway("duckdb")
        return
    server = request.getfixturevalue("pg_server")
    gw = Gateway("postgres", server)
    yield gw
    import psycopg2

    admin = psycopg2.connect(server.dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        for db in gw.databases.values():
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    admin.close()


def _settings(tmp_path: Path, name: str) -> Settings:
    return Gateway("duckdb").settings(tmp_path, name)


def _load(settings: Settings, folder: Path) -> None:
    outcomes = load_source_into_warehouse("jaffle_shop", settings, path=folder)
    assert not [str(o.error) for o in outcomes if o.error]


# (gateway, sha256 of the source files) -> the marts of one clean build of those files. Many kill
# tests end with the same final data (only the point killed differs): each distinct data set is
# built once per gateway in a test process, in a project and warehouse of its own.
_CLEAN_BUILDS: dict[tuple[str, str], dict[str, list[tuple[object, ...]]]] = {}


def _clean_build(tmp_path: Path, shop: Shop, gateway: Gateway | None = None) -> dict[str, list[tuple[object, ...]]]:
    gateway = gateway or Gateway("duckdb")
    folder = tmp_path / "clean-files"
    shop.write(folder)
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    key = (gateway.name, digest.hexdigest())
    if key not in _CLEAN_BUILDS:
        settings = gateway.settings(tmp_path, "clean")
        _load(settings, folder)
        transform(settings, quiet=True)
        _CLEAN_BUILDS[key] = gateway.marts(settings)
    return {name: list(rows) for name, rows in _CLEAN_BUILDS[key].items()}


def _touched_days(before: dict[str, dict[str, object]], after: dict[str, dict[str, object]],
                  items_before: dict[str, dict[str, str]], items_after: dict[str, dict[str, str]],
                  seen: list[dict[str, object]]) -> tuple[set[date], set[date]]:
    """Days a change touches, from the source's states (independently of the transform): the days
    of every changed order's old and new version and the days of changed items' orders (every
    model); and, for the models that number a customer's orders (NUMBERING), also the later days
    of the customer of an order that appeared, disappeared, moved or changed customer, in any
    version the source ever had (``seen``)."""
    def day(order: dict[str, object]) -> date:
        return date.fromisoformat(str(order["ordered_at"])[:10])

    touched: set[date] = set()
    shifted: dict[str, date] = {}
    for oid in set(before) | set(after):
        old, new = before.get(oid), after.get(oid)
        if old == new:
            continue
        versions = [o for o in (old, new) if o]
        touched |= {day(o) for o in versions}
        if old is None or new is None or day(old) != day(new) or old["customer"] != new["customer"]:
            for o in versions:
                c = str(o["customer"])
                shifted[c] = min(shifted.get(c, day(o)), day(o))
    for iid in set(items_before) | set(items_after):
        if items_before.get(iid) != items_after.get(iid):
            for it in (items_before.get(iid), items_after.get(iid)):
                if it and it["order_id"] in after:
                    touched.add(day(after[it["order_id"]]))
                if it and it["order_id"] in before:
                    touched.add(day(before[it["order_id"]]))
    later = set(touched)
    for o in list(before.values()) + list(after.values()) + seen:
        if str(o["customer"]) in shifted and day(o) >= shifted[str(o["customer"])]:
            later.add(day(o))
    return touched, later


def test_a_daily_replay_restates_only_touched_days_and_equals_one_clean_build(
        tmp_path: Path, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    # every touched range restated on its own (no joining of near or scattered ranges), so the
    # evaluated days can be held to the touched days exactly; joining is tested below
    monkeypatch.setenv("ELT_RESTATE_JOIN_GAP_DAYS", "0")
    monkeypatch.setenv("ELT_RESTATE_MAX_RANGES", "100000")
    shop = Shop(random.Random(7))
    settings = gateway.settings(tmp_path, "daily")
    folder = tmp_path / "files"
    for d in range(10):  # ten days of history, built once
        for _ in range(shop.rng.randint(2, 5)):
            shop.add_order(START + timedelta(days=d))
    shop.write(folder)
    _load(settings, folder)
    transform(settings, quiet=True)
    if gateway.name == "postgres":  # a build's tables are analysed for the next model's plan (macros/statistics.py)
        analysed = gateway.analyses(settings)
        assert analysed and all(analysed.values()), analysed
    all_days = 10
    windows_seen = []
    later_only: set[date] = set()
    seen = [dict(o) for o in shop.orders.values()]  # every version of every order the source had
    for step in range(15):
        before, items_before = {k: dict(v) for k, v in shop.orders.items()}, dict(shop.items)
        today = START + timedelta(days=all_days)
        all_days += 1
        for _ in range(shop.rng.randint(1, 4)):  # a new day
            shop.add_order(today)
        if step % 3 == 1:  # a late correction: an old order moves to another store customer
            oid = shop.rng.choice(sorted(shop.orders))
            shop.orders[oid]["customer"] = shop.rng.choice(shop.customers)
        if step % 4 == 2:  # a late-arriving order for an old day
            shop.add_order(START + timedelta(days=shop.rng.randint(0, all_days - 3)))
        if step % 5 == 3:  # a deletion at the source
            shop.delete_order(shop.rng.choice(sorted(shop.orders)))
        if step % 6 == 4:  # an order moved to another day
            oid = shop.rng.choice(sorted(shop.orders))
            shop.orders[oid]["ordered_at"] = f"{(START + timedelta(days=shop.rng.randint(0, all_days - 2))).isoformat()}T09:00:00"
        shop.write(folder)
        _load(settings, folder)
        summary = transform(settings, quiet=True)
        own_days, with_later = _touched_days(before, shop.orders, items_before, shop.items, seen)
        seen += [dict(o) for o in shop.orders.values()]
        ran = {(m, s) for m, s, _ in summary.evaluated if m in INCREMENTAL}
        ran_days: dict[str, set[date]] = {}
        for model, start, end in summary.evaluated:
            if model in INCREMENTAL:
                d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
                ran_days.setdefault(model, set()).update(d0 + timedelta(days=i) for i in range((d1 - d0).days))
        assert ran, f"step {step}: nothing was recomputed for {sorted(own_days)}"
        for model, days in ran_days.items():
            expected = with_later if model in NUMBERING else own_days
            assert days <= expected, (f"step {step}: {model} evaluated days outside its changes: "
                                      f"{sorted(days - expected)} (its changes touch {sorted(expected)})")
        assert all(today in ran_days.get(m, set()) for m in ("staging.stg_jaffle_shop__orders", "marts.orders")), \
            f"step {step}: the new day {today} was not processed: {ran_days}"
        later_only |= set().union(*(ran_days.get(m, set()) for m in NUMBERING)) - own_days
        windows_seen.append(len(set().union(*ran_days.values())))
    # the replay did restate a customer's later days (in the numbering models only, asserted above)
    assert later_only, "no step shifted a customer's later orders: the replay tested nothing of sequence_key"
    # raw grew by the changes only: far fewer raw order rows than 15 snapshots would hold
    raw_rows, tombstones = gateway.raw_counts(settings)
    assert tombstones >= 3
    assert raw_rows < 2 * len(shop.orders) + 20
    if gateway.name == "postgres":  # a day's restatement is left to autovacuum
        assert gateway.analyses(settings)["staging.stg_jaffle_shop__orders"] == analysed["staging.stg_jaffle_shop__orders"]
    replayed = gateway.marts(settings)
    assert replayed == _clean_build(tmp_path, shop, gateway)


# the raw tables each time model reads (by query, through other models), for the scattered test
READS = {"staging.stg_jaffle_shop__orders": ("orders",)} | {
    m: ("orders", "items") for m in INCREMENTAL if m != "staging.stg_jaffle_shop__orders"}


@pytest.mark.parametrize("rows_per_range", [None, 11], ids=["default", "large-raw"])
def test_scattered_changes_are_restated_as_joined_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         rows_per_range: int | None) -> None:
    """Corrections on many scattered days cost one model batch, not one per day, unless the
    model's raw tables are large enough that one wide range (which rescans raw) costs more than
    the separate ranges: each time model restates exactly the ranges ``join_ranges`` makes of the
    touched days for its largest raw table, and the marts still equal one clean build. With 11 raw
    rows per range, the orders model (about 100 raw rows) joins its ten ranges, while the models
    that also read items (about 140) keep them separate."""
    from orchestrator.transform import windows

    if rows_per_range:
        monkeypatch.setattr(windows, "ROWS_PER_RANGE", rows_per_range)
    shop = Shop(random.Random(5))
    settings = _settings(tmp_path, "scattered")
    folder = tmp_path / "files"
    for d in range(90):
        shop.add_order(START + timedelta(days=d))
    shop.write(folder)
    _load(settings, folder)
    transform(settings, quiet=True)
    # every 9th day's order is corrected within its day (its hour): no order moves to another day
    # or customer, so the touched days are exactly these ten, eight days apart
    touched = set()
    for oid in sorted(shop.orders)[::9]:
        day = str(shop.orders[oid]["ordered_at"])[:10]
        shop.orders[oid]["ordered_at"] = f"{day}T07:30:00"
        touched.add(date.fromisoformat(day))
    shop.write(folder)
    _load(settings, folder)
    summary = transform(settings, quiet=True)
    separate = windows.Windows(touched).ranges()
    assert len(separate) == 10 > windows.MIN_RANGES
    rows = {t: Gateway("duckdb").rows(settings, f"SELECT count(*) FROM raw_jaffle_shop.{t}")[0][0] for t in ("orders", "items")}
    outcomes = set()
    for model in INCREMENTAL:
        most = windows.max_ranges_for(max(rows[t] for t in READS[model]))
        expected = windows.join_ranges(separate, max_ranges=most)
        ran = sorted((date.fromisoformat(a), date.fromisoformat(b)) for m, a, b in summary.evaluated if m == model)
        assert ran == expected, f"{model}: evaluated {ran}, expected {expected} (at most {most} ranges)"
        assert all(any(a <= day < b for a, b in ran) for day in touched)
        outcomes.add(len(ran))
    # the case shows what it claims: all joined by default; joined and separate with large raw tables
    assert outcomes == ({1} if rows_per_range is None else {1, 10}), outcomes
    assert gateway_marts(settings) == _clean_build(tmp_path, shop)


def gateway_marts(settings: Settings) -> dict[str, list[tuple[object, ...]]]:
    return Gateway("duckdb").marts(settings)


def six_days_loaded(tmp_path: Path, gateway: Gateway, seed: int, *, pending: bool,
                    **extra_env: str) -> tuple[Shop, Settings, Path, dict[str, str]]:
    """Six days of orders loaded into a fresh project on ``gateway``; with ``pending``, built, then a
    new day, a late correction and a deletion loaded (not transformed). Returns the shop, the
    settings, the source folder and the environment for `elt` subprocesses on that project.
    Shared with bench/kill_transform.py."""
    shop = Shop(random.Random(seed))
    settings = gateway.settings(tmp_path, "killed")
    folder = tmp_path / "files"
    pg_env = gateway.env(gateway.databases[settings.project_root]) if gateway.name == "postgres" else {}
    env = project_env(settings.project_root, ELT_DUCKDB_PATH=str(settings.warehouse),
                      ELT_LANDING_ROOT=str(settings.landing_root), **pg_env, **extra_env)
    for d in range(6):
        for _ in range(3):
            shop.add_order(START + timedelta(days=d))
    shop.write(folder)
    _load(settings, folder)
    if pending:
        transform(settings, quiet=True)
        shop.add_order(START + timedelta(days=6))
        shop.orders[sorted(shop.orders)[2]]["customer"] = "c-11"  # a late correction
        shop.delete_order(sorted(shop.orders)[5])
        shop.write(folder)
        _load(settings, folder)
    return shop, settings, folder, env


def more_days_loaded(shop: Shop, settings: Settings, folder: Path) -> None:
    """After a kill: a new day, a late-arriving order and a moved order are loaded."""
    shop.add_order(START + timedelta(days=7))
    shop.add_order(START + timedelta(days=1))  # late-arriving
    shop.orders[sorted(shop.orders)[0]]["ordered_at"] = "2018-09-04T10:00:00"  # moved
    shop.write(folder)
    _load(settings, folder)


def _built(tmp_path: Path, label: str, *, seed: int, days: int) -> tuple[Shop, Settings, Path]:
    """A shop of three orders a day from START, loaded and transformed once: (shop, settings, files)."""
    shop = Shop(random.Random(seed))
    settings = _settings(tmp_path, label)
    folder = tmp_path / "files"
    for d in range(days):
        for _ in range(3):
            shop.add_order(START + timedelta(days=d))
    shop.write(folder)
    _load(settings, folder)
    transform(settings, quiet=True)
    return shop, settings, folder


def test_a_model_change_deployed_with_new_batches_loses_nothing(tmp_path: Path) -> None:
    """New batches arrive together with a metadata-only change (a new snapshot of the same physical
    table) and a breaking change (a new table): neither may hide the batches' days."""
    shop, settings, folder = _built(tmp_path, "changed", seed=5, days=6)
    staging = settings.project_root / "models" / "staging" / "stg_jaffle_shop__orders.sql"
    staging.write_text(staging.read_text().replace("Jaffle Shop orders, one row per order", "Orders, one row per order"))
    mart = settings.project_root / "models" / "marts" / "order_items.sql"
    mart.write_text(mart.read_text().replace("  products.product_name,\n", "  UPPER(products.product_name) AS product_name,\n"))
    shop.add_order(START + timedelta(days=6))
    shop.orders[sorted(shop.orders)[1]]["customer"] = "c-10"
    shop.delete_order(sorted(shop.orders)[4])
    shop.write(folder)
    _load(settings, folder)
    transform(settings, quiet=True)
    clean = _settings(tmp_path, "clean-build")
    for rel in ("models/staging/stg_jaffle_shop__orders.sql", "models/marts/order_items.sql"):
        (clean.project_root / rel).write_text((settings.project_root / rel).read_text())
    clean_folder = tmp_path / "clean-files"
    shop.write(clean_folder)
    _load(clean, clean_folder)
    transform(clean, quiet=True)
    os.environ["ELT_DUCKDB_PATH"] = str(settings.warehouse)
    assert Gateway("duckdb").marts(settings) == Gateway("duckdb").marts(clean)


def test_a_clock_behind_the_state_fails_the_transform_and_loses_nothing(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: SQLMesh orders interval records by the writing machine's clock, so a removal
    stamped before the record it removes is ignored. The transform said it restated the moved order's
    days, evaluated nothing, marked the batch consumed and exited 0; the marts kept the old day for good."""
    from orchestrator.transform.run import TransformFailed
    from sqlmesh.core.state_sync.db import interval

    shop, settings, folder = _built(tmp_path, "clock", seed=3, days=5)
    moved = sorted(shop.orders)[0]
    shop.orders[moved]["ordered_at"] = f"{(START + timedelta(days=3)).isoformat()}T12:00:00"
    shop.write(folder)
    _load(settings, folder)
    with monkeypatch.context() as clock:
        clock.setattr(interval, "now_timestamp", lambda: 0)  # this machine's clock, behind every record in state
        with pytest.raises(TransformFailed, match="its interval records carry a later time") as failed:
            transform(settings, quiet=True)
    text = str(failed.value)
    assert "than this machine's clock (1970-01-01 00:00:00 UTC)" in text and "Nothing was marked consumed" in text
    assert "Nothing was changed by the failed step" not in text, text
    transform(settings, quiet=True)  # the clock is right again: the pending batch is restated now
    assert Gateway("duckdb").marts(settings) == _clean_build(tmp_path, shop)


def test_rows_dated_before_the_models_start_are_named_on_every_transform_until_corrected(tmp_path: Path) -> None:
    """Found by a probe: an order dated 2018-08-31 (or moved there) is in no interval of any model,
    so it was in no mart, while every command succeeded and said nothing. It warns (a start may
    leave older rows out on purpose: failing would stop every transform for good)."""
    shop = Shop(random.Random(5))
    settings = _settings(tmp_path, "early")
    folder = tmp_path / "files"
    for d in range(3):
        shop.add_order(START + timedelta(days=d))
    early = shop.add_order(START - timedelta(days=1))
    shop.write(folder)
    _load(settings, folder)
    for _ in range(2):  # the rest is built, and every transform names the row again
        summary = transform(settings, quiet=True)
        assert "1 key(s) of raw_jaffle_shop.orders held out of staging.stg_jaffle_shop__orders" in summary.warned
        assert "dated before 2018-09-01, the first day the models build" in summary.warned, summary.warned
        assert f"id='{early}'" in summary.warned and "sqlmesh plan --restate-model" in summary.warned
        assert [c["why"] for c in summary.held_counts] == ["ordered_at before 2018-09-01"]
        assert early not in {r[0] for r in Gateway("duckdb").rows(settings, "SELECT order_id FROM marts.orders")}
    shop.orders[early]["ordered_at"] = f"{START.isoformat()}T09:00:00"  # corrected at the source
    shop.write(folder)
    _load(settings, folder)
    assert not transform(settings, quiet=True).warned
    assert Gateway("duckdb").marts(settings) == _clean_build(tmp_path, shop)
