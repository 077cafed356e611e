"""Real servers for tests, on loopback only, started and stopped by fixtures.

- PostgreSQL: the machine's server binaries (Debian's postgresql package), a fresh cluster made
  with initdb in a temporary folder; run as the ``postgres`` user when the tests run as root
  (initdb refuses root).
- S3: moto's S3-compatible HTTP server (a real HTTP API; production points at AWS, MinIO, ...).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path:
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    except (OSError, subprocess.CalledProcessError):
        pass
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (see .ci/run)")


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    dbname: str

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    def env(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}_HOST": self.host, f"{prefix}_PORT": str(self.port), f"{prefix}_USER": self.user,
                f"{prefix}_DATABASE": self.dbname, f"{prefix}_PASSWORD": ""}


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    bindir = _pg_bindir()
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="elt-pg-"))
    data = base / "data"
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(base / "log"), "-o",
             f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50", "start"],
            check=True, capture_output=True, timeout=120,
        )
        yield Postgres("127.0.0.1", port, "postgres", "postgres")
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgres_with_standby() -> Iterator[tuple[Postgres, Postgres]]:
    """A primary and a hot standby streaming from it (``pg_basebackup -R``): what teams read an
    application database from. The standby cancels a query in conflict with replay at once
    (``max_standby_streaming_delay = 0``, no ``hot_standby_feedback``)."""
    bindir = _pg_bindir()
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="elt-pg-standby-"))
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(base, "postgres", "postgres")
    ports = free_port(), free_port()
    while ports[1] == ports[0]:  # the first port is free again until its server binds it
        ports = ports[0], free_port()
    started: list[Path] = []
    try:
        primary, standby = base / "primary", base / "standby"
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(primary), "-A", "trust", "-U", "postgres", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        options = f"-k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20"
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(primary), "-w", "-t", "60", "-l", str(base / "primary.log"),
                        "-o", f"-p {ports[0]} {options} -c wal_level=replica", "start"], check=True, capture_output=True, timeout=120)
        started.append(primary)
        subprocess.run([*prefix, str(bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(ports[0]), "-U", "postgres",
                        "-D", str(standby), "-R", "-X", "stream", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(standby), "-w", "-t", "60", "-l", str(base / "standby.log"),
                        "-o", f"-p {ports[1]} {options} -c hot_standby=on -c hot_standby_feedback=off "
                              "-c max_standby_streaming_delay=0", "start"], check=True, capture_output=True, timeout=120)
        started.append(standby)
        yield Postgres("127.0.0.1", ports[0], "postgres", "postgres"), Postgres("127.0.0.1", ports[1], "postgres", "postgres")
    finally:
        for data in reversed(started):
            subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    stop: Callable[[], None] = lambda: None  # stops the endpoint before its context ends (a failure test)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "ELT_S3_ENDPOINT": self.endpoint}


@contextmanager
def s3_server() -> Iterator[S3]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield S3(f"http://{host}:{port}", server.stop)
    finally:
        server.stop()


Responder = "Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, dict[str, str], bytes]]"


@contextmanager
def http_server(respond, keep_alive: bool = False, tls: tuple[Path, Path] | None = None) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A real HTTP server on 127.0.0.1; ``respond(path, query, headers) -> (status, headers, body)``,
    the body bytes or an iterable of chunks (each sent as it comes: a server that drips).

    Yields the base URL. Requests are recorded on ``respond.requests`` when that attribute exists,
    and each request's client port on ``respond.peers`` when that exists (one port = one connection).
    ``keep_alive`` speaks HTTP/1.1 (connections stay open between requests); ``tls`` is a
    (certificate, key) pair to serve https.
    """
    import threading
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parsed = urllib.parse.urlsplit(self.path)
            if hasattr(respond, "peers"):
                respond.peers.append(self.client_address[1])
            query = urllib.parse.parse_qs(parsed.query)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if hasattr(respond, "requests"):
                respond.requests.append((parsed.path, query, headers))
            status, extra, body = respond(parsed.path, query, headers)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            if "Content-Length" not in extra:  # a test may declare more than it sends (a cut-off body)
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if isinstance(body, bytes):
                self.wfile.write(body)
                return
            try:  # an iterable of chunks, written as it yields them (a slow server)
                for chunk in body:
                    self.wfile.write(chunk)
                    self.wfile.flush()
            except OSError:  # the client gave up and closed the connection
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def cutting_relay(host: str, port: int, cut: Callable[[bytes], bool]) -> Iterator[int]:
    """A TCP relay on loopback to ``host:port`` (yields its port). It forwards every connection's
    bytes both ways until ``cut(data)`` is first true for a chunk a client sends: it forwards that
    chunk, then closes that client's side without relaying the answer and keeps the server's side
    open, as a network partition does. Later connections are relayed whole."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    upstreams: list[socket.socket] = []
    fired = threading.Event()

    def pipe(client: socket.socket) -> None:
        server = socket.create_connection((host, port))
        upstreams.append(server)
        gone = threading.Event()

        def downstream() -> None:
            try:
                while data := server.recv(65536):
                    if gone.is_set():
                        return
                    client.sendall(data)
            except OSError:
                pass

        threading.Thread(target=downstream, daemon=True).start()
        try:
            while data := client.recv(65536):
                if not fired.is_set() and cut(data):
                    # the client's side goes first, so no answer can reach it, however the threads
                    # are scheduled (a review made a test pass without a cut by delaying this thread)
                    fired.set()
                    gone.set()
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    server.sendall(data)
                    return
                server.sendall(data)
        except OSError:
            pass

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=pipe, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        for upstream in upstreams:
            upstream.close()
