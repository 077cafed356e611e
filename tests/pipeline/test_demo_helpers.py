"""The demo's source helpers (`python -m orchestrator.demo.appdb`, `... catalog_api`), as the README
runs them by hand: a mistake gets one line and its next step, exit 2, never a traceback, and a second
--data or an earlier --as-of is refused instead of being ignored (a newcomer walkthrough)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from orchestrator.demo import appdb, catalog_api


def _exit(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as ended:
        main(argv)
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "\n  next: " in err, err
    return err


def test_the_app_database_helper_refuses_mistakes_in_one_line(pg_db, small_jaffle: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in pg_db.env("JAFFLE_APP").items():
        monkeypatch.setenv(key, value)
    assert "lacks raw_customers.csv" in _exit(appdb.main, ["--data", str(tmp_path / "nowhere")], capsys)

    appdb.main(["--data", str(small_jaffle), "--as-of", "2018-09-03"])
    assert "rows released: " in capsys.readouterr().out
    err = _exit(appdb.main, ["--data", str(small_jaffle), "--as-of", "2018-09-02"], capsys)
    assert "--as-of 2018-09-02 is earlier than what" in err, err
    other = tmp_path / "other"
    shutil.copytree(small_jaffle, other)
    (other / "raw_orders.csv").write_text((other / "raw_orders.csv").read_text() + "o99,c1,2018-09-04T10:00:00,s1,100,6,106\n")
    err = _exit(appdb.main, ["--data", str(other)], capsys)
    assert "was seeded from other data" in err and "DROP SCHEMA jaffle_source CASCADE" in err, err
    appdb.main(["--data", str(small_jaffle)])  # the same data, a later day: fine
    assert "rows released: " in capsys.readouterr().out

    monkeypatch.setenv("JAFFLE_APP_DATABASE", "no_such_app_db")
    assert "does not exist" in _exit(appdb.main, ["--data", str(small_jaffle)], capsys)


def test_the_catalog_helper_refuses_a_missing_folder_and_a_busy_port(small_jaffle: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JAFFLE_CATALOG_TOKEN", "demo-token")
    assert "lacks raw_products.csv" in _exit(catalog_api.main, ["--data", str(tmp_path / "nowhere")], capsys)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _exit(catalog_api.main, ["--data", str(small_jaffle), "--port", str(port)], capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in err, err
