"""Seed a PostgreSQL application database with Jaffle Shop data, released day by day.

``seed`` copies the jafgen CSVs once into the hidden schema ``jaffle_source``; ``release(as_of)``
publishes into schema ``jaffle`` (what the loader reads) every row that exists at the end of
day ``as_of``: orders placed that day or before, their items, the customers who had ordered by
then (customers who never order exist from the first day), and the tweets posted by then. Each row's ``updated_at`` is when it
appeared, which is what incremental extraction keys on. Releasing is idempotent.

    python -m orchestrator.demo.appdb --data data/jaffle-data --as-of 2018-09-10   # settings: JAFFLE_APP_*
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

from psycopg2 import sql

from sources.connections import PostgresSettings

START = date(2018, 9, 1)
_FULL = {
    "customers": ("raw_customers.csv", "id text PRIMARY KEY, name text"),
    "orders": ("raw_orders.csv", "id text PRIMARY KEY, customer text, ordered_at timestamp, store_id text, "
               "subtotal bigint, tax_paid bigint, order_total bigint"),
    "items": ("raw_items.csv", "id text PRIMARY KEY, order_id text, sku text"),
    "tweets": ("raw_tweets.csv", "id text PRIMARY KEY, user_id text, tweeted_at timestamp, content text"),
}
_APP = """
CREATE SCHEMA IF NOT EXISTS jaffle;
CREATE TABLE IF NOT EXISTS jaffle.customers (id text PRIMARY KEY, name text, updated_at timestamp NOT NULL);
CREATE TABLE IF NOT EXISTS jaffle.orders (id text PRIMARY KEY, customer text, ordered_at timestamp, store_id text,
    subtotal bigint, tax_paid bigint, order_total bigint, updated_at timestamp NOT NULL);
CREATE TABLE IF NOT EXISTS jaffle.items (id text PRIMARY KEY, order_id text, sku text, updated_at timestamp NOT NULL);
CREATE INDEX IF NOT EXISTS orders_updated_at ON jaffle.orders (updated_at);
CREATE INDEX IF NOT EXISTS items_updated_at ON jaffle.items (updated_at);
CREATE INDEX IF NOT EXISTS customers_updated_at ON jaffle.customers (updated_at);
CREATE TABLE IF NOT EXISTS jaffle.tweets (id text PRIMARY KEY, user_id text, tweeted_at timestamp, content text,
    updated_at timestamp NOT NULL);
"""


def seed(settings: PostgresSettings, data_dir: Path) -> None:
    """Copy the CSVs into ``jaffle_source`` (once; a second call is a no-op)."""
    con = settings.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute("SELECT to_regclass('jaffle_source.items') IS NOT NULL")
            if cur.fetchone()[0]:
                return
            cur.execute("CREATE SCHEMA jaffle_source")
            for table, (file, columns) in _FULL.items():
                ident = sql.Identifier("jaffle_source", table)
                cur.execute(sql.SQL("CREATE TABLE {} (" + columns + ")").format(ident))
                with (data_dir / file).open() as handle:
                    cur.copy_expert(sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, HEADER true)").format(ident).as_string(cur), handle)
            cur.execute(_APP)
    finally:
        con.close()


def _if_exists(settings: PostgresSettings, table: str, query: str) -> object | None:
    """The single value of ``query``, or None when ``table`` does not exist yet."""
    con = settings.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
            if not cur.fetchone()[0]:
                return None
            cur.execute(query)
            return cur.fetchone()[0]
    finally:
        con.close()


def released_through(settings: PostgresSettings) -> date | None:
    """The day of the latest order already published in ``jaffle`` (None before the first release).
    Releasing only adds rows: an earlier day cannot take them back."""
    return _if_exists(settings, "jaffle.orders", "SELECT CAST(max(ordered_at) AS date) FROM jaffle.orders")  # type: ignore[return-value]


def release(settings: PostgresSettings, as_of: date) -> dict[str, int]:
    """Publish every row that exists at the end of ``as_of``; return the row count per table."""
    end = as_of + timedelta(days=1)
    con = settings.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute(_APP)
            cur.execute(
                "INSERT INTO jaffle.orders SELECT o.*, o.ordered_at FROM jaffle_source.orders o "
                "WHERE o.ordered_at < %s ON CONFLICT (id) DO NOTHING", [end])
            cur.execute(
                "INSERT INTO jaffle.items SELECT i.*, o.ordered_at FROM jaffle_source.items i "
                "JOIN jaffle_source.orders o ON o.id = i.order_id WHERE o.ordered_at < %s ON CONFLICT (id) DO NOTHING", [end])
            cur.execute(
                "INSERT INTO jaffle.customers SELECT c.id, c.name, COALESCE(f.first_at, %s) FROM jaffle_source.customers c "
                "LEFT JOIN (SELECT customer, min(ordered_at) AS first_at FROM jaffle_source.orders GROUP BY customer) f "
                "ON f.customer = c.id WHERE COALESCE(f.first_at, %s) < %s ON CONFLICT (id) DO NOTHING",
                [START, START, end])
            cur.execute(
                "INSERT INTO jaffle.tweets SELECT t.*, t.tweeted_at FROM jaffle_source.tweets t "
                "WHERE t.tweeted_at < %s ON CONFLICT (id) DO NOTHING", [end])
            counts = {}
            for table in _FULL:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("jaffle", table)))
                counts[table] = cur.fetchone()[0]
            return counts
    finally:
        con.close()


def seeded_orders(settings: PostgresSettings) -> int | None:
    """How many orders ``seed`` copied (None before the first seed)."""
    return _if_exists(settings, "jaffle_source.orders", "SELECT count(*) FROM jaffle_source.orders")  # type: ignore[return-value]


def _csv_rows(path: Path) -> int:
    """Data rows of a jafgen CSV (no field of theirs holds a line break)."""
    with path.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def main(argv: list[str] | None = None) -> None:
    from sources.errors import ConfigError, ConnectionFailed

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of jafgen CSVs")
    parser.add_argument("--as-of", type=date.fromisoformat, help="release rows up to this day (default: all)")
    parser.add_argument("--env-prefix", default="JAFFLE_APP_")
    args = parser.parse_args(argv)
    try:  # a mistake is one line and its next step, exit 2 (as `elt` reports them), not a traceback
        missing = [file for file, _ in _FULL.values() if not (args.data / file).is_file()]
        if missing:
            raise ConfigError(f"{args.data} lacks {', '.join(missing)}", hint="pass --data with the jaffle-data "
                              "folder jafgen wrote (`make demo` writes data/jaffle-data)")
        settings = PostgresSettings.from_env(args.env_prefix)
        seeded = seeded_orders(settings)
        given = _csv_rows(args.data / _FULL["orders"][0])
        # seeded once: another --data would be ignored, and the catalog API started on it would
        # serve stores these orders do not name (a newcomer walkthrough; it printed the old counts)
        if seeded is not None and seeded != given:
            raise ConfigError(f"the application database {settings.dbname} was seeded from other data ({seeded:,} "
                              f"orders; {args.data} has {given:,}), and keeps it", hint="pass the --data it was "
                              "seeded from, or start from an empty database (`DROP SCHEMA jaffle_source CASCADE; "
                              "DROP SCHEMA jaffle CASCADE;`) and an empty warehouse and landing")
        through = released_through(settings) if args.as_of else None
        if through is not None and args.as_of is not None and through > args.as_of:
            raise ConfigError(f"--as-of {args.as_of} is earlier than what {settings.dbname} has released already "
                              f"(orders through {through}); releasing only adds rows", hint=f"rerun with --as-of "
                              f"{through} or later, or start from an empty database to replay from an earlier day")
        seed(settings, args.data)
        counts = release(settings, args.as_of or date(2100, 1, 1))
    except (ConfigError, ConnectionFailed) as exc:  # each says what failed and what to do
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print("rows released: " + ", ".join(f"{table} {n:,}" for table, n in counts.items()))


if __name__ == "__main__":
    main()
