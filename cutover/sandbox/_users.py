"""Dovecot passwd-files: one line per user, password stored only as a salted hash.

Dovecot re-reads a passwd-file when its mtime changes, so edits here take effect on the next login
without restarting the server. Files are replaced atomically (write + rename).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path


def ssha512(password: str) -> str:
    """Dovecot's {SSHA512} scheme: base64(sha512(password + salt) + salt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return "{SSHA512}" + base64.b64encode(digest + salt).decode()


def ssha512_matches(password_hash: str, password: str) -> bool:
    """True if ``password_hash`` ({SSHA512}) is a hash of ``password``."""
    if not password_hash.startswith("{SSHA512}"):
        return False
    raw = base64.b64decode(password_hash[len("{SSHA512}"):])
    digest, salt = raw[:64], raw[64:]
    return secrets.compare_digest(hashlib.sha512(password.encode() + salt).digest(), digest)


@dataclass
class PasswdEntry:
    """One passwd-file line: ``user:hash:uid:gid:gecos:home:shell:extra fields``."""

    user: str
    password_hash: str
    extra: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        extras = " ".join(f"{k}={v}" for k, v in sorted(self.extra.items()))
        return f"{self.user}:{self.password_hash}::::::{extras}"

    @classmethod
    def parse(cls, line: str) -> "PasswdEntry":
        parts = line.split(":", 7)
        parts += [""] * (8 - len(parts))
        extra = dict(item.split("=", 1) for item in parts[7].split() if "=" in item)
        return cls(parts[0], parts[1], extra)


class PasswdFile:
    """Read-modify-write access to a passwd-file (mode 600: it holds hashes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> dict[str, PasswdEntry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        out: dict[str, PasswdEntry] = {}
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                entry = PasswdEntry.parse(line)
                out[entry.user] = entry
        return out

    def write(self, entries: dict[str, PasswdEntry], *, settle: bool = False) -> None:
        """Replace the file; ``settle`` waits until a running Dovecot is sure to see the change (< 1 s)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(e.line() + "\n" for e in entries.values()))
        old_mtime = int(self.path.stat().st_mtime) if self.path.exists() else None
        os.replace(tmp, self.path)
        # Dovecot notices a changed passwd-file by mtime (whole seconds) and size; a password change keeps
        # the size, so make sure the mtime moves even for two writes within one second.
        if old_mtime is not None and int(self.path.stat().st_mtime) <= old_mtime:
            os.utime(self.path, (old_mtime + 1, old_mtime + 1))
        # Dovecot stats the file at most once per second of its clock: wait for the next second so the
        # very next login sees the change.
        if settle:
            time.sleep(1.0 - (time.time() % 1.0) + 0.01)

    def upsert(self, user: str, password: str | None = None, **extra: str | None) -> None:
        """Add or change a user; ``password=None`` keeps the current hash; an extra set to None is removed."""
        entries = self.entries()
        entry = entries.get(user)
        if entry is None:
            if password is None:
                raise KeyError(user)
            entry = PasswdEntry(user, ssha512(password))
        elif password is not None:
            entry.password_hash = ssha512(password)
        for key, value in extra.items():
            if value is None:
                entry.extra.pop(key, None)
            else:
                entry.extra[key] = value
        entries[user] = entry
        self.write(entries, settle=True)

    def remove(self, user: str) -> bool:
        entries = self.entries()
        if entries.pop(user, None) is None:
            return False
        self.write(entries, settle=True)
        return True


def new_password() -> str:
    return secrets.token_urlsafe(18)


def write_secret_file(path: Path, value: str) -> None:
    """Write a secret value to ``path`` with mode 600 (created so, never briefly readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    os.replace(tmp, path)
