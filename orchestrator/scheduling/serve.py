"""``elt serve``: one foreground process that ticks once a minute, for people who want no cron.

Each tick is the same code as ``elt tick``; a tick that raises is logged and the loop goes on (the
next minute retries), so one bad minute never stops the scheduler. SIGTERM/SIGINT stop it as they
stop ``elt tick`` (``stopping``): running attempts are stopped and recorded, nothing new starts,
their slots run again when the scheduler is back. Waiting for them to finish would outlast any
stop grace period (a job's timeout is hours), and the kill after it would leave an abandoned run
and a used slot.
"""

from __future__ import annotations

import time

from orchestrator.scheduling import stopping
from orchestrator.settings import Settings
from sources.logs import get_logger

log = get_logger("orchestrator.scheduling.serve")


def serve(settings: Settings, *, interval_s: float = 60.0, max_ticks: int | None = None) -> int:
    from orchestrator.scheduling.tick import tick

    stopping.install()
    ticks = 0
    while not stopping.requested() and (max_ticks is None or ticks < max_ticks):
        started = time.monotonic()
        try:
            print(tick(settings).render(), flush=True)
        except Exception as exc:  # noqa: BLE001 - the loop outlives one bad tick
            log.error("tick failed", extra={"fields": {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}})
        ticks += 1
        if max_ticks is not None and ticks >= max_ticks:
            break
        stopping.wait(started + interval_s - time.monotonic())  # to the next interval, or the stop signal
    if stopping.requested():
        log.info("stopped", extra={"fields": {"signal": stopping.signal_name()}})
        return stopping.die()
    return 0
