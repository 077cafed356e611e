"""``elt demo --production``: the Jaffle Shop the way production runs it.

    app database (PostgreSQL, JAFFLE_APP_*) --+
                                              +--> landing on S3 (ELT_LANDING_URL=s3://...)
    catalog API (HTTP, bearer token) ---------+        --> raw tables in PostgreSQL (ELT_PG_*)
                                                       --> SQLMesh on the `postgres` gateway:
                                                           staging -> intermediate -> marts,
                                                           state in schema `sqlmesh`

The demo seeds the application database from jafgen CSVs and releases every row up to
``--as-of`` (default: all of it). Unless ``JAFFLE_CATALOG_URL`` names a running catalog API, it
serves one itself on 127.0.0.1 for the length of the run. Everything else is the production code
path, unchanged: the same loader, landing, raw stores, models and audits. Rerunning with a later
``--as-of`` loads only what changed (incremental cursors) and restates what it touched.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from datetime import date

from orchestrator.demo.embedded import demo_data, print_summary
from orchestrator.scheduling.loading import load_source_into_warehouse, print_load_report
from orchestrator.scheduling.locks import LockBusy, holding
from orchestrator.settings import Settings
from orchestrator.transform.run import TransformFailed, transform
from sources.config import load_source
from sources.connections import PostgresSettings
from sources.errors import ConfigError
from sources.logs import redact_userinfo

SOURCES = ("jaffle_app", "jaffle_catalog")
APP_PREFIX = "JAFFLE_APP_"


def app_settings(settings: Settings) -> PostgresSettings:
    """The application database: ``JAFFLE_APP_*``; each missing one falls back to the warehouse's
    ``ELT_PG_*`` value, except the database, which defaults to ``jaffle_app`` (created if missing)."""
    env = dict(os.environ)
    for key in ("HOST", "PORT", "USER", "PASSWORD", "PASSWORD_FILE", "SSLMODE"):
        if not env.get(APP_PREFIX + key) and env.get(settings.pg_prefix + key):
            env[APP_PREFIX + key] = env[settings.pg_prefix + key]
    env.setdefault(APP_PREFIX + "DATABASE", "jaffle_app")
    os.environ.update({k: v for k, v in env.items() if k.startswith(APP_PREFIX)})  # the loader reads these
    return PostgresSettings.from_env(APP_PREFIX)


def ensure_database(server: PostgresSettings, app: PostgresSettings) -> None:
    """Create the app database on the warehouse's server when it does not exist (demo convenience)."""
    from psycopg2 import sql

    if (app.host, app.port) != (server.host, server.port):
        return
    con = server.connect()
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [app.dbname])
            if cur.fetchone() is None:
                print(f"creating database {app.dbname} for the demo application database")
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(app.dbname)))
    finally:
        con.close()


def ensure_warehouse_database(warehouse: PostgresSettings) -> None:
    """Create the warehouse database when it does not exist and the role may create databases
    (connecting to the server's ``postgres`` database to do it); otherwise the error names the
    database and the command that creates it."""
    from psycopg2 import errors, sql

    try:
        warehouse.connect().close()
        return
    except ConfigError as missing:
        if "does not exist" not in missing.detail or f'database "{warehouse.dbname}"' not in missing.detail:
            raise
        try:
            con = replace(warehouse, dbname="postgres").connect()
        except ConfigError:
            raise missing from None
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(warehouse.dbname)))
        except (errors.InsufficientPrivilege, errors.DuplicateDatabase) as exc:
            if isinstance(exc, errors.DuplicateDatabase):  # created meanwhile by someone else
                return
            raise ConfigError(f"{missing.detail}; creating it failed: {str(exc).splitlines()[0]}",
                              hint=missing.hint) from None
        finally:
            con.close()
    print(f"created the warehouse database {warehouse.dbname} on {warehouse.host}:{warehouse.port} "
          f"({warehouse.origin or 'ELT_PG_DATABASE'})")


def check_production_settings(settings: Settings) -> None:
    if not settings.landing_url.startswith("s3://"):
        raise ConfigError(
            f"ELT_LANDING_URL is {redact_userinfo(settings.landing_url)!r}, not an s3:// URL",
            hint="set ELT_LANDING_URL=s3://<bucket>/<prefix>, ELT_S3_ENDPOINT for a non-AWS endpoint, and "
                 "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (see README, Environment variables)",
        )
    if not os.environ.get(settings.pg_prefix + "HOST"):
        raise ConfigError(
            f"{settings.pg_prefix}HOST is not set",
            hint=f"set {settings.pg_prefix}HOST, PORT, USER, PASSWORD (or PASSWORD_FILE) and DATABASE to the warehouse",
        )


def run_production_demo(settings: Settings, years: int | None = None, as_of: date | None = None) -> int:
    started = time.monotonic()
    # read before a step copies the file's password into this process's ELT_PG_PASSWORD (for SQLMesh)
    password_from_file = bool(os.environ.get(f"{settings.pg_prefix}PASSWORD_FILE")) and \
        not os.environ.get(f"{settings.pg_prefix}PASSWORD")
    settings = replace(settings, gateway="postgres")
    os.environ["ELT_GATEWAY"] = "postgres"  # for SQLMesh's config.yaml, read in this process
    check_production_settings(settings)
    warehouse = PostgresSettings.from_env(settings.pg_prefix)
    # its two prerequisites, before anything is seeded: created when the credentials may, else
    # named with the command that creates them
    ensure_warehouse_database(warehouse)
    created = settings.open_landing().create_bucket()
    if created:
        print(f"created the landing bucket {created} ({redact_userinfo(str(settings.landing_url))})")
    data_dir = demo_data(settings, years)
    if data_dir is None:
        return 2

    from orchestrator.demo import appdb
    from orchestrator.demo.catalog_api import CatalogAPI

    app = app_settings(settings)
    ensure_database(warehouse, app)
    release = as_of or date(2100, 1, 1)
    print(f"\n== 1/4 sources: application database {app.user}@{app.host}:{app.port}/{app.dbname}, "
          f"releasing as of {as_of or 'the last day'}")
    appdb.seed(app, data_dir)
    through = appdb.released_through(app) if as_of is not None else None
    if through is not None and through > as_of:  # refused: the header above said 'releasing', not 'released'
        # The app database cannot take rows back, while the demo's catalog API would hide later stores:
        # loading both would leave marts whose orders name locations that are gone.
        raise ConfigError(
            f"--as-of {as_of} is earlier than what the application database {app.dbname} has released already "
            f"(orders through {through})",
            hint=f"the demo's sources only move forward: rerun with --as-of {through} or later, or without --as-of; "
            f"to replay from an earlier day, start from empty databases (drop {app.dbname} and {warehouse.dbname}) "
            "and an empty landing location")
    counts = appdb.release(app, release)
    print("  " + ", ".join(f"{table} {rows:,}" for table, rows in counts.items()))

    with ExitStack() as stack:
        if os.environ.get("JAFFLE_CATALOG_URL"):
            print(f"  catalog API: {redact_userinfo(os.environ['JAFFLE_CATALOG_URL'])} (JAFFLE_CATALOG_URL)")
        else:
            os.environ.setdefault("JAFFLE_CATALOG_TOKEN", secrets.token_urlsafe(24))
            api = stack.enter_context(CatalogAPI(data_dir, os.environ["JAFFLE_CATALOG_TOKEN"], as_of))
            os.environ["JAFFLE_CATALOG_URL"] = api.url
            print(f"  catalog API: serving the demo catalog on {api.url} for this run")

        print(f"\n== 2/4 load: sources -> landing {redact_userinfo(str(settings.landing_location))} -> raw tables in PostgreSQL")
        failed = 0
        for source in SOURCES:
            print(f"-- {source}")
            outcomes = load_source_into_warehouse(source, settings)
            print_load_report(outcomes, settings)
            failed += sum(1 for o in outcomes if o.error)
    if failed:
        print(f"\n{failed} table(s) failed to load; fix them and rerun `elt demo --production`.", file=sys.stderr)
        return 1

    print("\n== 3/4 transform: sqlmesh plan + run on prod, gateway postgres (staging -> intermediate -> marts, audits)")
    try:
        # serialized with `elt transform`, the scheduler's transform job and `elt backfill`
        with holding(settings, "sqlmesh:prod", float(os.environ.get("ELT_SQLMESH_LOCK_WAIT_S", "3600"))):
            summary = transform(settings, environment="prod", allow_revert=True)  # a sandbox: any checkout
    except LockBusy as exc:
        print(f"\nerror: {exc}; see `elt runs` for the running transform, then rerun", file=sys.stderr)
        return 1
    except TransformFailed as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1

    print("\n== 4/4 summary")
    print_summary(settings, summary, [load_source(s) for s in SOURCES], started)
    print(
        "\nnext, from the project root with the same environment (source .venv/bin/activate first):\n"
        "  export ELT_GATEWAY=postgres       # without it, sqlmesh and elt quietly use the local DuckDB file\n"
        + ('  export ELT_PG_PASSWORD="$(cat "$ELT_PG_PASSWORD_FILE")"   # sqlmesh reads no _FILE variable; '
           "this shell only\n" if password_from_file else "") +
        "  sqlmesh plan dev                  # after editing a model: preview the change on PostgreSQL\n"
        "  elt preview dev                   # the same, plus a row-level diff of each changed model against prod\n"
        "  elt bi-role                       # (re)create the read-only BI role on marts (ELT_BI_*)\n"
        "  sqlmesh fetchdf \"select * from marts.customers limit 5\""
    )
    return 0
