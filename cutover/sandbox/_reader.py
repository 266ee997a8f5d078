"""The sandbox's PEC reader: a small polling service standing for the organisation's document-management system
("protocollo"), which reads its PEC box over IMAP.

It reads the settings the ``pec_client`` role templates (an INI file: IMAP host, port, TLS, CA, user, and the path
of a mode-600 password file), logs in, selects INBOX, logs out, and writes what happened to a status file (JSON:
time, the config's SHA-256, server, user, ok, messages in INBOX, error). Like fetchmail in daemon mode it notices
a changed config file by itself and polls at once; otherwise every ``interval_s``. Never prints the password.

Run by the sandbox as ``python -m cutover.sandbox._reader CONFIG STATUS``.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import signal
import ssl
import sys
import time
from pathlib import Path

from imapclient import IMAPClient

CHECK_EVERY_S = 0.3


def _poll(config: configparser.ConfigParser) -> dict:
    imap = config["imap"]
    host, port, user = imap["host"], int(imap["port"]), imap["user"]
    out = {"server": f"{host}:{port}", "user": user, "ok": False, "exists": None, "error": ""}
    try:
        password = Path(imap["password_file"]).read_text(encoding="utf-8").strip()
        context = ssl.create_default_context(cafile=imap.get("ca_file") or None)
        implicit = imap.get("tls", "implicit") == "implicit"
        client = IMAPClient(host, port=port, ssl=implicit, ssl_context=context, timeout=15)
        try:
            if not implicit:
                client.starttls(ssl_context=context)
            client.login(user, password)
            out["exists"] = int(client.select_folder("INBOX", readonly=True)[b"EXISTS"])
            out["ok"] = True
        finally:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - the poll's outcome is already known
                pass
    except Exception as exc:  # noqa: BLE001 - a failed poll is reported in the status file, the service goes on
        out["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out


def _write_status(path: Path, status: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)


def main(config_path: Path, status_path: Path) -> None:
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGHUP, lambda *_: None)  # interrupts the sleep: poll now
    last_sha, last_poll = None, 0.0
    while not stopping:
        try:
            raw = config_path.read_bytes()
        except OSError:
            raw = None
        sha = hashlib.sha256(raw).hexdigest() if raw is not None else None
        config = configparser.ConfigParser()
        interval = 5.0
        if raw is not None:
            try:
                config.read_string(raw.decode("utf-8"))
                interval = float(config.get("reader", "interval_s", fallback="5"))
            except (configparser.Error, UnicodeDecodeError, ValueError):
                config = None
        if sha != last_sha or time.monotonic() - last_poll >= interval:
            status = {"time": time.time(), "config_sha256": sha}
            if raw is None:
                status.update(ok=False, error="not configured yet (no config file)")
            elif config is None or "imap" not in config:
                status.update(ok=False, error="config file unreadable (no [imap] section)")
            else:
                status.update(_poll(config))
            _write_status(status_path, status)
            print(json.dumps(status), flush=True)
            last_sha, last_poll = sha, time.monotonic()
        time.sleep(CHECK_EVERY_S)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
