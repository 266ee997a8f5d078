"""The change freeze: the window check and a marker that one cutover or rollback at a time holds.

The marker is a JSON file in the plan's state directory (the ledger's directory), created atomically. A
cutover refuses to start while any marker is held; a rollback may take over a cutover's marker (rollback
must be possible at any moment) but never another rollback's. A marker left by a dead process on this host
is stale and may be taken; that is recorded. Other changing work (pre-stage, DNS changes by hand) calls
:func:`ensure_not_frozen` first.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from cutover.errors import FreezeError
from cutover.plan import Plan

Kind = Literal["cutover", "rollback"]


@dataclass(frozen=True)
class WindowDecision:
    allowed: bool
    inside: bool
    now: str
    window: str
    override_reason: str = ""

    def describe(self) -> str:
        if self.inside:
            return f"inside the window {self.window} (now {self.now})"
        if self.allowed:
            return f"OUTSIDE the window {self.window} (now {self.now}); started anyway by override: {self.override_reason}"
        return f"outside the window {self.window} (now {self.now})"


def check_window(plan: Plan, now: datetime | None = None, override_reason: str | None = None) -> WindowDecision:
    """Decide whether a cutover may start now. Outside the window only an override with a reason allows it."""
    now = now or datetime.now(timezone.utc)
    tz = plan.window.start.tzinfo
    window = f"{plan.window.start.isoformat()} → {plan.window.end.isoformat()}"
    inside = plan.window.contains(now)
    reason = (override_reason or "").strip()
    return WindowDecision(allowed=inside or bool(reason), inside=inside, now=now.astimezone(tz).isoformat(timespec="seconds"),
                          window=window, override_reason=reason if not inside else "")


# Workers submit a scheduled run up to PREFECT_WORKER_PREFETCH_SECONDS (10 s by default) before its time, and
# the server lets it start a little early: a cutover scheduled at the window start must wait, not refuse.
EARLY_START_S = 120.0


def wait_for_window(plan: Plan, *, now: datetime | None = None, sleep: Callable[[float], None] = time.sleep,
                    early_start_s: float = EARLY_START_S) -> float:
    """If the window opens within ``early_start_s`` seconds, wait for it; the seconds waited (0 otherwise)."""
    now = now or datetime.now(timezone.utc)
    ahead = (plan.window.start - now).total_seconds()
    if 0 < ahead <= early_start_s:
        sleep(ahead)
        return ahead
    return 0.0


def require_window(plan: Plan, now: datetime | None = None, override_reason: str | None = None) -> WindowDecision:
    decision = check_window(plan, now, override_reason)
    if not decision.allowed:
        raise FreezeError(
            f"refusing to start: {decision.describe()}; wait for the window, or give an override with a reason "
            "(--override-window REASON) if the change board agreed"
        )
    return decision


@dataclass(frozen=True)
class Freeze:
    kind: Kind
    run_id: str
    started_at: str
    host: str
    pid: int
    note: str = ""
    took_over: str = ""
    # Set when a cutover failed after the MX switch: the marker outlives its process, so nothing but a
    # rollback (or an operator removing it after checking) can change the domain in that half-done state.
    sticky: bool = False

    def describe(self) -> str:
        text = f"{self.kind} run {self.run_id} (since {self.started_at}, pid {self.pid} on {self.host})"
        return f"{text}: {self.note}" if self.sticky else text


def marker_path(plan: Plan) -> Path:
    return plan.ledger.parent / "freeze.json"


def current(plan: Plan) -> Freeze | None:
    """The freeze in force, or None. An unreadable marker counts as held (fail safe)."""
    return _read_marker(marker_path(plan))


def _read_marker(path: Path) -> Freeze | None:
    try:
        return Freeze(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return Freeze(kind="cutover", run_id="unknown", started_at="?", host="?", pid=0, note=f"unreadable marker {path}")


def is_stale(freeze: Freeze) -> bool:
    """A marker of a process that no longer exists on this host (never a sticky one)."""
    if freeze.sticky or freeze.host != socket.gethostname() or freeze.pid <= 0:
        return False
    try:
        os.kill(freeze.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(plan: Plan, kind: Kind, run_id: str, note: str = "") -> Freeze:
    """Take the freeze for a run; raise FreezeError naming the holder when it may not."""
    path = marker_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = current(plan)
    took_over = ""
    if holder is not None and holder.run_id != run_id:
        if is_stale(holder):
            took_over = f"stale marker of {holder.describe()}"
        elif kind == "rollback" and (holder.kind == "cutover" or holder.sticky):
            took_over = f"rollback took over from {holder.describe()}"
        else:
            raise FreezeError(
                f"another {holder.kind} is running: {holder.describe()}; wait for it to finish, or if it is dead "
                f"on another host, remove {path} after checking"
            )
    freeze = Freeze(kind=kind, run_id=run_id, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    host=socket.gethostname(), pid=os.getpid(), note=note, took_over=took_over)
    _write_atomically(path, freeze, exclusive=holder is None)
    return freeze


def release(plan: Plan, run_id: str) -> bool:
    """Lift the freeze if this run holds it. Returns whether it did."""
    holder = current(plan)
    if holder is None or holder.run_id != run_id:
        return False
    marker_path(plan).unlink(missing_ok=True)
    return True


def keep_after_failure(plan: Plan, run_id: str, why: str) -> None:
    """Leave this run's freeze in place, sticky, with why: the domain is half-way and needs a decision."""
    holder = current(plan)
    if holder is None or holder.run_id != run_id:
        return
    from dataclasses import replace
    _write_atomically(marker_path(plan), replace(holder, note=why, sticky=True), exclusive=False)


def holds(plan: Plan, run_id: str) -> bool:
    holder = current(plan)
    return holder is not None and holder.run_id == run_id


def require_held(plan: Plan, run_id: str) -> None:
    """Raise if this run no longer holds the freeze (a rollback started by hand took it over)."""
    if not holds(plan, run_id):
        holder = current(plan)
        raise FreezeError(f"this run no longer holds the freeze ({holder.describe() if holder else 'lifted'}): "
                          "a rollback was started by hand; stopping here")


def stale_reason(plan: Plan, run_id: str) -> str | None:
    """Why a run coming back from a pause must not act (another run holds the freeze, or it was lifted), or None.

    A cutover paused at a gate may be answered, or time out, long after a rollback by hand took its freeze and
    a newer cutover started: acting then (rolling back, continuing) would change the domain under the newer run."""
    holder = current(plan)
    if holder is not None and holder.run_id == run_id:
        return None
    now = f"{holder.describe()} holds the change freeze now" if holder else "the change freeze was lifted meanwhile"
    return (f"stale run {run_id}: {now}; this run no longer decides anything and stops without acting "
            "(see `pec-cutover history` for the run in charge)")


def ensure_not_frozen(plan: Plan, action: str) -> None:
    """Refuse a changing action while a cutover or rollback holds the freeze."""
    holder = current(plan)
    if holder is not None and not is_stale(holder):
        raise FreezeError(f"{action} refused: change freeze held by {holder.describe()}; run it after the freeze is lifted")


def _write_atomically(path: Path, freeze: Freeze, *, exclusive: bool) -> None:
    data = json.dumps(asdict(freeze), indent=2).encode()
    if exclusive:
        # O_EXCL: two runs starting at the same moment cannot both take a free freeze.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_marker(path)
            raise FreezeError(f"another run took the freeze first: {holder.describe() if holder else path}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

