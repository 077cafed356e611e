"""Child processes and what they inherit: descriptors a forked child must not keep open, and
children that must not outlive their parent.

A lock that "the kernel releases when its holder dies" (an ``flock`` file, the socket of the
PostgreSQL session holding an advisory lock) is only released when *every* descriptor of it is
closed, and ``fork`` copies them all. A child forked by a library (SQLMesh loads a project in a
pool of forked workers when ``MAX_FORK_WORKERS`` is not 1) and orphaned when its parent is
killed kept such a lock for ever: every later transform waited for it (decision 0024).

``hold(fd)`` registers a descriptor; in every child forked from Python afterwards it is pointed at
``/dev/null`` (not closed, so the number is never reused for something the child opens later).
``subprocess`` does not run these hooks, so a descriptor passed on purpose to an executed command
(the supervisor's job lock, ``inheritable_fd``) is kept.

>>> import os, tempfile
>>> fd, path = tempfile.mkstemp()
>>> hold(fd)
>>> pid = os.fork()
>>> if pid == 0:  # the child sees /dev/null behind the number
...     os._exit(0 if os.path.samestat(os.fstat(fd), os.stat(os.devnull)) else 1)
>>> os.waitpid(pid, 0)[1]
0
>>> release(fd); os.close(fd); os.unlink(path)
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
from pathlib import Path

_HELD: set[int] = set()


def hold(fd: int) -> None:
    """Forked children of this process never keep ``fd``."""
    _HELD.add(fd)


def release(fd: int) -> None:
    """Call before closing ``fd``: its number may be reused."""
    _HELD.discard(fd)


def _blind_in_child() -> None:
    if not _HELD:
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in _HELD:
        try:
            os.dup2(null, fd, inheritable=False)
        except OSError:  # already closed in the parent's last instant: nothing to blind
            pass
    os.close(null)
    _HELD.clear()


os.register_at_fork(after_in_child=_blind_in_child)


def _prctl():  # type: ignore[no-untyped-def]
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").prctl
    except (OSError, AttributeError):  # not Linux with glibc: children may outlive their parent
        return None


_PRCTL = _prctl()  # resolved here, in the parent: the child only calls it (no import after fork)


def dies_with(parent_pid: int | None = None) -> Callable[[], None]:
    """``preexec_fn`` for a child doing part of its parent's work under the parent's locks, started
    by ``parent_pid`` (this process, by default): it gets SIGKILL when the parent dies
    (``PR_SET_PDEATHSIG``), instead of working on unprotected. A parent that died between the fork
    and that request (the child already has another parent) kills the child at once. Start such
    children from the thread that lives as long as they should (the main thread).

    >>> import subprocess
    >>> subprocess.run(["sleep", "0"], preexec_fn=dies_with()).returncode
    0
    >>> subprocess.run(["sleep", "5"], preexec_fn=dies_with(-1)).returncode  # "its parent is gone"
    -9
    """
    parent = os.getpid() if parent_pid is None else parent_pid  # read here, in the parent, before the fork

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
            # the request only covers a parent alive when it is made: a kill of the parent in the
            # instant after fork left the child working on, reparented (found with a delayed prctl)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def command_line(pid: int | str = "self", fallback: str = "") -> str:
    """Process ``pid``'s command line as one string (from ``/proc``), as messages show it: URL
    user-info redacted, cut at 200 characters (" ..."); ``fallback`` when it cannot be read (the
    process is gone, or this is not Linux) or is empty."""
    from sources.logs import redact_userinfo

    try:
        text = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        text = ""
    text = redact_userinfo(text or fallback)
    return text if len(text) <= 200 else text[:200] + " ..."


def open_lock_file(path: Path, *, shared_folder: bool = False) -> int:
    """A descriptor of lock file ``path`` to ``flock``, whichever user runs `elt`: a lock file another
    user created (mode 0644) is opened read-only, which is all ``flock`` needs. ``shared_folder``:
    the folder is common to every user of the machine (in the system temporary folder); created
    here, it is made world-writable and sticky, like ``/tmp`` itself, so the next user's lock files
    can be created in it. ``PermissionError`` when the file cannot be created or read.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "locks"
    >>> fd = open_lock_file(folder / "a.lock", shared_folder=True); os.close(fd)
    >>> oct(folder.stat().st_mode & 0o7777)
    '0o1777'
    """
    folder = path.parent
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        if shared_folder and folder.stat().st_uid == os.geteuid():
            os.chmod(folder, 0o1777)  # mkdir's mode is cut by the umask
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        if shared_folder and os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)  # readable by the next user whatever this process's umask (077 on hardened hosts)
        return fd
    except PermissionError:  # another user's file: flock needs no write access
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # no file, and no right to create one in another user's folder
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path)) from None
