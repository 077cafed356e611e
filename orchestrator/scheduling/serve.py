"""``elt serve``: one foreground process that ticks once a minute, for people who want no cron.

Each tick is the same code as ``elt tick``; a tick that raises is logged and the loop goes on (the
next minute retries), so one bad minute never stops the scheduler. SIGTERM/SIGINT stop it between
ticks; running jobs finish first (their own timeouts bound that wait).
"""

from __future__ import annotations

import signal
import time

from orchestrator.settings import Settings
from sources.logs import get_logger

log = get_logger("orchestrator.scheduling.serve")


def serve(settings: Settings, *, interval_s: float = 60.0, max_ticks: int | None = None) -> int:
    from orchestrator.scheduling.tick import tick

    stop = {"now": False}

    def _stop(signum: int, frame: object) -> None:
        stop["now"] = True
        log.info("stopping after the current tick", extra={"fields": {"signal": signum}})

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ticks = 0
    while not stop["now"] and (max_ticks is None or ticks < max_ticks):
        started = time.monotonic()
        try:
            print(tick(settings).render(), flush=True)
        except Exception as exc:  # noqa: BLE001 - the loop outlives one bad tick
            log.error("tick failed", extra={"fields": {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}})
        ticks += 1
        if max_ticks is not None and ticks >= max_ticks:
            break
        # sleep to the next interval boundary, waking early on a stop signal
        deadline = started + interval_s
        while not stop["now"] and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return 0
