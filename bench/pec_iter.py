"""Iteration helper: pec-cutover only (full + delta), several rounds on one seeded sandbox, optional wrapper.

Usage: .venv/bin/python bench/pec_iter.py [--mailboxes 10] [--messages 300] [--rounds 2] [--size]
       [--wrap "py-spy record -o /tmp/p.svg --"]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import copy_bench as cb  # noqa: E402


def dovecot_cpu(work: Path) -> float:
    """CPU seconds (user+sys, own + reaped children) of the Dovecot masters running from ``work``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if not cmd or not cmd[0].endswith(b"dovecot") or str(work).encode() not in b" ".join(cmd):
                continue
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in f[11:15])
    return total / tick


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailboxes", type=int, default=10)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--base-port", type=int, default=36000)
    ap.add_argument("--size", action="store_true", help="verify: size")
    ap.add_argument("--wrap", default="", help="command prefix for the full run (e.g. a profiler)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pec-iter-"))
    cb.make_traversable(work)
    env_paths = cb.write_environment(work / "env", base_port=args.base_port, mailboxes=args.mailboxes)
    import yaml
    data = yaml.safe_load(env_paths.plan.read_text())
    data["copy"] = {**(data.get("copy") or {}), "batch_bytes": 8 * 1024 * 1024, "mailboxes_in_parallel": args.parallel}
    if args.size:
        data["copy"]["verify"] = "size"
    env_paths.plan.write_text(yaml.safe_dump(data, allow_unicode=True))
    plan = cb.load_plan(env_paths.plan)
    sandbox = cb.Sandbox(plan)
    try:
        sandbox.up(["aruba", "infocert"])
        mailboxes = list(cb.load_inventory(plan).mailboxes)
        sandbox.ensure_users(mailboxes)
        seeded = cb.seed(plan, mailboxes, args.messages, big_attachments=1, sandbox=sandbox)
        print(f"corpus {seeded.messages} msgs {seeded.bytes / 1e6:.0f} MB", flush=True)
        for r in range(args.rounds):
            cb.reset_target(sandbox, mailboxes, plan.ledger)
            argv = cb.pec_cutover(env_paths.plan)
            if args.wrap and r == args.rounds - 1:
                argv = [shlex.split(args.wrap.replace("{r}", str(r))) + argv[0]]
            load = os.getloadavg()[0]
            before = dovecot_cpu(work)
            wall, rss, res = cb.run_children(argv, 1)
            print(f"dovecot cpu {dovecot_cpu(work) - before:.2f} s", flush=True)
            n, _ = cb.count_target(sandbox, mailboxes)
            print(f"round {r} full  {wall:6.2f} s rss {rss/1024:.0f} MB ok={n == seeded.messages and res[0][0] == 0} "
                  f"load {load:.2f} {res[0][1].strip()[-300:]}", flush=True)
            tag = uuid.uuid4().hex
            added, _ = cb.add_delta(sandbox, mailboxes, max(1, args.messages // 100), tag)
            load = os.getloadavg()[0]
            wall, rss, res = cb.run_children(cb.pec_cutover(env_paths.plan), 1)
            n, _ = cb.count_target(sandbox, mailboxes)
            print(f"round {r} delta {wall:6.2f} s ok={n == seeded.messages + added and res[0][0] == 0} load {load:.2f} "
                  f"{res[0][1].strip()[-200:]}", flush=True)
            cb.remove_delta(sandbox, mailboxes, tag)
    finally:
        sandbox.down()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
