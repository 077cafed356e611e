"""Benchmark: what a load with nothing new costs as a table's landed history grows (decision 0059).

One table of a file source is given 1, 100, 10,000 and 100,000 applied batches (one real batch,
its folder copied under new ids with hard links, and a ledger row each), then a load with nothing
new runs in a fresh interpreter, as `elt load` does: median seconds and peak RSS of ``--repeat``
runs per size, interleaved, and each size's time over the 1-batch time measured in the same run.

With ``--s3``, the same tables (``--s3-sizes``, fewer: every file is one PUT to build) are also
copied to a bucket of a real S3 endpoint on loopback (moto's server, as the tests use) and loaded
from there: the S3 listing's time and the requests it costs (counted at the endpoint: LIST, HEAD
and GET of the no-op load), per size, against the 1-batch load from S3.

    .venv/bin/python bench/landing_listing.py [--sizes 1 100 10000 100000] [--repeat 3]
        [--s3 [--s3-sizes 1 100 1000 10000]]

The last line is one JSON object. Machines are noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sources.config import parse_source  # noqa: E402
from sources.landing.manifest import MANIFEST_NAME  # noqa: E402
from sources.landing.store import Landing  # noqa: E402
from sources.load.duckdb_raw import DuckDBRaw  # noqa: E402
from sources.pipeline import ingest  # noqa: E402

SPEC = {"name": "shop", "kind": "files", "owner": "bench",
        "tables": {"orders": {"file": "orders.csv", "primary_key": "id",
                              "columns": {"id": "integer", "total": "integer"}}}}

# a load with nothing new, as `elt load` runs it: a fresh interpreter
NOOP = """
import sys
from pathlib import Path
from sources.config import parse_source
from sources.landing.store import Landing
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import ingest
work = Path(sys.argv[1])
spec = parse_source({**%r, "path": str(work / "in")})
landing = Landing.from_url(sys.argv[2]) if len(sys.argv) > 2 else Landing.local(work / "landing")
with DuckDBRaw(work / "wh.duckdb") as raw:
    (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=work)
assert out.status == "unchanged" and out.error is None, out
# peak resident memory of this process (ru_maxrss would include the parent's, from before exec)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")))
""" % (SPEC,)


def build(work: Path, batches: int) -> None:
    """A landed and applied table of ``batches`` batches: one real, the others copies of it."""
    (work / "in").mkdir(parents=True)
    (work / "in" / "orders.csv").write_text("id,total\n1,10\n2,20\n")
    spec = parse_source({**SPEC, "path": str(work / "in")})
    landing = Landing.local(work / "landing")
    with DuckDBRaw(work / "wh.duckdb") as raw:
        (out,) = ingest(spec, landing=landing, raw=raw, lock_dir=work)
    (real,) = out.applied
    folder = Path(landing.batch_dir("shop", "orders", real))
    manifest = (folder / MANIFEST_NAME).read_text()
    # ids that sort before the real batch (it stays the newest, which the file is compared with)
    ids = [f"20000101T{i // 1_000_000:06d}{i % 1_000_000:06d}Z-{i:08x}" for i in range(batches - 1)]
    source = folder
    for i, batch_id in enumerate(ids):
        copy = folder.parent / batch_id
        copy.mkdir()
        for f in source.iterdir():
            if f.name != MANIFEST_NAME:  # a file takes 65,000 links at most: copied once per 50,000
                (shutil.copyfile if i % 50_000 == 0 else os.link)(f, copy / f.name)
        if i % 50_000 == 0:
            source = copy
        (copy / MANIFEST_NAME).write_text(manifest.replace(real, batch_id))
    if not ids:
        return
    con = duckdb.connect(str(work / "wh.duckdb"))
    try:
        con.execute("CREATE TEMP TABLE ids AS SELECT unnest(?::VARCHAR[]) AS batch_id", [ids])
        columns = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'elt_meta' "
                                             "AND table_name = 'loaded_batches' ORDER BY column_index").fetchall()]
        others = ", ".join(f'l."{c}"' for c in columns if c != "batch_id")
        con.execute(f"INSERT INTO elt_meta.loaded_batches (batch_id, {', '.join(chr(34) + c + chr(34) for c in columns if c != 'batch_id')}) "
                    f"SELECT ids.batch_id, {others} FROM ids, elt_meta.loaded_batches l WHERE l.batch_id = ?", [real])
    finally:
        con.close()


def noop(work: Path, url: str | None = None, env: dict[str, str] | None = None) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", NOOP, str(work), *([url] if url else [])], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"the no-op load failed:\n{proc.stderr[-3000:]}")
    return elapsed, int(proc.stdout.strip().splitlines()[-1]) / 1024


def upload(client, bucket: str, work: Path) -> int:  # type: ignore[no-untyped-def]
    """``work``'s landing folder to ``bucket``/<work name>/landing, file by file: the PUTs made."""
    from concurrent.futures import ThreadPoolExecutor

    files = [f for f in (work / "landing").rglob("*") if f.is_file()]
    keys = [f"{work.name}/landing/{f.relative_to(work / 'landing').as_posix()}" for f in files]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda fk: client.upload_file(str(fk[0]), bucket, fk[1]), zip(files, keys)))
    return len(files)


class Requests:
    """Requests the S3 endpoint served, by method (a WSGI wrapper around moto's server app)."""

    def __init__(self) -> None:
        from collections import Counter

        self.counts: Counter[str] = Counter()

    def wrap(self, app):  # type: ignore[no-untyped-def]
        def counted(environ, start_response):  # type: ignore[no-untyped-def]
            query = environ.get("QUERY_STRING", "")
            method = environ.get("REQUEST_METHOD", "?")
            self.counts["LIST" if method == "GET" and ("list-type" in query or "prefix=" in query) else method] += 1
            return app(environ, start_response)
        return counted


def s3_runs(works: dict[int, Path], sizes: list[int], repeat: int) -> dict[str, object]:
    import boto3
    from moto.server import ThreadedMotoServer

    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    requests = Requests()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        server._server.app = requests.wrap(server._server.app)  # moto 5: the werkzeug server's WSGI app
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
               "ELT_S3_ENDPOINT": endpoint}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket="bench")
        for n in sizes:
            started = time.perf_counter()
            puts = upload(client, "bench", works[n])
            print(f"S3: copied {n:,} batches ({puts:,} objects) in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        runs: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
        calls: dict[int, dict[str, int]] = {}
        for _ in range(repeat):
            for n in sizes:
                requests.counts.clear()
                runs[n].append(noop(works[n], f"s3://bench/{works[n].name}/landing", env))
                calls[n] = dict(requests.counts)
    finally:
        server.stop()
    base = statistics.median(s for s, _ in runs[1])
    result: dict[str, object] = {}
    for n in sizes:
        seconds = statistics.median(s for s, _ in runs[n])
        result[f"s3_noop_load_{n}"] = {"seconds": round(seconds, 3), "over_1_batch": round(seconds / base, 3),
                                       "peak_rss_mb": round(max(r for _, r in runs[n])), "requests": calls[n]}
        print(f"{n:>9,} batches on S3: no-op load {seconds:.2f}s ({seconds / base:.2f}x the 1-batch load), "
              f"peak {max(r for _, r in runs[n]):.0f} MB, requests {calls[n]}", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size, interleaved; medians are reported")
    parser.add_argument("--s3", action="store_true", help="also load the tables from a bucket of an S3 endpoint on loopback")
    parser.add_argument("--s3-sizes", type=int, nargs="+", default=[1, 100, 1_000])
    args = parser.parse_args()
    sizes = sorted(set([1, *args.sizes]))
    s3_sizes = sorted(set([1, *args.s3_sizes])) if args.s3 else []
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        works = {}
        for n in sorted(set(sizes) | set(s3_sizes)):
            started = time.perf_counter()
            works[n] = Path(tmp) / f"b{n}"
            build(works[n], n)
            print(f"built {n:,} batches in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        runs: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
        for _ in range(args.repeat):
            for n in sizes:
                runs[n].append(noop(works[n]))
        s3 = s3_runs(works, s3_sizes, args.repeat) if s3_sizes else {}
    base = statistics.median(s for s, _ in runs[1])
    result: dict[str, object] = {"bench": "landing_listing", "repeat": args.repeat}
    for n in sizes:
        seconds = statistics.median(s for s, _ in runs[n])
        result[f"noop_load_{n}"] = {"seconds": round(seconds, 3), "over_1_batch": round(seconds / base, 3),
                                    "peak_rss_mb": round(max(r for _, r in runs[n]))}
        print(f"{n:>9,} batches: no-op load {seconds:.2f}s ({seconds / base:.2f}x the 1-batch load), "
              f"peak {max(r for _, r in runs[n]):.0f} MB", file=sys.stderr)
    result.update(s3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
