"""Benchmark at the scale of one real Ordine: 1,200 mailboxes x 20 PEC-shaped messages, a real Prefect server.

In a temp dir of its own (sandbox on --base-port, Prefect server on --prefect-port, both stopped at the end):
seed the source; readiness flow; full prestage flow; mbsync's own full sync (into a folder tree of its own on
the target, ``mbsync/...``, so both tools see the same source and neither sees the other's copies); then, each
time with 1 new message in every 10th mailbox: the final delta through ``pec-cutover copy`` and mbsync's delta;
the delta through the prestage flow; and the delta through ``pec-cutover copy`` with the sandbox's WAN proxy
(``--rtt-ms``, default 20) in front of both IMAP servers. Every pec-cutover run must end verified. Lines:

    scale: readiness 1200 mailboxes: X s
    scale: final delta 1200 mailboxes (120 changed) cli: X s
    scale: final delta 1200 mailboxes (120 changed) flow: X s
    ratio vs mbsync scale delta: X
    scale: final delta @20ms cli: X s
    scale: workers 1 vs 2 at 20ms: X mailboxes/s vs Y mailboxes/s

The last line (``--workers-mailboxes N``, 0 to skip; ``--workers-only`` for that line alone): a full prestage of N
mailboxes through the WAN proxy (``--rtt-ms``) as a distributed copy (plan ``copy.fan_out``: ledger and Prefect
server on the sandbox's PostgreSQL, chunk runs on a process work pool), once with one worker and once with two,
from an empty target and an empty ledger each time; mailboxes/s is N over the prestage's wall time.

Usage: .venv/bin/python bench/scale_bench.py [--mailboxes 1200] [--messages 20] [--rtt-ms 20] [--parallel 8]
       .venv/bin/python bench/scale_bench.py --workers-only --workers-mailboxes 40 --messages 10
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402

import copy_bench as cb  # noqa: E402
from cutover.inventory import load_inventory  # noqa: E402
from cutover.plan import load_plan  # noqa: E402
from cutover.sandbox import Sandbox, seed, write_environment  # noqa: E402
from cutover.sandbox._prefect import PrefectStack  # noqa: E402
from cutover.sandbox._wan import LinkSettings, request as wan_request  # noqa: E402

BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict | None = None, label: str = "") -> float:
    """Run ``argv`` (from the repo), fail loudly if it fails; its wall time."""
    started = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{label or argv[0]} failed (rc {done.returncode}): {(done.stdout + done.stderr)[-1500:]}")
    return wall


def flow_argv(flow: str, plan_path: Path) -> list[str]:
    module, name = {"readiness": ("flows.readiness", "readiness"), "prestage": ("flows.prestage", "prestage")}[flow]
    return [sys.executable, "-c", f"from {module} import {name}; {name}(plan_path={str(plan_path)!r})"]


def mbsync_prefixed(work: Path, plan, mailboxes) -> Path:
    """mbsync's config (as copy_bench's) writing into ``mbsync/`` on the target: its copies never mix with ours."""
    conf = cb.mbsync_config(work, plan, mailboxes)
    out = []
    for line in conf.read_text().splitlines():
        out.append(line)
        if line.startswith("Account tgt"):
            out.append("Path mbsync/")
    conf.write_text("\n".join(out) + "\n")
    return conf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mailboxes", type=int, default=1200)
    ap.add_argument("--messages", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=8, help="mailboxes at once (pec-cutover and mbsync)")
    ap.add_argument("--rtt-ms", type=float, default=20.0)
    ap.add_argument("--base-port", type=int, default=38000)
    ap.add_argument("--prefect-port", type=int, default=38420)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--workers-mailboxes", type=int, default=240, help="mailboxes of the workers 1 vs 2 line (0: skip)")
    ap.add_argument("--workers-only", action="store_true", help="only the workers 1 vs 2 line")
    args = ap.parse_args()
    if args.workers_only:
        return workers_line(args)

    work = Path(tempfile.mkdtemp(prefix="pec-scale-"))
    cb.make_traversable(work)
    env_paths = write_environment(work / "env", base_port=args.base_port, mailboxes=args.mailboxes)
    data = yaml.safe_load(env_paths.plan.read_text())
    data["copy"] = {**(data.get("copy") or {}), "mailboxes_in_parallel": args.parallel}
    for side in ("source", "target"):
        data[side]["max_connections"] = max(data[side].get("max_connections", 4), 2 * args.parallel)
    env_paths.plan.write_text(yaml.safe_dump(data, allow_unicode=True))
    plan = load_plan(env_paths.plan)
    sandbox = Sandbox(plan)
    stack = PrefectStack(home=work / "prefect", port=args.prefect_port)
    n_changed = len(range(0, args.mailboxes, 10))
    try:
        sandbox.up(["aruba", "infocert"])
        mailboxes = list(load_inventory(plan).mailboxes)
        sandbox.ensure_users(mailboxes)
        t = time.monotonic()
        seeded = seed(plan, mailboxes, args.messages, big_attachments=0, sandbox=sandbox)
        print(f"corpus: {args.mailboxes} mailboxes x {args.messages} messages = {seeded.messages} messages, "
              f"{seeded.bytes / 1e6:.0f} MB (seeded in {time.monotonic() - t:.0f} s); {args.parallel} in parallel",
              flush=True)
        stack.start_server()
        env = {**stack.env, "PYTHONPATH": str(REPO)}

        wall = timed(flow_argv("readiness", env_paths.plan), env, "readiness flow")
        print(f"scale: readiness {args.mailboxes} mailboxes: {wall:.1f} s", flush=True)
        wall = timed(flow_argv("prestage", env_paths.plan), env, "prestage flow")
        print(f"scale: full prestage {args.mailboxes} mailboxes flow: {wall:.1f} s", flush=True)

        mconf = mbsync_prefixed(work, plan, mailboxes) if shutil.which("mbsync") else None
        if mconf:
            wall, _, results = cb.run_children(cb.mbsync(mconf, mailboxes), args.parallel)
            bad = [tail for rc, tail in results if rc != 0]
            print(f"mbsync full {args.mailboxes} mailboxes: {wall:.1f} s" + (f" [{len(bad)} failed: {bad[0][-200:]}]"
                                                                              if bad else ""), flush=True)

        cli = [str(BIN / "pec-cutover"), "copy", "--plan", str(env_paths.plan)]
        changed = mailboxes[::10]
        cb.add_delta(sandbox, changed, 1, uuid.uuid4().hex)
        ours = timed(cli, env, "pec-cutover copy")
        print(f"scale: final delta {args.mailboxes} mailboxes ({n_changed} changed) cli: {ours:.1f} s", flush=True)
        if mconf:
            theirs, _, results = cb.run_children(cb.mbsync(mconf, mailboxes), args.parallel)
            bad = [tail for rc, tail in results if rc != 0]
            print(f"mbsync delta {args.mailboxes} mailboxes ({n_changed} changed): {theirs:.1f} s"
                  + (f" [{len(bad)} failed]" if bad else ""))
            print(f"ratio vs mbsync scale delta: {theirs / ours:.2f}" if not bad else
                  "ratio vs mbsync scale delta: n/a (mbsync failed)", flush=True)
        else:
            print("ratio vs mbsync scale delta: n/a (mbsync not installed)")

        cb.add_delta(sandbox, changed, 1, uuid.uuid4().hex)
        wall = timed(flow_argv("prestage", env_paths.plan), env, "prestage flow (delta)")
        print(f"scale: final delta {args.mailboxes} mailboxes ({n_changed} changed) flow: {wall:.1f} s", flush=True)

        if args.rtt_ms:
            cb.add_delta(sandbox, changed, 1, uuid.uuid4().hex)
            wan_request(plan, sandbox.state_dir, LinkSettings(rtt_ms=args.rtt_ms))
            sandbox = Sandbox(plan)  # the Dovecots move behind the proxy
            sandbox.up(["aruba", "infocert", "wan"])
            wall = timed(cli, env, "pec-cutover copy @rtt")
            print(f"scale: final delta @{args.rtt_ms:g}ms cli: {wall:.1f} s", flush=True)
    finally:
        stack.stop()
        sandbox.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return workers_line(args) if args.workers_mailboxes else 0


def workers_line(args) -> int:
    """``scale: workers 1 vs 2 at <rtt>ms``: the same full prestage, distributed, on one worker then on two."""
    import psycopg

    from cutover.sandbox._distributed import DistributedDay, distributed_plan_text, write_ledger_secret

    n = args.workers_mailboxes
    work = Path(tempfile.mkdtemp(prefix="pec-scale-workers-"))
    cb.make_traversable(work)
    base = args.base_port + 100
    env_paths = write_environment(work / "env", base_port=base, mailboxes=n)
    # as many chunks as lanes of two workers, twice over, so both workers stay busy to the end
    chunk = max(1, n // (4 * 2))
    text = distributed_plan_text(env_paths.plan.read_text(), postgres_port=base + 432, chunk_mailboxes=chunk,
                                 stale_after_s=60.0, pending_after_s=300.0, poll_s=0.5)
    data = yaml.safe_load(text)
    data["copy"] = {**(data.get("copy") or {}), "mailboxes_in_parallel": args.parallel}
    for side in ("source", "target"):  # room for both workers' lanes under the shared caps
        data[side]["max_connections"] = max(data[side].get("max_connections", 4), 4 * args.parallel)
    env_paths.plan.write_text(yaml.safe_dump(data, allow_unicode=True))
    plan = load_plan(env_paths.plan)
    wan_request(plan, Path(plan.sandbox.state_dir), LinkSettings(rtt_ms=args.rtt_ms))
    sandbox = Sandbox(plan)
    rates = []
    try:
        sandbox.up(["aruba", "infocert", "wan", "postgres"])
        write_ledger_secret(sandbox)
        mailboxes = list(load_inventory(plan).mailboxes)
        sandbox.ensure_users(mailboxes)
        seeded = seed(plan, mailboxes, args.messages, big_attachments=0, sandbox=sandbox)
        print(f"workers corpus: {n} mailboxes x {args.messages} messages = {seeded.messages} messages, "
              f"{seeded.bytes / 1e6:.0f} MB; {args.parallel} lanes per worker, chunks of {chunk}, RTT {args.rtt_ms:g} ms",
              flush=True)
        for workers in (1, 2):
            for mb in mailboxes:  # an empty target and an empty ledger: the same copy each time
                sandbox.remove_user("target", mb.address)
            sandbox.ensure_users(mailboxes)
            with psycopg.connect(sandbox.postgres.url("postgres"), autocommit=True) as conn:
                conn.execute("DROP DATABASE IF EXISTS ledger WITH (FORCE)")
            sandbox.postgres.create_database("ledger")
            day = DistributedDay(sandbox, env_paths.plan, work / f"prefect-{workers}", args.prefect_port + workers,
                                 workers=[f"bench-{i}" for i in range(1, workers + 1)])
            try:
                stack = day.start()
                env = {**stack.env, "PYTHONPATH": str(REPO)}
                wall = timed(flow_argv("prestage", env_paths.plan), env, f"distributed prestage, {workers} worker(s)")
            finally:
                day.stop()
            rates.append(n / wall)
            print(f"distributed prestage {n} mailboxes, {workers} worker(s): {wall:.1f} s", flush=True)
        print(f"scale: workers 1 vs 2 at {args.rtt_ms:g}ms: {rates[0]:.2f} mailboxes/s vs {rates[1]:.2f} mailboxes/s "
              f"(x{rates[1] / rates[0]:.2f})", flush=True)
    finally:
        sandbox.down()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
