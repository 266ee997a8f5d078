"""Webmail probes against the sandbox's nginx over verified HTTPS (certificates swapped, server stopped)."""

from __future__ import annotations

import pytest

from checks.gates import Verdict, access_gate
from checks.webmail import ASPECTS, webmail_checks
from cutover.plan import Gates


def by_aspect(results):
    return {r.data["aspect"]: r for r in results}


def with_webmail(plan, **changes):
    webmail = [plan.target.webmail[0].model_copy(update=changes)]
    return plan.model_copy(update={"target": plan.target.model_copy(update={"webmail": webmail})})


def test_login_page_over_verified_https_passes(sandbox_env) -> None:
    results = webmail_checks(sandbox_env.plan)
    assert [r.data["aspect"] for r in results] == list(ASPECTS)
    assert all(r.ok for r in results), [r.as_row() for r in results if not r.ok]
    aspects = by_aspect(results)
    assert aspects["dns"].data["skipped"] and "IP literal" in aspects["dns"].observed
    assert "3/3 attempts ok" in aspects["tls"].observed and "verified (TLSv1" in aspects["tls"].observed
    days = int(aspects["cert-expiry"].observed.split("expires in ")[1].split()[0])
    assert days >= sandbox_env.plan.gates.cert_min_days
    assert aspects["http"].observed.endswith("HTTP 200")
    assert aspects["markers"].observed.endswith("all present")


def test_host_name_is_resolved_and_verified(sandbox_env) -> None:
    port = sandbox_env.sandbox.ports["webmail"]
    aspects = by_aspect(webmail_checks(with_webmail(sandbox_env.plan, url=f"https://localhost:{port}/", attempts=1)))
    assert aspects["dns"].ok and "127.0.0.1" in aspects["dns"].observed
    assert all(r.ok for r in aspects.values())


def test_unresolvable_name_fails_at_dns(sandbox_env) -> None:
    aspects = by_aspect(webmail_checks(with_webmail(sandbox_env.plan, url="https://webmail.pec-cutover.invalid/",
                                                    attempts=1)))
    assert not aspects["dns"].ok and aspects["dns"].reason == "dns-failure"
    assert aspects["tcp"].reason == "not-reached"


@pytest.mark.parametrize(("kind", "words"), [("expired", "certificate has expired"),
                                             ("wrong-host", "not valid for '127.0.0.1'")])
def test_bad_certificate_fails_tls_with_the_reason(sandbox_env, kind, words) -> None:
    try:
        sandbox_env.sandbox.use_webmail_cert(kind)
        results = webmail_checks(sandbox_env.plan)
    finally:
        sandbox_env.sandbox.use_webmail_cert("good")
    aspects = by_aspect(results)
    assert aspects["tcp"].ok
    assert not aspects["tls"].ok and aspects["tls"].reason == "tls-failure"
    assert words in aspects["tls"].observed
    assert not aspects["http"].ok and aspects["http"].reason == "not-reached"
    decision = access_gate(webmail=results, canaries=[], unverified_mailboxes=0, missing_messages=0, gates=Gates())
    assert decision.verdict is Verdict.NO_GO and decision.failed_rules[0].rule == "webmail checks all green"


def test_stopped_webmail_is_refused(sandbox_env, tools) -> None:
    try:
        sandbox_env.sandbox.stop_service("webmail")
        results = webmail_checks(sandbox_env.plan)
    finally:
        tools.start_service(sandbox_env.sandbox, "webmail")
    aspects = by_aspect(results)
    assert not aspects["tcp"].ok and aspects["tcp"].reason == "refused"
    assert "0/3 attempts ok; connection refused" == aspects["tcp"].observed
    assert all(aspects[a].reason == "not-reached" for a in ASPECTS[2:])
    assert webmail_checks(sandbox_env.plan)[1].ok  # and it is back


def test_certificate_expiring_within_the_plan_days_fails(sandbox_env) -> None:
    plan = sandbox_env.plan.model_copy(update={"gates": Gates(cert_min_days=10_000)})
    aspects = by_aspect(webmail_checks(plan))
    assert aspects["tls"].ok
    assert not aspects["cert-expiry"].ok and aspects["cert-expiry"].reason == "cert-expiring"
    assert "≥ 10000 days left" in aspects["cert-expiry"].expected


def test_missing_marker_and_wrong_status_fail(sandbox_env) -> None:
    aspects = by_aspect(webmail_checks(with_webmail(sandbox_env.plan, markers=["<form", "Aruba"], attempts=1)))
    assert aspects["http"].ok
    assert not aspects["markers"].ok and "missing ['Aruba']" in aspects["markers"].observed

    aspects = by_aspect(webmail_checks(with_webmail(sandbox_env.plan, expect_status=302, attempts=1)))
    assert not aspects["http"].ok and aspects["http"].reason == "mismatch"
    assert "HTTP 200" in aspects["http"].observed and "HTTP 302" in aspects["http"].expected


def test_slow_answer_fails_response_time(sandbox_env) -> None:
    # 1 ms is below any real TLS handshake + request, so the page is healthy but "slow".
    aspects = by_aspect(webmail_checks(with_webmail(sandbox_env.plan, max_response_ms=1, attempts=2,
                                                    attempt_interval_s=0)))
    assert aspects["markers"].ok
    assert not aspects["response-time"].ok and aspects["response-time"].reason == "slow"
    assert aspects["response-time"].observed.startswith("0/2 attempts ok")


def test_successes_are_counted_against_min_successes(sandbox_env, tools) -> None:
    # Three attempts, one of them against a stopped server (the server is stopped after the first attempt).
    import checks.webmail as webmail_module

    plan = with_webmail(sandbox_env.plan, attempts=3, attempt_interval_s=0, min_successes=2)
    calls = {"n": 0}
    original = webmail_module._attempt

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            sandbox_env.sandbox.stop_service("webmail")
            try:
                return original(*args, **kwargs)
            finally:
                tools.start_service(sandbox_env.sandbox, "webmail")
        return original(*args, **kwargs)

    webmail_module._attempt = flaky
    try:
        aspects = by_aspect(webmail_checks(plan))
    finally:
        webmail_module._attempt = original
        tools.start_service(sandbox_env.sandbox, "webmail")
    assert aspects["tcp"].ok and aspects["tcp"].observed.startswith("2/3 attempts ok")
    assert aspects["markers"].ok and aspects["markers"].data["passed"] == 2


def run_cli(*args: str):
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).with_name("pec-cutover")
    return subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def test_cli_check_webmail_exit_code_follows_the_result(sandbox_env) -> None:
    plan = str(sandbox_env.plan_path)
    ok = run_cli("check", "webmail", "--plan", plan)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "webmail: all 7 checks passed" in ok.stdout
    try:
        sandbox_env.sandbox.use_webmail_cert("expired")
        bad = run_cli("check", "webmail", "--plan", plan)
    finally:
        sandbox_env.sandbox.use_webmail_cert("good")
    assert bad.returncode == 1 and "certificate has expired" in bad.stdout and "checks failed" in bad.stdout


def test_cli_check_access_passes_on_the_canaries(sandbox_env) -> None:
    run = run_cli("check", "access", "--plan", str(sandbox_env.plan_path), "--no-ledger")
    assert run.returncode == 0, run.stdout + run.stderr
    # per canary: an IMAP login and an SMTP submission login (STARTTLS) on the target
    assert f"access: all {2 * len(sandbox_env.inventory.canaries)} checks passed" in run.stdout
    assert "smtp login" in run.stdout
