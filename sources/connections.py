"""Connection settings from the environment: declarations and config name variables, never values.

A secret can be given directly (``APPDB_PASSWORD``) or as a file (``APPDB_PASSWORD_FILE``, for
Docker/Kubernetes secrets). Values never appear in ``repr``, logs or errors.

>>> settings = PostgresSettings.from_env("NOPE_", environ={"NOPE_HOST": "db", "NOPE_PASSWORD": "s3cret"})
>>> "s3cret" in repr(settings)
False
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sources.errors import ConfigError, ConnectionFailed, exception_chain, first_line
from sources.logs import register_secret


def secret_from_env(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of ``name``, or the content of the file named by ``name_FILE``, without surrounding
    whitespace (a secret mapped into the environment often keeps its file's trailing newline, which
    no header or password may hold). The value is registered for redaction (``register_secret``):
    whatever message later quotes it shows ``***``. A value with a line break inside is refused, and
    an unreadable ``name_FILE`` is reported without its value (it may be the secret, set under the
    wrong name)."""
    env = os.environ if environ is None else environ
    value: str | None = None
    if env.get(name, "").strip():
        value = env[name].strip()
    elif file := env.get(f"{name}_FILE"):
        try:
            value = Path(file).read_text().strip()
        except OSError as exc:
            # The value is not quoted: a secret set under the _FILE name by mistake (a Kubernetes
            # secretKeyRef mapped to it) would be printed, stored in the run history and alerted.
            register_secret(file)
            raise ConfigError(
                f"{name}_FILE is set but names no file that can be read ({exc.strerror}); its value is not shown",
                hint=(f"{name}_FILE must hold the PATH of a file that contains the secret, not the secret itself "
                      f"(to give the secret directly, set {name}); check the file exists and this user can read "
                      f"it: `ls -l \"${name}_FILE\"`")) from None
    register_secret(value)
    if value and _CONTROL.search(value):
        # http.client and libpq would refuse it, and their messages quote it with the line break escaped
        # (``\n``), which no longer matches the secret as registered
        where = name if env.get(name, "").strip() else f"the file {name}_FILE names"
        raise ConfigError(
            f"the secret in {where} holds a line break or another control character inside; its value is not shown",
            hint=f"a secret is one line: write only the secret into {name} or its file (no comment, no second "
                 "value), then rerun")
    return value


# A line break or another control character inside a secret (a tab is allowed: some tokens hold one)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# Errors that no retry can fix: the server answered and refused the login or the database.
_REFUSED_LOGIN = re.compile(r"authentication failed|no password supplied|role \S+ does not exist|"
                            r"database \S+ does not exist|pg_hba\.conf|permission denied", re.IGNORECASE)


# The server is up but every connection slot is taken
_NO_SLOTS = re.compile(r"too many clients|remaining connection slots are reserved", re.IGNORECASE)


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    sslmode: str | None = None
    origin: str = ""  # which variables these came from, for error messages

    @classmethod
    def from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> PostgresSettings:
        """``<prefix>HOST``, ``PORT``, ``USER``, ``PASSWORD`` (or ``PASSWORD_FILE``), ``DATABASE``, ``SSLMODE``."""
        env = os.environ if environ is None else environ
        port = env.get(f"{prefix}PORT") or "5432"
        if not port.isdigit():
            raise ConfigError(f"{prefix}PORT must be a number", hint=f"set {prefix}PORT, e.g. 5432")
        return cls(
            host=env.get(f"{prefix}HOST") or "127.0.0.1",
            port=int(port),
            user=env.get(f"{prefix}USER") or "postgres",
            dbname=env.get(f"{prefix}DATABASE") or "postgres",
            password=secret_from_env(f"{prefix}PASSWORD", env),
            sslmode=env.get(f"{prefix}SSLMODE") or None,
            origin=f"{prefix}* environment variables",
        )

    def connect(self):  # type: ignore[no-untyped-def]
        import psycopg2

        # keepalives: a silent network split is noticed in about a minute, not after the kernel's
        # two hours (a lock held on a dead session, a read that would hang)
        # client_encoding: the loader sends UTF-8; without it a LATIN1 database took the bytes as
        # LATIN1 and stored 'Zoë' as 'ZoÃ«' without a word (an on-call probe)
        kwargs = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                  "client_encoding": "UTF8",
                  "connect_timeout": 10, "application_name": "elt", "keepalives": 1, "keepalives_idle": 30,
                  "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 60000}
        if self.password:
            kwargs["password"] = self.password
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        options = user_pgoptions()
        if options is not None:  # elt's own check is set below, where the server can take it
            kwargs["options"] = options
        try:
            con = psycopg2.connect(**kwargs)
        except psycopg2.OperationalError as exc:
            text = first_line(exc)
            if self.password:
                text = text.replace(self.password, "***")
            where = f"cannot connect to PostgreSQL {self.user}@{self.host}:{self.port}/{self.dbname}: {text}"
            if re.search(r"database \S+ does not exist", str(exc)):
                prefix = self.origin.split("*")[0] if self.origin.endswith("environment variables") else ""
                # owned by this user: a database created by another role would refuse it CREATE SCHEMA
                createdb = (shlex.join(["createdb", "-h", self.host, "-p", str(self.port)]) + " -U <admin-role> "
                            + shlex.join(["-O", self.user, self.dbname]))
                quoted, owner = ('"' + name.replace('"', '""') + '"' for name in (self.dbname, self.user))
                raise ConfigError(where, hint=(
                    f"create it, owned by {self.user}, as a role that may create databases (`{createdb}`, or in psql "
                    f"`CREATE DATABASE {quoted} OWNER {owner};`), or set {prefix or 'the ...'}DATABASE to a database "
                    "that exists")) from None
            if _REFUSED_LOGIN.search(str(exc)):
                raise ConfigError(where, hint=f"check the {self.origin} (password via ...PASSWORD or ...PASSWORD_FILE)") from None
            if _NO_SLOTS.search(str(exc)):  # the server is up: its connections are all taken
                raise ConnectionFailed(where, hint=(
                    "the server has no free connection slot (max_connections): other sessions hold them all; the "
                    "orchestrator retries, or rerun once some are free (`SELECT usename, application_name, state FROM "
                    "pg_stat_activity` lists them); a transform that applies a plan opens about a dozen")) from None
            if re.search(r"No space left on device|could not write init file|could not extend file", str(exc)):
                # the server is up, its disk is full: "down or unreachable" sent a probe to the network
                raise ConnectionFailed(where, hint=(
                    "the server is up but its disk is full: free space on its data disk (or ask its administrator); "
                    "the orchestrator retries, or rerun then")) from None
            raise ConnectionFailed(where, hint="the server is down or unreachable; the orchestrator retries, "
                                              f"or rerun once it is back (check the {self.origin})") from None
        interval = client_check_ms()
        try:
            self._set_up(con, interval)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # the link went between the login and the session's settings: as unreachable as a
            # refused login, not a traceback (a scheduler probe: `elt run-job` died there)
            con.close()
            text = first_line(exc)
            if self.password:
                text = text.replace(self.password, "***")
            raise ConnectionFailed(
                f"lost the connection to PostgreSQL {self.user}@{self.host}:{self.port}/{self.dbname} while setting up "
                f"the session: {text}", hint="the server or the network went away; the orchestrator retries, or rerun "
                "once it answers") from None
        return con

    @staticmethod
    def _set_up(con, interval):  # type: ignore[no-untyped-def]
        with con.cursor() as cur:
            # UTC sessions: a timestamptz's day and text are the same on every server (docs/decisions/0033)
            cur.execute("SET TimeZone = 'UTC'")
            # the server's side of the same keepalives: a session whose client the network cut off
            # (a partition, a host gone) ends in about a minute, and with it an advisory job lock it
            # held; with the kernel's defaults the server waited two hours and every load in between
            # was refused as "held by another load" (a network probe). No effect over a Unix socket.
            cur.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
            if interval and con.server_version >= 140000:
                cur.execute("SET client_connection_check_interval = %s", (interval,))
        con.commit()


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier quoted for a message to paste into psql (queries use psycopg2.sql)."""
    return '"' + name.replace('"', '""') + '"'


def warehouse_privilege_error(exc: BaseException, settings: PostgresSettings) -> ConfigError | None:
    """What to grant when the PostgreSQL warehouse refused the role a privilege (SQLSTATE 42501,
    anywhere in ``exc``'s chain), else None. The role creates schemas (elt: ``elt_meta``, ``raw_*``;
    SQLMesh: ``sqlmesh``, ``sqlmesh__*`` and the layers), so it needs CREATE on the database.

    >>> class Denied(Exception):
    ...     pgcode = "42501"
    >>> error = warehouse_privilege_error(Denied("permission denied for database wh"),
    ...                                   PostgresSettings("db", 5432, "etl", "wh"))
    >>> print(error.detail)
    the PostgreSQL role etl lacks a privilege in database wh: permission denied for database wh
    >>> print(error.hint)  # doctest: +ELLIPSIS
    as the database's owner or a superuser, run `GRANT CREATE ON DATABASE "wh" TO "etl";` ...
    """
    # insufficient_privilege, read_only_sql_transaction
    current = next((e for e in exception_chain(exc) if getattr(e, "pgcode", None) in ("42501", "25006")), None)
    if current is None:
        return None
    role, database = quote_ident(settings.user), quote_ident(settings.dbname)
    text = first_line(current)
    if current.pgcode == "25006":  # type: ignore[attr-defined]
        return ConfigError(
            f"the PostgreSQL warehouse {settings.host}:{settings.port}/{settings.dbname} accepts no writes: {text}",
            hint=("ELT_PG_HOST must name the primary server, not a standby or read replica; if it is the primary, "
                  "`default_transaction_read_only` is on for the database or the role: as its owner, connected to "
                  f"another database (`psql -d postgres`), run `ALTER DATABASE {database} RESET "
                  "default_transaction_read_only;` (or `ALTER ROLE ... RESET default_transaction_read_only;`)"))
    grant = (f"`GRANT CREATE ON DATABASE {database} TO {role};` (elt creates the schemas elt_meta and raw_*, SQLMesh "
             "creates sqlmesh, sqlmesh__* and the layers' schemas)")
    schema = re.search(r"permission denied for schema (\S+)", text)
    table = re.search(r"(?:permission denied for|must be owner of) (?:table|relation|view|sequence) (\S+)", text)
    if schema:  # made by another role (a DBA's CREATE SCHEMA): elt's role must own it
        fix = f"`ALTER SCHEMA {quote_ident(schema[1])} OWNER TO {role};`"
    elif table:
        fix = f"`ALTER TABLE <schema>.{quote_ident(table[1])} OWNER TO {role};` (the table another role created)"
    else:
        fix = grant
    return ConfigError(
        f"the PostgreSQL role {settings.user} lacks a privilege in database {settings.dbname}: {text}",
        hint=f"as the database's owner or a superuser, run {fix} (docs/runbook.md, \"Production\")")


# PostgreSQL's words when statement_timeout ended a statement
STATEMENT_TIMEOUT = "canceling statement due to statement timeout"


def statement_timeout_hint(role: str) -> str:
    """The next step when the warehouse's ``statement_timeout`` (set for the role, the database or
    the server) ended one of the pipeline's statements: a limit, not bad data or SQL.

    >>> statement_timeout_hint("etl")[:60]
    'the warehouse ended the statement at its statement_timeout ('
    """
    return ("the warehouse ended the statement at its statement_timeout (`SHOW statement_timeout;` as the role); "
            f"nothing was half-applied. Raise it for the pipeline's role (`ALTER ROLE {quote_ident(role)} SET "
            "statement_timeout = '2h';`), or for elt's processes only with PGOPTIONS='-c statement_timeout=2h', "
            "then rerun (docs/runbook.md, \"Production\")")


# A query keeps running on the server after its client died (SIGKILL, an OOM kill, a timeout's
# SIGTERM: a killed transform's INSERT went on for its whole length, holding its locks against the
# retry), unless the server checks the connection while it runs (PostgreSQL 14+).
CLIENT_CHECK = "client_connection_check_interval"


def client_check_ms() -> int:
    """How often (ms) the server checks that an `elt` connection's client is alive while a query
    runs: ``ELT_PG_CLIENT_CHECK_S`` (5 s; 0 turns it off).

    >>> client_check_ms()
    5000
    """
    value = os.environ.get("ELT_PG_CLIENT_CHECK_S", "5")
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"ELT_PG_CLIENT_CHECK_S={value!r} is not a number of seconds",
                          hint="set it to e.g. 5, or 0 to leave the server's setting alone") from None
    return max(0, round(seconds * 1000))


# Every warehouse session runs in UTC, as config.yaml's DuckDB sessions and Spark's do: a timestamptz
# column's day must not depend on the server's or the database's default time zone.
SESSION_TIME_ZONE = "TimeZone=UTC"


def warehouse_pgoptions(server_version: int) -> None:
    """Have libpq connections of this process (SQLMesh's, which take no session settings) run in
    UTC and carry the connection check, through ``PGOPTIONS`` (the check when the server knows it).
    Our own connections (``PostgresSettings.connect``) take both out again and set them after
    connecting, the check only where the server accepts it, so a source on an older server still
    connects. Whatever PGOPTIONS held before is kept (before ours: ours win).
    """
    before = user_pgoptions()
    if before is None:  # the first call: PGOPTIONS is still the user's
        before = os.environ.get("PGOPTIONS", "").strip()
    interval = client_check_ms()
    os.environ["ELT_PGOPTIONS_BEFORE"] = before or ""
    options = [before, f"-c {SESSION_TIME_ZONE}", "-c client_encoding=UTF8"]
    # a model deploy's DROP VIEW waits for every open transaction that read the view (a BI session
    # left idle in transaction): without a limit it waited for ever, holding back every later
    # reader of that view behind its queued lock (an on-call probe). 0 turns the limit off.
    lock_wait = float(os.environ.get("ELT_PG_LOCK_TIMEOUT_S", "600"))
    if lock_wait > 0:
        options.append(f"-c lock_timeout={int(lock_wait * 1000)}")
    if interval and server_version >= 140000:
        options.append(f"-c {CLIENT_CHECK}={interval}")
    os.environ["PGOPTIONS"] = " ".join(filter(None, options))


def user_pgoptions() -> str | None:
    """``PGOPTIONS`` as the user set it, before ``warehouse_pgoptions`` (None: never changed)."""
    if "ELT_PGOPTIONS_BEFORE" in os.environ:
        return os.environ["ELT_PGOPTIONS_BEFORE"]
    return None
