"""What the day will meet at each provider: its capabilities (and the copy's workarounds for what is missing),
the session limit it enforces, the round-trip time. One probe per provider, logged in as one member.

The limit probe opens sessions as that member, outside the plan's own cap, until the provider refuses one
("too many") or ``bound`` are open; then closes them all. Bounded so a real provider never sees more than a
handful of extra logins. A failed probe is an answer (``ok=False`` with the reason), never an exception.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from imapclient import IMAPClient

from cutover.errors import MailboxError, SecretError, Throttled
from cutover.imap import Side, connect
from cutover.inventory import Mailbox
from cutover.mailsync import personal_prefix
from cutover.plan import Plan

RTT_SAMPLES = 5
MAX_PROBE_SESSIONS = 16


@dataclass(frozen=True)
class ProviderProfile:
    """One provider as the probe saw it."""

    side: str
    name: str
    ok: bool
    capabilities: tuple[str, ...] = ()
    workarounds: tuple[str, ...] = ()
    namespace: str = ""  # personal prefix and separator, e.g. "INBOX." "."
    sessions_opened: int = 0  # sessions open at once before a refusal (or the bound)
    limit_seen: int | None = None  # sessions the provider allowed, when it refused one; None: not reached
    limit_said: str = ""  # the provider's words when it refused
    bound: int = 0
    rtt_ms: float | None = None  # median NOOP round trip
    detail: str = ""
    probed_as: str = ""

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"- **{self.side}** ({self.name}): not probed: {self.detail}"]
        limit = (f"refused session {self.limit_seen + 1} as {self.probed_as} ({self.limit_said})"
                 if self.limit_seen is not None else f"no refusal up to {self.sessions_opened} sessions (bound {self.bound})")
        out = [f"- **{self.side}** ({self.name}): round trip {self.rtt_ms:.1f} ms; session limit: {limit}",
               f"  - capabilities: {' '.join(self.capabilities)}"]
        if self.namespace:
            out.append(f"  - personal namespace: {self.namespace}")
        out += [f"  - workaround: {w}" for w in self.workarounds] or ["  - workarounds: none needed"]
        return out


def workarounds(side: str, caps: set[str], prefix: str) -> list[str]:
    """What the copy will do differently at this provider (pure, from the announced capabilities)."""
    out: list[str] = []
    written = side == "target"  # the side a forward copy appends to (a rollback appends to the source)
    if "UIDPLUS" not in caps:
        out.append("no UIDPLUS: appended messages are found among the new UIDs by SHA-256 (same run)")
    if "MULTIAPPEND" not in caps:
        out.append("no MULTIAPPEND: one APPEND per message")
    if "LITERAL+" not in caps:
        out.append("no LITERAL+: one round trip per message (a refused literal skips that message)")
    if "BINARY" not in caps:
        out.append("no BINARY: a message with a NUL byte " + (
            "cannot be appended unaltered and is skipped (reported)" if written else
            "cannot be seen (BODY[] alters the NUL); such a message is copied as the server gives it"))
    if "QUOTA" not in caps:
        out.append("no QUOTA: no quota pre-check; the APPEND answers tell")
    if "NAMESPACE" not in caps:
        out.append("no NAMESPACE: folder names used as listed")
    elif prefix:
        out.append(f"personal namespace prefix {prefix!r}: folder names mapped under it")
    return out


def provider_profile(plan: Plan, side: Side, mailbox: Mailbox, *, bound: int | None = None) -> ProviderProfile:
    """Probe one provider logged in as ``mailbox`` (its login name on that side)."""
    provider = plan.provider(side)
    bound = bound or min(MAX_PROBE_SESSIONS, provider.max_connections + 2)
    login = mailbox.login(side)
    sessions: list[IMAPClient] = []
    try:
        first = connect(plan, side, mailbox, capped=False)
        sessions.append(first)
        caps = {c.decode() if isinstance(c, bytes) else str(c) for c in first.capabilities()}
        namespace = ""
        prefix = ""
        if "NAMESPACE" in caps:
            ns = first.namespace()
            prefix = personal_prefix(ns)
            try:
                sep = ns.personal[0][1]
                namespace = f"prefix {prefix!r}, separator {sep.decode() if isinstance(sep, bytes) else sep!r}"
            except (AttributeError, IndexError, TypeError):
                namespace = f"prefix {prefix!r}"
        samples = []
        for _ in range(RTT_SAMPLES):
            started = time.perf_counter()
            first.noop()
            samples.append((time.perf_counter() - started) * 1000)
        limit_seen, said = None, ""
        while len(sessions) < bound:
            try:
                sessions.append(connect(plan, side, mailbox, capped=False))
            except Throttled as exc:
                limit_seen, said = len(sessions), exc.detail
                break
        return ProviderProfile(side, provider.name, True, tuple(sorted(caps)), tuple(workarounds(side, caps, prefix)),
                               namespace, len(sessions), limit_seen, said, bound, statistics.median(samples),
                               probed_as=login)
    except (MailboxError, SecretError) as exc:
        return ProviderProfile(side, provider.name, False, detail=getattr(exc, "detail", str(exc)), probed_as=login,
                               bound=bound, sessions_opened=len(sessions))
    finally:
        for client in sessions:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - closing is best effort; the server drops it anyway
                pass


__all__ = ["ProviderProfile", "provider_profile", "workarounds"]
