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


LIST_ANSWERS = [
    b'(\\HasNoChildren) "/" "INBOX"', b'(\\HasChildren \\Noselect) "." "Archivio.2021"', b'() "/" Bozze',
    b'(\\HasNoChildren) "/" "Archivio/2023/Societ&AOA- e Comunicazioni"', b'(\\HasNoChildren) NIL "a\\"b\\\\c"',
    b'(\\Sent \\HasNoChildren) "/" "Posta inviata"', b'(\\HasNoChildren) "/" 2021', b'(\\Marked) "/" "&AMA- (1)"',
    (b'(\\HasNoChildren) "/" {5}', b'we"ir'), b'',
]


@pytest.mark.parametrize("folder_encode", [True, False])
def test_the_fast_list_and_status_readers_agree_with_imapclient(folder_encode) -> None:
    """The survey reads LIST and STATUS answers with regular expressions (imapclient's general parser was most
    of an unchanged mailbox's CPU): the rows must be exactly imapclient's, literals included."""
    from types import SimpleNamespace

    from imapclient import IMAPClient

    from cutover.mailsync._survey import _folder_list, _status_items
    client = SimpleNamespace(folder_encode=folder_encode)
    client._proc_folder_list = lambda d: IMAPClient._proc_folder_list(client, d)
    assert _folder_list(client, LIST_ANSWERS) == IMAPClient._proc_folder_list(client, LIST_ANSWERS)
    for said in (b'"INBOX" (UIDVALIDITY 17 UIDNEXT 5 MESSAGES 4)', b' (MESSAGES 4 UIDNEXT 5 UIDVALIDITY 17)',
                 b'Bozze (uidvalidity 17 uidnext 5 messages 4)'):
        items = _status_items(said)
        assert [int(items[k]) for k in (b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES")] == [17, 5, 4], said


def test_status_answers_are_matched_by_the_name_they_carry_not_by_their_order() -> None:
    """A server may run pipelined STATUS commands at once (their answers come in any order): each answer goes
    to the folder it names, a literal name included; a folder without an answer is None (the full path)."""
    from types import SimpleNamespace

    from cutover.mailsync._survey import _statuses_by_name
    said = [b'"Posta inviata" (UIDVALIDITY 9 UIDNEXT 1 MESSAGES 0)', (b'{5}', b'we"ir'),
            b' (UIDVALIDITY 1 UIDNEXT 2 MESSAGES 3)', b'INBOX (MESSAGES 4 UIDNEXT 5 UIDVALIDITY 17)',
            b'"Archivio/2023/Societ&AOA- e \\"C\\"" (UIDVALIDITY 5 UIDNEXT 6 MESSAGES 7)']
    assert _statuses_by_name(SimpleNamespace(folder_encode=True), said) == {
        "Posta inviata": [9, 1, 0], 'we"ir': [1, 2, 3], "INBOX": [17, 5, 4], 'Archivio/2023/Società e "C"': [5, 6, 7]}
