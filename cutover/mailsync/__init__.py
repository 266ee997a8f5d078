"""Bulk mailbox copy: byte-exact, verified, resumable, incremental (see ``_engine`` for the design).

Public API: :func:`copy_mailboxes`, :func:`sync_mailbox`, :class:`MailboxReport`, :class:`CopyReport`,
:class:`ProgressEvent`; the ledger is :class:`cutover.ledger.Ledger`.
"""

from cutover.ledger import Ledger
from cutover.mailsync._engine import copy_mailboxes, sync_mailbox
from cutover.mailsync._folders import Folder, FolderMapError, map_folders, personal_prefix, translate
from cutover.mailsync._imapops import plan_batches
from cutover.mailsync._models import CopyReport, FolderReport, MailboxReport, ProgressEvent

__all__ = ["copy_mailboxes", "sync_mailbox", "MailboxReport", "CopyReport", "FolderReport", "ProgressEvent", "Ledger",
           "Folder", "FolderMapError", "map_folders", "personal_prefix", "translate", "plan_batches"]
