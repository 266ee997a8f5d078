"""Who may decide: the plan's named operators, each proving who they are with a one-time code (TOTP, RFC 6238).

A decision (a gate answer, a rollback started by hand) carries the operator's name and a code from their
authenticator app; the flow checks the code against the operator's secret, resolved from the plan where the flow
runs. The secret itself never travels: codes are what reach Prefect's database, and they expire in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyotp

from cutover.errors import OperatorError, SecretError
from cutover.plan import Operator, Plan

# A code is accepted during its 30 s step and the one before and after (clock skew, typing time).
VALID_WINDOW = 1


@dataclass(frozen=True)
class Identity:
    """Who decided, as the plan knows them, and how that was established."""

    name: str
    verified: bool

    def __str__(self) -> str:
        return self.name if self.verified else f"{self.name} (not verified: the plan names no operators)"


def find(plan: Plan, name: str) -> Operator:
    """The plan's operator called ``name`` (case-insensitive); :class:`OperatorError` names the known ones."""
    wanted = name.strip().casefold()
    for operator in plan.operators:
        if operator.name.casefold() == wanted:
            return operator
    known = ", ".join(o.name for o in plan.operators) or "none"
    raise OperatorError(f"unknown operator {name.strip()!r}: the plan's operators are {known}; "
                        "decisions are taken only by a named operator with their one-time code")


def identify(plan: Plan, name: str, code: str | None, *, now: float | None = None) -> Identity:
    """Check a decision's operator. With no operators in the plan the name is recorded as given, unverified."""
    if not plan.operators:
        return Identity(name.strip(), verified=False)
    operator = find(plan, name)
    if not code or not code.strip().isdigit():
        raise OperatorError(f"operator {operator.name}: a one-time code (6 digits from your authenticator app) "
                            "is needed with every decision")
    try:
        secret = plan.secret(operator.totp_secret).reveal()
        totp = pyotp.TOTP(secret)
        ok = totp.verify(code.strip(), for_time=int(now if now is not None else time.time()), valid_window=VALID_WINDOW)
    except SecretError:
        raise
    except Exception:  # a malformed secret (not base32): never echo it
        raise OperatorError(f"operator {operator.name}: the TOTP secret the plan references is not a base32 "
                            "secret; generate one with `pec-cutover operator new`") from None
    if not ok:
        raise OperatorError(f"operator {operator.name}: wrong or expired one-time code; nothing was decided")
    return Identity(operator.name, verified=True)


def current_code(secret: str, *, now: float | None = None) -> str:
    """The code an authenticator app shows now for ``secret`` (rehearsals and tests play the operator)."""
    return pyotp.TOTP(secret).at(int(now if now is not None else time.time()))


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits) for a new operator."""
    return pyotp.random_base32(32)
