"""Benchmark: how fast the Prefect UI renders a 1,200-mailbox cutover report (issue 12, point 3: under 2 s).

Starts a real Prefect server (``prefect server start``, its own home in a temp dir, a free port), stores the
reports below as markdown artifacts of one flow run and opens each in headless Chromium (Debian's ``chromium`` through
Playwright), timing ``page.goto`` until the report's last line is on the screen:

- the report as the cutover flow renders it (phases, checks, gates, decisions, only the mailboxes that need
  action; every mailbox goes to the per-mailbox table artifact);
- the peer: the same report with every mailbox inline (the old shape, one table row per mailbox).

A third artifact of three lines is the floor: what the UI needs to open an artifact page at all. The browser first
loads the run page and one artifact page (the UI's scripts cached, as for an operator who has the UI open); each
report is then opened ``--repeat`` times, in turn, and the medians are printed (and every run, and the floor):

    ui: 1200-mailbox report rendered in X s (full-inline peer: Y s, ratio Z)

(ratio = peer / report: above 1, the report renders faster than the old shape.)

Usage: .venv/bin/python bench/ui_render.py [--mailboxes 1200] [--failed 75] [--repeat 5] [--keep]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from checks.gates import access_gate, dns_gate  # noqa: E402
from cutover.mailsync import CopyReport, MailboxReport  # noqa: E402
from cutover.plan import Gates  # noqa: E402
from cutover.report import Phase, RunReport, checks_summary  # noqa: E402
from cutover.results import CheckResult, markdown_table  # noqa: E402
from cutover.sandbox._prefect import PrefectStack  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DOMAIN = "pec.fnofi.it"


def big_copy(n: int, failed: int) -> CopyReport:
    """A final delta of ``n`` mailboxes, ``failed`` of them not verified (late members: 2FA still on)."""
    boxes = [MailboxReport(address=f"member{i:05d}@{DOMAIN}", status="verified", messages=20, bytes=700_000,
                           copied=1, verified=True, logins={"target": f"IC{4200000 + i:07d}"}) for i in range(n - failed)]
    boxes += [MailboxReport(address=f"late{i:05d}@{DOMAIN}", status="failed", reason="bad-credentials",
                            error=f"late{i:05d}@{DOMAIN} on aruba imaps.pec.aruba.it:993: login refused: "
                                  "[AUTHENTICATIONFAILED] Authentication failed.") for i in range(failed)]
    return CopyReport(mailboxes=boxes, seconds=1834.2, direction="forward")


def _check(name: str, target: str, expected: str, observed: str, ok: bool = True, **kw) -> CheckResult:
    return CheckResult(name=name, ok=ok, expected=expected, observed=observed, target=target, duration_s=0.042, **kw)


def cutover_report(copy: CopyReport, *, inline_every_mailbox: bool) -> str:
    """The cutover flow's report (flows/cutover_day.py, phase by phase) for ``copy``; with
    ``inline_every_mailbox`` the final delta lists every mailbox in a table instead (the old shape)."""
    gates = Gates(max_unverified_mailboxes=0)
    report = RunReport(f"Cutover of {DOMAIN}: aruba → infocert (m.bianchi)")
    with report.phase("freeze") as phase:
        phase.lines.append("inside the window 2026-11-28T22:00+01:00 - 2026-11-29T06:00+01:00")
        phase.checks += [_check("mx-ttl", f"ns{i}", "MX TTL 300 s for 86400 s", "300 s since 3 days") for i in (1, 2)]
        phase.checks += [_check("authoritative-mx", f"ns{i}", "mx.pec.aruba.it.", "mx.pec.aruba.it.") for i in (1, 2)]
        phase.checks += [_check("tsig-key", "ns1", "update allowed", "ok"), _check("ledger", "ledger.sqlite", "writable", "ok")]
        phase.lines.append(checks_summary(phase.checks))
        phase.lines.append("change freeze taken by this run")
    with report.phase("switch MX to infocert") as phase:
        phase.lines += ["changed: True; serial 2026112801 → 2026112802", "MX now: ['10 mx.cert.legalmail.it.']"]
    with report.phase("DNS checks and gate (attempt 1)") as phase:
        auth = [_check("authoritative-mx", f"ns{i}", "10 mx.cert.legalmail.it.", "10 mx.cert.legalmail.it.")
                for i in (1, 2, 3)]
        agree = _check("soa-agreement", DOMAIN, "one SOA serial", "2026112802 on 3/3")
        prop = _check("resolver-propagation", "8 resolvers", "≥ 100 % see the new MX", "8/8 in 312 s",
                      data={"fraction": 1.0})
        decision = dns_gate(auth, prop, gates, agree)
        phase.checks += [*auth, agree, prop]
        phase.sections.append(decision.markdown())
        phase.lines.append("GO at gate dns (attempt 1)")
    with report.phase("final delta copy") as phase:
        phase.lines.append(f"{copy.verified_count}/{len(copy.mailboxes)} mailboxes verified; "
                           f"{sum(m.copied for m in copy.mailboxes)} messages copied in {copy.seconds:.1f} s")
        if inline_every_mailbox:
            phase.sections.append(copy.markdown(attention_limit=0).split("\nNeeds attention")[0].rstrip() + "\n\n"
                                  + markdown_table(copy.rows()))
        else:
            phase.sections.append(copy.markdown())
        phase.status = "failed"
    with report.phase("accessibility checks and gate (attempt 1)") as phase:
        webmail = [_check("webmail-https", "webmail.infocert.it", "200 + login form", "200 in 180 ms"),
                   _check("webmail-tls", "webmail.infocert.it", "valid ≥ 14 days", "valid 212 days"),
                   _check("webmail-dns", "webmail.infocert.it", "resolves", "2 addresses")]
        canaries = [_check("canary-imap", f"canary{i}@{DOMAIN}", "login + INBOX", "ok, 412 messages") for i in range(5)]
        decision = access_gate(webmail=webmail, canaries=canaries, unverified_mailboxes=copy.unverified_count,
                               missing_messages=copy.missing_messages, gates=gates)
        phase.checks += [*webmail, *canaries]
        phase.sections.append(decision.markdown())
        phase.lines.append("NO-GO at gate access: proceed by m.bianchi (verified code): 75 late members "
                           "copied on Monday by hand")
        phase.status = "overridden"
    with report.phase("complete") as phase:
        phase.lines += ["MX TTL kept at 300 s until 2026-12-01T06:00+01:00 (ttl.restore_after), then "
                        "`pec-cutover dns ttl --restore --plan P`", "change freeze lifted"]
    report.phases.append(Phase(name="gate decisions", started_at="", status="ok",
                               lines=["dns: GO (attempt 1)", "access: NO-GO, proceed by m.bianchi (verified code): "
                                      "75 late members copied on Monday by hand"]))
    report.phases.append(Phase(name="phase durations", started_at="", status="ok",
                               lines=["freeze 0.4 min of 5", "switch 0.2 min of 5", "dns 5.3 min of 20",
                                      "final_delta 30.6 min of 60", "access 0.9 min of 15", "complete 0.1 min of 5"]))
    report.verdict = (f"GO: {DOMAIN} now served by infocert; {copy.verified_count}/{len(copy.mailboxes)} mailboxes "
                      "verified; NO-GO OVERRIDDEN at gate(s) access by a human decision (see gate decisions)")
    report.notifications += ["gate-paused access: sent (ops-slack, 1 attempt)", "go: sent (ops-slack, 1 attempt)"]
    return report.markdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _time_render(page, url: str, last_line: str) -> float:
    t0 = time.monotonic()
    page.goto(url)
    page.get_by_text(last_line).first.wait_for(timeout=120_000)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mailboxes", type=int, default=1200)
    ap.add_argument("--failed", type=int, default=75)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the server's home directory (printed)")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"bench-ui: {CHROMIUM} not found: install Debian's chromium (scripts/install-system.sh)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    copy = big_copy(args.mailboxes, args.failed)
    light = cutover_report(copy, inline_every_mailbox=False)
    heavy = cutover_report(copy, inline_every_mailbox=True)
    print(f"report: {len(light):,} bytes, {len(light.splitlines())} lines; "
          f"full-inline peer: {len(heavy):,} bytes, {len(heavy.splitlines())} lines")

    home = Path(tempfile.mkdtemp(prefix="pec-bench-ui-"))
    stack = PrefectStack(home=home, port=_free_port())
    t0 = time.monotonic()
    stack.start_server()
    print(f"prefect server up in {time.monotonic() - t0:.1f} s on {stack.api_url}")
    try:
        flow = stack._api("POST", "/flows/", {"name": "cutover"})
        run = stack._api("POST", "/flow_runs/", {"flow_id": flow["id"], "name": f"cutover {DOMAIN} aruba→infocert",
                                                 "state": {"type": "COMPLETED", "name": "GoOverridden"}})
        ids = {}
        # The floor: a three-line report; what the UI needs to open any artifact page, whatever its size.
        floor = f"# Cutover of {DOMAIN}\n\n## Notifications\n\n- go: sent (ops-slack, 1 attempt)\n"
        for key, text in (("cutover-report", light), ("cutover-report-full-inline", heavy), ("floor", floor)):
            ids[key] = stack._api("POST", "/artifacts/", {"key": key, "type": "markdown", "data": text,
                                                         "flow_run_id": run["id"]})["id"]
        ui = stack.api_url[:-len("/api")]
        # The last line each report shows: the page is rendered when it is on the screen.
        marks = dict.fromkeys(ids, "go: sent (ops-slack, 1 attempt)")
        times: dict[str, list[float]] = {k: [] for k in ids}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1100})
            # The UI's scripts in the cache, as for an operator who has the UI open: the run page, then one artifact
            # page (its first opening loads that page's scripts, whichever report it shows).
            page.goto(f"{ui}/runs/flow-run/{run['id']}")
            page.get_by_text(f"cutover {DOMAIN} aruba→infocert").first.wait_for(timeout=120_000)
            _time_render(page, f"{ui}/artifacts/artifact/{ids['floor']}", marks["floor"])
            for _ in range(args.repeat):
                for key, artifact in ids.items():
                    times[key].append(_time_render(page, f"{ui}/artifacts/artifact/{artifact}", marks[key]))
            browser.close()
    finally:
        stack.stop()
        if not args.keep:
            import shutil
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"server home kept: {home}")
    ours, peer, least = (statistics.median(times[k]) for k in ("cutover-report", "cutover-report-full-inline", "floor"))
    print("runs (s): " + "; ".join(f"{k}: {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items()))
    print(f"floor: a 3-line report renders in {least:.2f} s (the UI opening an artifact page)")
    print(f"ui: {args.mailboxes}-mailbox report rendered in {ours:.2f} s (full-inline peer: {peer:.2f} s, "
          f"ratio {peer / ours:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
