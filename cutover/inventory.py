"""The mailbox inventory: one CSV per environment (``inventory/<env>/mailboxes.csv``).

Columns: ``address, source_secret, target_secret, canary, notes`` and the optional ``source_login``,
``target_login`` (the name the provider's IMAP login takes; empty: the address. InfoCert Legalmail's mail
clients log in with the InfoCert User ID, not the PEC address). Every problem is reported with its line
number, all at once; nothing runs on an invalid inventory.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from cutover.errors import InventoryError, SecretError
from cutover.secrets import Secret, SecretRef, parse_ref, resolve

if TYPE_CHECKING:
    from cutover.plan import Plan

COLUMNS = ("address", "source_secret", "target_secret", "canary", "notes", "source_login", "target_login")
REQUIRED = ("address",)
_TRUE = {"yes", "y", "true", "1", "x"}
_FALSE = {"no", "n", "false", "0", ""}
# Deliberately strict: PEC addresses are plain local@domain, no quoting, no comments.
# A login name is sent as an IMAP astring/quoted string and a SASL PLAIN identity: printable, no blanks, no
# quotes or backslashes (LOGIN would need escaping some servers mishandle), no control characters.
_LOGIN = re.compile(r"^[A-Za-z0-9._@+=-]{1,128}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._+-]{0,62}[A-Za-z0-9])?@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Mailbox:
    """One member's mailbox. Secret fields are references, never values."""

    address: str
    source_secret: SecretRef | None = None
    target_secret: SecretRef | None = None
    canary: bool = False
    notes: str = ""
    line: int = 0
    source_login: str = ""  # empty: the address
    target_login: str = ""

    def login(self, side: str) -> str:
        """The name this member logs in with on ``side`` (the inventory's ``<side>_login``, else the address)."""
        return (self.source_login if side == "source" else self.target_login) or self.address

    def logins_differ(self) -> dict[str, str]:
        """{side: login} where the login is not the address (for reports)."""
        return {side: self.login(side) for side in ("source", "target") if self.login(side) != self.address}

    @property
    def local_part(self) -> str:
        return self.address.split("@", 1)[0]

    def secret_for(self, side: str) -> SecretRef | None:
        return self.source_secret if side == "source" else self.target_secret

    def password(self, side: str) -> Secret:
        """Resolve this mailbox's password on ``side`` ('source' or 'target')."""
        ref = self.secret_for(side)
        if ref is None:
            raise SecretError(f"{self.address}: no {side}_secret in the inventory and the plan's {side} auth is 'password'")
        return resolve(ref)


@dataclass(frozen=True)
class Inventory:
    path: Path
    mailboxes: tuple[Mailbox, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.mailboxes)

    def __iter__(self):
        return iter(self.mailboxes)

    @property
    def canaries(self) -> tuple[Mailbox, ...]:
        return tuple(m for m in self.mailboxes if m.canary)

    def get(self, address: str) -> Mailbox:
        wanted = address.strip().lower()
        for m in self.mailboxes:
            if m.address == wanted:
                return m
        raise InventoryError(self.path, [f"{address} is not in the inventory"])

    def select(self, addresses: Iterable[str] | None) -> tuple[Mailbox, ...]:
        """The named mailboxes (all when ``addresses`` is empty); unknown names are an error, all listed."""
        if not addresses:
            return self.mailboxes
        wanted = [a.strip().lower() for a in addresses]
        known = {m.address: m for m in self.mailboxes}
        missing = [a for a in wanted if a not in known]
        if missing:
            raise InventoryError(self.path, [f"{a} is not in the inventory" for a in missing])
        return tuple(known[a] for a in dict.fromkeys(wanted))


def load_inventory(plan: "Plan") -> Inventory:
    """Load the inventory named by the plan and check it against the plan's domain and auth modes."""
    return read_inventory(
        plan.inventory,
        domain=plan.domain,
        need_source_secret=plan.source.auth.mode == "password",
        need_target_secret=plan.target.auth.mode == "password",
    )


def read_inventory(path: Path, *, domain: str, need_source_secret: bool = True, need_target_secret: bool = True) -> Inventory:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InventoryError(path, ["file not found; the plan's 'inventory' names a CSV with columns " + ", ".join(COLUMNS)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(path, [f"cannot be read ({type(exc).__name__}); save it as UTF-8 CSV"]) from None

    reader = csv.reader(io.StringIO(text, newline=""))
    problems: list[str] = []
    header = next(reader, None)
    if header is None:
        raise InventoryError(path, ["line 1: empty file; the first line must be the header: " + ",".join(COLUMNS)])
    header = [h.strip().lower() for h in header]
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    if unknown or missing:
        if unknown:
            problems.append(f"line 1: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(COLUMNS)}")
        if missing:
            problems.append(f"line 1: missing column(s) {', '.join(missing)}")
        raise InventoryError(path, problems)

    base_dir = path.resolve().parent
    seen: dict[str, int] = {}
    logins: dict[tuple[str, str], tuple[int, str]] = {}  # (side, login lowercased) -> (line, address)
    mailboxes: list[Mailbox] = []
    for row in reader:
        line_no = reader.line_num - row_span(row) + 1  # the line the row starts on (quoted notes may span lines)
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) > len(header):
            problems.append(f"line {line_no}: {len(row)} fields, the header has {len(header)} (a comma inside notes? quote it)")
            continue
        values = dict(zip(header, (c.strip() for c in row)))
        mailbox, row_problems = _parse_row(values, line_no, domain, base_dir, need_source_secret, need_target_secret)
        problems.extend(row_problems)
        if mailbox is None:
            continue
        if mailbox.address in seen:
            problems.append(f"line {line_no}: {mailbox.address} is a duplicate of line {seen[mailbox.address]}")
            continue
        seen[mailbox.address] = line_no
        for side in ("source", "target"):
            key = (side, mailbox.login(side).lower())
            if key in logins:
                other_line, other = logins[key]
                problems.append(f"line {line_no}: {side} login {mailbox.login(side)!r} of {mailbox.address} is also "
                                f"the {side} login of {other} (line {other_line}); each member logs in with its own name")
            else:
                logins[key] = (line_no, mailbox.address)
        mailboxes.append(mailbox)
    if problems:
        raise InventoryError(path, problems)
    if not mailboxes:
        raise InventoryError(path, ["no mailboxes listed"])
    return Inventory(path=path, mailboxes=tuple(mailboxes))


def row_span(row: list[str]) -> int:
    """How many physical lines a parsed row took (line breaks inside quoted fields)."""
    return 1 + sum(field.count("\n") for field in row)


def _parse_row(values: dict[str, str], line_no: int, domain: str, base_dir: Path,
               need_source: bool, need_target: bool) -> tuple[Mailbox | None, list[str]]:
    problems: list[str] = []
    address = values.get("address", "").lower()
    if not address:
        return None, [f"line {line_no}: address is empty"]
    if not _ADDRESS.match(address):
        return None, [f"line {line_no}: {address!r} is not a valid mailbox address"]
    if address.rsplit("@", 1)[1] != domain:
        problems.append(f"line {line_no}: {address} is outside the plan's domain {domain}")

    refs: dict[str, SecretRef | None] = {}
    for column, needed in (("source_secret", need_source), ("target_secret", need_target)):
        raw = values.get(column, "")
        if not raw:
            refs[column] = None
            if needed:
                problems.append(f"line {line_no}: {column} is empty but the plan logs in with each member's password")
            continue
        try:
            refs[column] = parse_ref(raw, base_dir=base_dir)
        except SecretError as exc:
            refs[column] = None
            problems.append(f"line {line_no}: {column}: {exc}")

    login_values: dict[str, str] = {}
    for column in ("source_login", "target_login"):
        raw = values.get(column, "")
        if not raw:
            login_values[column] = ""
            continue
        login_problem = _login_problem(raw)
        if login_problem:
            problems.append(f"line {line_no}: {column} {login_problem}")
            login_values[column] = ""
            continue
        login_values[column] = "" if raw.lower() == address else raw

    canary_raw = values.get("canary", "").lower()
    if canary_raw not in _TRUE | _FALSE:
        problems.append(f"line {line_no}: canary {values.get('canary')!r} is not yes/no")
    mailbox = Mailbox(
        address=address,
        source_secret=refs["source_secret"],
        target_secret=refs["target_secret"],
        canary=canary_raw in _TRUE,
        notes=values.get("notes", ""),
        line=line_no,
        source_login=login_values["source_login"],
        target_login=login_values["target_login"],
    )
    return mailbox, problems


def _login_problem(raw: str) -> str:
    """Why ``raw`` cannot be a login name ('' when it can). Never quotes a value that looks like a secret."""
    scheme = raw.split(":", 1)[0].lower() if ":" in raw else ""
    if scheme in ("env", "file", "prefect"):
        return ("is a secret reference; a login is a name (e.g. the InfoCert User ID), not a secret: put the "
                "name itself, and the password reference in the _secret column")
    bad = sorted({c for c in raw if not _LOGIN.match(c)} - {"."})
    if bad or not _LOGIN.match(raw):
        shown = ", ".join(repr(c) if c.isprintable() and not c.isspace() else f"U+{ord(c):04X}" for c in bad)
        return (f"{raw!r} has character(s) a login name cannot have ({shown or 'too long'}); use letters, digits "
                "and . _ @ + = - only, at most 128")
    return ""
