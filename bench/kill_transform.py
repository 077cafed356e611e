"""Chaos run: `elt transform` killed with SIGKILL at random instants, then healed by ordinary runs.

    .venv/bin/python bench/kill_transform.py [--rounds 40] [--seed 1] [--gateway duckdb|postgres] [--min-delay 0.2]

The failpoint tests (tests/orchestrator/test_incremental_transform.py) kill the transform at the
steps we chose. This run kills it wherever the clock says: inside SQLMesh's plan, its state
writes, a model's insert, an audit, the promotion of views, DuckDB's checkpoint. Each round:

1. a small Jaffle Shop (the tests' ``Shop``) with six days of orders is loaded; in ``later``
   rounds it is transformed, then a new day, a late correction and a deletion are loaded;
2. `elt transform` starts and gets SIGKILL after a random delay within the time an unkilled
   transform of the same state takes (measured once per kind); in a third of the rounds the
   next transform is killed too;
3. more days, a late-arriving order and a moved order are loaded, and `elt transform` runs to the
   end: it must exit 0 and the marts must equal one clean build of the final files, row for row.

A killed transform must also leave no process behind: one that still holds its stderr a minute
later is reported (``orphans``) and killed. The first run of this script found SQLMesh's forked
loading workers orphaned that way, holding the transform's lock (decision 0024).

Prints one line per round and, last, one JSON object: rounds, kills that landed before the
process ended, failed heals, mismatches and rounds that left processes behind (each with its
round, kind and delays). Exit status 1 when anything was lost, left behind, or a heal failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN, project_env  # noqa: E402
from tests.servers import postgres_server  # noqa: E402
from tests.orchestrator.test_incremental_transform import START, Gateway, Shop, _clean_build, _load  # noqa: E402
from orchestrator.transform.run import transform  # noqa: E402


def _prepare(tmp: Path, gateway: Gateway, seed: int, kind: str):  # type: ignore[no-untyped-def]
    shop = Shop(random.Random(seed))
    settings = gateway.settings(tmp, "killed")
    folder = tmp / "files"
    for d in range(6):
        for _ in range(3):
            shop.add_order(START + timedelta(days=d))
    shop.write(folder)
    _load(settings, folder)
    if kind == "later":
        transform(settings, quiet=True)
        shop.add_order(START + timedelta(days=6))
        shop.orders[sorted(shop.orders)[2]]["customer"] = "c-11"  # a late correction
        shop.delete_order(sorted(shop.orders)[5])
        shop.write(folder)
        _load(settings, folder)
    pg_env = gateway.env(gateway.databases[settings.project_root]) if gateway.name == "postgres" else {}
    # a lock left held shows as a failed heal after a minute, not an hour
    env = project_env(settings.project_root, ELT_DUCKDB_PATH=str(settings.warehouse),
                      ELT_LANDING_ROOT=str(settings.landing_root), ELT_SQLMESH_LOCK_WAIT_S="60", **pg_env)
    return shop, settings, folder, env


def _transform(settings, env: dict[str, str], kill_after: float | None) -> tuple[int, float, list[int]]:  # type: ignore[no-untyped-def]
    """Run `elt transform`; SIGKILL it (the process, not its group: as the OOM killer or a user
    would) after ``kill_after`` seconds. (exit status, seconds, processes it left behind)."""
    started = time.monotonic()
    proc = subprocess.Popen([str(BIN / "elt"), "transform"], cwd=settings.project_root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    left: list[int] = []
    try:
        _, err = proc.communicate(timeout=60)  # end of its stderr: no process holds the pipe any more
    except subprocess.TimeoutExpired:  # something it started outlived it, holding the pipe
        found = subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True, text=True)
        left = [int(p) for p in found.stdout.split()]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, err = proc.communicate()
    code = proc.returncode
    if kill_after is None and code != 0:
        raise RuntimeError(f"elt transform exited {code}:\n{err[-3000:]}")
    return code, time.monotonic() - started, left


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gateway", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--min-delay", type=float, default=0.2,
                        help="earliest kill, seconds after the start (about 1.5 skips Python's imports)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(postgres_server()) if args.gateway == "postgres" else None
        results, durations = _rounds(Gateway(args.gateway, server), args.rounds, rng, args.min_delay)
    landed = sum(1 for r in results for c in r["codes"] if c == -signal.SIGKILL)  # type: ignore[attr-defined]
    lost = [r for r in results if r.get("equal") is False]
    failed = [r for r in results if "heal_failed" in r]
    orphaned = [r for r in results if "orphans" in r]
    summary = {"gateway": args.gateway, "rounds": len(results), "kills": sum(len(r["delays"]) for r in results),  # type: ignore[arg-type]
               "kills_landed": landed, "unkilled_seconds": {k: round(v, 2) for k, v in durations.items()},
               "mismatches": lost, "failed_heals": failed, "orphans_left": orphaned}
    print(json.dumps(summary))
    sys.exit(1 if lost or failed or orphaned else 0)


def _rounds(gateway: Gateway, rounds: int, rng: random.Random, min_delay: float) -> tuple[list[dict[str, object]], dict[str, float]]:
    durations: dict[str, float] = {}
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="elt-kill-") as base:
        for kind in ("first", "later"):  # how long an unkilled transform of each state takes
            tmp = Path(base) / f"measure-{kind}"
            _, settings, _, env = _prepare(tmp, gateway, 0, kind)
            durations[kind] = _transform(settings, env, None)[1]
        for n in range(rounds):
            kind = "first" if n % 2 == 0 else "later"
            tmp = Path(base) / f"round-{n}"
            shop, settings, folder, env = _prepare(tmp, gateway, n, kind)
            delays = [round(rng.uniform(min_delay, durations[kind]), 2)]
            if rng.random() < 1 / 3:
                delays.append(round(rng.uniform(min_delay, durations["later"]), 2))
            killed = [_transform(settings, env, d) for d in delays]
            codes = [k[0] for k in killed]
            orphans = [pid for k in killed for pid in k[2]]
            shop.add_order(START + timedelta(days=7))
            shop.add_order(START + timedelta(days=1))  # late-arriving
            shop.orders[sorted(shop.orders)[0]]["ordered_at"] = "2018-09-04T10:00:00"  # moved
            shop.write(folder)
            _load(settings, folder)
            outcome: dict[str, object] = {"round": n, "kind": kind, "delays": delays, "codes": codes}
            if orphans:
                outcome["orphans"] = orphans
            try:
                _transform(settings, env, None)
                outcome["equal"] = gateway.marts(settings) == _clean_build(tmp, shop, gateway)
            except RuntimeError as exc:
                outcome["heal_failed"] = str(exc)[-600:]
            results.append(outcome)
            print(json.dumps(outcome), flush=True)
    return results, durations


if __name__ == "__main__":
    main()
