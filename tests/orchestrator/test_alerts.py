"""Freshness and alerts through real receivers (an HTTP webhook and an SMTP server on loopback):
one message per state change, never one per tick, and a broken channel never fails a run."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from sources.load.base import LEDGER_COLUMNS
from tests.orchestrator.conftest import Project
from tests.orchestrator.receivers import SMTPReceiver, WebhookReceiver


def _land(project: Project, table: str, extracted_at: str) -> None:
    """A ledger entry as the loader writes it: a batch of jaffle_app.<table> extracted then."""
    path = project.root / "data" / "warehouse.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
        con.execute(f"CREATE TABLE IF NOT EXISTS elt_meta.loaded_batches ({LEDGER_COLUMNS})")
        con.execute("INSERT INTO elt_meta.loaded_batches VALUES (?, 'jaffle_app', ?, ?, 5, ?, ?, NULL)",
                    [f"b-{table}-{extracted_at}", table, f"raw_jaffle_shop.{table}", extracted_at, extracted_at])


@pytest.fixture
def receivers(project: Project):  # type: ignore[no-untyped-def]
    with WebhookReceiver() as hook, SMTPReceiver() as smtp:
        project.env.update(ELT_ALERT_WEBHOOK_URL=hook.url, ELT_SMTP_HOST=smtp.host, ELT_SMTP_PORT=str(smtp.port),
                           ELT_ALERT_EMAIL_TO="oncall@example.com,data@example.com",
                           ELT_ALERT_EMAIL_FROM="elt@example.com")
        yield hook, smtp


def test_stale_table_with_no_runs_alerts_once_then_recovers(project: Project, receivers) -> None:  # type: ignore[no-untyped-def]
    hook, smtp = receivers
    # jaffle_app (freshness 26h) is checked but never due, so nothing runs: a dead loader
    env = {"ELT_JOBS": "jaffle_app", "ELT_JOB_JAFFLE_APP_SCHEDULE": "0 0 31 2 *"}
    _land(project, "orders", "2026-11-20 00:00:00")
    first = project.elt("tick", "--now", "2026-11-20T12:00", **env)
    assert first.returncode == 0, first.stderr
    assert hook.received == [] and smtp.messages == []  # fresh; the other tables were never loaded: unknown

    stale = project.elt("tick", "--now", "2026-11-21T03:00", **env)
    assert "stale: raw_jaffle_shop.orders" in stale.stdout, stale.stdout + stale.stderr
    project.elt("tick", "--now", "2026-11-21T03:01", **env)  # still stale: no second message
    assert len(hook.received) == 1 and len(smtp.messages) == 1
    text = hook.received[0]["text"]
    assert text.startswith("[elt] STALE: table raw_jaffle_shop.orders")
    assert "owner: app-team@example.com" in text and "27.0h old, max 26.0h" in text
    assert "newest extraction: 2026-11-20 00:00 UTC" in text  # the table has no rows: measured by its loads
    assert "impact: " in text and "marts.orders" in text and "marts.customers" in text
    assert "investigate: elt freshness; elt runs --job jaffle_app" in text
    sender, rcpts, message = smtp.messages[0]
    assert (sender, rcpts) == ("elt@example.com", ["oncall@example.com", "data@example.com"])
    assert message["Subject"] == "[elt] STALE: table raw_jaffle_shop.orders"
    assert "impact: " in message.get_payload()

    _land(project, "orders", "2026-11-21 03:00:00")
    project.elt("tick", "--now", "2026-11-21T03:02", **env)
    project.elt("tick", "--now", "2026-11-21T03:03", **env)
    assert len(hook.received) == 2 and len(smtp.messages) == 2
    assert hook.received[1]["text"].startswith("[elt] RECOVERED: table raw_jaffle_shop.orders")
    fresh = project.elt("freshness", "--now", "2026-11-21T03:04", **env)
    assert fresh.returncode == 0 and "raw_jaffle_shop.orders: fresh" in fresh.stdout
    assert project.elt("freshness", "--now", "2026-11-23T03:04", **env).returncode == 1


def test_job_failure_alert_says_what_owner_attempt_error_and_next_step(project: Project, receivers) -> None:  # type: ignore[no-untyped-def]
    hook, smtp = receivers
    assert project.elt("run-job", "bad").returncode == 1
    assert project.elt("run-job", "bad").returncode == 1  # still failing: no second message
    assert len(hook.received) == 1 and len(smtp.messages) == 1
    [record] = [r for r in project.history().recent(5, "bad")][-1:]
    text = hook.received[0]["text"]
    assert text.startswith("[elt] FAILED: job bad")
    for part in ("owner: ops@example.com", "attempt: 1 of 3", "error: job bad exited with status 1",
                 "last success: never", "investigate: elt run-show"):
        assert part in text, (part, text)


def test_broken_alert_channels_never_fail_a_run_and_an_undelivered_alert_is_sent_again(project: Project,
                                                                                       tmp_path: Path) -> None:
    with WebhookReceiver(status=500) as hook:
        project.env.update(ELT_ALERT_WEBHOOK_URL=hook.url, ELT_SMTP_HOST="127.0.0.1", ELT_SMTP_PORT="1",
                           ELT_ALERT_EMAIL_TO="oncall@example.com", ELT_ALERT_TIMEOUT_S="2")
        (tmp_path / "broken").write_text("")
        failed = project.elt("run-job", "toggle")  # both channels fail: the run's own status stands
        assert failed.returncode == 1 and "job toggle: failed" in failed.stdout
        assert failed.stderr.count("alert channel failed") == 2 and hook.received == []
        assert '"channel": "webhook", "error": "HTTP 500"' in failed.stderr  # the name and status, nothing else
        assert '"channel": "email", "error": "ConnectionRefusedError"' in failed.stderr
        assert "sent again at the next check" in failed.stderr

        hook.status = 200  # the webhook is back (mail is still down): nobody heard of the failure yet
        again = project.elt("run-job", "toggle")
        assert again.returncode == 1
        assert [m["text"].splitlines()[0] for m in hook.received] == ["[elt] FAILED: job toggle"]
        assert project.elt("run-job", "toggle").returncode == 1 and len(hook.received) == 1  # delivered: no repeat

        (tmp_path / "broken").unlink()
        recovered = project.elt("run-job", "toggle")
        assert recovered.returncode == 0, recovered.stderr
        assert "job toggle: succeeded" in recovered.stdout
        assert [m["text"].splitlines()[0] for m in hook.received][1:] == ["[elt] RECOVERED: job toggle"]
        assert "secret-token" not in failed.stderr + again.stderr + recovered.stderr  # the webhook URL is a secret
    statuses = sorted(r.status for r in project.history().recent(10, "toggle"))
    assert statuses == ["failed", "failed", "failed", "succeeded"]


def test_a_failing_channel_logs_its_name_and_status_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook URL and the SMTP password are secrets, and servers quote them: a failing channel
    is logged by its name and its HTTP/SMTP status (or the exception's class), never by a text."""
    import io
    import json
    import logging
    import smtplib
    import urllib.error

    from orchestrator.observe import alerts
    from sources import logs

    url = "https://hooks.example.invalid/services/T000/B000/secret-token"
    stream = io.StringIO()
    logs.configure(stream=stream, json_lines=True)
    try:
        def fails() -> None:
            raise OSError(f"POST {url} failed: connection refused")

        def not_found() -> None:  # what a chat server answers for a revoked hook
            raise urllib.error.HTTPError(url, 404, "Not Found /services/T000/B000/secret-token", None,  # type: ignore[arg-type]
                                         io.BytesIO(b"no_service /services/T000/B000/secret-token"))

        def refused_login() -> None:
            raise smtplib.SMTPAuthenticationError(535, b"5.7.8 authentication failed for secret-token")

        assert alerts._deliver("webhook", fails) is False
        assert alerts._deliver("webhook", not_found) is False
        assert alerts._deliver("email", refused_login) is False
        monkeypatch.setenv("ELT_ALERT_WEBHOOK_URL", url)
        monkeypatch.setattr(alerts, "_webhook", lambda u, a, t: fails())
        monkeypatch.delenv("ELT_SMTP_HOST", raising=False)
        assert alerts.send(alerts.Alert("failed", "job demo", "job demo failed")) == {"webhook": False}
    finally:
        for name in ("sources", "orchestrator"):
            logging.getLogger(name).handlers[:] = []
    out = stream.getvalue()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["event"], x["channel"], x["error"]) for x in lines] == [
        ("alert channel failed", "webhook", "OSError"), ("alert channel failed", "webhook", "HTTP 404"),
        ("alert channel failed", "email", "SMTP 535 (SMTPAuthenticationError)"),
        ("alert channel failed", "webhook", "OSError")]
    assert "secret-token" not in out and "T000" not in out


def test_each_mart_goes_stale_at_its_own_declared_age(project: Project) -> None:
    """Order marts declare 'freshness:26h', catalog marts 'freshness:7d' (tags in their MODEL blocks)."""
    path = project.root / "data" / "warehouse.duckdb"
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:  # the last successful prod transform, as `elt transform` records it
        con.execute("CREATE SCHEMA IF NOT EXISTS elt_meta")
        con.execute("CREATE TABLE elt_meta.transform_watermarks (environment TEXT NOT NULL, loaded_through TIMESTAMP, "
                    "finished_at TIMESTAMP NOT NULL)")
        con.execute("INSERT INTO elt_meta.transform_watermarks VALUES ('prod', NULL, '2026-11-20 03:00:00')")
    env = {"ELT_JOBS": "quick"}

    def states(now: str) -> dict[str, str]:
        out = project.elt("freshness", "--now", now, **env).stdout
        return {line.split(":")[0].strip(): line.split(":")[1].split()[0] for line in out.splitlines()
                if line.strip().startswith("marts.")}

    assert states("2026-11-21T04:00") == {m: "fresh" for m in
                                          ("marts.customers", "marts.locations", "marts.order_items", "marts.orders",
                                           "marts.products", "marts.supplies")}
    later = states("2026-11-21T06:00")  # 27h: past 26h, within 7d
    assert {m for m, s in later.items() if s == "stale"} == {"marts.customers", "marts.order_items", "marts.orders"}
    assert set(states("2026-11-27T04:00").values()) == {"stale"}  # 7d 1h: every mart
    # without a tag, ELT_MART_FRESHNESS applies
    model = project.root / "models" / "marts" / "products.sql"
    model.write_text(model.read_text().replace("tags ('freshness:7d'),", "", 1))
    assert states("2026-11-21T06:00")["marts.products"] == "stale"  # the default, 26h
    env["ELT_MART_FRESHNESS"] = "30h"
    assert states("2026-11-21T06:00")["marts.products"] == "fresh"
    assert states("2026-11-21T06:00")["marts.orders"] == "stale"  # its own tag still wins


def test_ticks_started_together_send_each_freshness_alert_once(project: Project) -> None:
    """Each tick checks freshness and alerts on changes before it takes the scheduler lock; the
    alerting reads the previous state, sends, then records the new one. Ticks started together (a
    systemd timer and a manual tick, a cron tick per host) each read the old state and each paged
    once the channel took longer than the gap between them (a probe: 4 ticks, a webhook answering
    in 1 s, every STALE alert 4 times)."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[str] = []

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(1.5)  # a chat service's usual answer time, and more
            received.append(json.loads(body)["text"].splitlines()[0])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"ELT_JOBS": "jaffle_app", "ELT_JOB_JAFFLE_APP_SCHEDULE": "0 0 31 2 *",
               "ELT_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{server.server_address[1]}/hook"}
        _land(project, "orders", "2026-11-20 00:00:00")
        assert project.elt("tick", "--now", "2026-11-20T12:00", **env).returncode == 0  # fresh: no alert
        ticks = [project.popen("tick", "--now", "2026-11-21T03:00", **env) for _ in range(3)]
        outcomes = [tick.communicate(timeout=120) for tick in ticks]
        assert all(tick.returncode == 0 for tick in ticks), outcomes
    finally:
        server.shutdown()
        server.server_close()
    assert received == ["[elt] STALE: table raw_jaffle_shop.orders"], received
