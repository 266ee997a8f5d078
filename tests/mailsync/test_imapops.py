"""How a refused APPEND is classified, from the texts servers send (no server needed)."""

from __future__ import annotations

import pytest

from cutover.errors import MailboxError, MessageTooLarge, QuotaExceeded, Throttled
from cutover.mailsync._imapops import MessageRefused, classify_append_failure

TOO_LARGE = [
    b"[TOOBIG] Message too large",
    b"[TOOBIG] Refused",
    b"[LIMIT] Mail size is larger than the maximum size allowed by server configuration (0.001 + 0.000 secs).",
    b"Message size exceeds fixed maximum message size",
    b"[LIMIT] Message is too big",
    b"Literal too large",
    b"APPEND failed: maximum message size is 25 MB",
    b"message exceeds size limit",
]
NOT_TOO_LARGE = {  # issue 10: "slow down" is throttled (retried), a folder/server problem stops the mailbox, the
    # rest is a refusal of that one message (skipped with the server's words)
    b"[LIMIT] Too many commands, slow down": Throttled,
    b"[LIMIT] Rate limit exceeded, try again later": Throttled,
    b"[LIMIT] Too many messages in this mailbox": MessageRefused,
    b"[LIMIT] Connection limit reached": Throttled,
    b"[SERVERBUG] Internal error occurred. Refer to server log for more information.": MailboxError,
    b"[TRYCREATE] Mailbox doesn't exist: Archivio": MailboxError,
    b"Rate limit exceeded (batch size 50)": Throttled,
    b"Invalid keyword $Foo[bar": MessageRefused,
}
QUOTA = [
    b"[OVERQUOTA] Quota exceeded (mailbox for user is full) (0.001 + 0.000 secs).",
    b"[LIMIT] Quota exceeded",
]


def _classify(text: bytes) -> MailboxError:
    return classify_append_failure(text, address="x@pec.it", server="t", folder="INBOX", largest=123)


@pytest.mark.parametrize("text", TOO_LARGE)
def test_toobig_and_explicit_size_wording_mean_too_large(text: bytes) -> None:
    assert type(_classify(text)) is MessageTooLarge


@pytest.mark.parametrize("text, kind", NOT_TOO_LARGE.items())
def test_other_limits_are_not_too_large(text: bytes, kind: type) -> None:
    exc = _classify(text)
    assert type(exc) is kind, exc
    assert text.decode()[:60] in str(exc)  # the server's own words reach the report


@pytest.mark.parametrize("text", QUOTA)
def test_quota_wins(text: bytes) -> None:
    assert type(_classify(text)) is QuotaExceeded
