"""The PostgreSQL warehouse role a DBA hands out: each missing privilege is named with the statement
that grants it, and that statement is enough.

A role with CONNECT only (a database the DBA owns) got a traceback from `elt load` and
`elt transform` (`InsufficientPrivilege: permission denied for database`); a raw schema the DBA
created got `appending ... failed` with a hint to set the batch aside, which is wrong: the batch is
fine, the role is not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from tests.conftest import BIN, copy_project, project_env, run

pytestmark = pytest.mark.slow


@dataclass
class Role:
    name: str
    admin: Any  # the superuser's autocommit connection to the test database, which it owns
    project: Path
    env: dict[str, str]  # elt's environment: the PostgreSQL gateway, logging in as the role

    def execute(self, statement: str, *identifiers: str) -> None:
        """A statement of the superuser's, with ``{}`` for identifiers (quoted by psycopg2)."""
        self.admin.cursor().execute(sql.SQL(statement).format(*map(sql.Identifier, identifiers)))


@pytest.fixture
def role(pg_db, tmp_path: Path) -> Iterator[Role]:  # type: ignore[no-untyped-def]
    """A login role with CONNECT only (PUBLIC's) on a database the superuser owns, as a DBA hands out."""
    name = f"etl_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(pg_db.dsn)
    admin.autocommit = True
    project = copy_project(tmp_path / "project")
    env = project_env(project, **{**pg_db.env("ELT_PG"), "ELT_PG_USER": name}, ELT_GATEWAY="postgres",
                      ELT_LANDING_ROOT=str(tmp_path / "landing"))
    made = Role(name, admin, project, env)
    made.execute("CREATE ROLE {} LOGIN", name)
    try:
        yield made
    finally:
        made.execute("DROP OWNED BY {} CASCADE", name)  # what it made here, and its grants
        made.execute("DROP ROLE {}", name)
        admin.close()


def test_the_warehouse_role_is_told_what_to_grant_and_that_is_enough(role: Role, pg_db, small_jaffle: Path) -> None:  # type: ignore[no-untyped-def]
    load = [str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)]

    # CONNECT only: nothing can be created
    for command in (load, [str(BIN / "elt"), "transform"]):
        proc = run(command, cwd=role.project, env=role.env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert (f"error: the PostgreSQL role {role.name} lacks a privilege in database {pg_db.dbname}: "
                f"permission denied for database {pg_db.dbname}") in proc.stderr, proc.stderr
        assert f'next: as the database\'s owner or a superuser, run `GRANT CREATE ON DATABASE "{pg_db.dbname}" TO "{role.name}";`' \
            in proc.stderr, proc.stderr

    # the grant named, and a raw schema the DBA made beforehand, owned by the DBA
    role.execute("GRANT CREATE ON DATABASE {} TO {}", pg_db.dbname, role.name)
    role.execute("CREATE SCHEMA raw_jaffle_shop")
    proc = run(load, cwd=role.project, env=role.env, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = proc.stdout + proc.stderr
    assert "permission denied for schema raw_jaffle_shop" in report, report
    assert f'run `ALTER SCHEMA "raw_jaffle_shop" OWNER TO "{role.name}";`' in report, report
    assert "set-aside" not in report, report  # the batches are fine

    # the statement named: the landed batches apply, once, and the models build
    role.execute("ALTER SCHEMA raw_jaffle_shop OWNER TO {}", role.name)
    run(load, cwd=role.project, env=role.env)
    run([str(BIN / "elt"), "transform"], cwd=role.project, env=role.env)
    with role.admin.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT order_id) FROM marts.orders")
        orders, distinct = cur.fetchone()
        cur.execute("SELECT count(*) FROM elt_meta.loaded_batches WHERE table_name = 'orders'")
        batches = cur.fetchone()[0]
    assert orders == distinct == small_jaffle.joinpath("raw_orders.csv").read_text().count("\n") - 1
    assert batches == 1


def test_a_read_only_warehouse_is_named_as_such(pg_db, small_jaffle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """ELT_PG_HOST pointed at a standby (simulated: the database defaults to read-only transactions)."""
    with psycopg2.connect(pg_db.dsn) as con, con.cursor() as cur:
        cur.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(sql.Identifier(pg_db.dbname)))
    con.close()
    project = copy_project(tmp_path / "project")
    env = project_env(project, **pg_db.env("ELT_PG"), ELT_GATEWAY="postgres", ELT_LANDING_ROOT=str(tmp_path / "landing"))
    for command in (["load", "jaffle_shop", "--path", str(small_jaffle)], ["transform"]):
        proc = run([str(BIN / "elt"), *command], cwd=project, env=env, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        assert f"/{pg_db.dbname} accepts no writes: cannot execute CREATE SCHEMA in a read-only transaction" in proc.stderr, \
            proc.stderr
        assert "next: ELT_PG_HOST must name the primary server, not a standby or read replica" in proc.stderr, proc.stderr
    # the statement the message gives, from another database, makes it writable: the load goes through
    with psycopg2.connect(pg_db.dsn.replace(f"dbname={pg_db.dbname}", "dbname=postgres")) as con, con.cursor() as cur:
        con.autocommit = True
        cur.execute(sql.SQL("ALTER DATABASE {} RESET default_transaction_read_only").format(sql.Identifier(pg_db.dbname)))
    con.close()
    run([str(BIN / "elt"), "load", "jaffle_shop", "--path", str(small_jaffle)], cwd=project, env=env)


def test_a_statement_timeout_of_the_role_is_named_with_how_to_raise_it(role: Role, pg_db, small_jaffle: Path,
                                                                       tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A DBA's statement_timeout on the warehouse role (1 ms here: some statement of the load exceeds
    it, whichever) is a limit to raise, not a batch to set aside; PGOPTIONS raises it for elt alone."""
    import shutil

    folder = tmp_path / "files"
    shutil.copytree(small_jaffle, folder)
    with (folder / "raw_orders.csv").open("w") as orders:  # enough rows that the raw insert takes well over 1 ms
        orders.write("id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n")
        orders.writelines(f"o{n},c1,2018-09-01T12:00:00,s1,0,0,0\n" for n in range(50_000))
    role.execute("GRANT CREATE ON DATABASE {} TO {}", pg_db.dbname, role.name)
    role.execute("ALTER ROLE {} SET statement_timeout = '1ms'", role.name)
    load = [str(BIN / "elt"), "load", "jaffle_shop", "--path", str(folder)]
    proc = run(load, cwd=role.project, env=role.env, check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 1, report
    assert "Traceback" not in report and "set-aside" not in report, report
    assert "canceling statement due to statement timeout" in report, report
    assert f"Raise it for the pipeline's role (`ALTER ROLE \"{role.name}\" SET statement_timeout = '2h';`)" in report, report

    run(load, cwd=role.project, env={**role.env, "PGOPTIONS": "-c statement_timeout=0"})  # the message's other way
    with role.admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM raw_jaffle_shop.orders")
        assert cur.fetchone()[0] == 50_000


def test_a_raw_table_owned_by_another_role_is_named_with_its_owner(role: Role, pg_db, small_jaffle: Path,
                                                                   tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """information_schema hides a table the role has no privilege on, so the loader tried CREATE
    TABLE and said `relation "orders" already exists`, with a hint to set the batch aside (an
    on-call probe): the batch is fine, the table's owner is not."""
    import shutil

    role.execute("GRANT CREATE ON DATABASE {} TO {}", pg_db.dbname, role.name)
    load = [str(BIN / "elt"), "load", "jaffle_shop", "--path", str(tmp_path / "files")]
    shutil.copytree(small_jaffle, tmp_path / "files")
    run(load, cwd=role.project, env=role.env)
    role.execute("ALTER TABLE raw_jaffle_shop.orders OWNER TO {}", pg_db.user)  # a DBA's restore, say
    with (tmp_path / "files" / "raw_orders.csv").open("a") as orders:
        orders.write("o-late,c1,2018-09-30T12:00:00,s1,0,0,0\n")
    proc = run(load, cwd=role.project, env=role.env, check=False)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 1, report
    assert f"raw table raw_jaffle_shop.orders exists but belongs to role {pg_db.user}" in report, report
    assert f'ALTER TABLE "raw_jaffle_shop"."orders" OWNER TO "{role.name}";' in report, report
    assert "set-aside" not in report and "already exists" not in report, report
    role.execute("ALTER TABLE raw_jaffle_shop.orders OWNER TO {}", role.name)  # what the message says
    run(load, cwd=role.project, env=role.env)
    with role.admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM raw_jaffle_shop.orders WHERE id = 'o-late'")
        assert cur.fetchone()[0] == 1
