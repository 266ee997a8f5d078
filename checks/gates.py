"""Gate rules: check results + the plan's thresholds -> GO / NO-GO / HOLD, with the evidence. Pure: no I/O.

How a decision is reached (the same for every gate):

* a rule that has evidence and misses its threshold makes the gate **NO-GO** (a definite failure wins);
* otherwise a rule without evidence (no results given, a count not known) makes it **HOLD**: nothing says the
  step failed, but nothing proves it worked either, so a human must look;
* otherwise **GO**.

The verdict only states what the evidence shows. What to do next is :attr:`Decision.action`: ``proceed`` on
GO, ``ask`` (pause for a human) on HOLD, and on NO-GO the plan's ``gates.on_nogo`` (``rollback`` or ``ask``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Sequence

from cutover.plan import Gates
from cutover.results import CheckResult, markdown_table


class Verdict(str, Enum):
    """The outcome of a gate."""

    GO = "GO"
    NO_GO = "NO-GO"
    HOLD = "HOLD"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RuleOutcome:
    """One rule applied to its evidence. ``conclusive=False``: no evidence to judge (leads to HOLD)."""

    rule: str
    ok: bool
    expected: str
    observed: str
    conclusive: bool = True

    @property
    def state(self) -> str:
        if not self.conclusive:
            return "no evidence"
        return "pass" if self.ok else "FAIL"


@dataclass(frozen=True)
class Decision:
    """A gate's verdict with every rule's outcome; render with :meth:`markdown`."""

    gate: str
    verdict: Verdict
    rules: list[RuleOutcome]
    on_nogo: Literal["rollback", "ask"] = "ask"
    evidence: list[CheckResult] = field(default_factory=list)

    @property
    def failed_rules(self) -> list[RuleOutcome]:
        return [r for r in self.rules if r.conclusive and not r.ok]

    @property
    def inconclusive_rules(self) -> list[RuleOutcome]:
        return [r for r in self.rules if not r.conclusive]

    @property
    def action(self) -> Literal["proceed", "rollback", "ask"]:
        """What the flow should do next: proceed, roll back, or pause for a human."""
        if self.verdict is Verdict.GO:
            return "proceed"
        if self.verdict is Verdict.HOLD:
            return "ask"
        return self.on_nogo

    @property
    def go(self) -> bool:
        return self.verdict is Verdict.GO

    def summary(self) -> str:
        """One line: gate, verdict, and why."""
        if self.verdict is Verdict.GO:
            why = "all rules met"
        elif self.verdict is Verdict.NO_GO:
            why = "; ".join(f"{r.rule}: expected {r.expected}, observed {r.observed}" for r in self.failed_rules)
        else:
            why = "no evidence for: " + ", ".join(r.rule for r in self.inconclusive_rules)
        return f"gate {self.gate}: {self.verdict} ({why}) -> {self.action}"

    def markdown(self) -> str:
        """The decision and its evidence as markdown (rules table, then the check results behind it)."""
        lines = [f"### Gate `{self.gate}`: **{self.verdict}**", "", f"Next step: **{self.action}**.", ""]
        if self.failed_rules:
            lines.append("Failed rules:")
            lines += [f"- {r.rule}: expected {r.expected}, observed {r.observed}" for r in self.failed_rules]
            lines.append("")
        if self.inconclusive_rules:
            lines.append("No evidence (a human must decide):")
            lines += [f"- {r.rule}: {r.observed}" for r in self.inconclusive_rules]
            lines.append("")
        lines.append(markdown_table([
            {"rule": r.rule, "result": r.state, "expected": r.expected, "observed": r.observed} for r in self.rules
        ]))
        if self.evidence:
            lines += ["", "Evidence:", "", markdown_table([r.as_row() for r in self.evidence])]
        return "\n".join(lines)


def decide(gate: str, rules: list[RuleOutcome], gates: Gates, evidence: Sequence[CheckResult] = ()) -> Decision:
    """NO-GO if any conclusive rule failed, else HOLD if any rule lacked evidence, else GO."""
    if any(r.conclusive and not r.ok for r in rules):
        verdict = Verdict.NO_GO
    elif any(not r.conclusive for r in rules) or not rules:
        verdict = Verdict.HOLD
    else:
        verdict = Verdict.GO
    return Decision(gate=gate, verdict=verdict, rules=list(rules), on_nogo=gates.on_nogo, evidence=list(evidence))


# --- rules -------------------------------------------------------------------------------------------------


def _needed(fraction: float, total: int) -> int:
    # Whole results needed for a fraction; the epsilon keeps 0.9 * 10 from becoming 10 by float error.
    return math.ceil(fraction * total - 1e-9)


def fraction_rule(rule: str, results: Sequence[CheckResult], min_fraction: float, what: str) -> RuleOutcome:
    """At least ``min_fraction`` of ``results`` ok; no results is no evidence."""
    expected = f"≥ {min_fraction:.0%} of {what} ok"
    if not results:
        return RuleOutcome(rule, False, expected, f"no {what} results", conclusive=False)
    passed = sum(1 for r in results if r.ok)
    total = len(results)
    observed = f"{passed}/{total} ok ({passed / total:.0%})"
    failing = [r.target or r.name for r in results if not r.ok]
    if failing:
        observed += "; failing: " + ", ".join(failing[:5]) + (" …" if len(failing) > 5 else "")
    return RuleOutcome(rule, passed >= _needed(min_fraction, total), expected, observed)


def at_most_rule(rule: str, value: int | None, maximum: int, what: str) -> RuleOutcome:
    """``value`` ≤ ``maximum``; ``None`` (not known) is no evidence."""
    expected = f"≤ {maximum} {what}"
    if value is None:
        return RuleOutcome(rule, False, expected, f"{what}: not known", conclusive=False)
    return RuleOutcome(rule, value <= maximum, expected, f"{value} {what}")


def propagation_rule(propagation: CheckResult | None, min_fraction: float) -> RuleOutcome:
    """Resolvers that see the new MX, from the propagation check's data (``fraction`` or ``converged``/``total``)."""
    rule = "resolvers see the new MX"
    expected = f"≥ {min_fraction:.0%} of resolvers"
    if propagation is None:
        return RuleOutcome(rule, False, expected, "no propagation result", conclusive=False)
    fraction = _fraction_of(propagation)
    if fraction is None:
        # Without a measured fraction only the check's own verdict is known.
        observed = f"propagation check {'ok' if propagation.ok else 'failed'}: {propagation.observed}"
        return RuleOutcome(rule, propagation.ok, expected, observed)
    observed = f"{fraction:.0%} of resolvers ({propagation.observed})" if propagation.observed else f"{fraction:.0%}"
    return RuleOutcome(rule, fraction + 1e-9 >= min_fraction, expected, observed)


def _fraction_of(result: CheckResult) -> float | None:
    data = result.data or {}
    if isinstance(data.get("fraction"), (int, float)):
        return float(data["fraction"])
    converged, total = data.get("converged"), data.get("total")
    if isinstance(converged, (list, tuple, set)):
        converged = len(converged)
    if isinstance(total, (list, tuple, set)):
        total = len(total)
    if isinstance(converged, int) and isinstance(total, int) and total > 0:
        return converged / total
    return None


# --- gates -------------------------------------------------------------------------------------------------


def check_rule(rule: str, result: CheckResult | None, expected: str) -> RuleOutcome:
    """One check must pass; a missing check is no evidence."""
    if result is None:
        return RuleOutcome(rule, False, expected, "not checked", conclusive=False)
    return RuleOutcome(rule, result.ok, expected, result.observed)


def dns_gate(authoritative: list[CheckResult], propagation: CheckResult | None, gates: Gates,
             agreement: CheckResult | None = None, records: Sequence[CheckResult] | None = None) -> Decision:
    """After the MX switch: enough authoritative servers answer the new MX (and, when checked, agree on one SOA
    serial, and serve the provider's records), enough resolvers see it (the propagation check counts a resolver
    only once it also returns the records)."""
    rules = [
        fraction_rule("authoritative servers on the new MX", authoritative, gates.min_authoritative_fraction,
                      "authoritative servers"),
        propagation_rule(propagation, gates.min_resolver_fraction),
    ]
    if agreement is not None:
        rules.insert(1, check_rule("authoritative servers agree", agreement, "one SOA serial on every server"))
    if records:
        rules.insert(1, fraction_rule("authoritative servers serve the provider's records", records,
                                      gates.min_authoritative_fraction, "authoritative servers"))
    evidence = list(authoritative) + list(records or []) + [r for r in (agreement, propagation) if r is not None]
    return decide("dns", rules, gates, evidence)


def access_gate(*, webmail: list[CheckResult], canaries: list[CheckResult], unverified_mailboxes: int | None,
                missing_messages: int | None, gates: Gates) -> Decision:
    """After the final delta: webmail green, canaries log in, few enough mailboxes unverified, no message missing."""
    if gates.webmail_all_green:
        webmail_rule = fraction_rule("webmail checks all green", webmail, 1.0, "webmail checks")
    else:
        passed = sum(1 for r in webmail if r.ok)
        webmail_rule = RuleOutcome("webmail checks all green", True, "not required (webmail_all_green: false)",
                                   f"{passed}/{len(webmail)} ok")
    rules = [
        webmail_rule,
        fraction_rule("canary mailboxes log in on the target", canaries, gates.min_canary_fraction, "canary logins"),
        at_most_rule("mailboxes not verified", unverified_mailboxes, gates.max_unverified_mailboxes,
                     "mailboxes unverified"),
        at_most_rule("messages missing on the target", missing_messages, gates.max_missing_messages,
                     "messages missing"),
    ]
    return decide("access", rules, gates, list(webmail) + list(canaries))


def clients_gate(clients: Sequence[CheckResult], gates: Gates) -> Decision:
    """After the PEC clients' switch: every client on the new provider and proven working (no client reported:
    no evidence, HOLD)."""
    rule = fraction_rule("every PEC client switched and working", clients, 1.0, "PEC clients")
    return decide("clients", [rule], gates, list(clients))


__all__ = ["Verdict", "RuleOutcome", "Decision", "decide", "dns_gate", "access_gate", "clients_gate", "fraction_rule",
           "at_most_rule", "propagation_rule", "check_rule"]
