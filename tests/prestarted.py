"""Start the tests' `elt` and `sqlmesh` commands from a process that has imported their libraries.

Each command otherwise spends about 2.3 s of CPU importing SQLMesh, pandas, pyarrow, DuckDB and
their dependencies before it does anything, and the suite runs a few hundred of them on a machine
whose two cores are busy the whole run (docs/decisions/0049-prestarted-commands.md). One server
process per test process imports those third-party libraries once; for each command it forks a
child that becomes the command: its own process id, working directory, environment, arguments,
stdin from /dev/null, stdout and stderr in files the test reads, exit status (a SIGKILL from a
failpoint is -9, as from ``subprocess``). The child runs the console script itself
(``runpy.run_path``), so everything of ours (``orchestrator``, ``sources``, the project's models)
is imported fresh in it, under the command's environment.

A command is started the ordinary way (``subprocess``) when the fork could differ from a fresh
interpreter: an environment that changes how Python starts or what a library read at import
(``PYTHONPATH`` hooks, ``TZ``, ``HOME``...), another command than ``elt``/``sqlmesh``, a second
command while one is running (a test's threads), or ``ELT_TEST_FRESH_PROCESSES=1`` (run the
whole suite without this module, to rule it out).

Run as a script, this file is the server: it reads one JSON request per line on stdin and answers
``{"pid": ...}`` when the child started and ``{"status": ...}`` when it ended.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = (str(BIN / "elt"), str(BIN / "sqlmesh"))
# What only the server imports: nothing of this project (its modules read ELT_* at import), and not
# SQLMesh's CLI (its options default to the working directory at import). SQLMesh's constants read
# the environment at import: each command reads them again (see _become).
PRELOAD = ("sqlmesh.core.context", "sqlmesh.core.config", "duckdb", "pyarrow",
           "pyarrow.parquet", "pyarrow.csv", "pyarrow.compute", "psycopg2", "psycopg2.sql", "psycopg2.extras",
           "boto3", "botocore.session", "pandas", "yaml", "click")
# variables read when an interpreter starts, or by a library as it is imported: a command whose
# value differs from the server's runs in a fresh interpreter
AT_START = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONHASHSEED", "PYTHONWARNINGS", "PYTHONFAULTHANDLER",
            "PYTHONTRACEMALLOC", "PYTHONDEVMODE", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONSAFEPATH",
            "PYTHONNOUSERSITE", "PYTHONOPTIMIZE", "PYTHONUNBUFFERED", "PYTHONMALLOC", "PYTHONASYNCIODEBUG",
            "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONVERBOSE", "PYTHONINSPECT", "PYTHONPLATLIBDIR",
            "LD_PRELOAD", "LD_LIBRARY_PATH", "TZ", "HOME", "LANG", "LC_ALL", "LC_CTYPE",
            "SQLMESH_HOME", "SQLMESH__DISABLE_ANONYMIZED_ANALYTICS", "XDG_CACHE_HOME")


class Prestarted:
    """The test process's side: one server, one command at a time."""

    def __init__(self) -> None:
        self._env = dict(os.environ)
        self._server: subprocess.Popen[bytes] | None = None
        self._unavailable = False  # the server did not start: every command starts the ordinary way
        self._busy = threading.Lock()

    def accepts(self, cmd: list[str], env: dict[str, str]) -> bool:
        return (bool(cmd) and cmd[0] in COMMANDS and os.environ.get("ELT_TEST_FRESH_PROCESSES") != "1"
                and env.get("ELT_TEST_FRESH_PROCESSES") != "1"
                and all(env.get(key) == self._env.get(key) for key in AT_START))

    def run(self, cmd: list[str], cwd: Path, env: dict[str, str], timeout: float,
            out: Path, err: Path) -> int | None:
        """The command's exit status (as ``subprocess``'s returncode), or None when this process
        cannot take it (the caller then starts it the ordinary way). Raises TimeoutExpired after
        killing the command."""
        if not self._busy.acquire(blocking=False):
            return None
        try:
            server = self._started()
            if server is None:
                return None
            # a fresh interpreter inherits an ignored SIGINT (a caller started with nohup or `&` in a
            # script) and keeps it ignored; otherwise Python installs its KeyboardInterrupt handler
            request = {"argv": cmd, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err),
                       "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN}
            assert server.stdin is not None and server.stdout is not None
            data = memoryview(json.dumps(request).encode() + b"\n")
            while data:  # an unbuffered pipe may take part of it
                data = data[server.stdin.write(data) or 0:]
            pid = json.loads(self._line(server, 60))["pid"]
            try:
                answer = self._line(server, timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)  # still unreaped, so the pid is still the command's
                self._line(server, 60)  # the server reaped it
                raise subprocess.TimeoutExpired(cmd, timeout) from None
            return int(json.loads(answer)["status"])
        finally:
            self._busy.release()

    def _started(self) -> subprocess.Popen[bytes] | None:
        if self._server is not None and self._server.poll() is None:
            return self._server
        if self._unavailable:  # not tried again: each try costs the imports it was meant to save
            return None
        # unbuffered: a buffered reader could take both answers in one read, and select() on the
        # pipe would then wait for a line already read
        self._server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=self._env, cwd="/", bufsize=0)
        try:
            assert json.loads(self._line(self._server, 120)) == {"ready": True}
        except Exception:
            self._server.kill()
            self._server = None
            self._unavailable = True
        return self._server

    @staticmethod
    def _line(server: subprocess.Popen[bytes], timeout: float) -> bytes:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired(server.args, timeout)
        line = server.stdout.readline()
        if not line:
            raise RuntimeError(f"the prestarted-command server exited ({server.poll()})")
        return line

    def close(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None


# the server's own stdin, stdout, stderr: encoding, errors, unbuffered, line buffering, write-through
_STREAMS: list[tuple[str, str | None, bool, bool, bool]] = []


def _stream(fd: int, mode: str, like: tuple[str, str | None, bool, bool, bool]):  # type: ignore[no-untyped-def]
    encoding, errors, unbuffered, line_buffering, write_through = like
    raw = io.FileIO(fd, mode, closefd=False)
    binary = raw if unbuffered else (io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw))
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors, line_buffering=line_buffering,  # type: ignore[arg-type]
                            write_through=write_through)


def _serve() -> None:
    import gc
    import importlib

    _STREAMS.extend((stream.encoding, stream.errors, isinstance(stream.buffer, io.RawIOBase), stream.line_buffering,
                     stream.write_through) for stream in (sys.stdin, sys.stdout, sys.stderr))
    sys.path[0] = str(BIN)  # not tests/, whose folders are named as this project's packages
    # SQLMesh starts its usage-analytics thread at import unless told not to (the project's config
    # turns analytics off in every command anyway): a thread caught holding a lock at fork would
    # leave that lock held for ever in the child
    os.environ["SQLMESH__DISABLE_ANONYMIZED_ANALYTICS"] = "1"
    for name in PRELOAD:
        importlib.import_module(name)
    if threading.active_count() != 1:  # never fork beside a thread: the client falls back to fresh processes
        sys.exit(f"threads running after the imports: {[t.name for t in threading.enumerate()]}")
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # nothing of the server's reaches a command's output
    os.close(null)
    gc.collect()
    gc.freeze()  # the children share these pages instead of copying them as the collector walks them
    channel_out.write(b'{"ready": true}\n')
    channel_out.flush()
    for line in channel_in:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            channel_in.close()
            channel_out.close()
            _become(request)  # never returns
        channel_out.write(json.dumps({"pid": pid}).encode() + b"\n")
        channel_out.flush()
        _, status = os.waitpid(pid, 0)
        channel_out.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        channel_out.flush()


def _become(request: dict[str, object]) -> None:
    """In the forked child: become ``argv`` as a fresh interpreter would run it, then exit."""
    import atexit
    import importlib
    import runpy
    import tempfile
    import time

    code = 1
    try:
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(str(request["out"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stderr = os.open(str(request["err"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        # the streams a fresh interpreter opens on these descriptors: as the server's own (it started
        # with the same environment: PYTHONUNBUFFERED, the locale), so buffering, encodings and error
        # handlers are the same
        sys.stdin, sys.stdout, sys.stderr = (_stream(fd, mode, _STREAMS[fd]) for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        signal.signal(signal.SIGINT, signal.SIG_IGN if request.get("sigint_ignored") else signal.default_int_handler)
        os.chdir(str(request["cwd"]))
        os.environ.clear()
        os.environ.update(request["env"])  # type: ignore[arg-type]
        time.tzset()
        tempfile.tempdir = None  # TMPDIR is read again on first use
        argv = [str(a) for a in request["argv"]]  # type: ignore[attr-defined]
        sys.argv = argv
        sys.path[0] = os.path.dirname(argv[0])  # what a script's interpreter puts first
        for name in [m for m in sys.modules if m == "sqlmesh.cli" or m.startswith("sqlmesh.cli.")]:
            del sys.modules[name]
        if os.path.basename(argv[0]) == "elt":
            import orchestrator  # noqa: F401 (its __init__ sets MAX_FORK_WORKERS before SQLMesh reads it)
        import sqlmesh.core.constants

        importlib.reload(sqlmesh.core.constants)  # SQLMESH_HOME, MAX_FORK_WORKERS: as this command sees them
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            _exit_functions(atexit)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)  # as Python exits on an uncaught Ctrl-C
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        _exit_functions(atexit)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            code = 120  # as Python does when it cannot flush at exit
    except BaseException:  # becoming the command failed (a working directory that does not exist...)
        import traceback

        traceback.print_exc()  # into the command's stderr file once it is open, else the server's
    finally:
        os._exit(code)


def _exit_functions(atexit) -> None:  # type: ignore[no-untyped-def]
    """What an interpreter runs at exit: it waits for non-daemon threads, then the atexit functions."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    except Exception:
        pass
    atexit._run_exitfuncs()


if __name__ == "__main__":
    _serve()
