"""The survey of a mailbox's sessions: NAMESPACE, LIST and STATUS pipelined (one round trip for both sessions,
see ``_plan.map_mailbox``), and their answers read: STATUS matched to its folder by the name it carries (a server
may run pipelined commands at once), LIST and STATUS lines by regular expressions (imapclient's general parser
was most of an unchanged mailbox's CPU), imapclient's parser for anything else (literal names)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, ProtocolError
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.imapclient import as_pairs
from imapclient.response_parser import parse_response

from cutover.mailsync._folders import Folder, from_list
from cutover.mailsync._imapops import _answer, _words, corked


def status(client: IMAPClient, folder: str) -> list[int] | None:
    """(UIDVALIDITY, UIDNEXT, MESSAGES) by STATUS, without selecting the folder."""
    return statuses(client, [folder])[folder]


_STATUS_ITEMS = "(UIDVALIDITY UIDNEXT MESSAGES)"


def statuses(client: IMAPClient, folders: list[str]) -> dict[str, list[int] | None]:
    """{folder: (UIDVALIDITY, UIDNEXT, MESSAGES)} by STATUS for every folder, pipelined: all commands are sent
    at once and the answers read after, one round trip whatever the number of folders (RFC 3501 5.5).

    Every answer is read before a refusal is raised (as ``folder_status`` would), so the session stays in step."""
    client._imap.untagged_responses.pop("STATUS", None)
    with corked(client):
        sent = _send_statuses(client, folders)
    out, refused = _read_statuses(client, sent)
    if refused is not None:
        raise IMAPClientError(refused)
    return out


def _send_statuses(client: IMAPClient, folders: list[str]) -> list[tuple[str, bytes]]:
    imap = client._imap
    return [(folder, imap._command("STATUS", client._normalise_folder(folder), _STATUS_ITEMS)) for folder in folders]


def _read_statuses(client: IMAPClient, sent: list[tuple[str, bytes]]) -> tuple[dict[str, list[int] | None], str | None]:
    """The answers to :func:`_send_statuses`; a refused folder (or one whose answer cannot be read) is None and
    the first refusal's words are returned with them. A server may run pipelined STATUS commands at once, so
    each answer is matched to its folder by the name it carries, never by its place among the others."""
    imap = client._imap
    answers = [(folder, _answer(imap, "STATUS", tag)) for folder, tag in sent]
    seen = _statuses_by_name(client, imap.untagged_responses.pop("STATUS", []))
    if len(answers) == 1 and len(seen) == 1 and answers[0][0] not in seen:
        seen = {answers[0][0]: next(iter(seen.values()))}  # one asked, one answered, under another spelling
    out: dict[str, list[int] | None] = {}
    refused: str | None = None
    for folder, (typ, said) in answers:
        out[folder] = seen.get(folder) if typ == "OK" else None
        if typ != "OK":
            refused = refused or f"status failed: {_words(said)}"
    return out, refused


def _statuses_by_name(client: IMAPClient, data: list) -> dict[str, list[int] | None]:
    """{folder: (UIDVALIDITY, UIDNEXT, MESSAGES)} from untagged STATUS answers (``"name" (items)``, or the name
    as a literal: imaplib keeps ``(b'{n}', name)`` then the rest of the line as the next entry)."""
    out: dict[str, list[int] | None] = {}
    items = iter(data)
    for said in items:
        if isinstance(said, tuple):
            name, rest = said[1], next(items, b"")
        elif isinstance(said, bytes) and (found := _STATUS_NAME.match(said)):
            name, rest = found.group(1), said[found.end(1):]
            name = _unquote(name) if name.startswith(b'"') else name
        else:
            continue
        folder = decode_utf7(name) if client.folder_encode else name.decode("utf-8", "replace")
        try:
            got = _status_items(rest)
            out[folder] = [int(got[b"UIDVALIDITY"]), int(got[b"UIDNEXT"]), int(got[b"MESSAGES"])]
        except (KeyError, TypeError, ValueError, IndexError, ProtocolError):
            out[folder] = None
    return out


_STATUS_NAME = re.compile(rb'\s*("(?:[^"\\]|\\.)*"|[^\s"(){]+)')
_STATUS_TAIL = re.compile(rb"\(([A-Za-z0-9 -]*)\)\s*$")


def _status_items(said) -> dict[bytes, bytes]:
    """{item: value} of one STATUS answer (``"name" (UIDVALIDITY 1 UIDNEXT 5 MESSAGES 4)``): the numbers by a
    regular expression (imapclient's general parser costs a mailbox's survey most of its CPU), the general
    parser for anything else (a name sent as a literal)."""
    if isinstance(said, bytes) and (found := _STATUS_TAIL.search(said)):
        words = found.group(1).split()
        return {words[i].upper(): words[i + 1] for i in range(0, len(words) - 1, 2)}
    return {k.upper() if isinstance(k, bytes) else k: str(v).encode() for k, v in as_pairs(parse_response([said])[-1])}


@dataclass(frozen=True)
class Survey:
    """What one session's first round trip after the login saw: its folders (LIST), its personal namespace
    prefix (NAMESPACE), and (UIDVALIDITY, UIDNEXT, MESSAGES) of the folders asked (None: refused, e.g. gone)."""

    folders: list[Folder]
    prefix: str
    status: dict[str, list[int] | None]


class SurveySent:
    """NAMESPACE, LIST and STATUS of ``status_of`` sent on ``client`` without waiting (RFC 3501 5.5); sent on both
    sessions of a mailbox before either is read, the mailbox's whole survey costs one round trip, both servers
    working at once. :meth:`read` reads every answer before raising a refusal, so the session stays in step."""

    def __init__(self, client: IMAPClient, status_of: list[str]) -> None:
        imap = client._imap
        for name in ("NAMESPACE", "LIST", "STATUS"):
            imap.untagged_responses.pop(name, None)
        self.client = client
        has_namespace = client.has_capability("NAMESPACE")
        with corked(client):
            self._namespace = imap._command("NAMESPACE") if has_namespace else None
            self._list = imap._command("LIST", client._normalise_folder(""), client._normalise_folder("*"))
            self._status = _send_statuses(client, status_of)

    def read(self) -> Survey:
        client, imap = self.client, self.client._imap
        refused: list[str] = []
        prefix = ""
        if self._namespace is not None:
            typ, data = imap._untagged_response(*imap._command_complete("NAMESPACE", self._namespace), "NAMESPACE")
            if typ == "OK":
                prefix = _namespace_prefix(client, data)
            else:
                refused.append(f"namespace failed: {_words(data)}")
        typ, data = imap._untagged_response(*imap._command_complete("LIST", self._list), "LIST")
        folders = from_list(_folder_list(client, data)) if typ == "OK" else []
        if typ != "OK":
            refused.append(f"list failed: {_words(data)}")
        status, _ = _read_statuses(client, self._status)
        if refused:
            raise IMAPClientError(refused[0])
        return Survey(folders, prefix, status)


_LIST_LINE = re.compile(rb'\(([^()]*)\) (NIL|"(?:[^"\\]|\\.)*") ("(?:[^"\\]|\\.)*"|[^\s"(){]+)\s*$', re.I)


def _folder_list(client: IMAPClient, data: list) -> list[tuple]:
    """LIST answers as imapclient's ``list_folders()`` rows (flags, delimiter, name): the usual one-line answers
    by a regular expression, anything else (a name sent as a literal) by imapclient's parser."""
    out: list[tuple] = []
    for item in data:
        if item in (b"", None):
            continue
        found = _LIST_LINE.match(item) if isinstance(item, bytes) else None
        if found is None:
            out.extend(client._proc_folder_list([item]))
            continue
        flags, delim, name = found.groups()
        delim = None if delim.upper() == b"NIL" else _unquote(delim)
        if name.startswith(b'"'):
            name = _unquote(name)
        elif name.isdigit():  # an unquoted number is a name too (imapclient's parser reads it as an int)
            out.append((tuple(flags.split()), delim, name.decode()))
            continue
        out.append((tuple(flags.split()), delim, decode_utf7(name) if client.folder_encode else name))
    return out


def _unquote(quoted: bytes) -> bytes:
    return re.sub(rb"\\(.)", rb"\1", quoted[1:-1])


def _namespace_prefix(client: IMAPClient, data: list) -> str:
    """The personal namespace's prefix from NAMESPACE's answer, as :func:`personal_prefix` reads it."""
    try:
        personal = parse_response(data)[0]
        prefix = personal[0][0] if personal else ""
    except (IndexError, TypeError, ValueError, ProtocolError):
        return ""
    if isinstance(prefix, bytes):
        return decode_utf7(prefix) if client.folder_encode else prefix.decode()
    return str(prefix or "")
