"""Ctrl-C (SIGINT) stops the whole command. DuckDB turns a Ctrl-C during a statement into its own
error, ``Query interrupted``: the loader took it for one table's failure ("unexpected
RuntimeError ... report it"), went on to the next tables (applying items whose orders it had
just abandoned) and exited 1; the transform reported the model's SQL as the cause (found by a
signals probe)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from sources.config import load_source
from sources.landing.store import LocalLanding
from sources.load.duckdb_raw import DuckDBRaw
from sources.pipeline import load_file_source

SPEC = load_source("jaffle_shop")


def test_a_ctrl_c_inside_a_duckdb_statement_stops_the_load_at_that_table(small_jaffle: Path, tmp_path: Path) -> None:
    tried: list[str] = []

    class InterruptedOnOrders(DuckDBRaw):
        def load(self, manifest, reader, raw_schema, **kwargs):  # type: ignore[no-untyped-def]
            tried.append(manifest.table)
            if manifest.table == "orders":
                raise RuntimeError("Query interrupted")  # what DuckDB raises for a SIGINT mid-statement
            return super().load(manifest, reader, raw_schema, **kwargs)

    with InterruptedOnOrders(tmp_path / "wh.duckdb") as raw, pytest.raises(KeyboardInterrupt) as stopped:
        load_file_source(SPEC, path=small_jaffle, landing=LocalLanding(tmp_path / "landing"), raw=raw,
                         lock_dir=tmp_path / "locks")
    assert str(stopped.value) == "jaffle_shop.orders"
    assert tried[-1] == "orders" and "items" not in tried[tried.index("orders"):], tried  # nothing after it


def _state_query_interrupted() -> None:
    try:
        raise RuntimeError("Query interrupted")  # DuckDB, in SQLMesh's promote -> snapshots_exist
    except RuntimeError as exc:
        raise ValueError("while promoting the environment") from exc


@pytest.mark.parametrize("stop", [KeyboardInterrupt, _state_query_interrupted], ids=["keyboard", "duckdb-state-query"])
def test_an_interrupted_command_says_what_stands_and_exits_130(monkeypatch, capsys, stop) -> None:  # type: ignore[no-untyped-def]
    """Also when DuckDB turns the Ctrl-C into its error inside one of SQLMesh's state queries
    (plan's promote): that showed a traceback and exited 1 (an interrupt probe)."""
    from orchestrator import cli

    def interrupted(args, settings):  # type: ignore[no-untyped-def]
        if stop is KeyboardInterrupt:
            raise KeyboardInterrupt
        stop()

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["status"].set_defaults(func=interrupted)  # type: ignore[union-attr]
    assert cli.main(["status"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: `elt status` stopped; what it had not committed was rolled back" in err and "Traceback" not in err


def _run_as_status(monkeypatch, command) -> int:  # type: ignore[no-untyped-def]
    """`elt status` in this process, doing ``command`` instead of its work."""
    from orchestrator import cli

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["status"].set_defaults(func=command)  # type: ignore[union-attr]
    return cli.main(["status"])


def _busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_a_sigterm_stops_a_command_as_ctrl_c_does_and_says_so(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """A scheduler's timeout (Airflow, Kubernetes, `timeout`) sends SIGTERM: `elt load` died with
    status -15 and no word."""
    def work(args, settings):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGTERM)
        _busy(5)
        return 0

    previous = signal.getsignal(signal.SIGTERM)
    assert _run_as_status(monkeypatch, work) == 143
    err = capsys.readouterr().err
    assert "interrupted: `elt status` stopped by SIGTERM; what it had not committed was rolled back" in err, err
    assert signal.getsignal(signal.SIGTERM) is previous  # put back for whoever called main()


def test_a_sigterm_that_lands_in_a_finalizer_still_stops_the_command(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Python discards an exception raised in ``__del__``; the regex package frees its objects in
    bulk while SQLMesh starts, and a SIGTERM handled there was lost: the command ran to its end
    and exited 0 (a SIGTERM probe, 3 of 128 signals)."""
    class Freed:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, inside __del__
                pass

    def work(args, settings):  # type: ignore[no-untyped-def]
        Freed()
        _busy(5)
        return 0

    assert _run_as_status(monkeypatch, work) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err


def test_an_interrupt_that_duckdb_wrapped_in_its_own_error_is_an_interrupt(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """A SIGTERM while DuckDB scanned a pandas frame (SQLMesh's state writes) came back as DuckDB's
    ``Error('KeyboardInterrupt: SIGTERM')``: a traceback and exit 1 (a SIGTERM probe)."""
    import duckdb

    def work(args, settings):  # type: ignore[no-untyped-def]
        raise duckdb.Error("KeyboardInterrupt: SIGTERM")

    assert _run_as_status(monkeypatch, work) == 130
    err = capsys.readouterr().err
    assert "interrupted: `elt status` stopped" in err and "Traceback" not in err, err


def test_a_sigterm_after_the_work_is_done_keeps_the_commands_status(tmp_path: Path) -> None:
    """The interpreter's exit takes 0.1-0.6 s after a command's work: a SIGTERM then turned a
    finished command into one killed by the signal (-15, no word: a SIGTERM probe, 12 of 128)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = ("import os, signal, sys, time\n"
              "from orchestrator import cli\n"
              "sys.argv = ['elt', 'sources']\n"
              "code = cli.main()\n"
              "os.kill(os.getpid(), signal.SIGTERM)\n"
              "time.sleep(5)\n"
              "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "not reached" not in done.stdout, (done.returncode, done.stderr[-2000:])
