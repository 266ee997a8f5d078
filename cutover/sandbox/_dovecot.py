"""One Dovecot instance of the sandbox ("aruba" or "infocert"): config, users, mail directory.

IMAP only over implicit TLS on 127.0.0.1; users in a passwd-file (hashes only); Maildir owned by the
unprivileged mail user; quota plugin (count backend) with per-user ``quota_rule``; a master passdb so
SASL PLAIN with an authorization identity (authzid=member, authcid=master) works. With submission ports:
Dovecot's submission service (the provider's SMTP for clients) over implicit TLS (as port 465) and/or with STARTTLS
required before AUTH (as port 587), relaying to the sandbox MTA when one runs (else AUTH works and a message is
refused), and LMTP on a socket in ``base_dir`` through which that MTA delivers into the mailboxes.
"""

from __future__ import annotations

import grp
import hashlib
import pwd
import shutil
import tempfile
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cutover.errors import SandboxError
from cutover.sandbox._users import PasswdFile

# Dovecot refuses to access mail as root, so mail belongs to a dedicated system user, created if missing
# (scripts/install-system.sh creates it too).
MAIL_USER = "pecmail"
DEFAULT_QUOTA = "*:storage=10G"


def ensure_mail_user() -> tuple[int, int]:
    """Return (uid, gid) of the mail user, creating the system user if it does not exist."""
    try:
        entry = pwd.getpwnam(MAIL_USER)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", MAIL_USER],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise SandboxError(f"cannot create the mail user {MAIL_USER!r}: {result.stderr.strip()}; "
                               "run scripts/install-system.sh as root") from None
        entry = pwd.getpwnam(MAIL_USER)
    return entry.pw_uid, entry.pw_gid


_LONGEST_SOCKET_NAME = len("/login/imap-urlauth-login") + 8


DEFAULT_SPECIAL_USE = {"Posta inviata": "\\Sent", "Trash": "\\Trash"}


@dataclass(frozen=True)
class DovecotPaths:
    root: Path
    mail: Path
    log: Path

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def base_dir(self) -> Path:
        # Dovecot's sockets live here and a UNIX socket path is limited to 107 bytes; a deep checkout or temp
        # directory would exceed it ("File name too long"), so long roots get a short directory of their own.
        inside = self.root / "run"
        if len(str(inside)) + _LONGEST_SOCKET_NAME <= 100:
            return inside
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"pec-dovecot-{digest}"

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def masters(self) -> Path:
        return self.root / "masters"

    @property
    def pid_file(self) -> Path:
        return self.root / "sandbox.pid"


class DovecotInstance:
    """Config and user database of one sandbox Dovecot."""

    def __init__(self, name: str, port: int, paths: DovecotPaths, cert: Path, key: Path, *,
                 submission_port: int | None = None, relay_port: int | None = None,
                 starttls_port: int | None = None) -> None:
        self.name = name
        self.port = port
        # SMTP submission (dovecot-submissiond): implicit TLS on submission_port, STARTTLS on starttls_port. Its
        # relay is the sandbox MTA's port; without one, AUTH works and a message sent is refused (421).
        self.submission_port = submission_port
        self.starttls_port = starttls_port
        self.relay_port = relay_port
        self.paths = paths
        self.cert = cert
        self.key = key
        self.users = PasswdFile(paths.users)
        self.masters = PasswdFile(paths.masters)
        # Tests only: the capabilities announced after login (None: Dovecot's own list); see
        # Sandbox.set_imap_capability.
        self.imap_capability: str | None = None
        # Real providers' shapes: a personal namespace prefix and separator (Courier-style "INBOX." and "."),
        # and a per user+IP session limit (Dovecot answers the next login with "Maximum number of connections
        # from user+IP exceeded"). See Sandbox.set_namespace / Sandbox.set_connection_limit.
        self.namespace_prefix = ""
        self.separator = "/"
        self.max_userip_connections = 200
        # Special-use folders (RFC 6154) as the server declares them; a real provider's \Sent may have another
        # name and show only once it exists (after the member's first webmail login). See Sandbox.set_special_use.
        self.special_use: dict[str, str] = dict(DEFAULT_SPECIAL_USE)

    def argv(self) -> list[str]:
        return ["/usr/sbin/dovecot", "-F", "-c", str(self.paths.config)]

    def write_config(self) -> None:
        uid, gid = ensure_mail_user()
        p = self.paths
        for d in (p.root, p.base_dir, p.root / "state", p.log.parent):
            d.mkdir(parents=True, exist_ok=True)
        p.mail.mkdir(parents=True, exist_ok=True)
        shutil.chown(p.mail, uid, gid)
        for f in (p.users, p.masters):
            if not f.exists():
                PasswdFile(f).write({})
        p.config.write_text(self._config_text(uid, gid), encoding="utf-8")

    def _config_text(self, uid: int, gid: int) -> str:
        p = self.paths
        user = pwd.getpwuid(uid).pw_name
        group = grp.getgrgid(gid).gr_name
        capability = f"imap_capability = {self.imap_capability}\n" if self.imap_capability else ""
        special_use = "\n".join(f'  mailbox "{name}" {{\n    special_use = {flag}\n  }}'
                                for name, flag in self.special_use.items())
        submission = ""
        listeners = ""
        if self.submission_port is not None or self.starttls_port is not None:
            # Both of Dovecot's default listeners named, so neither keeps its default port (587/465); 0 turns one off.
            listeners = f"""
  inet_listener submission {{
    address = 127.0.0.1
    port = {self.starttls_port or 0}
  }}
  inet_listener submissions {{
    address = 127.0.0.1
    port = {self.submission_port or 0}
    ssl = yes
  }}"""
        if listeners:
            submission = f"""
# The provider's SMTP for clients, relayed to the sandbox MTA (when one runs), which delivers back into this
# server's mailboxes by LMTP ({p.base_dir}/lmtp).
hostname = {self.name}.pec-sandbox.invalid
postmaster_address = postmaster@{self.name}.pec-sandbox.invalid
submission_relay_host = 127.0.0.1
submission_relay_port = {self.relay_port or 25}
service submission-login {{{listeners}
}}
"""
        protocols = "imap submission lmtp" if submission else "imap"
        return f"""# Generated by pec-cutover sandbox for "{self.name}"; rewritten on every start.
instance_name = pec-sandbox-{self.name}
base_dir = {p.base_dir}
state_dir = {p.root}/state
listen = 127.0.0.1
protocols = {protocols}
log_path = {p.log}
info_log_path = {p.log}
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{self.key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
# Real servers delay failed logins ~2 s; the sandbox answers at once so bad-credential tests stay quick.
auth_failure_delay = 0
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_uid = {user}
mail_gid = {group}
mail_location = maildir:~/Maildir:LAYOUT=fs
# The sandbox trades durability for seeding speed; it is a rehearsal, not a mail store.
mail_fsync = never
mail_max_userip_connections = {self.max_userip_connections}
mail_plugins = $mail_plugins quota
{capability}
namespace inbox {{
  inbox = yes
  prefix = {self.namespace_prefix}
  separator = {self.separator}
{special_use}
}}

protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}

plugin {{
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = {DEFAULT_QUOTA}
}}

# Master users log in as any member with SASL PLAIN (authzid=member, authcid=master).
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%u {p.masters}
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=SSHA512 username_format=%u {p.users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {p.users}
  default_fields = uid={user} gid={group} home={p.mail}/%d/%n
}}

# Login and mail processes serve many connections each, as a provider's servers run (Dovecot's "high-performance
# mode"): the default, a fresh login process and a fresh imap process for every connection, makes the sandbox's
# process forks, not the tools under test, the cost of thousands of short sessions.
service imap-login {{
  service_count = 0
  process_min_avail = 2
  vsz_limit = 1G
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
}}
service imap {{
  service_count = 100
}}
service auth {{
  # passwd-files are mode 600 root: the auth process reads them as root.
  user = root
}}
{submission}"""

    def user_home(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.paths.mail / domain / local

    def delete_mail(self, address: str) -> None:
        shutil.rmtree(self.user_home(address), ignore_errors=True)
