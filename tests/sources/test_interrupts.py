"""Ctrl-C (SIGINT) stops the whole command. DuckDB turns a Ctrl-C during a statement into its own
error, ``Query interrupted``: the loader took it for one table's failure ("unexpected
RuntimeError ... report it"), went on to the next tables (applying items whose orders it had
just abandoned) and exited 1; the transform reported the model's SQL as the cause (found by a
signals probe)."""

from __future__ import annotations

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
