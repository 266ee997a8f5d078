"""Benchmark: pec-cutover vs dsync (doveadm backup, imapc) vs mbsync on the same sandbox corpus.

Runs its own sandbox environment (default base port 35000) in a temp dir, seeds M mailboxes x N PEC-shaped
messages on the source, then for each tool: empty target, full copy, add 1 % new messages to the source,
delta copy, remove those messages again (so every tool sees the same corpus). Each tool runs as child
processes; wall time, messages/s, MB/s and peak RSS (/usr/bin/time, per process) are printed, then:

    ratio vs dsync full: X    (peer wall time / pec-cutover wall time; above 1 = pec-cutover is faster)

With ``--rtt-ms 20`` every tool (pec-cutover, mbsync, dsync's imapc side) reaches the IMAP servers through the
sandbox's WAN proxy (``cutover.sandbox._wan``) and the lines read ``ratio vs mbsync full @20ms: X``.

Usage: .venv/bin/python bench/copy_bench.py [--mailboxes 20] [--messages 500] [--parallel 4] [--base-port 35000]
       [--rtt-ms 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIME = shutil.which("time") and Path("/usr/bin/time").exists()
sys.path.insert(0, str(REPO))

from cutover.inventory import Mailbox, load_inventory  # noqa: E402
from cutover.plan import Plan, load_plan  # noqa: E402
from cutover.sandbox import ADMIN_USER, Sandbox, seed, write_environment  # noqa: E402


@dataclass
class Run:
    tool: str
    kind: str
    wall: float
    messages: int
    nbytes: int
    rss_kb: int
    ok: bool
    note: str = ""

    def line(self) -> str:
        rate = self.messages / self.wall if self.wall else 0
        mbs = self.nbytes / 1e6 / self.wall if self.wall else 0
        status = "" if self.ok else f"  [{self.note}]"
        return (f"{self.tool:<11} {self.kind:<5} wall {self.wall:7.2f} s  {rate:8.0f} msg/s  {mbs:7.1f} MB/s  "
                f"peak RSS {self.rss_kb / 1024:6.1f} MB  ({self.messages} msgs){status}")

# pec-cutover: one process, its own pool of mailboxes; peers: one process per mailbox, --parallel at once
# (their peak RSS is per process). "pec/size" is pec-cutover with copy.verify: size (no read-back).


def run_children(argvs: list[list[str]], parallel: int, env: dict | None = None) -> tuple[float, int, list[tuple[int, str]]]:
    """Run commands with at most ``parallel`` at once; (wall seconds, max child peak RSS KiB, [(rc, stderr tail)])."""
    results: list[tuple[int, str]] = []
    peak = 0

    def one(argv: list[str]) -> tuple[int, int, str]:
        # /usr/bin/time reports the tool's own peak RSS; rusage seen from here would start at this
        # process's size (a forked child inherits the parent's high-water mark until exec).
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file, tempfile.TemporaryFile() as out:
            wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *argv] if TIME else argv
            rc = subprocess.call(wrapped, stdout=out, stderr=out, env=env)
            out.seek(0)
            tail = out.read().decode("utf-8", "replace")[-400:]
            text = rss_file.read().strip().splitlines()
            rss = int(text[-1]) if text and text[-1].isdigit() else 0
        return rc, rss, tail

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for rc, rss, tail in pool.map(one, argvs):
            results.append((rc, tail))
            peak = max(peak, rss)
    return time.monotonic() - started, peak, results


def make_traversable(path: Path) -> None:
    for d in [path, *path.parents]:
        if d == Path("/"):
            break
        mode = d.stat().st_mode
        if not mode & stat.S_IXOTH:
            d.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def count_target(sandbox: Sandbox, mailboxes: list[Mailbox]) -> tuple[int, int]:
    """(messages, bytes) on the target over IMAP STATUS/RFC822.SIZE, to check a tool really copied."""
    total = nbytes = 0
    for mb in mailboxes:
        client = sandbox.admin_session("target", mb.address)
        try:
            for flags, _, name in client.list_folders():
                if b"\\Noselect" in flags:
                    continue
                info = client.select_folder(name, readonly=True)
                if info.get(b"EXISTS"):
                    data = client.fetch(client.search("ALL"), ["RFC822.SIZE"])
                    total += len(data)
                    nbytes += sum(v[b"RFC822.SIZE"] for v in data.values())
        finally:
            client.logout()
    return total, nbytes


def reset_target(sandbox: Sandbox, mailboxes: list[Mailbox], ledger: Path) -> None:
    for mb in mailboxes:
        sandbox.remove_user("target", mb.address)
    sandbox.ensure_users(mailboxes)
    for suffix in ("", "-wal", "-shm"):
        Path(str(ledger) + suffix).unlink(missing_ok=True)


def add_delta(sandbox: Sandbox, mailboxes: list[Mailbox], per_mailbox: int, tag: str) -> tuple[int, int]:
    n = nbytes = 0
    for mb in mailboxes:
        for i in range(per_mailbox):
            raw = (f"From: mittente@pec.esempio.it\r\nTo: {mb.address}\r\nSubject: delta {i}\r\n"
                   f"Message-ID: <{uuid.uuid4().hex}@pec.esempio.it>\r\nX-Bench-Delta: {tag}\r\n"
                   f"Date: Mon, 2 Mar 2026 10:00:00 +0100\r\n\r\n" + ("Nuovo messaggio certificato.\r\n" * 400)).encode()
            sandbox.deliver("source", mb.address, raw)
            n += 1
            nbytes += len(raw)
    return n, nbytes


def remove_delta(sandbox: Sandbox, mailboxes: list[Mailbox], tag: str) -> None:
    for mb in mailboxes:
        client = sandbox.admin_session("source", mb.address)
        try:
            client.select_folder("INBOX")
            uids = client.search(["HEADER", "X-Bench-Delta", tag])
            if uids:
                client.delete_messages(uids)
                client.expunge()
        finally:
            client.logout()


# --- tools ------------------------------------------------------------------------------------------
_PEC = textwrap.dedent("""
    import sys, logging
    from cutover.plan import load_plan
    from cutover.inventory import load_inventory
    from cutover.mailsync import copy_mailboxes
    plan = load_plan(sys.argv[1])
    report = copy_mailboxes(plan, load_inventory(plan).mailboxes)
    print(report.total_messages, report.copied_messages, report.unverified_count)
    sys.exit(0 if report.ok else 1)
""")


def pec_cutover(plan_path: Path) -> list[list[str]]:
    return [[sys.executable, "-c", _PEC, str(plan_path)]]


def dsync_config(work: Path, plan: Plan, sandbox: Sandbox) -> Path | None:
    if not shutil.which("doveadm"):
        return None
    infocert = sandbox.dovecots["infocert"]
    admin_pw = sandbox._admin_password()
    conf = work / "dsync.conf"
    # base_dir of the running "infocert" Dovecot: doveadm looks users up through its auth-userdb socket
    # and writes that user's Maildir directly (which is what dsync does, and what we cannot do at InfoCert).
    conf.write_text(textwrap.dedent(f"""
        base_dir = {infocert.paths.base_dir}
        log_path = {work}/dsync.log
        ssl_client_ca_file = {plan.source.ca_bundle}
        mail_location = maildir:~/Maildir:LAYOUT=fs
        mail_fsync = never
        mail_uid = pecmail
        mail_gid = pecmail
        first_valid_uid = 1
        imapc_host = {plan.source.imap.host}
        imapc_port = {plan.source.imap.port}
        imapc_ssl = imaps
        imapc_master_user = {ADMIN_USER}
        imapc_password = {admin_pw}
        imapc_features = rfc822.size fetch-headers
        mail_plugins = $mail_plugins quota
        plugin {{
          quota = count:User quota
          quota_vsizes = yes
          quota_rule = *:storage=10G
        }}
        namespace inbox {{
          inbox = yes
          separator = /
        }}
    """))
    conf.chmod(0o600)
    return conf


def dsync(conf: Path, mailboxes: list[Mailbox]) -> list[list[str]]:
    # -u: the member on the target's Dovecot (its InfoCert login); imapc_user: its login on the source
    return [["doveadm", "-c", str(conf), "-o", f"imapc_user={mb.login('source')}", "backup", "-R",
             "-u", mb.login("target"), "imapc:"] for mb in mailboxes]


def mbsync_config(work: Path, plan: Plan, mailboxes: list[Mailbox]) -> Path | None:
    if not shutil.which("mbsync"):
        return None
    lines = []
    for i, mb in enumerate(mailboxes):
        state = work / "mbsync-state" / str(i)
        state.mkdir(parents=True, exist_ok=True)
        for side, prov in (("src", plan.source), ("tgt", plan.target)):
            pw = mb.password("source" if side == "src" else "target").reveal()
            # mbsync 1.4 matches the certificate against DNS names only (not IP SANs): use the cert's DNS name
            host = "localhost" if prov.imap.host == "127.0.0.1" else prov.imap.host
            login = mb.login("source" if side == "src" else "target")  # InfoCert: the user ID, not the address
            lines += [f"IMAPAccount {side}{i}", f"Host {host}", f"Port {prov.imap.port}", f"User {login}",
                      f'Pass "{pw}"', "SSLType IMAPS", f"CertificateFile {prov.ca_bundle}", "AuthMechs PLAIN", "",
                      f"IMAPStore {side}{i}", f"Account {side}{i}", ""]
        lines += [f"Channel ch{i}", f"Far :src{i}:", f"Near :tgt{i}:", "Patterns *", "Create Near", "Sync Pull",
                  "Expunge None", "Remove None", "CopyArrivalDate yes", f"SyncState {state}/", ""]
    conf = work / "mbsyncrc"
    conf.write_text("\n".join(lines))
    conf.chmod(0o600)
    return conf


def mbsync(conf: Path, mailboxes: list[Mailbox]) -> list[list[str]]:
    return [["mbsync", "-q", "-c", str(conf), f"ch{i}"] for i in range(len(mailboxes))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mailboxes", type=int, default=20)
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--base-port", type=int, default=35000)
    ap.add_argument("--big-attachments", type=int, default=1)
    ap.add_argument("--rtt-ms", type=float, default=0.0,
                    help="every tool reaches both IMAP servers through the sandbox's WAN proxy with this RTT")
    ap.add_argument("--keep", action="store_true", help="leave the temp dir (sandbox stopped) for inspection")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pec-bench-"))
    make_traversable(work)
    env_paths = write_environment(work / "env", base_port=args.base_port, mailboxes=args.mailboxes)
    import yaml
    data = yaml.safe_load(env_paths.plan.read_text())
    # the benchmark's own copy settings: as many mailboxes in parallel as the peers get, 8 MB batches
    data["copy"] = {**(data.get("copy") or {}), "batch_bytes": 8 * 1024 * 1024, "mailboxes_in_parallel": args.parallel}
    if args.rtt_ms:
        # the WAN proxy on the plan's IMAP ports, the Dovecots behind it: every tool goes through it
        data["sandbox"] = {**data["sandbox"], "wan": {"rtt_ms": args.rtt_ms}}
    env_paths.plan.write_text(yaml.safe_dump(data, allow_unicode=True))
    # the same with ``verify: size`` (trust APPENDUID + sizes, no read-back): shown for information only
    size_plan = env_paths.plan.with_name("plan-verify-size.yaml")
    size_plan.write_text(yaml.safe_dump({**data, "copy": {**data["copy"], "verify": "size"}}, allow_unicode=True))
    plan = load_plan(env_paths.plan)
    if plan.copy_settings.mailboxes_in_parallel != args.parallel:
        print(f"note: plan copy settings say {plan.copy_settings.mailboxes_in_parallel} in parallel")
    sandbox = Sandbox(plan)
    runs: list[Run] = []
    try:
        sandbox.up(["aruba", "infocert"] + (["wan"] if args.rtt_ms else []))
        mailboxes = list(load_inventory(plan).mailboxes)
        sandbox.ensure_users(mailboxes)
        t = time.monotonic()
        seeded = seed(plan, mailboxes, args.messages, big_attachments=args.big_attachments, sandbox=sandbox)
        print(f"corpus: {args.mailboxes} mailboxes x {args.messages} messages = {seeded.messages} messages, "
              f"{seeded.bytes / 1e6:.0f} MB (seeded in {time.monotonic() - t:.0f} s); {args.parallel} mailboxes in parallel"
              + (f"; every tool through a WAN of {args.rtt_ms:g} ms RTT" if args.rtt_ms else ""))
        delta_per_mailbox = max(1, args.messages // 100)

        tools = [("pec-cutover", lambda: pec_cutover(env_paths.plan)), ("pec/size", lambda: pec_cutover(size_plan))]
        dconf = dsync_config(work, plan, sandbox)
        if dconf:
            tools.append(("dsync", lambda: dsync(dconf, mailboxes)))
        else:
            print("dsync: doveadm not found, skipped")
        mconf = mbsync_config(work, plan, mailboxes)
        if mconf:
            tools.append(("mbsync", lambda: mbsync(mconf, mailboxes)))
        else:
            print("mbsync: not installed, skipped")

        for name, argv_fn in tools:
            reset_target(sandbox, mailboxes, plan.ledger)
            shutil.rmtree(work / "mbsync-state", ignore_errors=True)
            if mconf:
                mbsync_config(work, plan, mailboxes)
            parallel = 1 if name.startswith("pec") else args.parallel  # pec-cutover runs its own pool
            for kind in (("full",) if name == "pec/size" else ("full", "delta")):
                if kind == "delta":
                    tag = uuid.uuid4().hex
                    added, added_bytes = add_delta(sandbox, mailboxes, delta_per_mailbox, tag)
                wall, rss, results = run_children(argv_fn(), parallel)
                on_target, nbytes = count_target(sandbox, mailboxes)
                expected = seeded.messages + (added if kind == "delta" else 0)
                failed = [tail for rc, tail in results if rc != 0]
                ok = not failed and on_target == expected
                note = "" if ok else (f"{len(failed)} process(es) failed: {failed[0].strip()[-200:]}" if failed
                                      else f"target has {on_target} of {expected} messages")
                moved = expected if kind == "full" else added
                run = Run(name, kind, wall, moved, nbytes if kind == "full" else added_bytes, rss, ok, note)
                runs.append(run)
                print(run.line(), flush=True)
                if kind == "delta":
                    remove_delta(sandbox, mailboxes, tag)
    finally:
        sandbox.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    by = {(r.tool, r.kind): r for r in runs}
    at = f" @{args.rtt_ms:g}ms" if args.rtt_ms else ""
    print()
    for peer in ("dsync", "mbsync"):
        for kind in ("full", "delta"):
            ours, theirs = by.get(("pec-cutover", kind)), by.get((peer, kind))
            if ours and theirs and ours.ok and theirs.ok:
                print(f"ratio vs {peer} {kind}{at}: {theirs.wall / ours.wall:.2f}")
            else:
                why = "did not run" if not theirs else ("failed: " + theirs.note if not theirs.ok else "pec-cutover failed")
                print(f"ratio vs {peer} {kind}{at}: n/a ({why})")
    print(json.dumps([r.__dict__ for r in runs]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
