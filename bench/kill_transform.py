"""Chaos run: `elt transform` (or `elt backfill`) killed with SIGKILL at random instants, then
healed by ordinary runs.

    .venv/bin/python bench/kill_transform.py [--rounds 40] [--seed 1] [--gateway duckdb|postgres]
        [--min-delay 0.2] [--command transform|backfill]

The failpoint tests (tests/orchestrator/test_transform_kills.py) kill the transform at the
steps we chose. This run kills it wherever the clock says: inside SQLMesh's plan, its state
writes, a model's insert, an audit, the promotion of views, DuckDB's checkpoint. Each round:

1. a small Jaffle Shop (the tests' ``Shop``) with six days of orders is loaded; in ``later``
   rounds it is transformed, then a new day, a late correction and a deletion are loaded;
2. `elt transform` starts and gets SIGKILL after a random delay within the time an unkilled
   transform of the same state takes (measured once per kind); in a third of the rounds the
   next transform is killed too;
3. more days, a late-arriving order and a moved order are loaded, and `elt transform` runs to the
   end: it must exit 0, the marts must equal one clean build of the final files, row for row, and
   raw must hold no order version twice.

With ``--command backfill`` each round starts from a transformed state with a new day, a
correction and a deletion loaded, corrects an order of the first week in the source files, and
kills `elt backfill jaffle_shop` of that week; the heal is the runbook's: the same backfill again
(it must succeed), then step 3.

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import BIN  # noqa: E402
from tests.servers import postgres_server  # noqa: E402
from tests.orchestrator.test_incremental_transform import (  # noqa: E402
    Gateway, Shop, _clean_build, more_days_loaded, six_days_loaded)


def _prepare(tmp: Path, gateway: Gateway, seed: int, kind: str):  # type: ignore[no-untyped-def]
    # a lock left held shows as a failed heal after a minute, not an hour
    return six_days_loaded(tmp, gateway, seed, pending=kind in ("later", "backfill"),
                           ELT_SQLMESH_LOCK_WAIT_S="60", ELT_BACKFILL_LOCK_WAIT_S="60")


def _elt(settings, env: dict[str, str], command: list[str], kill_after: float | None) -> tuple[int, float, list[int]]:  # type: ignore[no-untyped-def]
    """Run `elt COMMAND`; SIGKILL it (the process, not its group: as the OOM killer or a user
    would) after ``kill_after`` seconds. (exit status, seconds, processes it left behind)."""
    started = time.monotonic()
    proc = subprocess.Popen([str(BIN / "elt"), *command], cwd=settings.project_root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    left: list[int] = []
    try:
        # an unkilled run gets the same minute: on these small files it takes seconds, and a hang
        # (a lock left held, a wait for a dead plan) must fail the round, not stall the campaign
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
        raise RuntimeError(f"elt {' '.join(command)} exited {code}:\n{err[-3000:]}")
    return code, time.monotonic() - started, left


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gateway", choices=["duckdb", "postgres"], default="duckdb")
    parser.add_argument("--command", choices=["transform", "backfill"], default="transform",
                        help="what is killed: `elt transform` (first and later), or `elt backfill` of one week")
    parser.add_argument("--min-delay", type=float, default=0.2,
                        help="earliest kill, seconds after the start (about 1.5 skips Python's imports)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(postgres_server()) if args.gateway == "postgres" else None
        results, durations = _rounds(Gateway(args.gateway, server), args.rounds, rng, args.min_delay, args.command)
    landed = sum(1 for r in results for c in r["codes"] if c == -signal.SIGKILL)  # type: ignore[attr-defined]
    lost = [r for r in results if r.get("equal") is False or r.get("repeated_raw_versions")]
    failed = [r for r in results if "heal_failed" in r]
    orphaned = [r for r in results if "orphans" in r]
    summary = {"gateway": args.gateway, "command": args.command, "rounds": len(results), "kills": sum(len(r["delays"]) for r in results),  # type: ignore[arg-type]
               "kills_landed": landed, "unkilled_seconds": {k: round(v, 2) for k, v in durations.items()},
               "mismatches": lost, "failed_heals": failed, "orphans_left": orphaned}
    print(json.dumps(summary))
    sys.exit(1 if lost or failed or orphaned else 0)


TRANSFORM = ["transform"]


def backfill(folder: Path) -> list[str]:
    return ["backfill", "jaffle_shop", "--path", str(folder), "--start", "2018-09-01", "--end", "2018-09-07"]


def _correct_in_window(shop: Shop, folder: Path) -> None:
    """The source corrects an order of the backfill's week (files written, not loaded)."""
    shop.orders[sorted(shop.orders)[1]]["customer"] = "c-10"
    shop.write(folder)


def _repeated_versions(gateway: Gateway, settings) -> int:  # type: ignore[no-untyped-def]
    """Raw order rows whose content equals another row of the same order: a batch applied twice
    (the rounds never revert a row to an earlier content)."""
    sql = ("SELECT count(*) FROM (SELECT id, customer, ordered_at, store_id, subtotal, tax_paid, order_total, _deleted "
           "FROM raw_jaffle_shop.orders GROUP BY id, customer, ordered_at, store_id, subtotal, tax_paid, order_total, "
           "_deleted HAVING count(*) > 1) AS d")
    return int(gateway.rows(settings, sql)[0][0])  # type: ignore[arg-type]


def _rounds(gateway: Gateway, rounds: int, rng: random.Random, min_delay: float,
            command: str = "transform") -> tuple[list[dict[str, object]], dict[str, float]]:
    durations: dict[str, float] = {}
    results: list[dict[str, object]] = []
    kinds = ("first", "later") if command == "transform" else ("backfill",)
    with tempfile.TemporaryDirectory(prefix="elt-kill-") as base:
        for kind in kinds:  # how long an unkilled command takes from each state
            tmp = Path(base) / f"measure-{kind}"
            shop, settings, folder, env = _prepare(tmp, gateway, 0, kind)
            if kind == "backfill":
                _correct_in_window(shop, folder)
            durations[kind] = _elt(settings, env, backfill(folder) if kind == "backfill" else TRANSFORM, None)[1]
        for n in range(rounds):
            kind = kinds[n % len(kinds)]
            tmp = Path(base) / f"round-{n}"
            shop, settings, folder, env = _prepare(tmp, gateway, n, kind)
            killed_command = backfill(folder) if kind == "backfill" else TRANSFORM
            if kind == "backfill":
                _correct_in_window(shop, folder)
            delays = [round(rng.uniform(min_delay, durations[kind]), 2)]
            if rng.random() < 1 / 3:
                delays.append(round(rng.uniform(min_delay, durations[kind]), 2))
            killed = [_elt(settings, env, killed_command, d) for d in delays]
            codes = [k[0] for k in killed]
            orphans = [pid for k in killed for pid in k[2]]
            outcome: dict[str, object] = {"round": n, "kind": kind, "delays": delays, "codes": codes}
            if orphans:
                outcome["orphans"] = orphans
            try:
                if kind == "backfill":  # the runbook: rerun the same command
                    _elt(settings, env, backfill(folder), None)
                more_days_loaded(shop, settings, folder)
                _elt(settings, env, TRANSFORM, None)
                outcome["equal"] = gateway.marts(settings) == _clean_build(tmp, shop, gateway)
                outcome["repeated_raw_versions"] = _repeated_versions(gateway, settings)
            except RuntimeError as exc:
                outcome["heal_failed"] = str(exc)[-600:]
            results.append(outcome)
            print(json.dumps(outcome), flush=True)
    return results, durations


if __name__ == "__main__":
    main()
