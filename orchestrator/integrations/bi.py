"""``elt bi-role``: the read-only role BI tools log in with (PostgreSQL gateway).

What the role can do, and why that holds after every deploy:

* ``CONNECT`` on the warehouse database, ``USAGE`` on schema ``marts`` and ``SELECT`` on every
  view in it. ``marts`` is SQLMesh's virtual layer for prod: stable names (``marts.customers``),
  re-pointed at new physical tables by each deploy. PostgreSQL checks the view owner's rights on
  the physical tables behind a view, so the role needs (and gets) nothing in ``sqlmesh__*``.
* ``ALTER DEFAULT PRIVILEGES`` for the warehouse user in ``marts``: a view SQLMesh creates later
  (a new mart, or a view re-created by a deploy) is readable without rerunning this command.
* Nothing anywhere else: every privilege the role may hold on any other schema and its tables is
  revoked (raw, staging, intermediate, dev environments, SQLMesh state and physical schemas).
* ``default_transaction_read_only`` on, no superuser/createdb/createrole: writes fail twice over.
* What every role inherits from ``PUBLIC`` is closed too: ``CREATE`` on schema ``public`` (still
  granted to PUBLIC by PostgreSQL 14 and older, and by databases upgraded from them) and
  ``TEMPORARY`` on the warehouse database. The warehouse user keeps both by an explicit grant. If
  the warehouse user may not revoke them (it does not own the database or the schema), the command
  says so and prints the statements for a database owner to run.

Idempotent: run it after the first deploy and whenever you like; it converges to the above.
Password from ``ELT_BI_PASSWORD`` or ``ELT_BI_PASSWORD_FILE``; role name ``ELT_BI_ROLE``
(default ``bi_reader``). Column and view comments are written by SQLMesh (register_comments) and
are readable by the role through the standard catalogs.
"""

from __future__ import annotations

import os

from psycopg2 import sql

from sources.connections import PostgresSettings, secret_from_env
from sources.logs import get_logger

log = get_logger("orchestrator.integrations.bi")
SERVED_SCHEMA = "marts"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def bi_role_settings() -> tuple[str, str | None]:
    return os.environ.get("ELT_BI_ROLE") or "bi_reader", secret_from_env("ELT_BI_PASSWORD")


def ensure_bi_role(warehouse: PostgresSettings, role: str, password: str | None, schema: str = SERVED_SCHEMA) -> list[str]:
    """Create or update ``role`` so it reads ``schema`` and nothing else; returns what it did."""
    ident = sql.Identifier(role)
    done: list[str] = []
    con = warehouse.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute("SELECT current_user, current_database()")
            owner, database = cur.fetchone()
            if role == owner:
                from sources.errors import ConfigError

                raise ConfigError(f"ELT_BI_ROLE is {role!r}, the warehouse user itself", hint="choose another role name")
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION").format(ident))
            done.append(f"{'created' if verb == 'CREATE' else 'updated'} role {role}")
            if password:
                # sent as the hash the server stores (SCRAM or md5, as its password_encryption says), never
                # as clear text: a server logging DDL (log_statement = ddl or all) keeps the statement
                from psycopg2.extensions import encrypt_password

                verifier = encrypt_password(password, role, con)
                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
                done.append("set its password (from ELT_BI_PASSWORD)")
            cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
            cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), ident))

            cur.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname <> ALL(%s) AND nspname NOT LIKE 'pg_temp%%' "
                "AND nspname NOT LIKE 'pg_toast_temp%%' AND nspname <> %s ORDER BY 1",
                [list(SYSTEM_SCHEMAS), schema],
            )
            others = [r[0] for r in cur.fetchall()]
            for other in others:
                s = sql.Identifier(other)
                cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, ident))
                cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, ident))
            done.append(f"revoked everything on {len(others)} other schema(s)")

            s = sql.Identifier(schema)
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
            cur.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(s, ident))
            cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, ident))
            cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, ident))
            cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, ident))
            cur.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                sql.Identifier(owner), s, ident))
            cur.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm')", [schema])
            done.append(f"granted SELECT on {cur.fetchone()[0]} relation(s) in {schema} and on future ones created by {owner}")
            done += _close_public(cur, role, owner, database)
    finally:
        con.close()
    log.info("bi role ensured", extra={"fields": {"role": role, "schema": schema}})
    return done


def _close_public(cur, role: str, owner: str, database: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Take from PUBLIC what would let ``role`` write: CREATE on schema public, TEMPORARY on the
    database. Grants both to ``owner`` first so the warehouse user keeps them. Returns what it did,
    or what a database owner must still run."""
    db, me = sql.Identifier(database), sql.Identifier(owner)
    cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'public'")
    has_public = cur.fetchone() is not None
    statements = [sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, me),
                  sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(db)]
    if has_public:
        statements += [sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(me),
                       sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC")]
    for statement in statements:  # a non-owner gets a WARNING, not an error: checked below
        cur.execute(statement)
    cur.execute("SELECT has_database_privilege(%s, %s, 'TEMPORARY'), "
                "coalesce(has_schema_privilege(%s, (SELECT oid FROM pg_namespace WHERE nspname = 'public'), 'CREATE'), false)",
                [role, database, role])
    temp, create = cur.fetchone()
    if not temp and not create:
        return [f"revoked from PUBLIC: TEMPORARY on database {database}"
                + (", CREATE on schema public" if has_public else "") + f" (kept by {owner}; this applies to "
                "every role of the database: GRANT them back to any other role that needs them)"]
    left = [s.as_string(cur) for s in statements if "REVOKE" in s.as_string(cur)]
    log.warning("bi role can still create objects through PUBLIC", extra={"fields": {"role": role}})
    return [f"WARNING: {role} can still create {'temporary tables' if temp else ''}{' and ' if temp and create else ''}"
            f"{'tables in schema public' if create else ''} through PUBLIC; a database owner must run: "
            + "; ".join(left)]
