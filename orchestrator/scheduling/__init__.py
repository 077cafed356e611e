"""When and how jobs run: cron schedules, the tick and the long-running `elt serve`, the
supervised run of one job (locks, retries, timeouts) and the loader glue it calls."""
