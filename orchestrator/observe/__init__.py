"""What happened and how fresh things are: run history, freshness, alerts, `elt status`
and the HTML report, and the run context every log line carries."""
