"""One error hierarchy for pec-cutover.

Every message says what happened, to what, and what to do. Library errors are mapped to these at the
boundary; the CLI turns any ``CutoverError`` into one line and an exit code.
"""

from __future__ import annotations


class CutoverError(Exception):
    """Base of every error pec-cutover raises on purpose."""

    exit_code = 2


class PlanError(CutoverError):
    """The plan file is missing, unreadable or invalid."""

    def __init__(self, path: object, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path}: " + "; ".join(problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.path}: {self.problems[0]}"
        return f"{self.path}: {len(self.problems)} problems\n" + "\n".join(f"  - {p}" for p in self.problems)


class InventoryError(CutoverError):
    """The mailbox inventory is missing or invalid; nothing runs on an invalid inventory."""

    def __init__(self, path: object, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"{self.path}: {len(self.problems)} problem(s); fix them and run again"
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class SecretError(CutoverError):
    """A secret reference cannot be parsed or resolved (the message never contains the value)."""


class SandboxError(CutoverError):
    """The sandbox could not be set up, started or changed."""


class DeploymentError(CutoverError):
    """A deployment cannot be found, scheduled or served on the Prefect server."""


class OperatorError(CutoverError):
    """An operator is unknown to the plan or did not prove who they are (wrong or expired one-time code)."""


class ServerLockError(CutoverError):
    """The Prefect server would start, or a client would talk to it, without the protection the plan asks for."""


class FreezeError(CutoverError):
    """The change freeze forbids this run (outside the window, or another run holds the freeze)."""


class RollbackDeadlineError(CutoverError):
    """The rollback deadline (plan ``rollback_until``, else the MX switch + 7 days) has passed and no override
    reason was given."""


class LedgerError(CutoverError):
    """The copy ledger is unreadable or inconsistent."""


class MailboxError(CutoverError):
    """A mailbox could not be read, written or verified."""

    reason = "error"
    hint = ""

    def __init__(self, mailbox: str, detail: str, *, server: str = ""):
        self.mailbox = mailbox
        self.detail = detail
        self.server = server
        where = f" on {server}" if server else ""
        text = f"{mailbox}{where}: {detail}"
        if self.hint:
            text += f" ({self.hint})"
        super().__init__(text)


class AuthFailed(MailboxError):
    """The server refused the login."""

    reason = "bad-credentials"
    hint = "password changed, or 2FA still on: ask the member to switch 2FA off and confirm the password"
    # 2FA exists on the source (Aruba: IMAP needs 2FA off or an app password); on the target a refusal means a
    # wrong login name (InfoCert logs mail clients in with the User ID) or password.
    target_hint = ("wrong login name or password: InfoCert-style providers take the User ID, not the address "
                   "(the inventory's target_login); ask the member to confirm the password")

    def __init__(self, mailbox: str, detail: str, *, server: str = "", side: str = "source"):
        self.side = side
        if side == "target":
            self.hint = self.target_hint
        super().__init__(mailbox, detail, server=server)


class TlsFailed(MailboxError):
    """The TLS handshake or certificate verification failed."""

    reason = "tls-failure"
    hint = "check the server name and the CA bundle; TLS verification is never switched off"


class TargetMissing(MailboxError):
    """The mailbox does not exist on the target provider."""

    reason = "target-missing"
    hint = "ask the target provider to create the mailbox"


class QuotaExceeded(MailboxError):
    """The target mailbox has not enough quota for the content."""

    reason = "over-quota"
    hint = "ask the target provider for more quota or the member to archive mail"


class MessageTooLarge(MailboxError):
    """A message is larger than the target accepts."""

    reason = "message-too-large"


class ConnectionLost(MailboxError):
    """The server went away or timed out (retried with backoff before this is raised)."""

    reason = "unreachable"
    hint = "the server went away; run again, the copy resumes where it stopped"


class Throttled(MailboxError):
    """The provider said "too many" or "slow down" (BYE at greeting or login, NO [UNAVAILABLE]/[LIMIT]/[INUSE],
    [THROTTLED], a connection limit): retried with bounded, jittered backoff before this is reported."""

    reason = "throttled"
    hint = ("the provider limits connections or traffic: lower max_connections (or the rate limits) for it in "
            "the plan, or run again later; the copy resumes where it stopped")


class TargetAltersMessages(MailboxError):
    """A message read back from the target differs from the one appended: the target changes messages on APPEND.
    The mailbox stops at the first mismatch and is never appended to again until a repair run."""

    reason = "target-alters"
    hint = ("the target changes messages on APPEND (a header added, a line rewritten): have the provider stop it, "
            "remove the altered copies, then 'pec-cutover copy --repair --reason TEXT'")


class VerificationFailed(MailboxError):
    """Source and target differ after a copy."""

    reason = "not-verified"


class DnsChangeError(CutoverError):
    """A DNS change through Ansible failed (bad key, refused, unreachable)."""


class AnsibleError(CutoverError):
    """ansible-runner could not run a playbook."""


class ClientsError(CutoverError):
    """The PEC clients' switch could not run (no client section, a secret missing, Ansible could not start)."""
