"""Nothing secret in any output (DESIGN.md, rule 7).

A recognizable secret is planted in every place a secret can come from: an environment variable
(``ELT_SMTP_PASSWORD``, ``ELT_PG_PASSWORD``), a ``_FILE`` variable (the REST source's API key), the
user-info of a REST source's base URL, a webhook URL's path and an SMTP password. Then every output
path runs on real components: a REST load that fails (its FAILED line), the same load as a job that
fails and then succeeds (run history, landing, warehouse), a webhook that answers
``404 Not Found /services/.../<secret>``, mail through an SMTP server that requires a login,
`elt status`, `elt run-show`, the HTML report, and log records captured in this process. Every
output is searched: the commands' stdout and stderr, the log records, what the alert receivers got,
and every file written (DuckDB files as bytes and as rows, Parquet as bytes and as rows).

The search is shown able to fail: a canary value, planted where it belongs (a record's name, the
endpoint's path), is found in every one of those outputs, and the secret is found in the file that
holds it.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from orchestrator.observe import alerts
from sources.config import load_source
from sources.errors import SourceReadError
from sources.extract import rest
from sources.logs import JsonFormatter, TextFormatter
from tests.conftest import BIN, copy_project, project_env, run

SECRET = f"S3CR3T-{secrets.token_hex(6)}"
CANARY = f"C4N4RY-{secrets.token_hex(6)}"  # not a secret: data and an endpoint path, printed as they should be
TOKEN, PASSWORD, SMTP_PASSWORD = f"{SECRET}-token", f"{SECRET}-userinfo", f"{SECRET}-smtp"
DECLARATION = f"""name: sweep_api
kind: rest_api
base_url_env: SWEEP_API_URL
auth: {{type: api_key, header: X-API-Key, token_env: SWEEP_API_TOKEN}}
raw_schema: raw_sweep
owner: sweep-team@example.com
freshness: 26h
timeout_s: 5
max_retries: 1
tables:
  items:
    endpoint: /v1/items-{CANARY}
    records_path: data
    primary_key: id
    columns: {{id: string, name: string}}
"""


class Endpoints:
    """One HTTP server on loopback: the REST API (GET; it checks both credentials) and a webhook
    (POST) that refuses every message quoting its own secret path, as chat servers do."""

    def __init__(self) -> None:
        self.status, self.posts, self.authorized = 404, [], []  # type: ignore[var-annotated]
        self.echo_key = False  # the record's id is the API key the request carried (a careless API)
        basic = "Basic " + base64.b64encode(f"sweeper:{PASSWORD}".encode()).decode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                ok = self.headers.get("X-API-Key") == TOKEN and self.headers.get("Authorization") == basic
                outer.authorized.append(ok)
                status = outer.status if ok else 401
                record = {"id": self.headers.get("X-API-Key") if outer.echo_key else "1", "name": f"item {CANARY}"}
                body = json.dumps({"data": [record]} if status == 200 else
                                  {"error": f"no such path {self.path}"}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                outer.posts.append(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                body = f"no_service {self.path}".encode()
                self.send_response(404, f"Not Found {self.path}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by its own key: (certificate, key) files.
    Trusted only where a test points SSL_CERT_FILE at it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class AuthSMTP:
    """An SMTP server that requires AUTH PLAIN and, refusing a login, quotes the password back.
    It offers STARTTLS with ``certificate`` (none: it offers no TLS) and records, for each login,
    whether it came over TLS (``tls_logins``)."""

    def __init__(self, certificate: tuple[Path, Path] | None = None) -> None:
        import ssl

        self.messages: list[str] = []
        self.logins: list[bool] = []
        self.tls_logins: list[bool] = []
        self.cert_file = certificate[0] if certificate else None
        context = None
        if certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*certificate)
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write((line + "\r\n").encode())

            def handle(self) -> None:
                tls = False
                self.reply("220 localhost")
                while raw := self.rfile.readline():
                    line = raw.decode().rstrip("\r\n")
                    verb = line.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.reply("250-localhost")
                        if context and not tls:
                            self.reply("250-STARTTLS")
                        self.reply("250 AUTH PLAIN")
                    elif verb == "STARTTLS" and context and not tls:
                        self.reply("220 ready")
                        try:
                            self.connection = context.wrap_socket(self.connection, server_side=True)
                        except (OSError, ValueError):  # the client refused the certificate
                            return
                        self.rfile, self.wfile = self.connection.makefile("rb"), self.connection.makefile("wb", 0)
                        tls = True
                    elif verb == "AUTH":
                        password = base64.b64decode(line.split()[-1]).split(b"\0")[-1].decode()
                        outer.logins.append(password == SMTP_PASSWORD)
                        outer.tls_logins.append(tls)
                        self.reply("235 ok" if outer.logins[-1] else f"535 5.7.8 bad credentials {password}")
                    elif verb == "DATA":
                        self.reply("354 go on")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk
                        outer.messages.append(data.decode())
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("250 OK")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receivers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Endpoints, AuthSMTP]]:
    http, smtp = Endpoints(), AuthSMTP(self_signed_certificate(tmp_path_factory.mktemp("tls")))
    yield http, smtp
    for server in (http.server, smtp.server):
        server.shutdown()
        server.server_close()


def _texts(path: Path) -> list[str]:
    """A written file as the sweep reads it: its bytes, and its rows where it holds a database or
    compressed columns (a string in a DuckDB block or a Parquet page may be compressed)."""
    texts = [path.read_bytes().decode("latin-1")]
    if path.suffix == ".parquet":
        texts.append(str(pq.read_table(path).to_pylist()))
    elif path.suffix == ".duckdb":
        with duckdb.connect(str(path), read_only=True) as con:
            for schema, table in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
                texts.append(str(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()))  # names from the catalog
    return texts


def sweep(marker: str, outputs: dict[str, list[str]], root: Path) -> set[str]:
    """Where ``marker`` is found: the named outputs, and every file under ``root`` by its kind."""
    found = {name for name, texts in outputs.items() if any(marker in t for t in texts)}
    for path in (p for p in root.rglob("*") if p.is_file()):
        kind = ("landing" if "landing" in path.parts else "history" if path.name.startswith("elt_history")
                else "warehouse" if path.name.startswith("warehouse") else "report" if path.suffix == ".html"
                else f"file {path.relative_to(root)}")
        if any(marker in t for t in _texts(path)):
            found.add(kind)
    return found


def test_a_planted_secret_appears_in_no_output(tmp_path: Path, receivers: tuple[Endpoints, AuthSMTP],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    http, smtp = receivers
    vault = tmp_path / "vault"  # where the operator keeps the secret files: not an output
    vault.mkdir()
    (vault / "api_token").write_text(TOKEN + "\n")
    out = tmp_path / "out"
    project = copy_project(out / "project")
    (out / "declarations").mkdir()
    (out / "declarations" / "sweep_api.yaml").write_text(DECLARATION)
    (out / "tmp").mkdir()
    env = project_env(
        project, ELT_DECLARATIONS_DIR=str(out / "declarations"), TMPDIR=str(out / "tmp"), ELT_RETRY_BASE_S="0.1",
        SWEEP_API_URL=http.url.replace("http://", f"http://sweeper:{PASSWORD}@"),
        SWEEP_API_TOKEN_FILE=str(vault / "api_token"), ELT_PG_PASSWORD=f"{SECRET}-pg",
        ELT_ALERT_WEBHOOK_URL=f"{http.url}/services/T000/B000/{SECRET}-hook", ELT_ALERT_TIMEOUT_S="5",
        ELT_SMTP_HOST="127.0.0.1", ELT_SMTP_PORT=str(smtp.port), ELT_SMTP_USER="alerts",
        ELT_SMTP_PASSWORD=SMTP_PASSWORD, ELT_ALERT_EMAIL_TO="oncall@example.com", ELT_ALERT_EMAIL_FROM="elt@example.com",
        SSL_CERT_FILE=str(smtp.cert_file))

    def elt(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = run([str(BIN / "elt"), *args], cwd=project, env=env, timeout=120, check=False)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
        return proc

    procs = [elt("load", "sweep_api", code=1)]  # the FAILED line
    assert "FAILED items" in procs[0].stdout and "HTTP 404" in procs[0].stdout
    procs.append(elt("run-job", "sweep_api", code=1))  # a failed run: history, alert FAILED
    failed_run = procs[-1].stdout.split("(run ")[1].split(",")[0]
    http.status = 200
    procs.append(elt("run-job", "sweep_api"))  # landing, warehouse, alert RECOVERED
    procs += [elt("status"), elt("run-show", failed_run), elt("report", "--out", str(out / "report.html"))]
    assert "sweep_api" in procs[3].stdout and "HTTP 404" in procs[4].stdout

    # the same paths in this process, where the log records themselves can be read
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    loggers = [logging.getLogger(name) for name in ("sources", "orchestrator")]
    for logger in loggers:
        logger.addHandler(handler)
    for key in ("SWEEP_API_URL", "SWEEP_API_TOKEN_FILE", "ELT_ALERT_WEBHOOK_URL", "ELT_SMTP_HOST", "ELT_SMTP_PORT",
                "ELT_SMTP_USER", "ELT_ALERT_EMAIL_TO", "SSL_CERT_FILE"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.setenv("ELT_SMTP_PASSWORD", f"{SECRET}-refused")  # the server quotes it back
    spec = load_source(out / "declarations" / "sweep_api.yaml")
    errors = []
    try:
        for status in (404, 503):  # refused; unavailable (retried: the retry log lines)
            http.status = status
            with pytest.raises(SourceReadError) as err:
                for item in rest.extracts(spec, spec.tables["items"], cursor=None, sleep=lambda s: None):
                    list(item.batches)
            errors.append(str(err.value))
        delivered = alerts.send(alerts.Alert("failed", "job sweep_api", f"job sweep_api failed ({CANARY})",
                                             error=errors[0]))
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert delivered == {"webhook": False, "email": False}
    formatted = [f.format(r) for r in records for f in (logging.Formatter(), JsonFormatter(), TextFormatter())]
    assert any('"error": "HTTP 404"' in line for line in formatted)
    assert any('"error": "SMTP 535 (SMTPAuthenticationError)"' in line for line in formatted)
    assert any(r.getMessage() == "retrying" for r in records)

    # every secret reached its server, so the sweep below searches outputs that had them at hand
    assert http.authorized and all(http.authorized) and smtp.logins[:2] == [True, True] and smtp.logins[-1] is False
    assert smtp.tls_logins and all(smtp.tls_logins), smtp.tls_logins  # the password only ever went over TLS
    assert len(http.posts) == 3 and len(smtp.messages) == 2
    outputs = {
        "stdout": [p.stdout for p in procs], "stderr": [p.stderr for p in procs],
        "log records": [*formatted, *(str(r.__dict__) for r in records)],
        "errors": errors,
        "alerts sent": [*http.posts, *smtp.messages],
    }
    leaks = sweep(SECRET, outputs, out)
    assert leaks == set(), f"{SECRET} found in {sorted(leaks)}"
    for part in ("T000/B000", "sweeper"):  # nor the rest of the webhook's path, nor the URL's user name
        assert sweep(part, outputs, out) == set(), part

    # the sweep can fail: the canary is found in every output, the secret in the file that holds it
    expected = {*outputs, "landing", "warehouse", "history", "report"}
    assert sweep(CANARY, outputs, out) >= expected, expected - sweep(CANARY, outputs, out)
    assert sweep(SECRET, {}, vault) == {"file api_token"}



def test_a_header_echoed_back_by_the_api_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error page that quotes the request's headers (a proxy, a debug endpoint) must not carry
    the Basic credentials from the URL's user-info: not in clear, not base64-encoded as sent."""
    basic = base64.b64encode(f"sweeper:{PASSWORD}".encode()).decode()
    echoed: list[str] = []

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = f"Authorization: {self.headers.get('Authorization')}\nX-API-Key: {self.headers.get('X-API-Key')}\n"
            echoed.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "sweep_api.yaml").write_text(DECLARATION)
        monkeypatch.setenv("SWEEP_API_URL", f"http://sweeper:{PASSWORD}@127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("SWEEP_API_TOKEN", TOKEN)
        spec = load_source(tmp_path / "sweep_api.yaml")
        with pytest.raises(SourceReadError) as err:
            for item in rest.extracts(spec, spec.tables["items"], cursor=None, sleep=lambda s: None):
                list(item.batches)
    finally:
        server.shutdown()
        server.server_close()
    message = str(err.value)
    assert echoed and basic in echoed[0] and TOKEN in echoed[0]  # the server did quote both credentials
    assert "not JSON" in message and "Authorization: Basic ***" in message, message
    for secret in (basic, PASSWORD, TOKEN, basic[:12]):
        assert secret not in message, message


def test_credentials_in_the_landing_url_are_refused_and_never_shown(tmp_path: Path) -> None:
    """``ELT_LANDING_URL=s3://KEY:SECRET@bucket/prefix``: S3 credentials belong in AWS_*; a URL
    holding them is refused by name, and the key appears in no output, history or report."""
    out = tmp_path / "out"
    project = copy_project(out / "project")
    (out / "declarations").mkdir()
    (out / "declarations" / "sweep_api.yaml").write_text(DECLARATION)
    key = f"{SECRET}/landing+key"  # AWS secret keys hold '/' and '+'
    env = project_env(project, ELT_DECLARATIONS_DIR=str(out / "declarations"), SWEEP_API_URL="http://127.0.0.1:9",
                      SWEEP_API_TOKEN=TOKEN, ELT_LANDING_URL=f"s3://AKIAEXAMPLE:{key}@landing/{CANARY}")
    procs = []
    for args in (["load", "sweep_api"], ["run-job", "sweep_api"], ["runs"], ["report", "--out", str(out / "report.html")]):
        procs.append(run([str(BIN / "elt"), *args], cwd=project, env=env, timeout=120, check=False))
    assert procs[0].returncode != 0 and "holds credentials" in procs[0].stdout + procs[0].stderr, procs[0]
    assert "AWS_SECRET_ACCESS_KEY" in procs[0].stdout + procs[0].stderr
    assert procs[1].returncode != 0
    outputs = {"stdout": [p.stdout for p in procs], "stderr": [p.stderr for p in procs]}
    assert sweep(key, outputs, out) == set()
    assert sweep("AKIAEXAMPLE", outputs, out) == set()
    assert "ELT_LANDING_URL" in procs[0].stdout + procs[0].stderr  # the setting is named; the URL not shown


def _run_elt(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run([str(BIN / "elt"), *args], cwd=project, env=env, timeout=120, check=False)


def test_a_token_with_a_trailing_newline_is_sent_trimmed_and_never_shown(
        tmp_path: Path, receivers: tuple[Endpoints, AuthSMTP]) -> None:
    """A secret mapped into the environment from a file often keeps its newline. It used to reach
    the header as is: http.client refused it, quoting ``b'Bearer <token>\\n'`` in the FAILED line,
    the run history, the report and the alerts. Now the value is trimmed (as a ``_FILE``'s was) and
    the load succeeds; and a token value is redacted from any message that quotes it."""
    http, _ = receivers
    http.status = 200
    out = tmp_path / "out"
    project = copy_project(out / "project")
    (out / "declarations").mkdir()
    (out / "declarations" / "sweep_api.yaml").write_text(DECLARATION)
    env = project_env(project, ELT_DECLARATIONS_DIR=str(out / "declarations"),
                      SWEEP_API_URL=http.url.replace("http://", f"http://sweeper:{PASSWORD}@"),
                      SWEEP_API_TOKEN=TOKEN + "\r\n")
    proc = _run_elt(project, env, "load", "sweep_api")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert http.authorized and all(http.authorized), http.authorized  # the API got the exact token
    assert sweep(SECRET, {"stdout": [proc.stdout], "stderr": [proc.stderr]}, out) == set()


def test_a_url_password_with_an_unencoded_slash_is_refused_and_never_shown(tmp_path: Path) -> None:
    """``http://user:ab/cd@host``: URL parsers end the host at the '/', so no user-info was found
    to hide, and every message (retries, FAILED line, history, alerts) carried the password. Such a
    base URL is refused by name before any request, with how to write it instead."""
    out = tmp_path / "out"
    project = copy_project(out / "project")
    (out / "declarations").mkdir()
    (out / "declarations" / "sweep_api.yaml").write_text(DECLARATION)
    for password in (f"{SECRET}/ab", f"{SECRET}?ab", f"{SECRET}#ab"):
        env = project_env(project, ELT_DECLARATIONS_DIR=str(out / "declarations"), SWEEP_API_TOKEN=TOKEN,
                          SWEEP_API_URL=f"http://sweeper:{password}@127.0.0.1:9/api")
        procs = [_run_elt(project, env, *args) for args in (["load", "sweep_api"], ["run-job", "sweep_api"], ["runs"])]
        text = procs[0].stdout + procs[0].stderr
        assert procs[0].returncode != 0 and "unencoded '/', '?' or '#'" in text and "%2F" in text, text
        assert sweep(SECRET, {"stdout": [p.stdout for p in procs], "stderr": [p.stderr for p in procs]}, out) == set()


def test_a_landing_url_of_another_scheme_is_refused_and_makes_no_folder(tmp_path: Path) -> None:
    """``ELT_LANDING_URL=gs://key:secret@bucket/x`` was taken for a relative folder: batches landed
    under ``gs:/key:secret@bucket/x`` in the project, the secret in folder names."""
    out = tmp_path / "out"
    project = copy_project(out / "project")
    (out / "declarations").mkdir()
    (out / "declarations" / "sweep_api.yaml").write_text(DECLARATION)
    env = project_env(project, ELT_DECLARATIONS_DIR=str(out / "declarations"), SWEEP_API_URL="http://127.0.0.1:9",
                      SWEEP_API_TOKEN=TOKEN, ELT_LANDING_URL=f"gs://key:{SECRET}@bucket/landing")
    proc = _run_elt(project, env, "load", "sweep_api")
    assert proc.returncode != 0 and "uses gs://, which is not supported" in proc.stdout + proc.stderr, proc
    assert SECRET not in proc.stdout + proc.stderr
    assert not [p for p in out.rglob("*") if SECRET in str(p)]


def test_a_warehouse_password_with_quotes_and_backslashes_reaches_sqlmesh_exactly() -> None:
    """config.yaml used to wrap ELT_PG_PASSWORD in "...": a '"' or '\\' broke the YAML, and the
    parser's error printed the line with the password in it (a '\\t' silently changed it)."""
    from sqlmesh.core.config import Config
    from sqlmesh.core.config.loader import load_config_from_paths

    from tests.conftest import ROOT

    for password in (f'{SECRET}"q', f"{SECRET}\\cd", f"{SECRET}\\t'<&>é"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ELT_PG_PASSWORD", password)
            mp.setenv("ELT_GATEWAY", "spark")  # the spark gateway (its Connect URL) is rendered too
            mp.setenv("ELT_SPARK_REMOTE", f"sc://127.0.0.1:15002/;token={password}")
            config = load_config_from_paths(Config, [ROOT / "config.yaml"])
        assert config.gateways["postgres"].connection.password == password
        assert config.gateways["postgres"].test_connection.password == password
        assert config.gateways["spark"].connection.config["spark.remote"].endswith(password)


def test_an_uncaught_error_is_printed_redacted(tmp_path: Path) -> None:
    """Whatever a library puts in an exception `elt` does not expect is printed through the same
    redaction as every other line: the secrets this process read, and credential-shaped text."""
    script = ("from sources import logs; logs.install_excepthook(); logs.register_secret('" + SECRET + "');"
              "raise RuntimeError('parsing: password: \"" + SECRET + "\" in http://u:" + CANARY + "@h/x')")
    proc = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RuntimeError: parsing: password: ***" in proc.stderr, proc
    assert SECRET not in proc.stderr and CANARY not in proc.stderr


def _captured(logger_name: str) -> tuple[list[logging.LogRecord], logging.Handler]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger(logger_name).addHandler(handler)
    return records, handler


def test_the_smtp_password_goes_only_over_a_verified_tls_connection(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """smtplib logs in over plain TCP unless told otherwise, and its STARTTLS checks no certificate:
    the alerts' password went in clear text by default, and to anyone in the middle with
    ELT_SMTP_STARTTLS=1. Now TLS is used whenever a password is to be sent, the certificate is
    checked, and a server offering no TLS gets no password (a relay without login still gets mail)."""
    certificate = self_signed_certificate(tmp_path / "tls")
    tls, plain = AuthSMTP(certificate), AuthSMTP()
    for key, value in dict(ELT_SMTP_HOST="127.0.0.1", ELT_SMTP_USER="alerts", ELT_SMTP_PASSWORD=SMTP_PASSWORD,
                           ELT_ALERT_EMAIL_TO="oncall@example.com", ELT_ALERT_EMAIL_FROM="elt@example.com").items():
        monkeypatch.setenv(key, value)
    for key in ("ELT_ALERT_WEBHOOK_URL", "ELT_ALERT_WEBHOOK_URL_FILE", "ELT_SMTP_STARTTLS", "ELT_SMTP_SSL", "SSL_CERT_FILE"):
        monkeypatch.delenv(key, raising=False)
    alert = alerts.Alert("failed", "job sweep_api", "job sweep_api failed")
    records, handler = _captured("orchestrator")
    try:
        # a certificate nobody vouches for (someone in the middle): nothing reaches the server, with or
        # without ELT_SMTP_STARTTLS
        monkeypatch.setenv("ELT_SMTP_PORT", str(tls.port))
        assert alerts.send(alert) == {"email": False}
        monkeypatch.setenv("ELT_SMTP_STARTTLS", "1")
        assert alerts.send(alert) == {"email": False}
        assert tls.logins == [] and tls.messages == []
        assert [r.__dict__["fields"]["error"] for r in records if r.getMessage() == "alert channel failed"] == \
            ["SSLCertVerificationError"] * 2
        # the same server trusted (its certificate in SSL_CERT_FILE): the login goes over TLS
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        monkeypatch.delenv("ELT_SMTP_STARTTLS")
        assert alerts.send(alert) == {"email": True}
        assert tls.logins == [True] and tls.tls_logins == [True] and len(tls.messages) == 1
        # a server that offers no TLS is sent no password, and the log says what to change
        records.clear()
        monkeypatch.setenv("ELT_SMTP_PORT", str(plain.port))
        assert alerts.send(alert) == {"email": False}
        assert plain.logins == [] and plain.messages == []
        error = next(r.__dict__["fields"]["error"] for r in records if r.getMessage() == "alert channel failed")
        assert "offers no STARTTLS" in error and "ELT_SMTP_PORT=465" in error, error
        # ... while a relay that needs no login still gets the alert
        monkeypatch.delenv("ELT_SMTP_PASSWORD")
        assert alerts.send(alert) == {"email": True} and plain.logins == [] and len(plain.messages) == 1
    finally:
        logging.getLogger("orchestrator").removeHandler(handler)
        for server in (tls.server, plain.server):
            server.shutdown()
            server.server_close()


def test_a_secret_under_a_file_name_or_with_a_line_break_is_refused_unseen(tmp_path: Path) -> None:
    """``X_FILE=<the secret itself>`` (a secret mapped to the wrong name) was quoted in the error
    (`X_FILE points to '<secret>'`), and from there in the history and the alerts. A value with a
    line break inside reached http.client, whose error quotes it escaped (``\\n``), past the
    redaction. Both are refused by name, without the value."""
    from sources.connections import secret_from_env
    from sources.errors import ConfigError
    from sources.logs import redact_userinfo

    misplaced = f"{SECRET}-misplaced"
    with pytest.raises(ConfigError) as err:
        secret_from_env("SWEEP_API_TOKEN", environ={"SWEEP_API_TOKEN_FILE": misplaced})
    text = f"{err.value} {getattr(err.value, 'hint', '')}"
    assert "SWEEP_API_TOKEN_FILE is set but names no file that can be read" in text and "not the secret" in text, text
    assert SECRET not in text
    assert redact_userinfo(f"unexpected: {misplaced}!") == "unexpected: ***!"  # other quotes of it are hidden too

    two_lines = tmp_path / "token"
    two_lines.write_text(f"{SECRET}-line1\n{SECRET}-line2\n")
    for environ in ({"SWEEP_API_TOKEN_FILE": str(two_lines)}, {"SWEEP_API_TOKEN": f"{SECRET}-a\n{SECRET}-b"}):
        with pytest.raises(ConfigError) as err:
            secret_from_env("SWEEP_API_TOKEN", environ=environ)
        assert "holds a line break" in str(err.value) and SECRET not in str(err.value), err.value
    assert secret_from_env("SWEEP_API_TOKEN", environ={"SWEEP_API_TOKEN": f" {SECRET}-ok\n"}) == f"{SECRET}-ok"


def test_a_base_url_without_its_scheme_is_refused_unseen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``user:password@host:port`` (the scheme forgotten) has no user-info a URL parser finds, so
    requests' `No connection adapters were found for '<url>'` printed the password, and was
    retried as a network failure. It is refused as configuration, before any request."""
    from sources.errors import ConfigError

    (tmp_path / "sweep_api.yaml").write_text(DECLARATION)
    monkeypatch.setenv("SWEEP_API_TOKEN", TOKEN)
    spec = load_source(tmp_path / "sweep_api.yaml")
    for url in (f"sweeper:{PASSWORD}@127.0.0.1:9", f"127.0.0.1:9/{PASSWORD}", f"ftp://sweeper:{PASSWORD}@127.0.0.1"):
        monkeypatch.setenv("SWEEP_API_URL", url)
        with pytest.raises(ConfigError) as err:
            rest.RestClient(spec, spec.tables["items"])
        assert "SWEEP_API_URL" in str(err.value) and "does not start with http://" in str(err.value), err.value
        assert SECRET not in str(err.value)


def test_a_secret_quoted_by_a_job_attempt_stays_out_of_history_and_alerts(
        tmp_path: Path, receivers: tuple[Endpoints, AuthSMTP]) -> None:
    """A job's attempt runs in a worker process, which reads the source's secrets; the supervisor,
    which stores the attempt's result in the history and sends the alerts, never read them, so it
    could not redact them. An API that echoes the key into a record: `elt load` said `'***' is not
    a valid integer`, `elt run-job` stored and alerted the key itself."""
    http, _ = receivers
    http.status, http.echo_key = 200, True
    out = tmp_path / "out"
    project = copy_project(out / "project")
    (out / "declarations").mkdir()
    (out / "declarations" / "sweep_api.yaml").write_text(DECLARATION.replace("{id: string", "{id: integer"))
    env = project_env(project, ELT_DECLARATIONS_DIR=str(out / "declarations"), ELT_JOB_ATTEMPTS="1",
                      SWEEP_API_URL=http.url.replace("http://", f"http://sweeper:{PASSWORD}@"), SWEEP_API_TOKEN=TOKEN,
                      ELT_ALERT_WEBHOOK_URL=f"{http.url}/hook", ELT_ALERT_TIMEOUT_S="5")
    procs = [_run_elt(project, env, "run-job", "sweep_api"), _run_elt(project, env, "runs")]
    assert procs[0].returncode == 1, procs[0].stdout + procs[0].stderr
    assert "not a valid integer" in procs[1].stdout and "'***'" in procs[1].stdout, procs[1].stdout  # the error is there
    assert http.posts and "not a valid integer" in http.posts[0], http.posts
    outputs = {"stdout": [p.stdout for p in procs], "stderr": [p.stderr for p in procs], "alerts sent": http.posts}
    assert sweep(SECRET, outputs, out) == set()


def test_the_warehouse_password_reaches_sqlmesh_as_elt_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ELT_PG_PASSWORD`` with its file's trailing newline: `elt`'s own connections trim it and
    log in, but SQLMesh (config.yaml) was given it untrimmed, and `elt transform` died in a
    traceback saying the password was wrong just after `elt load` had worked."""
    import os

    from orchestrator.transform.run import export_pg_password

    monkeypatch.setenv("ELT_PG_PASSWORD", f"{SECRET}-pg\n")
    export_pg_password("ELT_PG_")
    assert os.environ["ELT_PG_PASSWORD"] == f"{SECRET}-pg"
    monkeypatch.delenv("ELT_PG_PASSWORD")
    (tmp_path / "pg_password").write_text(f"{SECRET}-file\n")
    monkeypatch.setenv("ELT_PG_PASSWORD_FILE", str(tmp_path / "pg_password"))
    export_pg_password("ELT_PG_")
    assert os.environ["ELT_PG_PASSWORD"] == f"{SECRET}-file"
