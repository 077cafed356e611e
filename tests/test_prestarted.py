"""A command the tests start through tests/prestarted.py sees what a fresh interpreter would see,
and its exit reaches the test as ``subprocess`` reports it: compared here with the same script run
the ordinary way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prestarted import Prestarted

# Named `elt` in its folder: the server then imports `orchestrator` first, as the real console script does.
FACTS = '''
import json, os, signal, sys, tempfile
from orchestrator.cli import main  # noqa: F401 (what the console script imports first)
import sqlmesh.core.constants as c

print(json.dumps({
    "cwd": os.getcwd(), "argv": sys.argv, "path0": sys.path[0], "env": os.environ.get("ELT_TEST_MARK"),
    "tmp": tempfile.gettempdir(), "fork_workers": c.MAX_FORK_WORKERS, "sqlmesh_home": str(c.SQLMESH_PATH),
    "stdin": sys.stdin.read(), "stdout_tty": sys.stdout.isatty(), "stderr_lines": sys.stderr.line_buffering,
    "stderr_through": sys.stderr.write_through, "stdout_through": sys.stdout.write_through,
    "buffers": [type(s.buffer).__name__ for s in (sys.stdin, sys.stdout, sys.stderr)],
    "stdout_lines": sys.stdout.line_buffering, "errors": [sys.stdout.errors, sys.stderr.errors],
    "encodings": [sys.stdin.encoding, sys.stdout.encoding, sys.stderr.encoding],
    "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
    "sigpipe": signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN, "pgrp_is_parents": os.getpgrp() == int(sys.argv[1]),
    "cli_fresh": "sqlmesh.cli.options" not in sys.modules,
}))
print("to stderr", file=sys.stderr)
'''

EXITS = {
    "code": ("import sys; print('out'); sys.exit(3)", 3, "out\n", ""),
    "message": ("import sys; sys.exit('bad input')", 1, "", "bad input\n"),
    "raised": ("raise ValueError('boom')", 1, "", "ValueError: boom"),
    "killed": ("import os, signal; print('partial', flush=True); os.kill(os.getpid(), signal.SIGKILL)", -9, "partial\n", ""),
    "atexit": ("import atexit; atexit.register(lambda: print('at exit'))", 0, "at exit\n", ""),
}


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    prestarted = Prestarted()
    yield prestarted
    prestarted.close()


def _script(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "elt"
    script.write_text(text)
    return script


def _both(server: Prestarted, script: Path, cwd: Path, env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    fresh = subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120, stdin=subprocess.DEVNULL)
    out, err = cwd / "prestarted.out", cwd / "prestarted.err"
    code = server.run([str(script), *args], cwd, env, 120, out, err)
    assert code is not None, "the server did not take the command"
    return fresh, (code, out.read_text(), err.read_text())


def test_a_prestarted_command_sees_what_a_fresh_interpreter_sees(server: Prestarted, tmp_path: Path) -> None:
    script = _script(tmp_path / "bin", FACTS)
    (tmp_path / "tmp").mkdir()
    import os

    env = {**os.environ, "ELT_TEST_MARK": "mine", "TMPDIR": str(tmp_path / "tmp")}
    env.pop("MAX_FORK_WORKERS", None)
    fresh, (code, out, err) = _both(server, script, tmp_path, env, str(os.getpgrp()))
    assert fresh.returncode == 0, fresh.stderr
    assert code == 0, err
    facts = json.loads(out)
    assert facts == json.loads(fresh.stdout)
    assert facts["fork_workers"] == 1 and facts["tmp"] == str(tmp_path / "tmp") and facts["cwd"] == str(tmp_path)
    assert facts["cli_fresh"] and facts["env"] == "mine"
    assert err == fresh.stderr == "to stderr\n"


@pytest.mark.parametrize("case", sorted(EXITS))
def test_a_prestarted_command_exits_as_a_fresh_one(server: Prestarted, tmp_path: Path, case: str) -> None:
    text, expected_code, expected_out, expected_err = EXITS[case]
    script = _script(tmp_path / "bin", text)
    import os

    fresh, (code, out, err) = _both(server, script, tmp_path, dict(os.environ))
    assert (code, out) == (fresh.returncode, fresh.stdout) == (expected_code, expected_out)
    assert expected_err in err and expected_err in fresh.stderr
    if case == "raised":
        assert err.splitlines()[0] == fresh.stderr.splitlines()[0] == "Traceback (most recent call last):"


def test_a_prestarted_command_past_its_timeout_is_killed(server: Prestarted, tmp_path: Path) -> None:
    script = _script(tmp_path / "bin", "import time; time.sleep(60)")
    import os

    with pytest.raises(subprocess.TimeoutExpired):
        server.run([str(script)], tmp_path, dict(os.environ), 1, tmp_path / "out", tmp_path / "err")
    # the server is free again
    again = _script(tmp_path / "bin2", "print('next')")
    assert server.run([str(again)], tmp_path, dict(os.environ), 60, tmp_path / "out", tmp_path / "err") == 0
    assert (tmp_path / "out").read_text() == "next\n"


def test_both_answers_already_waiting_are_read(server: Prestarted, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A command that ends before the test reads its pid leaves both answers in the pipe: the second
    must be read from there, not waited for until the timeout."""
    import os
    import time

    script = _script(tmp_path / "bin", "print('quick')")
    read_line = Prestarted._line

    def late(process, timeout):  # type: ignore[no-untyped-def]
        time.sleep(1)  # the command has ended and the server has written both lines by now
        return read_line(process, timeout)

    monkeypatch.setattr(Prestarted, "_line", staticmethod(late))
    server.run([str(script)], tmp_path, dict(os.environ), 60, tmp_path / "out", tmp_path / "err")  # started
    assert server.run([str(script)], tmp_path, dict(os.environ), 5, tmp_path / "out", tmp_path / "err") == 0
    assert (tmp_path / "out").read_text() == "quick\n"


def test_a_command_that_cannot_start_says_why(server: Prestarted, tmp_path: Path) -> None:
    import os

    script = _script(tmp_path / "bin", "print('never')")
    code = server.run([str(script)], tmp_path / "missing", dict(os.environ), 60, tmp_path / "out", tmp_path / "err")
    assert code == 1 and (tmp_path / "out").read_text() == ""
    assert "FileNotFoundError" in (tmp_path / "err").read_text() and str(tmp_path / "missing") in (tmp_path / "err").read_text()


def test_a_server_that_does_not_start_sends_every_command_the_ordinary_way(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    import tests.prestarted as module

    started: list[object] = []
    popen = subprocess.Popen

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(args[0])
        return popen(*args, **kwargs)

    monkeypatch.setattr(module, "__file__", str(tmp_path / "missing.py"))  # the server exits at once
    monkeypatch.setattr(module.subprocess, "Popen", counted)
    broken = Prestarted()
    script = _script(tmp_path / "bin", "print('x')")
    for _ in range(3):
        assert broken.run([str(script)], tmp_path, dict(os.environ), 60, tmp_path / "out", tmp_path / "err") is None
    assert len(started) == 1, started  # tried once, not once per command
