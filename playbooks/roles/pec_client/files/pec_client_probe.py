#!/usr/bin/env python3
"""Prove a PEC client works after its settings changed; one JSON object on stdout (Python 3 standard library only:
it runs on the client host through Ansible's ``script`` module).

``imap``  the application's settings file: log in to the configured server and select INBOX; with
          ``--status-file``, also wait until the application itself has polled with this very file (its SHA-256
          in the status) and succeeded.
``relay`` hand a test message to the local Postfix relay, then follow its log until the relay reports what the
          provider's submission service answered: delivered to the expected ``host:port`` with a queue id, or the
          reason it was not (authentication refused, TLS, unreachable).

Exit status 0 either way: the JSON says ``ok``; the role decides. Never prints a password.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import imaplib
import json
import re
import smtplib
import ssl
import sys
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate

POLL_S = 0.25


def probe_imap(args: argparse.Namespace) -> dict:
    config = configparser.ConfigParser()
    config_bytes = open(args.config, "rb").read()
    config.read_string(config_bytes.decode("utf-8"))
    imap = config["imap"]
    host, port, user = imap["host"], int(imap["port"]), imap["user"]
    out: dict = {"ok": False, "server": f"{host}:{port}", "user": user}
    try:
        password = open(imap["password_file"], encoding="utf-8").read().strip()
        context = ssl.create_default_context(cafile=imap.get("ca_file") or None)
        if imap.get("tls", "implicit") == "implicit":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=args.timeout)
        else:
            client = imaplib.IMAP4(host, port, timeout=args.timeout)
            client.starttls(ssl_context=context)
        try:
            client.login(user, password)
            typ, data = client.select("INBOX", readonly=True)
            if typ != "OK":
                out["error"] = f"SELECT INBOX answered {typ}: {data!r}"[:300]
                return out
            out["exists"] = int(data[0])
        finally:
            try:
                client.logout()
            except (imaplib.IMAP4.error, OSError):
                pass
    except imaplib.IMAP4.error as exc:
        out["error"] = f"login refused by {host}:{port} as {user}: {exc}"[:300]
        return out
    except ssl.SSLError as exc:
        out["error"] = f"TLS with {host}:{port} failed: {exc}"[:300]
        return out
    except OSError as exc:
        out["error"] = f"cannot reach {host}:{port}: {exc}"[:300]
        return out
    out["evidence"] = f"logged in as {user} at {host}:{port}, INBOX selected ({out['exists']} messages)"
    if args.status_file:
        # The application's own poll with exactly these settings, not an earlier one.
        sha = hashlib.sha256(config_bytes).hexdigest()
        deadline = time.monotonic() + args.timeout
        status: dict = {}
        while time.monotonic() < deadline:
            try:
                status = json.load(open(args.status_file, encoding="utf-8"))
            except (OSError, ValueError):
                status = {}
            # A failed poll with these settings may be a transient one (a file written a moment later): wait for
            # the next, until the deadline.
            if status.get("config_sha256") == sha and status.get("ok"):
                break
            time.sleep(POLL_S)
        out["app_status"] = status
        if status.get("config_sha256") != sha:
            out["error"] = f"the application did not poll with the new settings within {args.timeout:.0f}s"
            return out
        if not status.get("ok"):
            out["error"] = f"the application's own poll failed: {status.get('error', '?')}"
            return out
        out["evidence"] += f"; the application polled {status.get('server')} as {status.get('user')}: ok"
    out["ok"] = True
    return out


_DELIVERY = re.compile(r"\b(?P<qid>[0-9A-F]+): to=<[^>]*>, relay=(?P<relay>[^,]+), .*?status=(?P<status>\w+) "
                       r"\((?P<response>.*)\)\s*$")


def probe_relay(args: argparse.Namespace) -> dict:
    host, _, port = args.listen.rpartition(":")
    marker = f"<pec-cutover-probe-{uuid.uuid4().hex}@{args.sender.rpartition('@')[2]}>"
    msg = EmailMessage()
    msg["From"] = args.sender
    msg["To"] = args.to
    msg["Subject"] = "pec-cutover: prova del relay dopo il cambio di gestore (test message, please ignore)"
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = marker
    msg.set_content("Messaggio di prova inviato da pec-cutover per verificare il relay PEC dopo il cambio di "
                    "gestore.\nTest message sent by pec-cutover to prove the PEC relay after the provider change.\n")
    out: dict = {"ok": False, "message_id": marker, "relay_listen": args.listen}
    try:
        with smtplib.SMTP(host, int(port), timeout=args.timeout) as smtp:
            smtp.ehlo()
            smtp.mail(args.sender)
            code, text = smtp.rcpt(args.to)
            if code >= 300:
                out["error"] = f"the relay refused the recipient: {code} {text.decode(errors='replace')}"
                return out
            code, text = smtp.data(msg.as_bytes())
    except (OSError, smtplib.SMTPException) as exc:
        out["error"] = f"cannot hand the test message to the relay at {args.listen}: {exc}"[:300]
        return out
    reply = text.decode(errors="replace")
    local = re.search(r"queued as (\S+)", reply)
    if code != 250 or not local:
        out["error"] = f"the relay did not queue the test message: {code} {reply}"[:300]
        return out
    out["relay_queue_id"] = qid = local.group(1)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        found = None
        try:
            with open(args.maillog, encoding="utf-8", errors="replace") as log:
                for line in log:
                    match = _DELIVERY.search(line)
                    if match and match.group("qid") == qid:
                        found = match
        except OSError:
            pass
        if found is not None:
            break
        time.sleep(POLL_S)
    else:
        out["error"] = f"the relay logged no delivery attempt of {qid} within {args.timeout:.0f}s (see {args.maillog})"
        return out
    relay, status, response = found.group("relay"), found.group("status"), found.group("response")
    out.update(relayed_to=relay, status=status, provider_reply=response)
    relay_host = relay.split("[", 1)[0].lower()
    relay_port = relay.rsplit("]:", 1)[-1] if "]:" in relay else ""
    want_host, _, want_port = args.expect_relay.rpartition(":")
    if status != "sent":
        out["error"] = f"the relay could not deliver through {relay}: {status} ({response})"[:400]
        return out
    if relay_host != want_host.lower() or relay_port != want_port:
        out["error"] = f"the relay delivered through {relay}, not {args.expect_relay}"
        return out
    provider = re.search(r"queued as (\S+)|\bid=(\S+)", response)
    out["provider_queue_id"] = (provider.group(1) or provider.group(2)) if provider else ""
    out["evidence"] = (f"test message {qid} relayed to {relay}, answered: {response}")
    out["ok"] = True
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    imap = sub.add_parser("imap")
    imap.add_argument("--config", required=True)
    imap.add_argument("--status-file", default="")
    imap.add_argument("--timeout", type=float, default=60)
    relay = sub.add_parser("relay")
    relay.add_argument("--listen", required=True, help="host:port of the relay's smtpd")
    relay.add_argument("--sender", required=True)
    relay.add_argument("--to", required=True)
    relay.add_argument("--maillog", required=True)
    relay.add_argument("--expect-relay", required=True, help="host:port of the provider's submission service")
    relay.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args(argv)
    try:
        result = probe_imap(args) if args.kind == "imap" else probe_relay(args)
    except Exception as exc:  # noqa: BLE001 - reported as data; the role fails the host with it
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
