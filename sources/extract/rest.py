"""REST API source: paginated JSON over real HTTP, with auth, timeouts, retries and incremental reads.

- Pagination: ``page`` (page number), ``offset``, ``cursor`` (a token in the body) and
  ``next_link`` (a URL in the body or the ``Link`` header); a link seen twice stops the table
  (a looping API would otherwise never end), and ``max_pages`` bounds every table. Page and
  offset paging stop at the first *empty* page: many APIs cap the page size below what was asked,
  and stopping at a short page would then drop every later page without an error
  (``stop_on_short_page: true`` saves the last request for an API known to honour the size).
- Auth: ``bearer`` or ``api_key`` (a header), the secret read from the environment variable the
  declaration names (or its ``_FILE``); it is redacted from every log line and error, and sent
  only to the base URL's origin (scheme, host, port): not with a next link or a redirect that
  points elsewhere, and never over a redirect from https to http. User-info in the base URL
  (``https://user:password@host``) is sent the same way, as basic auth, and is never printed:
  every URL in a message or a manifest has its user-info redacted.
- Retries: 429, 500, 502, 503, 504, timeouts and connection errors are retried with exponential backoff and full
  jitter, at most ``max_retries`` times, honouring ``Retry-After``; 401/403/404 and other 4xx are
  not retried (retrying cannot fix them). The loop is this module's, not urllib3's ``Retry``: it
  also retries a body cut off mid-transfer (read after the status line), logs every retry, and
  takes ``sleep`` from the caller (the tests see the delays without waiting them).
- Time: ``timeout_s`` bounds each wait for the connection or for data, ``request_deadline_s`` the
  whole request, status line, headers and body (a server that drips them would otherwise hold the
  load for ever: a timer shuts the socket down); both retried.
- HTTP: one ``requests`` session per extraction, so every page reuses the connection; requests'
  redirect rules, with every credential header (an API key too, which requests would forward)
  dropped when a redirect leaves the base URL's origin, and ~/.netrc never consulted.
- Incremental: ``updated_since_param`` carries the cursor (minus the lookback).
- Records are mapped to the declared columns; nested values of ``json`` columns are kept as JSON text.
"""

from __future__ import annotations

import base64
import email.utils
import json
import os
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool

from sources.config import SourceSpec, TableSpec
from sources.connections import secret_from_env
from sources.errors import ConfigError, SourceReadError
from sources.extract.base import Extract
from sources.extract.arrow import JsonNumber, records_to_batches
from sources.extract.postgres import cursor_type, lower_bound
from sources.logs import get_logger, hides_userinfo, redact_userinfo, register_secret

log = get_logger("sources.rest")
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
RETRY_STATUS = {429, 500, 502, 503, 504}
MAX_REDIRECTS = 10


class TransientHTTPError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, hint: str | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.hint = hint  # the next step when the retries run out, if not "rerun later"


class RefusedRedirect(requests.RequestException):
    """A redirect from https to http: refused, so no credential or data travels in clear text."""

    def __init__(self, status: int, target: str) -> None:
        super().__init__(f"refused redirect from https to http ({target})")
        self.status = status


def backoff_delay(attempt: int, retry_after: float | None, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff, at least Retry-After when the server gave one.

    >>> 0 <= backoff_delay(3, None, random.Random(1)) <= BACKOFF_BASE_S * 8
    True
    >>> backoff_delay(0, 7.0, random.Random(1)) >= 7.0
    True
    """
    rng = rng or random.Random()
    delay = rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** attempt)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, BACKOFF_CAP_S * 5))
    return delay


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: an HTTP date is GMT (RFC 9110)
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port filled in.

    >>> origin("https://api.example.com/v1") == origin("https://API.example.com:443/v2?page=2")
    True
    >>> origin("http://api.example.com/v1") == origin("https://api.example.com/v1")
    False
    """
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a malformed port: matches no origin, so no credentials go there
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class _OriginAuth(requests.auth.AuthBase):
    """Adds the credential headers to a request for the base URL's origin, and to no other.

    Being the session's auth, it also keeps requests from reading ~/.netrc in its place."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.origin, self.headers = origin(base_url), headers

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if origin(str(request.url)) == self.origin:
            request.headers.update(self.headers)
        return request


class _Session(requests.Session):
    """requests drops Authorization on a redirect to another host, but keeps any other header (an
    API key) and follows https -> http: here every credential header is dropped when the redirect
    leaves the base URL's origin, and a redirect from https to http is refused."""

    def __init__(self, credential_headers: set[str]) -> None:
        super().__init__()
        self.credential_headers = {h.lower() for h in credential_headers}
        self.max_redirects = MAX_REDIRECTS

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        old, new = str(response.request.url), str(prepared_request.url)
        if urllib.parse.urlsplit(old).scheme == "https" and urllib.parse.urlsplit(new).scheme == "http":
            raise RefusedRedirect(response.status_code, new)
        if origin(old) != origin(new):
            for name in [n for n in prepared_request.headers if n.lower() in self.credential_headers]:
                del prepared_request.headers[name]


_IN_FLIGHT = threading.local()  # the _Deadline of the request this thread is making, if any


class _Deadline:
    """``request_deadline_s`` for one request, headers included: ``timeout_s`` bounds each wait for
    data, so a server that drips its status line or headers a byte at a time would hold the load
    for ever. At the deadline a timer shuts the request's socket down, which ends any read in
    progress; the request then fails as a timeout (retried)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.fired, self.done, self.connection = seconds, False, False, None
        self.lock = threading.Lock()  # a request that ends as the timer fires: one or the other
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def __enter__(self) -> _Deadline:
        _IN_FLIGHT.deadline = self
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:  # after this, the connection (back in the pool) is never shut down by us
            self.done = True
        self.timer.cancel()
        _IN_FLIGHT.deadline = None

    def _fire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.fired = True
            sock = getattr(self.connection, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    @staticmethod
    def watch(connection: object) -> None:
        """Called by the connection that carries this thread's request."""
        deadline = getattr(_IN_FLIGHT, "deadline", None)
        if deadline is not None:
            deadline.connection = connection
            if deadline.fired:  # fired before the connection had a socket
                deadline._fire()


class _Watched:
    """Mixed into urllib3's connection classes: tells this thread's ``_Deadline`` which connection
    carries its request, before connecting and before each request on a pooled connection."""

    def connect(self) -> None:
        _Deadline.watch(self)
        super().connect()  # type: ignore[misc]

    def request(self, *args: Any, **kwargs: Any) -> None:
        _Deadline.watch(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter, whose connections let ``_Deadline`` find the socket to shut down."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have connection classes of their own
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class RestClient:
    """GET JSON with auth, timeout and bounded retries over one session (its connections are
    reused from page to page); every message has the secret redacted."""

    def __init__(self, spec: SourceSpec, table: TableSpec, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec, self.table, self.sleep = spec, table, sleep
        self.where = {"source": spec.name, "table": table.name}
        base = spec.base_url or os.environ.get(spec.base_url_env, "")
        if not base:
            raise ConfigError(f"environment variable {spec.base_url_env} (the API's base URL) is not set", **self.where)
        self.base_url = base.rstrip("/")
        scheme_and_host = urllib.parse.urlsplit(self.base_url)
        if scheme_and_host.scheme not in ("http", "https") or not scheme_and_host.hostname:
            # Not shown: without its scheme, `user:password@host` is not recognised as user-info, so
            # no redaction would hide the password (requests' own message quotes the whole URL).
            raise ConfigError(f"the base URL ({spec.base_url_env or 'base_url'}) does not start with http:// or "
                              "https:// followed by a host; its value is not shown, as it may hold credentials",
                              **self.where, hint="write the whole URL, e.g. https://api.example.com/v1")
        credentials: dict[str, str] = {}
        self.secrets: list[str] = []
        if hides_userinfo(self.base_url):  # not shown: the parser would not find the password to hide
            raise ConfigError(f"the base URL ({spec.base_url_env or 'base_url'}) has a password with an unencoded "
                              "'/', '?' or '#' in its user-info", **self.where,
                              hint="percent-encode them in the password (/ as %2F, ? as %3F, # as %23), or "
                                   "declare auth with token_env instead of credentials in the URL")
        parts = urllib.parse.urlsplit(self.base_url)
        if "@" in parts.netloc:  # user-info: basic auth, sent the way the other credentials are
            user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")
            self.secrets += [password or user] if password or user else []  # a token alone as user is the secret
            self.base_url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            credentials["Authorization"] = "Basic " + token
            self.secrets.append(token)  # the header's value, should a server or proxy echo it back
        auth = spec.auth or {}
        if auth.get("type", "none") != "none":
            secret = secret_from_env(auth["token_env"])
            if not secret:
                raise ConfigError(f"environment variable {auth['token_env']} (the API secret) is not set", **self.where,
                                  hint=f"export {auth['token_env']}=... or {auth['token_env']}_FILE=/path/to/secret")
            credentials[self._token_header(auth)] = self._token_value(auth, secret)
            self.secrets.append(secret)
        self.auth, self.token = auth, (secret if auth.get("type", "none") != "none" else None)
        for secret in self.secrets:  # also out of what other code prints (an unexpected error's text)
            register_secret(secret)
        self.session = _Session({"Authorization", *credentials})
        for prefix in ("https://", "http://"):
            self.session.mount(prefix, _WatchedAdapter())
        self.session.headers.update({"Accept": "application/json", "User-Agent": "elt-loader"})
        self.session.auth = _OriginAuth(self.base_url, credentials)
        # the system's CAs (SSL_CERT_FILE too), as urllib read them, rather than certifi's bundle;
        # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE override this when they are set
        paths = ssl.get_default_verify_paths()
        self.session.verify = next((p for p in (paths.cafile, paths.capath) if p and os.path.exists(p)), True)
        self.requests = 0
        self.paging = str(dict(table.pagination).get("type", "none"))
        self.last_body = b""  # the last JSON body, shown when it holds no records where they should be
        self.answered = 0  # requests answered with a 2xx: "earlier pages answered" counts these, not retries

    @staticmethod
    def _token_header(auth: dict[str, Any]) -> str:
        return "Authorization" if auth["type"] == "bearer" else auth["header"]

    @staticmethod
    def _token_value(auth: dict[str, Any], secret: str) -> str:
        return f"Bearer {secret}" if auth["type"] == "bearer" else secret

    def _rotated_token(self) -> str | None:
        """After a 401: the token in ``<token_env>_FILE`` when it differs from the one sent, now
        sent in its place. A token that expires within a long read is renewed by an agent that
        rewrites the file (Vault agent, a Kubernetes projected token); the environment variable
        itself cannot change under a running load, so a 401 with it stays final."""
        name = (self.auth or {}).get("token_env")
        if not self.token or not name or os.environ.get(name, "").strip() or not os.environ.get(f"{name}_FILE"):
            return None
        try:
            fresh = secret_from_env(name)  # registered for redaction before anything can print it
        except ConfigError:
            return None  # unreadable mid-rotation: the 401 stands
        if not fresh or fresh == self.token:
            return None
        self.token = fresh
        self.secrets.append(fresh)
        self.session.auth.headers[self._token_header(self.auth)] = self._token_value(self.auth, fresh)
        return f"{name}_FILE"

    def close(self) -> None:
        self.session.close()

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):  # a secret that holds another goes first
            text = text.replace(secret, "***")
        return redact_userinfo(text)

    def url(self, path_or_url: str, params: dict[str, Any] | None = None) -> str:
        url = path_or_url if "://" in path_or_url else f"{self.base_url}/{path_or_url.lstrip('/')}"
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return url

    def get(self, url: str) -> tuple[Any, dict[str, str]]:
        attempts = self.spec.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._get_once(url)
            except TransientHTTPError as exc:
                if attempt + 1 >= attempts:
                    raise SourceReadError(
                        f"GET {self.redact(url)} still failing after {attempts} attempts: {self.redact(str(exc))}",
                        **self.where, hint=exc.hint or "the API is unavailable or rate-limiting; rerun later, or raise "
                                                       "max_retries",
                    ) from None
                delay = backoff_delay(attempt, exc.retry_after)
                log.warning("retrying", extra={"fields": {**self.where, "url": self.redact(url), "attempt": attempt + 1,
                                                          "of": attempts, "delay_s": round(delay, 3),
                                                          "reason": self.redact(str(exc))}})
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _get_once(self, url: str) -> tuple[Any, dict[str, str]]:
        self.requests += 1
        with _Deadline(self.spec.request_deadline_s) as deadline:
            try:
                return self._get_within(url)
            except (TransientHTTPError, SourceReadError):
                if deadline.fired:  # the shut-down socket's error (or a cut body) says less than this
                    raise TransientHTTPError(self._too_long(), hint=self._too_long_hint()) from None
                raise

    def _too_long(self, received: int | None = None) -> str:
        what = "was given up" if received is None else f"was given up after {received:,} bytes"
        return f"the response took longer than request_deadline_s ({self.spec.request_deadline_s:g} s) and {what}"

    def _too_long_hint(self) -> str:
        return (f"the API answers slower than the table's request_deadline_s ({self.spec.request_deadline_s:g} s) "
                "allows for one request (status, headers and body): if that is its normal speed, raise "
                "request_deadline_s in the declaration (or ask for smaller pages); otherwise rerun later "
                "(docs/runbook.md#rest-api-failing)")

    def _get_within(self, url: str) -> tuple[Any, dict[str, str]]:
        started = time.monotonic()
        try:
            # streamed, so the body is read here against the request's deadline: ``timeout_s`` bounds
            # each wait for data, and a server that sends a byte now and then would never time out
            response = self.session.get(url, timeout=self.spec.timeout_s, stream=True)
        except RefusedRedirect as exc:
            raise SourceReadError(f"GET {self.redact(url)} returned HTTP {exc.status} ({self.redact(str(exc))})",
                                  **self.where, hint="the API redirects to plain http: use its https address, "
                                                     "or ask the API owner") from None
        except requests.TooManyRedirects:
            raise SourceReadError(f"GET {self.redact(url)} was redirected more than {MAX_REDIRECTS} times", **self.where,
                                  hint="the API redirects in a loop: check endpoint and base URL in the declaration") from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema, requests.exceptions.InvalidURL):
            # a URL no retry can fix (a next-page link the API wrote wrong): not a network failure
            raise SourceReadError(f"GET {self.redact(url)}: this URL cannot be requested (not an http(s) URL with a "
                                  "host)", **self.where,
                                  hint="check base_url and endpoint in the declaration; a next-page link comes "
                                       "from the API: ask its owner") from None
        except requests.exceptions.SSLError as exc:
            if "certificate verify failed" not in str(exc).lower():  # a handshake cut short: the network
                raise self._connection_error(exc) from None
            reason = str(exc).rpartition("certificate verify failed:")[2].strip(" ')\"(") or "not trusted"
            raise SourceReadError(
                f"GET {self.redact(url)}: the API's TLS certificate is not trusted ({reason[:120]}); no retry can "
                "change that", **self.where,
                hint="if the API uses an internal or self-signed CA, point SSL_CERT_FILE at its CA bundle (PEM) for "
                     "elt; REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, when set, win over it, so set or unset them too. "
                     "An expired certificate or a wrong host name is for the API owner "
                     "(docs/reference/sources.md#rest_api)") from None
        except requests.RequestException as exc:  # timeouts, refused connections
            raise self._connection_error(exc) from None
        with response:
            return self._answer(url, response, started)

    def _answer(self, url: str, response: requests.Response, started: float) -> tuple[Any, dict[str, str]]:
        status = response.status_code
        if status in RETRY_STATUS:
            raise TransientHTTPError(f"HTTP {status}", _retry_after(response.headers.get("Retry-After")))
        if status == 401 and (renewed := self._rotated_token()):
            log.info("token renewed", extra={"fields": {**self.where, "url": self.redact(url), "from": renewed}})
            raise TransientHTTPError(f"HTTP 401: the credentials were refused; {renewed} holds a new token, "
                                     "sent by the next attempt if max_retries allows one",
                                     hint=f"the credentials were refused, and so was the token renewed in {renewed} if "
                                          "it was tried: check the secret there")
        if status >= 300:
            name = (self.auth or {}).get("token_env")
            where = f"{name} (or the file {name}_FILE names)" if name else "the environment variable the declaration names"
            hints = {401: f"the credentials were refused: check the secret in {where}",
                     403: "the credentials lack permission for this endpoint: ask the API owner",
                     404: "the endpoint does not exist: check endpoint and base URL in the declaration"}
            if status == 404 and self.answered and self.paging in ("page", "offset"):  # a page past the end
                hints[404] = ("earlier pages of this endpoint answered: some APIs answer 404 past their last page; "
                              "set `stop_on_short_page: true` in the table's pagination if a full page ends this one "
                              "(docs/reference/sources.md), else check the API")
            elif status == 404 and self.answered:  # a next link or cursor the API gave
                hints[404] = ("earlier pages of this endpoint answered, and the API gave this page's link (or cursor) "
                              "itself: ask the API owner")
            shown = f"GET {self.redact(url)}"
            moved = str(response.url or url)
            if status in (401, 403) and origin(moved) != origin(self.base_url):
                # the credentials are sent to the base URL's origin only (``_Session``): they were
                # not refused, they were not sent
                shown += f" (redirected to {self.redact(moved)})"
                hints[status] = (f"the request went to {self.redact(moved)}, another origin (scheme, host or port) "
                                 "than the base URL's, where elt sends no credentials: if that is the API's own "
                                 "address, set base_url to it (an http base URL the API upgrades to https, a moved "
                                 "host); the secret itself was not tried")
            error = SourceReadError(f"{shown} returned HTTP {status}", **self.where,
                                    hint=hints.get(status, "a client error: check the declaration's endpoint and params"))
            error.http_status = status  # type: ignore[attr-defined] # read by _confirm_the_end
            raise error
        body = self._body(url, response, started)
        try:
            records = json.loads(body, parse_float=JsonNumber, parse_constant=JsonNumber)  # numbers as sent
            self.answered += 1
            self.last_body = body
            return records, {k.lower(): v for k, v in response.headers.items()}
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, or an integer past Python's 4,300 digits
            raise SourceReadError(
                f"GET {self.redact(url)} returned a body that is not JSON (or was cut off): {exc}; "
                # redacted before it is cut: a secret cut in two would not be found
                f"first bytes: {self.redact(body[:4096].decode('utf-8', 'replace'))[:80]!r}",
                **self.where, hint="the API answered with an error page or a truncated body; rerun, or check the endpoint",
            ) from None


    def _body(self, url: str, response: requests.Response, started: float) -> bytes:
        """The response's body, read before the request's deadline (``request_deadline_s``) or
        given up on as a transient failure (retried)."""
        deadline = self.spec.request_deadline_s
        chunks = []
        while True:
            try:  # read1: what has arrived (iter_content waits for a whole chunk before it returns)
                chunk = response.raw.read1(1 << 16, decode_content=True)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                raise self._connection_error(exc) from None  # cut off (IncompleteRead), or a wait beyond timeout_s
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            if time.monotonic() - started > deadline:
                raise TransientHTTPError(self._too_long(sum(map(len, chunks))), hint=self._too_long_hint())

    def _connection_error(self, exc: requests.RequestException) -> TransientHTTPError:
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        text = str(reason or exc).replace("_WatchedHTTPPool", "HTTPConnectionPool")  # our pool's class name says nothing
        timed_out = isinstance(exc, requests.Timeout) or "timed out" in text
        hint = (f"the API did not answer within timeout_s ({self.spec.timeout_s:g} s) on any attempt: rerun later, or "
                "raise timeout_s in the declaration (or ask for smaller pages)") if timed_out else None
        return TransientHTTPError(f"connection error: {self.redact(f'{type(exc).__name__}: {text}')}", hint=hint)


def _dig(body: Any, path: tuple[str, ...] | list[str]) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


_LINK_VALUE = re.compile(r"<([^>]*)>\s*((?:;[^,<]*)*)")


def _link_next(headers: dict[str, str]) -> str | None:
    """The target of the ``rel="next"`` link of a ``Link`` header (RFC 8288). A target is between
    angle brackets and may hold commas (``?fields=id,name``), so the header is not split on them.

    >>> _link_next({"link": '<https://a.example/x?fields=id,name&page=2>; rel="next", <https://a.example/x>; rel="first"'})
    'https://a.example/x?fields=id,name&page=2'
    >>> _link_next({"link": '</x?page=1>; rel="prev first", </x?page=3>; rel=next'})
    '/x?page=3'
    """
    for target, params in _LINK_VALUE.findall(headers.get("link", "")):
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').lower().split():
                return target.strip()
    return None


def pages(client: RestClient, table: TableSpec, updated_since: str | None) -> Iterator[list[dict[str, Any]]]:
    """Yield the records of each page, following the table's pagination."""
    p = {"type": "none", "page_param": "page", "page_size_param": "per_page", "page_size": 100, "start": 1,
         "offset_param": "offset", "limit_param": "limit", "limit": 100, "cursor_param": "cursor",
         "cursor_path": "next_cursor", "next_path": "next", "max_pages": 10_000} | dict(table.pagination)
    params = dict(table.params)
    if table.updated_since_param and updated_since is not None:
        params[table.updated_since_param] = updated_since
    kind = p["type"]
    page, offset, token, next_url = int(p["start"]), 0, None, None
    seen: set[str] = set()
    previous: list[Any] | None = None
    short_stops = bool(p.get("stop_on_short_page", False))
    # offset paging asks each page from one record before the last one read, which must come back
    # first: a collection that changed between two pages (a record removed or added before the
    # offset) or a page the API lost shows there, instead of a record skipped for good (0047)
    # (a page of one record cannot hold the repeated record and a new one: no check there)
    overlap = kind == "offset" and bool(p.get("check_overlap", True)) and int(p["limit"]) > 1
    last: Any = None
    for number in range(int(p["max_pages"])):
        query = dict(params)
        if kind == "page":
            query.update({p["page_param"]: page, p["page_size_param"]: p["page_size"]})
        elif kind == "offset":
            asked = offset - 1 if overlap and last is not None else offset
            query.update({p["offset_param"]: asked, p["limit_param"]: p["limit"]})
        elif kind == "cursor" and token is not None:
            query[p["cursor_param"]] = token
        url = next_url or client.url(str(table.endpoint), query)
        if url in seen:
            raise SourceReadError(f"pagination loops: {client.redact(url)} was already fetched", **client.where,
                                  hint="the API returned a next link it had already given; report it to the API owner")
        seen.add(url)
        try:
            body, headers = client.get(url)
        except SourceReadError as exc:
            # some APIs (Django REST framework, Flask-SQLAlchemy) answer 404 for the page after
            # the last; with stop_on_short_page a short page ends the read before, and a full last
            # page (a count that is a multiple of page_size) ends it here
            if (kind == "page" and short_stops and previous and len(previous) >= int(p["page_size"])
                    and getattr(exc, "http_status", None) == 404):
                log.info("404 after a full page: end of pages", extra={"fields": {**client.where, "page": page}})
                return
            raise
        records = _dig(body, table.records_path) if table.records_path else body
        if not isinstance(records, list):
            path = ".".join(table.records_path) or "<body>"
            note = (f"; earlier pages had records there, so this answer is probably an error the API sent with "
                        f"status 200. First bytes: {client.redact(client.last_body[:4096].decode('utf-8', 'replace'))[:160]!r}"
                        if number else "")
            raise SourceReadError(
                f"GET {client.redact(url)}: expected a list of records at '{path}', got {type(records).__name__}{note}",
                **client.where, hint="rerun if the API reported a passing error; otherwise check records_path in the "
                                     "declaration" if number else "check records_path in the declaration")
        if kind in ("page", "offset") and not overlap and records and records == previous:
            # some APIs answer every page past the end with the last one: the end, if the page after
            # it says so too (a stale page in the middle, from a cache or a lagging replica, ended the
            # read early and a whole read then recorded every later key as deleted: a probe)
            follow = query | ({p["page_param"]: page + 1} if kind == "page" else {p["offset_param"]: offset + len(records)})
            _confirm_a_repeat(client, table, follow, records, number, p)
            log.info("page repeats the previous one: end of pages", extra={"fields": {**client.where, "page": number + 1}})
            return
        previous = records if kind in ("page", "offset") else None
        answered = len(records)
        if overlap and last is not None:
            if not records or _identity(records[0], table) != _identity(last, table):
                raise _changed_while_paging(client, url, str(p["offset_param"]), asked, last, records, table)
            records = records[1:]
        if overlap and records:
            last = records[-1]
        yield records
        if kind == "none":
            return
        if kind == "page":
            if not records and page > int(p["start"]):
                _confirm_the_end(client, table, query | {p["page_param"]: page + 1}, page)
            if not records or (short_stops and len(records) < int(p["page_size"])):
                return
            page += 1
        elif kind == "offset":
            if not records or (short_stops and answered < int(p["limit"])):
                return
            offset += len(records)
        elif kind == "cursor":
            token = _dig(body, str(p["cursor_path"]).split("."))
            if not token:
                return
        elif kind == "next_link":
            next_url = _dig(body, str(p["next_path"]).split(".")) or _link_next(headers)
            if not next_url:
                return
            # relative to the page that gave it (RFC 3986), as a browser resolves a link: "/v1/x?page=2"
            # and "?page=2" against a base URL with a path were pasted onto the base URL before
            next_url = urllib.parse.urljoin(url, str(next_url))
        _ = number
    raise SourceReadError(f"more than {p['max_pages']} pages", **client.where,
                          hint="raise pagination.max_pages in the declaration if the API really has that many")


def _identity(record: Any, table: TableSpec) -> Any:
    """What tells two answers of one record apart from two records: its primary key (its other
    fields may change between two requests), or the whole record without one."""
    if table.primary_key and isinstance(record, dict):
        return tuple(record.get(k) for k in table.primary_key)
    return json.dumps(record, sort_keys=True, default=str)


def _changed_while_paging(client: RestClient, url: str, param: str, asked: int, last: Any, records: list[Any],
                          table: TableSpec) -> SourceReadError:
    def named(record: Any) -> str:
        key = _identity(record, table)
        if isinstance(key, tuple):
            return ", ".join(f"{k}={v!r}" for k, v in zip(table.primary_key, key))
        return client.redact(key)[:80]

    found = "came back empty" if not records else f"starts with {named(records[0])}"
    return SourceReadError(
        f"the collection changed while it was paged, or the API lost records: GET {client.redact(url)} ({param}={asked}) "
        f"should start with the last record of the page before ({named(last)}) and {found}; "
        "nothing of this read was landed and the cursor did not move", **client.where,
        hint="rerun: records added or removed between two pages of offset paging shift the later pages, which skips "
             "or repeats records. If it happens on most runs, ask the API owner for cursor or next-link paging "
             "(docs/reference/sources.md)")


def _confirm_a_repeat(client: RestClient, table: TableSpec, query: dict[str, Any], records: list[Any], number: int,
                      p: dict[str, Any]) -> None:
    """A page that repeats the page before it ends page and offset paging only if the page after it
    repeats it too, or is empty or past the end (404). One request per read. A repeat of a full
    first page that goes on is an API that ignores the paging parameter: only its first page
    would be read, for ever, without an error."""
    url = client.url(str(table.endpoint), query)
    try:
        body, _ = client.get(url)
    except SourceReadError as exc:
        if getattr(exc, "http_status", None) == 404:
            return
        raise
    after = _dig(body, table.records_path) if table.records_path else body
    if isinstance(after, list) and after and after != records:
        raise SourceReadError(
            f"GET {client.redact(url)}: the page before it answered the same {len(records)} record(s) as the page "
            f"before that, but this one holds {len(after)} other record(s): the API answered a stale page (a cache, a "
            "lagging replica); nothing of this read was landed and the cursor did not move", **client.where,
            hint="rerun; if it happens again, report it to the API owner (docs/reference/sources.md#rest_api)")
    size = int(p["page_size"] if p["type"] == "page" else p["limit"])
    if number == 1 and after == records and len(records) >= size:
        param = "page_param" if p["type"] == "page" else "offset_param"
        raise SourceReadError(
            f"{client.redact(str(table.endpoint))}: the first three pages answered the same {len(records)} record(s): the "
            f"API seems to ignore the parameter {p[param]!r}, and only its first page would be read; nothing was "
            "landed", **client.where,
            hint=f"check pagination.{param} (and the page size parameter) against the API's documentation; if the "
                 f"collection really holds exactly {len(records)} record(s) and the API repeats its last page past "
                 "the end, raise the page size")


def _confirm_the_end(client: RestClient, table: TableSpec, query: dict[str, Any], empty_page: int) -> None:
    """Page paging ends at an empty page only if the page after it is empty too: a page the API
    lost (an empty answer in the middle) would otherwise end the read early without an error, and
    a whole read would then record every later key as deleted (0047). One request per read."""
    url = client.url(str(table.endpoint), query)
    try:
        body, _ = client.get(url)
    except SourceReadError as exc:
        if getattr(exc, "http_status", None) == 404:  # past the end, as some APIs say it
            return
        raise
    records = _dig(body, table.records_path) if table.records_path else body
    if isinstance(records, list) and records:
        raise SourceReadError(
            f"page {empty_page} of {client.redact(str(table.endpoint))} came back empty but the page after it holds "
            f"{len(records)} record(s): the API lost a page, or the collection changed while it was paged; nothing of "
            "this read was landed and the cursor did not move", **client.where,
            hint="rerun. If it happens on most runs, ask the API owner for cursor or next-link paging (page paging "
                 "cannot tell a changed collection from a complete read; docs/reference/sources.md)")


def _closing(client: RestClient, pages_: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The pages, then the client's connections closed (also when the reader stops early)."""
    try:
        yield from pages_
    finally:
        client.close()


def extracts(spec: SourceSpec, table: TableSpec, *, cursor: str | None,
             sleep: Callable[[float], None] = time.sleep) -> Iterator[Extract]:
    client = RestClient(spec, table, sleep=sleep)
    since = lower_bound(cursor, table.lookback_s, cursor_type(list(table.columns), table)) if table.updated_since_param else None
    drift: dict[str, list[str]] = {"missing": [], "ignored": []}
    origin = {"kind": "rest_api", "endpoint": table.endpoint, "base_url": client.redact(client.base_url),
              "updated_since": since, "schema_drift": drift}
    batches = records_to_batches(_closing(client, pages(client, table, since)), table, client.where, drift)
    yield Extract(table, list(table.columns), batches, origin, cursor_from=since,
                  land_if_empty=not table.updated_since_param, values_checked=True)  # by cast_batch
