"""The same pipeline on Apache Spark (local mode, started by the commands themselves): the demo,
every model equal to DuckDB's row for row, a late correction restating one week only, and a load
killed between landing and raw healed without duplicates.

Spark runs only in `elt` subprocesses: a JVM keeps its first session's settings (metastore,
warehouse folder) for life, and local mode's embedded metastore admits one process at a time.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from tests.conftest import BIN, copy_project, project_env, run
from tests.orchestrator.test_incremental_transform import PRICES, START, Shop

pytestmark = [pytest.mark.slow, pytest.mark.spark]

if shutil.which("java") is None:  # .ci/run installs it; a developer machine may lack it
    pytest.skip("Spark needs Java 17+ (`apt-get install default-jre-headless`)", allow_module_level=True)

MODELS = (
    "staging.stg_jaffle_shop__customers", "staging.stg_jaffle_shop__locations", "staging.stg_jaffle_shop__orders",
    "staging.stg_jaffle_shop__order_items", "staging.stg_jaffle_shop__products", "staging.stg_jaffle_shop__supplies",
    "staging.stg_jaffle_shop__tweets", "intermediate.int_supplies_summed_to_products", "marts.customers",
    "marts.locations", "marts.orders", "marts.order_items", "marts.products", "marts.supplies",
)
DAYS = 14
WEEK = (START + timedelta(days=DAYS - 7), START + timedelta(days=DAYS - 1))  # the corrected (last) week, ends included

# Runs in a Spark subprocess: each named table to Parquet, for DuckDB to compare.
EXPORT = """
import json, sys
from pathlib import Path
from sources.spark import session
project, folder, names = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
spark = session(project)
for name in names:
    spark.table(name).coalesce(1).write.mode("overwrite").parquet(f"{folder}/{name}")
"""


class Project:
    """A copy of the project with its own data folders; ``gateway`` is duckdb or spark."""

    def __init__(self, root: Path, gateway: str) -> None:
        self.root = copy_project(root)
        self.gateway = gateway
        data = root / "data"
        self.env = project_env(self.root, ELT_GATEWAY=gateway, ELT_DUCKDB_PATH=str(data / "warehouse.duckdb"),
                               ELT_LANDING_ROOT=str(data / "landing"), ELT_SPARK_HOME=str(data / "spark"),
                               ELT_SPARK_DRIVER_MEMORY="1g", ELT_JSON_LOGS="1")

    def elt(self, *args: str, check: bool = True, **env: str):  # type: ignore[no-untyped-def]
        return run([str(BIN / "elt"), *args], cwd=self.root, env={**self.env, **env}, check=check, timeout=900)

    def export(self, folder: Path) -> None:
        """Spark only: every model to ``folder``/<name> as Parquet."""
        run([str(BIN / "python"), "-c", EXPORT, str(self.root), str(folder), json.dumps(MODELS)],
            cwd=self.root, env=self.env, timeout=600)

    def transform(self) -> set[tuple[str, date]]:
        return evaluated(self.elt("transform"))


def evaluated(proc) -> set[tuple[str, date]]:  # type: ignore[no-untyped-def]
    """The (model, day) of every interval SQLMesh's scheduler evaluated in an ``elt`` command, from
    its log (the transform console's record of the run, not our restatement plan)."""
    out = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.startswith("{") or "interval(s) evaluated" not in line:
            continue
        for interval in json.loads(line)["intervals"]:
            model, span = interval.split(" ")
            d0, d1 = (date.fromisoformat(x) for x in span.split(".."))
            out |= {(model, d0 + timedelta(days=i)) for i in range((d1 - d0).days)}
    return out


def shop_with_history() -> Shop:
    shop = Shop(random.Random(23))
    for d in range(DAYS):
        for _ in range(shop.rng.randint(2, 5)):
            shop.add_order(START + timedelta(days=d))
    return shop


def duckdb_models(project: Project) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect(project.env["ELT_DUCKDB_PATH"], read_only=True)
    try:
        return {m: sorted(con.execute(f"SELECT * FROM {m}").fetchall(), key=repr) for m in MODELS}
    finally:
        con.close()


def parquet_models(folder: Path) -> dict[str, list[tuple[object, ...]]]:
    con = duckdb.connect()
    return {m: sorted(con.execute(f"SELECT * FROM read_parquet('{folder / m}/*.parquet')").fetchall(), key=repr)
            for m in MODELS}


def normal(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """Values as both engines agree on them: numbers by value (Spark's decimals and DuckDB's
    are the same numbers; a count is BIGINT on both)."""
    from decimal import Decimal

    def one(v: object) -> object:
        return float(v) if isinstance(v, Decimal) else v

    return sorted((tuple(one(v) for v in r) for r in rows), key=repr)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The demo on both gateways from the same files."""
    base = tmp_path_factory.mktemp("spark")
    shop = shop_with_history()
    files = base / "files"
    shop.write(files)
    projects = {}
    for gateway in ("duckdb", "spark"):
        project = Project(base / gateway, gateway)
        demo = project.elt("demo", JAFFLE_DATA_DIR=str(files))
        projects[gateway] = (project, demo)
    return base, shop, files, projects


def test_the_demo_runs_on_spark_and_every_model_equals_duckdb_row_for_row(built) -> None:  # type: ignore[no-untyped-def]
    base, _, _, projects = built
    spark, demo = projects["spark"]
    audits = re.search(r"audits: (\d+) run on (\d+) models, (\d+) passed", demo.stdout)
    assert audits and audits[1] == audits[3] and int(audits[2]) == len(MODELS), demo.stdout[-3000:]
    assert "warehouse: Spark local[2]" in demo.stdout, demo.stdout[-2000:]
    expected = duckdb_models(projects["duckdb"][0])
    assert all(expected[m] for m in MODELS if m != "staging.stg_jaffle_shop__tweets")
    spark.export(base / "export-1")
    got = parquet_models(base / "export-1")
    for model in MODELS:
        assert normal(got[model]) == normal(expected[model]), f"{model} differs between Spark and DuckDB"


def test_a_late_correction_restates_one_week_on_spark_and_nothing_outside_it(built) -> None:  # type: ignore[no-untyped-def]
    base, shop, files, projects = built
    spark, _ = projects["spark"]
    duck, _ = projects["duckdb"]
    if not (base / "export-1").exists():  # this test run alone
        spark.export(base / "export-1")
    before = parquet_models(base / "export-1")
    # corrections inside the week that shift no order number outside it: an item's product (and
    # its order's amounts with it), and every order of the week's last day deleted at the source
    # (that day's partitions must then disappear on Spark, where an overwrite replaces only the
    # partitions a query writes)
    in_week = sorted(o for o, v in shop.orders.items() if WEEK[0].isoformat() <= str(v["ordered_at"])[:10] <= WEEK[1].isoformat())
    item = next(k for k, v in shop.items.items() if v["order_id"] in in_week)
    shop.items[item]["sku"] = "BEV-001" if shop.items[item]["sku"] == "JAF-001" else "JAF-001"
    order = shop.orders[shop.items[item]["order_id"]]
    subtotal = sum(PRICES[v["sku"]] for v in shop.items.values() if v["order_id"] == order["id"])
    order.update(subtotal=subtotal, tax_paid=subtotal * 6 // 100, order_total=subtotal + subtotal * 6 // 100)
    gone = [o for o in in_week if str(shop.orders[o]["ordered_at"])[:10] == WEEK[1].isoformat() and o != order["id"]]
    assert gone, "the test data has no order on the week's last day"
    for oid in gone:
        shop.delete_order(oid)
    shop.write(files)
    duck.elt("load", "jaffle_shop", "--path", str(files))
    duck.transform()
    # on Spark through `elt backfill` of the week: re-extract, restate, and the difference report
    backfill = spark.elt("backfill", "jaffle_shop", "--start", WEEK[0].isoformat(), "--end", WEEK[1].isoformat(),
                         "--path", str(files))
    report = {li.split()[0]: [int(x.replace(",", "")) for x in li.split()[1:]]
              for li in backfill.stdout.splitlines() if li.startswith("marts.")}
    assert report["marts.orders"][2] == len(gone) and report["marts.orders"][1] >= 1, backfill.stdout[-2000:]
    assert report["marts.locations"] == [0, 0, 0], backfill.stdout[-2000:]
    assert "days outside the window were restated too" not in backfill.stdout, backfill.stdout[-2000:]
    built_days = evaluated(backfill)
    incremental = {d for m, d in built_days if m in ("marts.orders", "staging.stg_jaffle_shop__orders")}
    assert incremental, "nothing was rebuilt on Spark"
    assert all(WEEK[0] <= d <= WEEK[1] for d in incremental), f"days outside the week rebuilt: {sorted(incremental)}"
    spark.export(base / "export-2")
    after = parquet_models(base / "export-2")
    expected = duckdb_models(duck)
    for model in MODELS:
        assert normal(after[model]) == normal(expected[model]), f"{model} differs between Spark and DuckDB after the week"
    # rows outside the week: the same before and after, on the time-partitioned marts
    for model, day_column in (("marts.orders", -1), ("marts.order_items", -1)):
        def outside(rows):  # type: ignore[no-untyped-def]
            return normal([r for r in rows if not (WEEK[0] <= r[day_column].date() <= WEEK[1])])
        assert outside(after[model]) == outside(before[model]), f"{model} changed outside the week"
    assert not set(gone) & {r[0] for r in after["marts.orders"]}, "deleted orders are still in marts.orders on Spark"
    assert not set(gone) & {r[1] for r in after["marts.order_items"]}, "deleted orders' items are still in marts.order_items"


def test_a_load_killed_between_landing_and_raw_on_spark_heals_without_duplicates(tmp_path: Path) -> None:
    shop = shop_with_history()
    files = tmp_path / "files"
    shop.write(files)
    project = Project(tmp_path / "killed", "spark")
    # killed after the orders batch's partition is written, before its ledger row
    killed = project.elt("load", "jaffle_shop", "--path", str(files), "--table", "orders", check=False,
                         ELT_FAILPOINT="raw.mid_load")
    assert killed.returncode == -9, killed.stderr[-2000:]
    project.elt("load", "jaffle_shop", "--path", str(files), "--table", "orders")  # the rerun
    raw = _spark_rows(project, (
        "SELECT count(*), count(DISTINCT id) FROM raw_jaffle_shop.orders",
        "SELECT count(*), count(DISTINCT batch_id) FROM elt_meta.loaded_batches WHERE table_name = 'orders'",
    ))
    (rows, keys), (ledger, batches) = raw
    assert rows == keys == len(shop.orders), f"raw holds {rows} rows for {keys} orders (source: {len(shop.orders)})"
    assert ledger == batches == 1


QUERY = """
import json, sys
from pathlib import Path
from sources.spark import session
spark = session(Path(sys.argv[1]))
print(json.dumps([list(spark.sql(q).collect()[0]) for q in json.loads(sys.argv[2])], default=str))
"""


def _spark_rows(project: Project, queries: tuple[str, ...]) -> list[list[object]]:
    proc = run([str(BIN / "python"), "-c", QUERY, str(project.root), json.dumps(queries)], cwd=project.root,
               env=project.env, timeout=600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unit_tests_and_preview_run_on_spark_and_freshness_says_it_is_not_checked(built) -> None:  # type: ignore[no-untyped-def]
    _, _, _, projects = built
    spark, demo = projects["spark"]
    # the SQLMesh unit tests (tests/models/*.yaml) ran on Spark itself (the gateway's
    # test_connection): the demo's first plan runs them and prints where, and it would have
    # stopped on a failure (a separate `sqlmesh test` would start another JVM for the same check)
    ran = re.search(r"Successfully Ran `?(\d+)`? [Tt]ests? [Aa]gainst `?(\w+)", demo.stdout + demo.stderr)
    assert ran and int(ran[1]) >= 8 and ran[2] == "spark", (demo.stdout + demo.stderr)[-3000:]

    # `elt preview`: a model change built in a dev environment on Spark and diffed against prod
    model = spark.root / "models" / "marts" / "locations.sql"
    original = model.read_text()
    assert "  locations.opened_date\n" in original
    model.write_text(original.replace("  locations.opened_date\n",
                                      "  locations.opened_date,\n  upper(locations.location_name) AS location_name_upper\n"))
    try:
        preview = spark.elt("preview", "dev")
    finally:
        model.write_text(original)
    assert re.search(r"marts\.locations: prod \d+ rows, dev \d+ rows; on location_id: \d+ matched \(0 changed\)",
                     preview.stdout), preview.stdout[-2000:]
    assert "added columns: location_name_upper" in preview.stdout, preview.stdout[-2000:]
    assert "could not diff" not in preview.stdout, preview.stdout[-2000:]

    # freshness does not read Spark's tables (decision 0029): it said so nowhere and listed every table
    # as never loaded, from a DuckDB file this gateway never writes; now it says it is not checked
    fresh = spark.elt("freshness", check=False)
    assert fresh.returncode == 2, fresh.stdout + fresh.stderr[-2000:]
    assert "freshness is not checked on the spark gateway" in fresh.stderr and "Spark SQL" in fresh.stderr, fresh.stderr
