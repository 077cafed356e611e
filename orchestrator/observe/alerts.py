"""Alerts on a state change only (failed, stale, recovered), to a webhook and/or email.

The state of every subject (``job:<name>``, ``fresh:<table or mart>``) is kept in
``elt_meta.alert_state``; a message goes out only when it changes, so a job failing every hour
pages once, and its recovery once. A message says what broke, its impact (the marts affected),
the owner, attempt x of y, the error's first line, the last success, and the command to run.

Channels, configured by environment (secrets may come from ``<NAME>_FILE``):

- ``ELT_ALERT_WEBHOOK_URL``: POST of Slack-compatible JSON (``{"text": ...}``); Slack, Mattermost,
  Teams' and Google Chat's incoming webhooks accept it.
- ``ELT_SMTP_HOST`` (+ ``ELT_SMTP_PORT`` 25, ``ELT_SMTP_USER``, ``ELT_SMTP_PASSWORD``,
  ``ELT_SMTP_STARTTLS=1``, ``ELT_ALERT_EMAIL_FROM``, ``ELT_ALERT_EMAIL_TO`` comma-separated).

A failing channel never fails the run or the tick. It is logged by its name and the HTTP or SMTP
status (or the exception's class) only: a webhook's URL path is its secret, and servers quote it
(``404 Not Found /services/T000/B000/SECRET``), as SMTP servers may quote what they were sent.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from orchestrator.settings import Settings
from sources.connections import secret_from_env
from sources.logs import get_logger

log = get_logger("orchestrator.observe.alerts")


@dataclass
class Alert:
    kind: str  # failed | stale | recovered
    subject: str  # "job jaffle_app", "table raw_jaffle_shop.orders"
    what: str  # one line: what happened
    owner: str = ""
    impact: list[str] = field(default_factory=list)
    attempt: str = ""  # "3 of 3"
    error: str = ""
    last_success: datetime | None = None
    investigate: str = ""
    last_success_label: str = "last success"

    @property
    def title(self) -> str:
        icon = {"failed": "FAILED", "stale": "STALE", "recovered": "RECOVERED"}[self.kind]
        return f"[elt] {icon}: {self.subject}"

    def text(self) -> str:
        lines = [self.title, self.what]
        if self.impact:
            lines.append(f"impact: {', '.join(self.impact)}")
        if self.owner:
            lines.append(f"owner: {self.owner}")
        if self.attempt:
            lines.append(f"attempt: {self.attempt}")
        if self.error:
            lines.append(f"error: {self.error}")
        if self.kind != "recovered":
            lines.append(f"{self.last_success_label}: {self.last_success:%Y-%m-%d %H:%M UTC}" if self.last_success
                         else f"{self.last_success_label}: never")
        if self.investigate:
            lines.append(f"investigate: {self.investigate}")
        return "\n".join(lines)


def send(alert: Alert, timeout: float | None = None) -> dict[str, bool]:
    """Deliver ``alert`` on every configured channel; returns which channels succeeded."""
    timeout = timeout or float(os.environ.get("ELT_ALERT_TIMEOUT_S", "10"))
    delivered: dict[str, bool] = {}
    url = secret_from_env("ELT_ALERT_WEBHOOK_URL")
    if url:
        delivered["webhook"] = _deliver("webhook", lambda: _webhook(url, alert, timeout))
    host = os.environ.get("ELT_SMTP_HOST")
    if host:
        password = secret_from_env("ELT_SMTP_PASSWORD")
        delivered["email"] = _deliver("email", lambda: _email(host, alert, timeout, password))
    if not delivered:
        log.warning("alert not delivered: no channel configured (ELT_ALERT_WEBHOOK_URL, ELT_SMTP_HOST)",
                    extra={"fields": {"alert": alert.title}})
    return delivered


class ChannelError(Exception):
    """A channel's failure in words of our own (no URL, nothing a server said): logged as it is."""


def failure(exc: BaseException) -> str:
    """What may be logged of a channel's failure: its HTTP or SMTP status, else the exception's class.

    >>> failure(urllib.error.HTTPError("https://hooks.example.com/services/T0/B0/SECRET", 404,
    ...                                "Not Found /services/T0/B0/SECRET", None, None))
    'HTTP 404'
    >>> failure(urllib.error.URLError(ConnectionRefusedError(111, "refused http://h/services/SECRET")))
    'URLError (ConnectionRefusedError)'
    >>> failure(smtplib.SMTPAuthenticationError(535, b"5.7.8 bad credentials for SECRET"))
    'SMTP 535 (SMTPAuthenticationError)'
    """
    if isinstance(exc, ChannelError):
        return str(exc)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"SMTP {exc.smtp_code} ({type(exc).__name__})"
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return f"URLError ({type(exc.reason).__name__})"
    return type(exc).__name__


def _deliver(channel: str, action: Any) -> bool:
    try:
        action()
        log.info("alert sent", extra={"fields": {"channel": channel}})
        return True
    except Exception as exc:  # noqa: BLE001 - a broken channel never fails a run
        log.error("alert channel failed", extra={"fields": {"channel": channel, "error": failure(exc)}})
        return False


def _webhook(url: str, alert: Alert, timeout: float) -> None:
    body = json.dumps({"text": alert.text(), "username": "elt"}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - URL from the operator
        if response.status >= 300:
            raise ChannelError(f"HTTP {response.status}")


def _email(host: str, alert: Alert, timeout: float, password: str | None) -> None:
    recipients = [r.strip() for r in os.environ.get("ELT_ALERT_EMAIL_TO", "").split(",") if r.strip()]
    if not recipients:
        raise ChannelError("ELT_ALERT_EMAIL_TO is not set (comma-separated addresses)")
    message = EmailMessage()
    message["Subject"] = alert.title
    message["From"] = os.environ.get("ELT_ALERT_EMAIL_FROM") or f"elt@{socket.gethostname()}"
    message["To"] = ", ".join(recipients)
    message.set_content(alert.text())
    port = int(os.environ.get("ELT_SMTP_PORT") or ("465" if _flag("ELT_SMTP_SSL") else "25"))
    # TLS checks the server's certificate and name against the system's CAs (SSL_CERT_FILE honoured):
    # smtplib's own default checks neither, so anyone in the middle would have been sent the password
    context = ssl.create_default_context()
    implicit = _flag("ELT_SMTP_SSL") or port == 465
    user = os.environ.get("ELT_SMTP_USER")
    login = bool(user and password)
    connection = (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if implicit
                  else smtplib.SMTP(host, port, timeout=timeout))
    with connection as smtp:
        encrypted = implicit
        if not implicit:
            smtp.ehlo_or_helo_if_needed()  # a relay that only speaks HELO (and needs no login) still gets mail
            # asked for, or offered by a server we are to log in to: the password never goes in clear text
            if _flag("ELT_SMTP_STARTTLS") or (login and smtp.has_extn("starttls")):
                smtp.starttls(context=context)
                smtp.ehlo()
                encrypted = True
        if login:
            if not encrypted:
                raise ChannelError(f"the mail server {host}:{port} offers no STARTTLS, and ELT_SMTP_PASSWORD is never "
                                   "sent unencrypted: use the server's TLS port (ELT_SMTP_PORT=465, or ELT_SMTP_SSL=1) "
                                   "or a port that offers STARTTLS (587)")
            assert user is not None and password is not None
            smtp.login(user, password)
        smtp.send_message(message)


def _flag(name: str) -> bool:
    """An on/off setting: ``1``, ``true``, ``yes`` or ``on`` (any case) turn it on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --- state changes ------------------------------------------------------------------------------

def _changed(history: Any, subject: str, new: str) -> str | None:
    """The previous state if ``subject`` changes to ``new`` (``None`` if it does not change)."""
    previous = history.alert_states().get(subject, ("unknown", None))[0]
    return None if previous == new else previous


def _record(history: Any, subject: str, new: str, now: datetime, detail: str = "",
            delivered: dict[str, bool] | None = None) -> None:
    """Keep ``subject``'s new state, unless an alert about it reached no configured channel: then
    the old state stays, and the next check (next run, next tick) sends the alert again."""
    if delivered and not any(delivered.values()):
        log.warning("alert not delivered on any channel; it is sent again at the next check",
                    extra={"fields": {"subject": subject, "state": new}})
        return
    history.set_alert_state(subject, new, now, detail)


def _send_and_record(alert: Alert, history: Any, subject: str, new: str, now: datetime, detail: str = "") -> None:
    _record(history, subject, new, now, detail, send(alert))


def on_job_result(settings: Settings, history: Any, job: Any, result: Any, now: datetime) -> Alert | None:
    """Alert when a job turns failed (failed, timed out, abandoned) or recovers."""
    bad = result.status in ("failed", "timed_out", "abandoned")
    if not bad and result.status != "succeeded":
        return None  # skipped or already ran: no news
    subject, new = f"job:{job.name}", "failed" if bad else "ok"
    previous = _changed(history, subject, new)
    if previous is None:
        return None
    if not bad and previous != "failed":
        _record(history, subject, new, now, result.error)  # first success, nothing to announce
        return None
    success = history.last_with_status(job.name, ("succeeded",))
    alert = Alert(
        kind="failed" if bad else "recovered",
        subject=f"job {job.name}",
        what=(f"job {job.name} {result.status.replace('_', ' ')} (run {result.run_id})" if bad
              else f"job {job.name} succeeded again (run {result.run_id})"),
        owner=job.owner, impact=job_impact(settings, job) if bad else [],
        attempt=f"{result.attempts} of {job.max_attempts}" if bad else "",
        error=result.error.splitlines()[0] if result.error else "",
        last_success=success.finished_at if success else None,
        investigate=f"elt run-show {result.run_id}  (runbook: docs/runbook.md#a-job-failed)",
    )
    _send_and_record(alert, history, subject, new, now, result.error)
    return alert


def job_impact(settings: Settings, job: Any) -> list[str]:
    from orchestrator.observe.freshness import impact, model_graph

    if job.kind == "load" and job.source:
        from sources.config import load_source

        spec = load_source(job.source)
        return impact(settings.project_root, {f"{spec.raw_schema}.{t}" for t in spec.tables})
    if job.kind == "transform":
        return sorted(m for m in model_graph(settings.project_root) if m.startswith("marts."))
    return []


def on_freshness(settings: Settings, history: Any, results: list[Any], now: datetime) -> list[Alert]:
    """Alert when a table or mart turns stale, and when it is fresh again. Unknown changes nothing."""
    from orchestrator.observe.freshness import impact

    alerts = []
    for f in results:
        if f.state == "unknown":
            continue
        subject = f"fresh:{f.subject}"
        previous = _changed(history, subject, f.state)
        if previous is None:
            continue
        if f.state == "fresh" and previous != "stale":
            _record(history, subject, f.state, now)  # fresh from the start: nothing to announce
            continue
        stale = f.state == "stale"
        what = "table" if f.kind == "table" else "mart"
        alert = Alert(
            kind="stale" if stale else "recovered",
            subject=f"{what} {f.subject}",
            what=f.describe(now),
            owner=f.owner,
            impact=(impact(settings.project_root, {f.subject}) if f.kind == "table" else [f.subject]) if stale else [],
            last_success=f.newest, last_success_label=f.measure,
            investigate=(f"elt freshness; elt runs --job {f.source}  (runbook: docs/runbook.md#a-table-is-stale)"
                         if f.source else "elt freshness; elt runs --job transform  (runbook: docs/runbook.md#a-table-is-stale)"),
        )
        _send_and_record(alert, history, subject, f.state, now)
        alerts.append(alert)
    return alerts
