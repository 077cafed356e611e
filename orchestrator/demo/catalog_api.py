"""The demo catalog API: products, stores and supplies over real HTTP, paginated, bearer auth.

    GET /v1/products?page=1&per_page=100     -> {"data": [...], "page": 1, "total": 10}
    GET /v1/stores?...  (only stores opened by the release day)
    GET /v1/supplies?...

``as_of`` (settable while running) releases the data as it was at the end of that day, so daily
loads can be replayed. Served on loopback by default.

    python -m orchestrator.demo.catalog_api --data data/jaffle-data --port 8765   # token: JAFFLE_CATALOG_TOKEN
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import threading
import urllib.parse
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_FILES = {"products": "raw_products.csv", "stores": "raw_stores.csv", "supplies": "raw_supplies.csv"}
_INTS = {"price", "cost"}


class CatalogAPI:
    def __init__(self, data_dir: Path, token: str, as_of: date | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self.as_of = as_of
        self.tables: dict[str, list[dict[str, Any]]] = {}
        for name, file in _FILES.items():
            with (data_dir / file).open(newline="") as handle:
                self.tables[name] = [{k: int(v) if k in _INTS else v for k, v in row.items()} for row in csv.DictReader(handle)]
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                status, body = api.respond(self.path, self.headers.get("Authorization", ""))
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def rows(self, table: str) -> list[dict[str, Any]]:
        rows = self.tables[table]
        if table == "stores" and self.as_of is not None:
            end = datetime.combine(self.as_of + timedelta(days=1), datetime.min.time())
            rows = [r for r in rows if datetime.fromisoformat(r["opened_at"]) < end]
        return rows

    def respond(self, path: str, authorization: str) -> tuple[int, dict[str, Any]]:
        if authorization != f"Bearer {self.token}":
            return 401, {"error": "unauthorized"}
        parsed = urllib.parse.urlsplit(path)
        table = parsed.path.removeprefix("/v1/")
        if table not in self.tables:
            return 404, {"error": f"no endpoint {parsed.path}"}
        query = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        page, per_page = int(query.get("page", 1)), min(int(query.get("per_page", 100)), 1000)
        rows = self.rows(table)
        return 200, {"data": rows[(page - 1) * per_page: page * per_page], "page": page, "total": len(rows)}

    def start(self) -> CatalogAPI:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> CatalogAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--as-of", type=date.fromisoformat)
    args = parser.parse_args(argv)
    token = os.environ.get("JAFFLE_CATALOG_TOKEN")
    if not token:
        raise SystemExit("set JAFFLE_CATALOG_TOKEN (the bearer token clients must send)")
    from sources.errors import ConfigError

    try:  # a mistake is one line and its next step, exit 2, not a traceback (a newcomer walkthrough)
        missing = [file for file in _FILES.values() if not (args.data / file).is_file()]
        if missing:
            raise ConfigError(f"{args.data} lacks {', '.join(missing)}", hint="pass --data with the jaffle-data folder "
                              "jafgen wrote (`make demo` writes data/jaffle-data)")
        try:
            api = CatalogAPI(args.data, token, args.as_of, args.host, args.port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", hint="stop what "
                              "listens there, or pass another --port (and the same port in JAFFLE_CATALOG_URL)") from None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"catalog API on {api.url} (Ctrl-C to stop)", flush=True)
    try:
        api.server.serve_forever()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
