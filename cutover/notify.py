"""Notifications: tell the ops channel when a gate pauses, a run fails, at GO, and when a rollback starts and ends.

Each of the plan's webhooks gets a JSON POST (``text`` for Slack/Teams-style receivers, plus the event's fields);
a delivery is retried a few times (connection errors, timeouts, 5xx) and its outcome returned as data for the run's
report. The URL is a secret reference: it never appears in a result, a log line or an exception.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from cutover.errors import SecretError
from cutover.plan import Plan


@dataclass(frozen=True)
class Delivery:
    """One webhook's answer to one event (what the report shows: name, event, outcome; never the URL)."""

    webhook: str
    event: str
    ok: bool
    attempts: int
    detail: str = ""

    def line(self) -> str:
        outcome = "sent" if self.ok else f"FAILED ({self.detail})"
        return f"notification {self.event} → {self.webhook}: {outcome} after {self.attempts} attempt(s)"


def notify(plan: Plan, event: str, text: str, fields: dict[str, Any] | None = None, *,
           sleep: Callable[[float], None] = time.sleep) -> list[Delivery]:
    """Send ``event`` to every webhook of the plan that wants it; never raises for a receiver's failure."""
    if event not in plan.notify.events:
        return []
    payload = {"text": text, "event": event, "domain": plan.domain, **(fields or {})}
    return [_deliver(plan, hook.name, hook.url, event, payload, sleep) for hook in plan.notify.webhooks]


def _deliver(plan: Plan, name: str, reference: str, event: str, payload: dict, sleep) -> Delivery:
    try:
        url = plan.secret(reference).reveal()
    except SecretError as exc:
        return Delivery(name, event, False, 0, f"webhook URL not readable: {exc}")
    detail = ""
    for attempt in range(1, plan.notify.attempts + 1):
        try:
            response = httpx.post(url, json=payload, timeout=plan.notify.timeout_s)
        except httpx.HTTPError as exc:  # the URL is not in these messages' class names; never print str(exc)
            detail = f"{type(exc).__name__}"
        else:
            if response.status_code < 300:
                return Delivery(name, event, True, attempt)
            detail = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                return Delivery(name, event, False, attempt, detail)  # refused: retrying will not help
        if attempt < plan.notify.attempts:
            sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
    return Delivery(name, event, False, plan.notify.attempts, detail)
