"""Gate rules: each threshold and the decision, table-driven (pure, no sandbox)."""

from __future__ import annotations

import pytest

from checks.gates import Verdict, access_gate, dns_gate, fraction_rule
from cutover.plan import Gates
from cutover.results import CheckResult


def results(passed: int, failed: int, name: str = "check") -> list[CheckResult]:
    ok = [CheckResult(name, True, "x", "x", target=f"ok{i}") for i in range(passed)]
    bad = [CheckResult(name, False, "x", "y", target=f"bad{i}", reason="refused") for i in range(failed)]
    return ok + bad


def propagation(converged: int, total: int) -> CheckResult:
    return CheckResult("resolver_propagation", converged == total, "all", f"{converged}/{total}",
                       data={"converged": converged, "total": total})


@pytest.mark.parametrize(
    ("passed", "failed", "min_fraction", "ok"),
    [
        (3, 0, 1.0, True),
        (2, 1, 1.0, False),
        (9, 1, 0.9, True),     # exactly the fraction: 0.9 * 10 must not round up to 10
        (8, 2, 0.9, False),
        (1, 2, 0.34, False),
        (1, 2, 0.33, True),
        (0, 3, 0.0, True),
    ],
)
def test_fraction_rule_threshold(passed: int, failed: int, min_fraction: float, ok: bool) -> None:
    outcome = fraction_rule("r", results(passed, failed), min_fraction, "things")
    assert outcome.conclusive and outcome.ok is ok
    assert f"{passed}/{passed + failed} ok" in outcome.observed


def test_fraction_rule_without_results_is_no_evidence() -> None:
    outcome = fraction_rule("r", [], 0.5, "things")
    assert not outcome.conclusive


@pytest.mark.parametrize(
    ("auth_ok", "auth_bad", "prop", "gates", "verdict", "failed"),
    [
        (2, 0, propagation(1, 1), Gates(), Verdict.GO, []),
        (1, 1, propagation(1, 1), Gates(), Verdict.NO_GO, ["authoritative servers on the new MX"]),
        (1, 1, propagation(1, 1), Gates(min_authoritative_fraction=0.5), Verdict.GO, []),
        (2, 0, propagation(3, 4), Gates(), Verdict.NO_GO, ["resolvers see the new MX"]),
        (2, 0, propagation(3, 4), Gates(min_resolver_fraction=0.75), Verdict.GO, []),
        (2, 0, propagation(2, 4), Gates(min_resolver_fraction=0.75), Verdict.NO_GO, ["resolvers see the new MX"]),
        (2, 0, None, Gates(), Verdict.HOLD, []),
        (0, 0, propagation(1, 1), Gates(), Verdict.HOLD, []),
        # a definite failure wins over missing evidence
        (1, 1, None, Gates(), Verdict.NO_GO, ["authoritative servers on the new MX"]),
    ],
)
def test_dns_gate(auth_ok, auth_bad, prop, gates, verdict, failed) -> None:
    decision = dns_gate(results(auth_ok, auth_bad, "authoritative_mx_agree"), prop, gates)
    assert decision.verdict is verdict
    assert [r.rule for r in decision.failed_rules] == failed


def test_dns_gate_uses_fraction_in_data_or_the_checks_own_verdict() -> None:
    with_fraction = CheckResult("p", False, "all", "2 of 3", data={"fraction": 2 / 3})
    assert dns_gate(results(1, 0), with_fraction, Gates(min_resolver_fraction=0.6)).verdict is Verdict.GO
    bare = CheckResult("p", False, "all", "not converged")
    assert dns_gate(results(1, 0), bare, Gates(min_resolver_fraction=0.1)).verdict is Verdict.NO_GO


BASE = dict(webmail=results(3, 0, "webmail"), canaries=results(4, 0, "canary"), unverified_mailboxes=0,
            missing_messages=0)


@pytest.mark.parametrize(
    ("change", "gates", "verdict", "failed"),
    [
        ({}, Gates(), Verdict.GO, []),
        ({"webmail": results(2, 1, "webmail")}, Gates(), Verdict.NO_GO, ["webmail checks all green"]),
        ({"webmail": results(2, 1, "webmail")}, Gates(webmail_all_green=False), Verdict.GO, []),
        ({"webmail": []}, Gates(), Verdict.HOLD, []),
        ({"canaries": results(3, 1, "canary")}, Gates(), Verdict.NO_GO, ["canary mailboxes log in on the target"]),
        ({"canaries": results(3, 1, "canary")}, Gates(min_canary_fraction=0.75), Verdict.GO, []),
        ({"canaries": results(2, 2, "canary")}, Gates(min_canary_fraction=0.75), Verdict.NO_GO,
         ["canary mailboxes log in on the target"]),
        ({"canaries": []}, Gates(), Verdict.HOLD, []),
        ({"unverified_mailboxes": 1}, Gates(), Verdict.NO_GO, ["mailboxes not verified"]),
        ({"unverified_mailboxes": 3}, Gates(max_unverified_mailboxes=3), Verdict.GO, []),
        ({"unverified_mailboxes": 4}, Gates(max_unverified_mailboxes=3), Verdict.NO_GO, ["mailboxes not verified"]),
        ({"unverified_mailboxes": None}, Gates(), Verdict.HOLD, []),
        ({"missing_messages": 1}, Gates(), Verdict.NO_GO, ["messages missing on the target"]),
        ({"missing_messages": 5}, Gates(max_missing_messages=5), Verdict.GO, []),
        ({"missing_messages": None}, Gates(), Verdict.HOLD, []),
        ({"missing_messages": 2, "canaries": []}, Gates(), Verdict.NO_GO, ["messages missing on the target"]),
        ({"missing_messages": 2, "webmail": results(0, 1)}, Gates(), Verdict.NO_GO,
         ["webmail checks all green", "messages missing on the target"]),
    ],
)
def test_access_gate(change, gates, verdict, failed) -> None:
    decision = access_gate(**{**BASE, **change}, gates=gates)
    assert decision.verdict is verdict
    assert [r.rule for r in decision.failed_rules] == failed


@pytest.mark.parametrize(
    ("verdict_inputs", "on_nogo", "action"),
    [
        ({}, "ask", "proceed"),
        ({"missing_messages": 1}, "rollback", "rollback"),
        ({"missing_messages": 1}, "ask", "ask"),
        ({"canaries": []}, "rollback", "ask"),  # HOLD never rolls back on its own
    ],
)
def test_action_follows_verdict_and_on_nogo(verdict_inputs, on_nogo, action) -> None:
    decision = access_gate(**{**BASE, **verdict_inputs}, gates=Gates(on_nogo=on_nogo))
    assert decision.action == action


def test_markdown_shows_verdict_failed_rules_and_evidence() -> None:
    decision = access_gate(**{**BASE, "canaries": results(1, 1, "canary_login"), "missing_messages": 2},
                           gates=Gates(on_nogo="rollback"))
    text = decision.markdown()
    assert "**NO-GO**" in text and "**rollback**" in text
    assert "canary mailboxes log in on the target: expected ≥ 100% of canary logins ok, observed 1/2 ok (50%)" in text
    assert "failing: bad0" in text
    assert "| messages missing on the target | FAIL | ≤ 0 messages missing | 2 messages missing |" in text
    assert "| canary_login | bad0 | NO |" in text  # the check results behind the rules
    assert "NO-GO" in decision.summary() and "-> rollback" in decision.summary()


def test_hold_markdown_names_what_has_no_evidence() -> None:
    decision = access_gate(**{**BASE, "unverified_mailboxes": None}, gates=Gates())
    assert decision.verdict is Verdict.HOLD
    assert "mailboxes not verified: mailboxes unverified: not known" in decision.markdown()
    assert decision.inconclusive_rules[0].state == "no evidence"
