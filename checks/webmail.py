"""Webmail probes: for each of the target's webmail URLs, is the login page reachable, trusted and healthy?

Every URL is tried ``attempts`` times, ``attempt_interval_s`` apart, so one blip is not a verdict. Each
attempt walks the layers in order (DNS, TCP, TLS + certificate, HTTP status and redirects, page markers,
response time) and stops at the first that fails. One result per URL and aspect reports how many attempts
passed that aspect; an aspect is ok when at least ``min_successes`` attempts passed it.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import httpx

from cutover.imap import ssl_context
from cutover.plan import Plan, Webmail
from cutover.results import CheckResult

ASPECTS = ("dns", "tcp", "tls", "cert-expiry", "http", "markers", "response-time")


@dataclass
class _Step:
    ok: bool
    observed: str
    reason: str = ""
    detail: str = ""


@dataclass
class _Attempt:
    """What one attempt saw, aspect by aspect (aspects after the first failure are absent)."""

    steps: dict[str, _Step] = field(default_factory=dict)
    seconds: float = 0.0

    def record(self, aspect: str, step: _Step) -> bool:
        self.steps[aspect] = step
        return step.ok


def webmail_checks(plan: Plan) -> list[CheckResult]:
    """Probe every webmail URL of the plan's target; one result per URL and aspect (see module doc)."""
    results: list[CheckResult] = []
    for webmail in plan.target.webmail:
        results.extend(probe_webmail(plan, webmail))
    return results


def probe_webmail(plan: Plan, webmail: Webmail) -> list[CheckResult]:
    """All attempts on one URL, summarised per aspect."""
    # An unreadable CA bundle is bad configuration: ssl_context raises TlsFailed, not a result.
    context = ssl_context(plan.target)
    parts = urlsplit(webmail.url)
    host = parts.hostname or ""
    port = parts.port or 443
    attempts: list[_Attempt] = []
    for i in range(webmail.attempts):
        if i:
            time.sleep(webmail.attempt_interval_s)
        attempts.append(_attempt(webmail, host, port, context, plan.gates.cert_min_days))
    return _summarise(webmail, host, attempts, plan.gates.cert_min_days)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _attempt(webmail: Webmail, host: str, port: int, context: ssl.SSLContext, cert_min_days: int) -> _Attempt:
    attempt = _Attempt()
    started = time.monotonic()
    try:
        _walk(attempt, webmail, host, port, context, cert_min_days)
    finally:
        attempt.seconds = time.monotonic() - started
    return attempt


def _walk(attempt: _Attempt, webmail: Webmail, host: str, port: int, context: ssl.SSLContext,
          cert_min_days: int) -> None:
    # A slow answer is measured (and fails response-time); only a hung one is cut off.
    timeout = max(webmail.max_response_ms / 1000 * 3, 2.0)

    # DNS (an IP literal needs no lookup)
    if _is_ip(host):
        addresses = [host]
        attempt.record("dns", _Step(True, "IP literal, no lookup"))
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            attempt.record("dns", _Step(False, "does not resolve", "dns-failure", f"{host}: {exc.strerror}"))
            return
        addresses = sorted({info[4][0] for info in infos})
        attempt.record("dns", _Step(True, ", ".join(addresses)))

    # TCP
    t0 = time.monotonic()
    try:
        with socket.create_connection((addresses[0], port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        attempt.record("tcp", _Step(False, "connection refused", "refused", f"{addresses[0]}:{port}"))
        return
    except (socket.timeout, TimeoutError):
        attempt.record("tcp", _Step(False, "timed out", "timeout", f"{addresses[0]}:{port} after {timeout:.1f}s"))
        return
    except OSError as exc:
        attempt.record("tcp", _Step(False, "unreachable", "unreachable", f"{addresses[0]}:{port}: {exc.strerror or exc}"))
        return
    attempt.record("tcp", _Step(True, f"connected in {(time.monotonic() - t0) * 1000:.0f} ms"))

    # TLS, HTTP, markers, time: one verified request following redirects
    t0 = time.monotonic()
    peer_cert: dict[str, Any] | None = None
    try:
        with httpx.Client(verify=context, timeout=timeout, follow_redirects=True, trust_env=False) as client:
            with client.stream("GET", webmail.url) as response:
                stream = response.extensions.get("network_stream")
                ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
                peer_cert = ssl_object.getpeercert() if ssl_object is not None else None
                body = response.read().decode(response.encoding or "utf-8", errors="replace")
    except httpx.HTTPError as exc:
        aspect, step = _classify_http_error(exc)
        attempt.record(aspect, step)
        return
    elapsed_ms = (time.monotonic() - t0) * 1000
    version = ssl_object.version() if ssl_object is not None else "?"
    attempt.record("tls", _Step(True, f"verified ({version})"))

    days_left = _days_left(peer_cert)
    if days_left is None:
        attempt.record("cert-expiry", _Step(False, "no certificate date", "tls-failure", "peer certificate unreadable"))
        return
    if not attempt.record("cert-expiry", _Step(days_left >= cert_min_days, f"expires in {days_left} days",
                                               "" if days_left >= cert_min_days else "cert-expiring",
                                               f"notAfter {peer_cert.get('notAfter') if peer_cert else '?'}")):
        return

    chain = [f"{r.status_code} {r.url}" for r in response.history] + [f"{response.status_code} {response.url}"]
    status_ok = response.status_code == webmail.expect_status
    if not attempt.record("http", _Step(status_ok, f"HTTP {response.status_code}", "" if status_ok else "mismatch",
                                        " -> ".join(chain))):
        return

    missing = [m for m in webmail.markers if m not in body]
    if not attempt.record("markers", _Step(not missing, "all present" if not missing else f"missing {missing}",
                                           "" if not missing else "mismatch", f"{len(body)} characters")):
        return

    fast = elapsed_ms <= webmail.max_response_ms
    attempt.record("response-time", _Step(fast, f"{elapsed_ms:.0f} ms", "" if fast else "slow"))


def _classify_http_error(exc: httpx.HTTPError) -> tuple[str, _Step]:
    """Which aspect an httpx error belongs to, with a reason; the cause chain holds the ssl/socket error."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            message = cause.verify_message or str(cause)
            return "tls", _Step(False, f"certificate not trusted: {message}", "tls-failure", message)
        if isinstance(cause, ssl.SSLError):
            return "tls", _Step(False, f"TLS failed: {cause.reason or cause}", "tls-failure", str(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "tls", _Step(False, "connection refused", "refused", str(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "http", _Step(False, "timed out", "timeout", type(exc).__name__)
    if isinstance(exc, httpx.TooManyRedirects):
        return "http", _Step(False, "too many redirects", "mismatch", str(exc))
    if isinstance(exc, httpx.ConnectError):
        return "tls", _Step(False, "connect failed", "unreachable", str(exc))
    return "http", _Step(False, f"{type(exc).__name__}", "unreachable", str(exc)[:200])


def _days_left(peer_cert: dict[str, Any] | None) -> int | None:
    if not peer_cert or "notAfter" not in peer_cert:
        return None
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(peer_cert["notAfter"]), tz=timezone.utc)
    return (not_after - datetime.now(timezone.utc)).days


def _expected(webmail: Webmail, aspect: str, host: str, cert_min_days: int) -> str:
    return {
        "dns": f"{host} resolves",
        "tcp": "connects",
        "tls": "certificate verified for the host",
        "cert-expiry": f"≥ {cert_min_days} days left",
        "http": f"HTTP {webmail.expect_status}",
        "markers": "contains " + ", ".join(repr(m) for m in webmail.markers),
        "response-time": f"≤ {webmail.max_response_ms} ms",
    }[aspect]


def _summarise(webmail: Webmail, host: str, attempts: list[_Attempt], cert_min_days: int) -> list[CheckResult]:
    needed = webmail.needed_successes
    total = len(attempts)
    results = []
    for aspect in ASPECTS:
        steps = [a.steps.get(aspect) for a in attempts]
        passed = sum(1 for s in steps if s is not None and s.ok)
        failures = [s for s in steps if s is not None and not s.ok]
        reached = [s for s in steps if s is not None]
        ok = passed >= needed
        if not reached:
            observed = f"not reached ({_first_failure(attempts)})"
            reason, detail = "not-reached", "an earlier step failed in every attempt"
        elif ok or not failures:
            # ok, or failed only because earlier steps stopped too many attempts: show the latest success.
            shown = next(s for s in reversed(reached) if s.ok)
            observed, detail = f"{passed}/{total} attempts ok; {shown.observed}", shown.detail
            reason = "" if ok else "not-reached"
        else:
            # The failure seen most often explains the aspect best.
            shown = max(failures, key=lambda s: sum(1 for f in failures if f.reason == s.reason))
            observed, reason, detail = f"{passed}/{total} attempts ok; {shown.observed}", shown.reason, shown.detail
        results.append(CheckResult(
            name=f"webmail {aspect}",
            ok=ok,
            expected=f"{_expected(webmail, aspect, host, cert_min_days)} in ≥ {needed}/{total} attempts",
            observed=observed,
            target=webmail.url,
            detail=detail,
            reason=reason,
            duration_s=sum(a.seconds for a in attempts) / max(total, 1),
            data={"aspect": aspect, "passed": passed, "attempts": total,
                  "skipped": aspect == "dns" and _is_ip(host)},
        ))
    return results


def _first_failure(attempts: list[_Attempt]) -> str:
    for a in attempts:
        for aspect, step in a.steps.items():
            if not step.ok:
                return f"{aspect}: {step.observed}"
    return "no attempt"


__all__ = ["webmail_checks", "probe_webmail", "ASPECTS"]
