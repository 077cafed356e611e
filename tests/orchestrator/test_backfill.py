"""`elt backfill` on the real warehouse: a corrected source restates the days its changes touch,
prints the difference and says when a change lay outside the window; running it twice changes
nothing more."""

from __future__ import annotations

import io
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import psycopg2
import pytest

from tests.orchestrator.conftest import Project

EXTRA_ORDER = "o5,c3,2018-09-20T12:00:00,s1,600,36,636\n"


def _totals(project: Project) -> dict[str, float]:
    query = "SELECT order_id, order_total FROM marts.orders"
    if project.env.get("ELT_GATEWAY") == "postgres":
        e = project.env
        con = psycopg2.connect(host=e["ELT_PG_HOST"], port=e["ELT_PG_PORT"], user=e["ELT_PG_USER"], dbname=e["ELT_PG_DATABASE"])
        try:
            with con.cursor() as cur:
                cur.execute(query)
                return {k: float(v) for k, v in cur.fetchall()}
        finally:
            con.close()
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        return {k: float(v) for k, v in con.execute(query).fetchall()}


@pytest.fixture(params=["duckdb", "postgres"])
def either_project(request: pytest.FixtureRequest, project: Project) -> Project:
    """The project on DuckDB (whose backfill runs each step in a child process) or on PostgreSQL
    (whose backfill runs them all in its own process): the same behaviour, messages included."""
    if request.param == "postgres":
        project.env.update({**request.getfixturevalue("pg_db").env("ELT_PG"), "ELT_GATEWAY": "postgres"})
    return project


def _batches(project: Project) -> dict[str, int]:
    """Landed batches per table of jaffle_shop (a manifest makes a batch)."""
    root = project.root / "data" / "landing" / "jaffle_shop"
    return {t.name: len(list(t.glob("*/_manifest.json"))) for t in sorted(root.iterdir()) if t.is_dir()}


def _backfills(project: Project) -> list:  # type: ignore[type-arg]
    """The backfills in the run history (`elt runs`), oldest first."""
    return sorted((r for r in project.history().recent(100) if r.job == "elt backfill"), key=lambda r: r.started_at)


def test_backfill_one_week_changes_only_that_week_and_twice_changes_nothing(project: Project, small_jaffle: Path) -> None:
    data = project.root / "data" / "jaffle-data"
    shutil.copytree(small_jaffle, data)
    orders = data / "raw_orders.csv"
    orders.write_text(orders.read_text() + EXTRA_ORDER)
    items = data / "raw_items.csv"
    items.write_text(items.read_text() + "i6,o5,BEV-001\n")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _totals(project)["o2"] == 11.66 and _totals(project)["o5"] == 6.36

    # the source corrects o2 (week of 2018-09-01) and o5 (2018-09-20)
    text = orders.read_text().replace("o2,c1,2018-09-03T10:00:00,s1,1100,66,1166", "o2,c1,2018-09-03T10:00:00,s1,1100,100,1200")
    orders.write_text(text.replace(EXTRA_ORDER, "o5,c3,2018-09-20T12:00:00,s1,600,40,640\n"))

    landed = _batches(project)
    cut = project.root / "data" / "landing" / "jaffle_shop" / "stores" / "20180101T000000000000Z-0000dead"
    cut.mkdir()
    (cut / "part-00000.parquet").write_bytes(b"a write cut short")
    first = project.elt("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07", timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    # the load runs in a child: its warnings reach the backfill's stderr (they were thrown away)
    assert "removed batch folder" in first.stderr and "0000dead" in first.stderr, first.stderr
    # re-read only what it must: the one changed file lands; the unchanged ones would add a copy to
    # landing and nothing to raw
    assert _batches(project) == {**landed, "orders": landed["orders"] + 1}, first.stdout
    line = next(li for li in first.stdout.splitlines() if li.startswith("marts.orders "))
    assert line.split()[1:] == ["0", "2", "0"], first.stdout  # added, changed, removed
    totals = _totals(project)
    assert totals["o2"] == 12.00  # inside the window: restated
    # the file is re-read whole: the correction outside the window is in raw, so it is restated too
    # (only its day), and the output says so instead of leaving the mart stale against raw
    assert totals["o5"] == 6.40
    assert "days outside the window were restated too: the new batches changed rows there (" in first.stdout, first.stdout
    assert "staging.stg_jaffle_shop__orders" in first.stdout.split("the new batches changed rows there (")[1].split(" read them")[0]
    assert "2018-09-03" in first.stdout and "2018-09-20" in first.stdout, first.stdout
    assert totals["o1"] == 18.02 and len(totals) == 5
    # the difference came from a record of the restated days only (09-03: o2 and o3; 09-20: o5),
    # not of every mart's history; FULL marts are recorded whole (they are rebuilt whole)
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        record = con.execute("SELECT mart, row_key FROM elt_meta.backfill_before WHERE record_id IN "
                             "(SELECT record_id FROM elt_meta.backfill_scope)").fetchall()
        days = {str(d) for (d,) in con.execute(
            "SELECT day FROM elt_meta.backfill_scope WHERE mart = 'marts.orders'").fetchall()}
    assert sorted(k for m, k in record if m == "marts.orders") == ["o2", "o3", "o5"], record
    assert days == {"2018-09-03", "2018-09-20"}, days
    assert len([k for m, k in record if m == "marts.customers"]) == 3, record

    second = project.elt("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07", timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert _batches(project) == {**landed, "orders": landed["orders"] + 1}, second.stdout  # nothing new
    for li in second.stdout.splitlines():
        if li.startswith("marts."):
            assert li.split()[1:] == ["0", "0", "0"], second.stdout
    assert _totals(project) == totals

    # each backfill is in the run history (who, when, which window, what it changed): a mart's
    # numbers that moved at 14:00 are explained by `elt runs`, not by a shell history
    runs = _backfills(project)
    assert [(r.status, r.source, r.trigger, r.attempt) for r in runs] == [("succeeded", "jaffle_shop", "manual", 1)] * 2
    assert [(str(r.interval_start), str(r.interval_end)) for r in runs] == [
        ("2018-09-01 00:00:00", "2018-09-08 00:00:00")] * 2  # the end day included
    assert runs[0].tables["marts.orders"] == {"added": 0, "changed": 2, "removed": 0}, runs[0].tables
    assert "2018-09-20" in runs[0].tables["restated"]["staging.stg_jaffle_shop__orders"], runs[0].tables
    assert runs[1].tables["marts.orders"] == {"added": 0, "changed": 0, "removed": 0}, runs[1].tables
    assert all(r.pid and r.host and r.finished_at and r.finished_at >= r.started_at for r in runs)
    assert f"run {runs[0].run_id} in the run history" in first.stderr, first.stderr
    listed = project.elt("runs", timeout=60)
    assert listed.returncode == 0 and runs[0].run_id in listed.stdout and "elt backfill" in listed.stdout, listed.stdout
    shown = project.elt("run-show", runs[0].run_id, timeout=60)
    assert "job elt backfill (source jaffle_shop), trigger manual" in shown.stdout, shown.stdout
    assert 'marts.orders: {"added": 0, "changed": 2, "removed": 0}' in shown.stdout, shown.stdout

    # the backfill's batches are consumed: a plain transform recomputes nothing
    proc = project.elt("transform", timeout=300)
    assert proc.returncode == 0 and "restated nothing" in proc.stdout, proc.stdout + proc.stderr
    assert _totals(project) == totals

    # a folder that does not exist: nothing was read, which the message says (it said that tables
    # that did load were in raw); a window not yet begun (a typo in the year) is refused
    missing = project.elt("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07",
                          "--path", str(project.root / "nowhere"), timeout=300)
    said = missing.stdout + missing.stderr
    assert missing.returncode == 1 and "re-extracting failed; nothing was restated (nothing was read)" in said, said
    assert "tables that did load" not in said and "nowhere does not exist" in said, said
    failed = _backfills(project)[-1]  # recorded as failed, with the error it printed
    assert (failed.status, failed.error_class) == ("failed", "BackfillFailed"), failed
    assert "nowhere does not exist" in failed.error and failed.finished_at, failed
    # its error has lines (the table's, its next:) that `elt runs` keeps off its table: one line a run
    listed = project.elt("runs", timeout=60).stdout.splitlines()
    assert len(listed) == 1 + 3, listed  # the header and the three backfills
    assert listed[1].endswith(f"nothing was restated (nothing was read). (more: `elt run-show {failed.run_id}`)"), listed
    shown = project.elt("run-show", failed.run_id, timeout=60).stdout
    assert "\n      error: [source=jaffle_shop] source folder " in shown, shown  # indented under its attempt
    # `elt status`, the on-call's first command, says the latest backfill failed and what reruns it
    status = project.elt("status", timeout=60).stdout
    assert (f"backfill: the latest, run {failed.run_id} of jaffle_shop for 2018-09-01 .. 2018-09-07, failed at "
            in status), status
    assert "rerun: `elt backfill jaffle_shop --start 2018-09-01 --end 2018-09-07`" in status, status
    future = project.elt("backfill", "jaffle_shop", "--start", "2208-09-01", "--end", "2208-09-07", timeout=300)
    assert future.returncode == 2 and "--start 2208-09-01 is after today" in future.stderr, future.stdout + future.stderr
    assert _totals(project) == totals


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that died is not)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_killed_backfill_takes_its_child_with_it_and_the_rerun_succeeds(project: Project, small_jaffle: Path) -> None:
    """Found by bench/kill_transform.py --command backfill: a backfill killed while its child
    prepared prod (or re-extracted) left the child working on without the backfill's locks, and the
    rerun failed on the warehouse file that child still held. The children now die with it."""
    import signal
    import subprocess

    from tests.orchestrator.conftest import wait_for

    data = project.root / "data" / "jaffle-data"
    shutil.copytree(small_jaffle, data)
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    backfill = ("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07")
    parent = project.popen(*backfill)
    children = wait_for(lambda: subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True,
                                               text=True).stdout.split(), timeout=60, what="the backfill's child")
    # a tick that looks for dead runs while the backfill works leaves its record alone: it holds its lock
    from orchestrator.scheduling.runner import mark_abandoned

    assert mark_abandoned(project.settings(), project.history(), datetime.now(UTC).replace(tzinfo=None)) == []
    assert [r.status for r in _backfills(project)] == ["running"]
    parent.send_signal(signal.SIGKILL)
    parent.communicate(timeout=60)
    # at once: the child has seconds of work left (it just started), and without PR_SET_PDEATHSIG it
    # would do it, or die later writing to the dead backfill's pipe
    for child in children:
        wait_for(lambda: not _alive(int(child)), timeout=1, what=f"child {child} to die with the backfill")
    # until something holds its lock again, the record says running; `elt status` says how that ends
    status = project.elt("status", timeout=60).stdout
    assert "of jaffle_shop for 2018-09-01 .. 2018-09-07 is running since " in status, status
    assert "if that process is gone, the next backfill or `elt tick` records it abandoned" in status, status
    again = project.elt(*backfill, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    # the killed one stayed "running" in the history: the rerun, holding the backfill's lock, knows
    # it is dead and records it so, with the command that reruns it
    status = project.elt("status", timeout=60).stdout
    killed, rerun = _backfills(project)
    assert f"backfill: the latest, run {rerun.run_id} of jaffle_shop for 2018-09-01 .. 2018-09-07, succeeded" in status
    assert (killed.status, killed.error_class, rerun.status) == ("abandoned", "Abandoned", "succeeded"), (killed, rerun)
    assert "`elt backfill jaffle_shop --start 2018-09-01 --end 2018-09-07`" in killed.error, killed.error


def test_a_tick_records_a_dead_backfill_as_abandoned_with_the_command_that_reruns_it(project: Project) -> None:
    """A backfill killed with no rerun after it (a person gave up; the host rebooted) stays "running"
    in the history until a tick finds its lock free."""
    from orchestrator.observe.history import RunRecord
    from orchestrator.scheduling.runner import mark_abandoned

    at = datetime(2026, 3, 2, 9, 30)
    project.history().insert(RunRecord(
        run_id="deadbackfill", attempt=1, job="elt backfill", trigger="manual", status="running", started_at=at,
        source="jaffle_shop", interval_start=datetime(2026, 2, 1), interval_end=datetime(2026, 3, 1),
        max_attempts=1, pid=2**22 + 1, host="elsewhere"))
    assert [r.run_id for r in mark_abandoned(project.settings(), project.history(), at)] == ["deadbackfill"]
    (dead,) = project.history().run("deadbackfill")
    assert dead.status == "abandoned", dead
    assert "then `elt backfill jaffle_shop --start 2026-02-01 --end 2026-02-28`" in dead.error, dead.error


def test_a_backfills_record_holds_no_secret_it_read(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a server warehouse a backfill extracts in its own process, so its errors may quote what it
    read: its record is redacted as a job worker's result is (the secrets it read, URL user-info)."""
    from datetime import date

    from orchestrator.transform.backfill import BackfillLocked, MartDiff, _Record
    from sources import logs

    monkeypatch.setattr(logs, "_KNOWN_SECRETS", [])
    logs.register_secret("pw-Backfill-7d1e")
    record = _Record(project.settings(), "app_db", date(2026, 2, 1), date(2026, 2, 7), "airflow")
    record.start()
    record.end("failed", error="cannot connect as pw-Backfill-7d1e to http://ops:hunter22@db.internal/x",
               error_class="BackfillFailed", diffs=[MartDiff("marts.pw-Backfill-7d1e", 1, 0, 0)])
    record = _Record(project.settings(), "app_db", date(2026, 2, 1), date(2026, 2, 7), "manual")
    record.skipped(str(BackfillLocked("lock held by pw-Backfill-7d1e")))
    stored = repr(_backfills(project))
    assert "pw-Backfill-7d1e" not in stored and "hunter22" not in stored, stored
    assert [(r.status, r.trigger) for r in _backfills(project)] == [("failed", "airflow"), ("skipped_locked", "manual")]


WINDOW = ("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07")


# a copy of the data folder (source files, landing, warehouse; not the run history) of a DuckDB project
# where `_built` loaded and transformed the tiny shop, made by the first test of this process that
# needed it: the later ones start from a copy of it instead of spending the same build again
_BUILT_DATA: list[Path] = []


def _built(project: Project, small_jaffle: Path) -> Path:
    """The tiny shop in the project's data folder, loaded and transformed by `elt load` and `elt
    transform` (on DuckDB, a copy of what they made once in this test process); returns the folder
    of the source files."""
    data = project.root / "data"
    on_duckdb = project.env.get("ELT_GATEWAY", "duckdb") == "duckdb"
    if on_duckdb and _BUILT_DATA:
        shutil.copytree(_BUILT_DATA[0], data)
        return data / "jaffle-data"
    shutil.copytree(small_jaffle, data / "jaffle-data")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    if on_duckdb:  # without the run history: what the test that built did before (a refused
        # backfill) is its own, not part of every later test's start
        kept = project.root.parent / "built-data"
        shutil.copytree(data, kept, ignore=shutil.ignore_patterns("elt_history.duckdb*"))
        _BUILT_DATA.append(kept)
    return data / "jaffle-data"


def _first_attempt_fails(project: Project, small_jaffle: Path) -> tuple[float, Path, str]:
    """Build, correct o3 (in the window), break the items file, and run the backfill: it fails after
    the corrected orders reached raw. Returns o3's total before, the items file and its good text."""
    data = _built(project, small_jaffle)
    before = _totals(project)["o3"]
    orders, items = data / "raw_orders.csv", data / "raw_items.csv"
    lines = orders.read_text().splitlines(keepends=True)
    o3 = next(i for i, li in enumerate(lines) if li.startswith("o3,"))
    fields = lines[o3].rstrip("\n").split(",")
    fields[5] = str(int(fields[5]) + 7)  # tax_paid
    fields[6] = str(int(fields[6]) + 7)  # order_total
    lines[o3] = ",".join(fields) + "\n"
    orders.write_text("".join(lines))
    good_items = items.read_text()
    items.write_text(good_items + "i7,o2\n")  # too few fields: the items table fails, orders apply
    first = project.elt(*WINDOW, timeout=300)
    assert first.returncode != 0 and "re-extracting failed" in first.stdout + first.stderr, first.stdout + first.stderr
    # the error names the table and the row, with what to do next
    assert re.search(r"FAILED items: .*data row 6 \(file line 7\)", first.stdout), first.stdout
    assert re.search(r"^error: items: .*data row 6 \(file line 7\).*\n  next: ", first.stderr, re.M), first.stderr
    return before, items, good_items


def test_a_backfill_rerun_after_a_failure_counts_the_first_attempts_changes(either_project: Project,
                                                                            small_jaffle: Path) -> None:
    """The first attempt applied the corrected orders to raw and then failed on another table; the
    rerun's prepare step transforms those batches before anything else. Its difference must still
    show the correction (counted from before the first attempt), not a false 'nothing changed'."""
    project = either_project
    never = project.elt(*WINDOW, timeout=300)  # before anything was built: refused, nothing done
    assert never.returncode == 1 and "prod has never been built" in never.stderr, never.stdout + never.stderr
    before, items, good_items = _first_attempt_fails(project, small_jaffle)
    window = WINDOW
    items.write_text(good_items)
    again = project.elt(*window, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish" in again.stdout, again.stdout
    line = next(li for li in again.stdout.splitlines() if li.startswith("marts.orders "))
    assert line.split()[1:] == ["0", "1", "0"], again.stdout  # o3, changed by the first attempt
    assert round(_totals(project)["o3"] - before, 2) == 0.07

    # finished: the next backfill counts from its own start again
    third = project.elt(*window, timeout=300)
    assert third.returncode == 0 and "did not finish" not in third.stdout, third.stdout + third.stderr
    line = next(li for li in third.stdout.splitlines() if li.startswith("marts.orders "))
    assert line.split()[1:] == ["0", "0", "0"], third.stdout


def test_a_backfill_that_cannot_get_its_locks_exits_75_and_does_nothing(project: Project, small_jaffle: Path) -> None:
    """Like every command that finds a lock busy: exit 75 (rerun later), the lock named, nothing done."""
    from orchestrator.scheduling.locks import FileLock, lock_dir

    running = FileLock("job:jaffle_shop", lock_dir(project.settings()))
    assert running.try_acquire()  # a scheduled load of jaffle_shop is running
    try:
        busy = project.elt("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07",
                           "--path", str(small_jaffle), ELT_BACKFILL_LOCK_WAIT_S="1")
    finally:
        running.release()
    assert busy.returncode == 75, busy.stdout + busy.stderr
    assert "lock job:jaffle_shop stayed busy" in busy.stderr and "nothing was done" in busy.stderr, busy.stderr
    # the wait was announced as it began, not only when it gave up (a probe watched a silent minute)
    assert "backfill of jaffle_shop: waiting up to 1s (ELT_BACKFILL_LOCK_WAIT_S) for lock job:jaffle_shop, " \
        f"held by pid {os.getpid()} (" in busy.stderr, busy.stderr
    assert "next:" in busy.stderr
    assert not (project.root / "data" / "landing" / "jaffle_shop").exists()  # nothing was read or landed
    skipped = _backfills(project)
    assert [(r.status, r.source) for r in skipped] == [("skipped_locked", "jaffle_shop")], skipped
    assert "lock job:jaffle_shop stayed busy" in skipped[0].error, skipped[0].error


def test_another_backfill_after_an_unfinished_one_counts_its_own_changes_and_says_so(project: Project,
                                                                                     small_jaffle: Path) -> None:
    """An unfinished backfill's record is replaced by the next backfill of another window, which
    says the unfinished one's changes are not in its count; the first window's rerun is then a
    backfill of its own (nothing left unfinished)."""
    _, items, good_items = _first_attempt_fails(project, small_jaffle)
    items.write_text(good_items)
    other = project.elt("backfill", "jaffle_shop", "--start", "2018-09-10", "--end", "2018-09-16", timeout=300)
    assert other.returncode == 0, other.stdout + other.stderr
    assert "a backfill of jaffle_shop for 2018-09-01 .. 2018-09-07" in other.stdout, other.stdout
    assert "its changes are not counted below" in other.stdout, other.stdout
    line = next(li for li in other.stdout.splitlines() if li.startswith("marts.orders "))
    assert line.split()[1:] == ["0", "0", "0"], other.stdout  # o3 was transformed before its record
    again = project.elt(*WINDOW, timeout=300)
    assert again.returncode == 0 and "did not finish" not in again.stdout, again.stdout + again.stderr


def test_an_unexpected_error_in_a_one_process_backfill_is_named_and_logged(
        project: Project, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """On PostgreSQL and Spark the steps run in the backfill's process: an error that is none of
    ours (the warehouse went away, a bug) ends as the same `preparing prod failed` or
    `re-extracting failed` message a child's last line gave, with its traceback in the log."""
    from datetime import date

    import orchestrator.scheduling.loading as loading
    import orchestrator.transform.backfill as bf

    settings = project.settings()
    day = date(2018, 9, 1)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("server closed the connection unexpectedly")

    monkeypatch.setattr(bf, "prepare", broken)
    with pytest.raises(bf.BackfillFailed) as failed:
        bf._prepare_and_load_here(settings, "jaffle_shop", day, day, None, io.StringIO())
    assert ("preparing prod (transforming the batches already loaded) failed; nothing was re-extracted or restated."
            "\nOSError: server closed") in str(failed.value)
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)

    caplog.clear()
    monkeypatch.setattr(bf, "prepare", lambda *args, **kwargs: None)
    monkeypatch.setattr(loading, "load_source_into_warehouse", broken)
    with pytest.raises(bf.BackfillFailed) as failed:
        bf._prepare_and_load_here(settings, "jaffle_shop", day, day, None, io.StringIO())
    message = str(failed.value)
    assert "re-extracting failed" in message and "error: OSError: server closed" in message, message
    assert "\n  next: fix the source, then rerun the same `elt backfill`" in message, message
    assert any(r.exc_info for r in caplog.records)


def test_a_backfill_whose_new_rows_fail_an_audit_says_how_to_get_past_them(project: Project, small_jaffle: Path) -> None:
    """The re-extracted rows fail a staging audit. The message says to correct them at the source
    and rerun the backfill, which re-reads its window before it transforms (it used to transform
    the failing batch first and fail again, so the way out was a load and a transform by hand, which
    the message still gives for scheduled transforms); the rerun finishes and counts from before the
    first attempt."""
    data = project.root / "data" / "jaffle-data"
    shutil.copytree(small_jaffle, data)
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    orders = data / "raw_orders.csv"
    good = orders.read_text()
    # o3's total no longer equals subtotal + tax: staging's forall audit fails on it
    orders.write_text(good.replace("o3,c2,2018-09-03T11:00:00,s2,600,24,624", "o3,c2,2018-09-03T11:00:00,s2,600,24,999"))
    first = project.elt(*WINDOW, timeout=300)
    said = first.stdout + first.stderr
    assert first.returncode == 1 and "restating 2018-09-01 .. 2018-09-07 failed" in said, said
    assert "audit 'forall' failed on model staging.stg_jaffle_shop__orders" in said, said
    # the corrected rows re-read with the backfill's window (a cursor table's correction need not move its cursor)
    load = "`elt load jaffle_shop --window 2018-09-01 2018-09-07`"
    assert load in said and "`elt transform`" in said, said

    assert "correct them there and rerun the same `elt backfill` command" in said, said
    # one way on: the transform's own next step (reload, then `elt transform`) is not printed beside it
    assert said.count("next:") == 1 and "then rerun `elt transform`" not in said, said

    # until then a scheduled transform fails on the failing batch, which is still pending
    scheduled = project.elt("transform", timeout=300)
    assert scheduled.returncode == 1 and "stg_jaffle_shop__orders" in scheduled.stdout + scheduled.stderr

    orders.write_text(good)  # corrected at the source
    again = project.elt(*WINDOW, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish" in again.stdout, again.stdout
    assert _totals(project)["o3"] == 6.24
    # o3 failed before it reached the marts and is back to what it was: nothing changed in them
    assert _orders_line(again.stdout) == ["0", "0", "0"], again.stdout


def test_rows_held_out_of_staging_do_not_block_a_backfill(project: Project, small_jaffle: Path) -> None:
    """An order without its time fails every `elt transform` until the source fills it (decision
    0036). A backfill, whose first step is a transform, was blocked by it for as long: it now goes on,
    and says the rows are held out."""
    data = project.root / "data" / "jaffle-data"
    shutil.copytree(small_jaffle, data)
    orders = data / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o9,c1,,s1,100,6,106\n")
    assert project.elt("load", "jaffle_shop", timeout=300).returncode == 0
    failed = project.elt("transform", timeout=300)
    assert failed.returncode == 1 and "without their event time" in failed.stdout + failed.stderr
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03T10:00:00,s1,1100,66,1166",
                                                 "o2,c1,2018-09-03T10:00:00,s1,1100,100,1200"))
    backfill = project.elt(*WINDOW, timeout=300)
    said = backfill.stdout + backfill.stderr
    assert backfill.returncode == 0, said
    assert "note: the backfill went on without rows held out of staging, on which every `elt transform` fails" in said, said
    assert "id='o9'" in said and "transform failed" not in said, said
    assert _totals(project)["o2"] == 12.00 and "o9" not in _totals(project)
    assert project.elt("transform", timeout=300).returncode == 1  # still held: the transform says so


# Rewrites the record as the code before decision 0030 left it: every mart's rows, whole, in
# elt_meta.backfill_before without record ids, and no scope table.
LEGACY_RECORD = """
from orchestrator.settings import Settings
from orchestrator.transform.backfill import BEFORE, SCOPE, _keyed_rows, _marts
from orchestrator.transform.run import make_context
ctx, _ = make_context(Settings.from_env(), quiet=True)
adapter = ctx.engine_adapter
adapter.execute(f"DROP TABLE {SCOPE}")
adapter.execute(f"DROP TABLE {BEFORE}")
adapter.execute(f"CREATE TABLE {BEFORE} (mart TEXT NOT NULL, row_key TEXT, row_hash TEXT)")
for mart in _marts(ctx):
    adapter.execute(f"INSERT INTO {BEFORE} {_keyed_rows(mart, adapter.dialect)}")
ctx.close()
"""


def test_a_backfill_left_unfinished_by_the_code_before_scoped_records_still_counts_its_changes(
        project: Project, small_jaffle: Path) -> None:
    """An upgrade between a failed backfill and its rerun: the old record (every mart, whole, no
    record ids) is read as it was meant, instead of counting nothing."""
    import subprocess

    from tests.conftest import BIN

    before, items, good_items = _first_attempt_fails(project, small_jaffle)
    subprocess.run([str(BIN / "python"), "-c", LEGACY_RECORD], cwd=project.root, env=project.env, check=True,
                   capture_output=True, text=True, timeout=120)
    items.write_text(good_items)
    again = project.elt(*WINDOW, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish" in again.stdout, again.stdout
    line = next(li for li in again.stdout.splitlines() if li.startswith("marts.orders "))
    assert line.split()[1:] == ["0", "1", "0"], again.stdout  # o3, counted against the whole old record
    assert round(_totals(project)["o3"] - before, 2) == 0.07


def test_the_row_hash_of_the_difference_report_tells_moved_separators_and_nulls_apart() -> None:
    """The report's row hash joins each column's text with '|': a '|' moved from one column to the
    next, or a value '\\N' where another row has NULL, must not give two rows one hash (the change
    would be reported as nothing)."""
    from orchestrator.transform.backfill import Mart, _keyed_rows

    con = duckdb.connect()
    con.execute("CREATE SCHEMA marts")
    con.execute("CREATE TABLE marts.t AS SELECT * FROM (VALUES (1, 'x|', 'y'), (2, 'x', '|y'), (3, NULL, 'a'), "
                "(4, '\\N', 'a'), (5, '\\', '|a'), (6, '\\|', 'a')) AS v(id, a, b)")
    rows = con.execute(_keyed_rows(Mart("marts.t", ["id"], ["a", "b"], None), "duckdb")).fetchall()
    hashes = [h for _, _, h in rows]
    assert len(rows) == 6 and len(set(hashes)) == 6, rows


@pytest.mark.parametrize("grain, key", [
    ("grain (location_id, order_day)", ["location_id", "order_day"]),
    ("grain order_id", ["order_id"]),
    ("grains ((location_id, order_day), order_id)", ["location_id", "order_day"]),
    ("grain [location_id, order_day]", ["location_id", "order_day"]),
    ("", None),
])
def test_the_difference_report_keys_a_mart_by_its_whole_grain(grain: str, key: list[str] | None) -> None:
    """A grain of two columns is one key of two columns: read as text it named no column, so every
    column became the key and each changed row of a user mart (a store's daily revenue) counted as
    one removed and one added (a probe of user models on both gateways). Without a grain, every
    column is the key."""
    from types import SimpleNamespace

    from sqlmesh.core.dialect import parse
    from sqlmesh.core.model import load_sql_based_model

    from orchestrator.transform.backfill import _marts

    model = load_sql_based_model(parse(
        f"MODEL (name marts.daily, kind FULL{', ' + grain if grain else ''}); "
        "SELECT 's1' AS location_id, DATE '2018-09-01' AS order_day, 'o1' AS order_id, 10 AS cents", default_dialect="duckdb"))
    (mart,) = _marts(SimpleNamespace(models={"marts.daily": model}))
    assert mart.grain == (key or ["location_id", "order_day", "order_id", "cents"]), mart


@pytest.mark.parametrize("grain", ["grain customer_id", "", "grain (customer_id, order_day)"])
def test_the_difference_of_a_mart_without_a_unique_grain_counts_whole_rows(grain: str) -> None:
    """A mart keyed by a grain two rows share fanned the join out (154 "changed" for one changed row),
    and one without a grain reported each changed row as removed and added without saying why (a
    backfill probe of user marts). Rows are now compared whole, as multisets, and the report says so;
    a unique grain still counts changes. Real DuckDB tables through SQLMesh's adapter."""
    from datetime import date
    from types import SimpleNamespace

    from sqlmesh.core.dialect import parse
    from sqlmesh.core.engine_adapter import DuckDBEngineAdapter
    from sqlmesh.core.model import load_sql_based_model

    from orchestrator.transform.backfill import _report, diff_marts, record_before, start_record

    con = duckdb.connect()
    adapter = DuckDBEngineAdapter(lambda: con)
    name = "marts.customer_days_of_a_long_user_mart_name"
    model = load_sql_based_model(parse(
        f"MODEL (name {name}, kind INCREMENTAL_BY_TIME_RANGE (time_column order_day){', ' + grain if grain else ''}); "
        "SELECT 'c1' AS customer_id, DATE '2018-09-01' AS order_day, 10 AS cents FROM t WHERE order_day BETWEEN @start_ds "
        "AND @end_ds", default_dialect="duckdb"))
    ctx = SimpleNamespace(models={name: model}, engine_adapter=adapter)
    con.execute("CREATE SCHEMA marts")
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM (VALUES ('c1', DATE '2018-09-01', 10), ('c1', DATE '2018-09-02', 20), "
                "('c2', DATE '2018-09-02', 30), ('c3', DATE '2018-09-03', 40)) AS v(customer_id, order_day, cents)")
    start_record(adapter)
    record_before(ctx, {name: [(1535760000000, 1535932800000)]})  # 2018-09-01 and 02
    # one row changed, one added and one removed on the recorded days; the 03rd is outside them
    con.execute(f"UPDATE {name} SET cents = 25 WHERE customer_id = 'c1' AND order_day = DATE '2018-09-02'")
    con.execute(f"DELETE FROM {name} WHERE customer_id = 'c2'")
    con.execute(f"INSERT INTO {name} VALUES ('c4', DATE '2018-09-01', 50), ('c3', DATE '2018-09-03', 41)")
    (diff,) = diff_marts(ctx)
    out = io.StringIO()
    _report(out, "jaffle_shop", date(2018, 9, 1), date(2018, 9, 2), SimpleNamespace(kind="files"),
            [f"{name} (2 day(s))"], [diff], "duckdb")
    lines = out.getvalue().splitlines()
    header, row = lines[1], lines[2]
    assert len(header) == len(row), out.getvalue()  # the columns line up under a name longer than 22 characters
    if grain == "grain (customer_id, order_day)":
        assert (diff.added, diff.changed, diff.removed) == (1, 1, 1), diff
        assert "whole rows" not in out.getvalue(), out.getvalue()
    else:
        assert (diff.added, diff.changed, diff.removed) == (2, None, 2), diff
        assert row.split() == [name, "2", "-", "2"], out.getvalue()
        why = "its grain (customer_id) is not unique: 1 row(s) share a key" if grain else "no grain declared"
        assert f"note: {name} was compared as whole rows ({why})" in out.getvalue(), out.getvalue()


def test_the_note_on_days_outside_the_window_says_which_cause_it_was() -> None:
    """It listed three possible causes together; a probe whose source had changed only inside the
    window (later order numbers had moved) read it as changes outside the window."""
    from datetime import date
    from types import SimpleNamespace

    from orchestrator.transform.backfill import _report

    def note(restate: list[str], reading_raw: set[str]) -> str:
        out = io.StringIO()
        _report(out, "jaffle_app", date(2018, 9, 1), date(2018, 9, 7), SimpleNamespace(kind="files"), restate, [],
                "duckdb", reading_raw)
        return next(li for li in out.getvalue().splitlines() if li.startswith("note: days outside"))

    staging = "staging.stg_jaffle_app__orders"
    later = note([f"{staging} (1 day(s): 2018-09-04)", "marts.orders (3 day(s): 2018-09-04, 2018-09-15, 2018-09-16)"],
                 {staging})
    assert "the raw rows changed only inside it, but marts.orders restate other days" in later, later
    moved = note([f"{staging} (2 day(s): 2018-09-04, 2018-09-20)", "marts.orders (2 day(s): 2018-09-04, 2018-09-20)"],
                 {staging})
    assert f"the new batches changed rows there ({staging} read them from raw" in moved, moved


def _orders_line(stdout: str) -> list[str]:
    return next(li for li in stdout.splitlines() if li.startswith("marts.orders ")).split()[1:]


def test_a_backfill_stopped_between_tables_is_finished_by_its_rerun(project: Project, small_jaffle: Path) -> None:
    """Killed after the late order's batch reached raw and before its item's: the rerun transformed
    that half first, the order failed its audit (no items), and every rerun stopped there, before
    the re-extract that completes it (a backfill probe). The rerun now re-extracts first."""
    data = _built(project, small_jaffle)
    (data / "raw_orders.csv").write_text((data / "raw_orders.csv").read_text() + "o6,c3,2018-09-02T12:00:00,s1,600,36,636\n")
    (data / "raw_items.csv").write_text((data / "raw_items.csv").read_text() + "i8,o6,BEV-001\n")
    killed = project.elt(*WINDOW, timeout=300, ELT_FAILPOINT="raw.after_commit")
    assert killed.returncode == 1 and "re-extracting failed" in killed.stderr, killed.stdout + killed.stderr
    again = project.elt(*WINDOW, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish" in again.stdout and _orders_line(again.stdout) == ["1", "0", "0"], again.stdout
    assert _totals(project)["o6"] == 6.36


def test_a_backfill_stopped_by_sigterm_is_recorded_stopped_with_what_reruns_it(project: Project,
                                                                                small_jaffle: Path) -> None:
    """SIGTERM (a scheduler's timeout, `docker stop`) while its child re-extracts: the backfill ends
    its child, and its record says stopped and how to go on, not `running` until someone looks."""
    import signal
    import subprocess

    from tests.orchestrator.conftest import wait_for

    _built(project, small_jaffle)
    parent = project.popen(*WINDOW)
    wait_for(lambda: subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split(),
             timeout=60, what="the backfill's child")
    parent.send_signal(signal.SIGTERM)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode != 0, stderr
    records = _backfills(project)
    assert len(records) == 1, records
    (stopped,) = records
    assert (stopped.status, stopped.error_class) == ("stopped", "Stopped"), (stopped, stderr)
    assert "rerun the same `elt backfill` command" in stopped.error and stopped.finished_at, stopped


def test_a_transform_between_a_stopped_backfill_and_its_rerun_is_counted(project: Project, small_jaffle: Path) -> None:
    """After a stopped backfill a scheduler runs `elt load` and `elt transform` (what the interrupted
    message suggests), which restated the corrected day without adding it to the backfill's record:
    the rerun said it counted from before its first attempt and printed zeros (a backfill probe)."""
    data = _built(project, small_jaffle)
    orders = data / "raw_orders.csv"
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03T10:00:00,s1,1100,66,1166",
                                                 "o2,c1,2018-09-03T10:00:00,s1,1100,100,1200"))
    killed = project.elt(*WINDOW, timeout=300, ELT_FAILPOINT="raw.mid_load")
    assert killed.returncode == 1, killed.stdout + killed.stderr
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _totals(project)["o2"] == 12.00
    again = project.elt(*WINDOW, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish" in again.stdout and _orders_line(again.stdout) == ["0", "1", "0"], again.stdout


def test_a_mart_that_gains_a_column_while_a_backfill_is_unfinished_does_not_stop_transforms(
        settings, small_jaffle: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """While a backfill is unfinished, `elt transform` adds the days it restates to its record. A
    mart given a new column since the stop was read with it from the served table, and every
    scheduled transform failed (a review). Recording is a report: it warns, the transform goes on."""
    import logging

    from orchestrator.scheduling.loading import load_source_into_warehouse
    from orchestrator.transform.backfill import prepare
    from orchestrator.transform.run import transform

    def load() -> None:
        assert not [o.error for o in load_source_into_warehouse("jaffle_shop", settings, path=small_jaffle) if o.error]

    load()
    transform(settings, quiet=True)
    prepare(settings, "jaffle_shop", "2018-09-01", "2018-09-04")  # a backfill that then stopped
    model = settings.project_root / "models" / "marts" / "orders.sql"
    model.write_text(model.read_text().replace("  orders.ordered_at\nFROM orders", "  orders.ordered_at,\n  1 AS new_flag\nFROM orders"))
    assert "new_flag" in model.read_text()
    (settings.project_root / "tests" / "models" / "test_marts.yaml").unlink()  # its expected rows lack the column
    orders = small_jaffle / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o6,c2,2018-09-05T09:00:00,s2,0,0,0\n")
    load()
    with caplog.at_level(logging.WARNING):
        summary = transform(settings, quiet=True)
    assert summary.restated_windows["marts.orders"] == "1 day(s): 2018-09-05", summary.restated_windows
    assert any("could not add the days this transform restates to the record of the unfinished backfill" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


MONTHLY = """MODEL (
  name marts.{name},
  kind INCREMENTAL_BY_TIME_RANGE (time_column period_start),
  {schedule},
  grain (period_start, location_id)
);

SELECT DATE_TRUNC('month', orders.ordered_at) AS period_start, orders.location_id, COUNT(*) AS orders,
  SUM(orders.order_total_cents) AS revenue_cents
FROM staging.stg_jaffle_shop__orders AS orders
WHERE orders.ordered_at BETWEEN @start_ts AND @end_ts
GROUP BY 1, 2
"""


def test_a_backfill_restates_a_monthly_marts_whole_month_and_counts_it(project: Project, small_jaffle: Path) -> None:
    """A mart of monthly rows (built when a month ends, or so far with allow_partials): a backfill
    of a week restates the month its correction falls in, its report counts the month's row as
    changed, and a second backfill changes nothing (a probe of monthly models)."""
    marts = project.root / "models" / "marts"
    for name, schedule in (("by_month", "cron '@monthly'"), ("so_far", "interval_unit 'month',\n  allow_partials true")):
        (marts / f"{name}.sql").write_text(MONTHLY.format(name=name, schedule=schedule))
    data = project.root / "data" / "jaffle-data"
    shutil.copytree(small_jaffle, data)
    orders = data / "raw_orders.csv"
    orders.write_text(orders.read_text() + "o5,c3,2018-10-20T12:00:00,s1,0,0,0\n")
    for args in (("load", "jaffle_shop"), ("transform",)):
        proc = project.elt(*args, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    orders.write_text(orders.read_text().replace("o2,c1,2018-09-03T10:00:00,s1,1100,66,1166",
                                                 "o2,c1,2018-09-03T10:00:00,s1,1100,100,1200"))
    first = project.elt("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07", timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("by_month", "so_far"):
        assert f"marts.{name} (1 day(s): 2018-09-03, restated as whole months: 2018-09-01..2018-09-30)" in first.stdout
        line = next(li for li in first.stdout.splitlines() if li.startswith(f"marts.{name} "))
        assert line.split()[1:] == ["0", "1", "0"], first.stdout  # September's row of s1 changed; October's kept
    assert "a model of monthly (yearly) rows restates each touched day's whole month" in first.stdout
    assert "the raw rows changed only inside it, but marts.by_month, marts.so_far restate other days" in first.stdout
    with duckdb.connect(str(project.root / "data" / "warehouse.duckdb"), read_only=True) as con:
        want = con.execute("SELECT DATE_TRUNC('month', ordered_at), location_id, COUNT(*), SUM(order_total_cents) "
                           "FROM staging.stg_jaffle_shop__orders GROUP BY 1, 2 ORDER BY ALL").fetchall()
        for name in ("by_month", "so_far"):
            assert con.execute(f"SELECT * FROM marts.{name} ORDER BY ALL").fetchall() == want, name
    second = project.elt("backfill", "jaffle_shop", "--start", "2018-09-01", "--end", "2018-09-07", timeout=300)
    assert second.returncode == 0 and "restated nothing" in second.stdout, second.stdout + second.stderr
