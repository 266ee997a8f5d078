"""IMAP sessions the sandbox opens itself (deliver, seed): verified TLS, logged in through its admin master user."""

from __future__ import annotations

import ssl
from pathlib import Path

from imapclient import IMAPClient


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A client context trusting only the sandbox CA, hostname checked (never switched off)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.check_hostname = True
    return ctx


def open_as(host: str, port: int, ca_file: Path, *, user: str, master: str, master_password: str,
            timeout: float = 60.0) -> IMAPClient:
    """Log in as ``user`` with SASL PLAIN, authenticating as ``master`` (authzid=user)."""
    client = IMAPClient(host, port=port, ssl=True, ssl_context=tls_context(ca_file), timeout=timeout)
    try:
        client.plain_login(master, master_password, authorization_identity=user)
    except Exception:
        client.shutdown()
        raise
    return client
