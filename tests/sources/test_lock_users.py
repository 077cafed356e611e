"""The load lock in the system temporary folder is shared by every user of the machine: a load run
once by root (by hand, at 3 a.m.) must not stop the service user's scheduled loads for good, and
the two must still exclude each other. Before, the second user got a PermissionError traceback."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sources.pipeline import source_lock

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two users")


@pytest.fixture
def machine_tmp() -> Iterator[Path]:
    """A temporary folder every user can reach (pytest's tmp_path is root's alone), as TMPDIR."""
    folder = Path(tempfile.mkdtemp(prefix="elt-lock-users-"))
    folder.chmod(0o1777)
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(folder, ignore_errors=True)


def as_nobody(work: Callable[[], str]) -> str:
    """``work()``'s answer (or its error's text), run in a child process as user nobody."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            answer = f"{type(exc).__name__}: {exc}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


def _load_lock(source: str) -> Callable[[], str]:
    def work() -> str:
        with source_lock(source, scope="/landing"):
            return "locked"
    return work


def test_a_load_by_root_leaves_the_lock_usable_by_the_service_user(machine_tmp: Path) -> None:
    with source_lock("shop", scope="/landing"):  # root's load, first on the machine: creates the folder
        assert oct((machine_tmp / "elt-locks").stat().st_mode & 0o7777) == "0o1777"
        assert "another load of this source is running" in as_nobody(_load_lock("shop"))  # still exclusive
    assert as_nobody(_load_lock("shop")) == "locked"  # root's 0644 lock file: opened read-only
    assert as_nobody(_load_lock("other")) == "locked"  # a new lock file in the shared folder
    with source_lock("other", scope="/landing"):  # and root is kept out of nobody's lock file
        pass


def test_a_lock_folder_made_by_an_older_version_is_named_with_the_fix(machine_tmp: Path) -> None:
    (machine_tmp / "elt-locks").mkdir(mode=0o755)  # root's, as elt made it before
    answer = as_nobody(_load_lock("shop"))
    assert answer.startswith("LoaderError: [source=shop] cannot open the load lock"), answer
    assert f"`chmod 1777 {machine_tmp / 'elt-locks'}` as root (loads of every user" in answer, answer
    os.chmod(machine_tmp / "elt-locks", 0o1777)  # what the message says
    assert as_nobody(_load_lock("shop")) == "locked"
