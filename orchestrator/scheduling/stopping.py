"""Stopping a supervisor (``elt run-job``, ``elt tick``, ``elt serve``) on SIGTERM or SIGINT.

systemd's stop, a reboot, ``docker stop`` and a ``timeout`` wrapper send SIGTERM; a person at the
terminal sends SIGINT. Without a handler the supervisor died at once: its attempt's record stayed
"running" until the next tick called it abandoned (alerting as for an OOM kill), and the slot
counted as used, so a daily job did not run again until the next day.

With ``install()``, the first signal stops the running attempts (SIGTERM to each attempt's process
group: what an attempt had not committed is rolled back, as for any kill), starts nothing more (no
retry, no further job of the tick), records each stopped attempt as ``stopped``, and gives its slot
back so that the next tick runs it again. The command then ends by that signal (``die``). An
attempt that has not ended ``ELT_STOP_GRACE_S`` seconds (30) after the stop is killed (SIGKILL to
its group, runner._wait), and so is every running attempt at a second signal.
"""

from __future__ import annotations

import os
import signal
import threading
import time

# A list, not a threading.Event: the handler runs in the main thread between bytecodes, and an
# Event's set() takes a lock the main thread may hold at that instant (inside Event.wait)
_SIGNAL: list[int] = []
_GROUPS: set[int] = set()  # process groups of the attempts running now
_LOCK = threading.RLock()  # the handler may interrupt this thread inside started()/ended()


def requested() -> bool:
    return bool(_SIGNAL)


def signal_name() -> str:
    return signal.Signals(_SIGNAL[0]).name if _SIGNAL else "SIGTERM"


def wait(seconds: float) -> None:
    """Sleep ``seconds``, waking within 0.2 s when a stop is requested (a retry's backoff)."""
    deadline = time.monotonic() + max(0.0, seconds)
    while not _SIGNAL and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.2, left))


def request(signum: int = signal.SIGTERM) -> None:
    """What the handler does: stop the running attempts (SIGTERM; SIGKILL from the second signal
    on, for an attempt that ignores SIGTERM or an operator who will not wait), start nothing more."""
    again = bool(_SIGNAL)
    if not _SIGNAL:
        _SIGNAL.append(signum)
    with _LOCK:
        groups = list(_GROUPS)
    for group in groups:  # no logging here: a handler writing to stderr inside a write would raise
        try:
            os.killpg(group, signal.SIGKILL if again else signal.SIGTERM)
        except ProcessLookupError:
            pass


def install() -> None:
    """Handle SIGTERM and SIGINT in this (main) thread with ``request``."""
    signal.signal(signal.SIGTERM, lambda signum, frame: request(signum))
    signal.signal(signal.SIGINT, lambda signum, frame: request(signum))


def started(group: int) -> None:
    """An attempt's process group is running; stopped at once if a stop came first."""
    with _LOCK:
        _GROUPS.add(group)
    if _SIGNAL:
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass


def ended(group: int) -> None:
    with _LOCK:
        _GROUPS.discard(group)


def die() -> int:
    """End this process by the signal that stopped it, as if it had no handler (a shell shows 143 or
    130; systemd counts a stop by SIGTERM as clean, an exit status 143 as a failure)."""
    import sys

    signum = _SIGNAL[0] if _SIGNAL else signal.SIGTERM
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # not reached


def reset() -> None:
    """Forget a stop (tests, which run several supervisors in one process)."""
    _SIGNAL.clear()
