"""What a provider allows: sessions at once, messages and bytes per second, and what "slow down" sounds like.

Neither Aruba nor InfoCert publishes IMAP limits; expect them per user and per source IP. So:

- :class:`SessionCap`: ``max_connections`` of a provider is a hard cap on the sessions this *process* has open
  to it at once, whoever opens them (copy workers, read-back sessions, readiness, canaries, Prefect task
  threads). One cap per server (host, port), shared by every plan object that names it. Across processes and
  machines the flows add a Prefect global concurrency limit per provider (``flows/``).
- :class:`RateLimit`: optional messages/s and bytes/s per provider (as imapsync's ``--maxmessagespersecond``
  / ``--maxbytespersecond``), a token bucket shared by every session of the process to that provider.
- :func:`is_throttle_answer`: the server's words that mean "too many" or "slow down"; those are never bad
  credentials and never an unreachable server (:class:`cutover.errors.Throttled`).
"""

from __future__ import annotations

import random
import re
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cutover.plan import Plan, Provider

# RFC 5530 response codes for "try later / too many" ([LIMIT] also means "too large" on an APPEND: APPEND
# refusals are classified by their own rules first, see mailsync._imapops), [THROTTLED] (Yahoo, Gmail-like),
# Dovecot's per user+IP limit, and common wordings ("too many open/concurrent connections", Gmail's "exceeded
# command or bandwidth limits", "server busy, try later").
_THROTTLE = re.compile(
    r"\[(?:UNAVAILABLE|LIMIT|INUSE|THROTTLED|OVERLOAD)\]"
    r"|maximum number of (?:connections|sessions|simultaneous)"
    r"|too many (?:[\w-]+ ){0,2}(?:connections|sessions|logins|login attempts|requests|commands)"
    r"|too many simultaneous"
    r"|connection (?:limit|rate)|rate limit|(?:command|bandwidth) limit|slow down|try (?:again )?later"
    r"|server (?:is )?busy|temporarily unavailable|throttl",
    re.I)


def is_throttle_answer(text: str) -> bool:
    """True when a server's answer means "too many / slow down" (retry later), not "wrong password"."""
    return bool(_THROTTLE.search(text))


def throttle_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The wait before retry ``attempt`` (1, 2, ...): exponential from ``base_s``, capped at ``max_s``, with
    "equal jitter" (half fixed, half random) so parallel workers refused together do not come back together."""
    ceiling = min(max_s, base_s * (2 ** (attempt - 1)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class SessionCap:
    """At most ``limit`` sessions at once; ``limit`` follows the latest plan that names this server."""

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.limit = limit
        self.in_use = 0
        self.peak = 0  # the most sessions open at once since the last reset_peak()
        self._cond = threading.Condition()

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take a slot (waiting for one unless ``blocking`` is false); False when none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.in_use >= self.limit:
                if not blocking:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
            return True

    def release(self) -> None:
        with self._cond:
            self.in_use = max(0, self.in_use - 1)
            self._cond.notify()

    def reset_peak(self) -> None:
        with self._cond:
            self.peak = self.in_use


class RateLimit:
    """A token bucket for messages and bytes per second (either may be None: unlimited), shared by threads."""

    def __init__(self, messages_per_s: float | None, bytes_per_s: float | None) -> None:
        self.messages_per_s = messages_per_s
        self.bytes_per_s = bytes_per_s
        self._lock = threading.Lock()
        self._next = time.monotonic()  # when the next transfer may start
        self.waited_s = 0.0

    def take(self, messages: int, nbytes: int) -> float:
        """Wait until ``messages`` and ``nbytes`` may pass; return the seconds waited."""
        cost = 0.0
        if self.messages_per_s:
            cost = max(cost, messages / self.messages_per_s)
        if self.bytes_per_s:
            cost = max(cost, nbytes / self.bytes_per_s)
        if cost <= 0:
            return 0.0
        with self._lock:
            # Each transfer waits for its own share (the first one too): over any stretch the average stays
            # at or below the limit, whatever the batch sizes.
            now = time.monotonic()
            self._next = max(now, self._next) + cost
            start = self._next
        wait = start - now
        if wait > 0:
            time.sleep(wait)
            with self._lock:
                self.waited_s += wait
        return max(0.0, wait)


_caps: dict[str, SessionCap] = {}
_rates: dict[str, RateLimit] = {}
_registry_lock = threading.Lock()


def _key(provider: "Provider") -> str:
    return f"{provider.imap.host}:{provider.imap.port}"


def session_cap(provider: "Provider") -> SessionCap:
    """The process-wide session cap of ``provider``'s IMAP server (its limit set to the plan's max_connections)."""
    key = _key(provider)
    with _registry_lock:
        cap = _caps.get(key)
        if cap is None:
            cap = _caps[key] = SessionCap(key, provider.max_connections)
    if cap.limit != provider.max_connections:
        with cap._cond:
            cap.limit = provider.max_connections
            cap._cond.notify_all()
    return cap


def rate_limit(provider: "Provider") -> RateLimit | None:
    """The process-wide rate limit of ``provider`` (None when the plan sets none)."""
    if not (provider.max_messages_per_s or provider.max_bytes_per_s):
        return None
    key = _key(provider)
    with _registry_lock:
        rate = _rates.get(key)
        if rate is None or (rate.messages_per_s, rate.bytes_per_s) != (provider.max_messages_per_s,
                                                                       provider.max_bytes_per_s):
            rate = _rates[key] = RateLimit(provider.max_messages_per_s, provider.max_bytes_per_s)
    return rate


def mailbox_workers(plan: "Plan", mailboxes: int | None = None) -> int:
    """How many mailboxes to copy at once: the plan's parallelism, never more than either provider's cap
    (each mailbox holds one session on each side)."""
    n = min(plan.copy_settings.mailboxes_in_parallel, plan.source.max_connections, plan.target.max_connections)
    if mailboxes is not None:
        n = min(n, mailboxes)
    return max(1, n)


def sessions_per_mailbox(plan: "Plan", side: str, direction: str = "forward") -> int:
    """Sessions one mailbox copy may hold on ``side``: one, plus the concurrent read-back session on the written
    side when the plan's budget affords it (see ``mailsync._verify.ReadBack.if_affordable``)."""
    written = "target" if direction == "forward" else "source"
    if side != written or plan.copy_settings.verify != "readback":
        return 1
    return 2 if 2 * mailbox_workers(plan) <= plan.provider(side).max_connections else 1  # type: ignore[arg-type]


def concurrency_limit_name(provider: "Provider") -> str:
    """The name of the Prefect global concurrency limit shared by every flow run that talks to ``provider``."""
    return f"pec-cutover-imap-{provider.name}-{provider.imap.host}-{provider.imap.port}"


__all__ = ["sessions_per_mailbox", "concurrency_limit_name", "SessionCap", "RateLimit", "session_cap", "rate_limit", "mailbox_workers", "is_throttle_answer",
           "throttle_delay"]
