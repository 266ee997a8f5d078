"""Folder mapping, batching and APPENDUID parsing: pure functions, table-driven."""

from __future__ import annotations

import pytest

from cutover.mailsync import Folder, FolderMapError, map_folders, plan_batches, translate
from cutover.mailsync._imapops import expand_uid_set


def F(name: str, delim: str = "/", *flags: str) -> Folder:
    return Folder(name, delim, frozenset(flags))


@pytest.mark.parametrize("name, src_delim, tgt_delim, expected", [
    ("INBOX", ".", "/", "INBOX"),
    ("inbox", "/", "/", "INBOX"),
    ("Archivio.2023.Società", ".", "/", "Archivio/2023/Società"),
    ("Archivio/2023", "/", ".", "Archivio.2023"),
    ("Fatture 1.2/Gennaio", "/", ".", "Fatture 1_2.Gennaio"),  # the target separator inside a name
    ("INBOX.Clienti", ".", "/", "INBOX/Clienti"),
    ("Piatta", None, "/", "Piatta"),
])
def test_translate(name, src_delim, tgt_delim, expected) -> None:
    assert translate(name, src_delim, tgt_delim) == expected


def test_special_use_goes_to_the_targets_own_name() -> None:
    source = [F("INBOX"), F("Sent Items", "/", "\\Sent"), F("Cestino", "/", "\\Trash"), F("Bozze", "/", "\\Drafts")]
    target = [F("INBOX", "."), F("Posta inviata", ".", "\\Sent"), F("Trash", ".", "\\Trash")]
    assert map_folders(source, target) == {"INBOX": "INBOX", "Sent Items": "Posta inviata", "Cestino": "Trash",
                                           "Bozze": "Bozze"}


def test_overrides_win_and_noselect_and_virtual_are_skipped() -> None:
    source = [F("INBOX"), F("Old", "/"), F("Parent", "/", "\\Noselect"), F("Parent/Child"), F("All Mail", "/", "\\All")]
    target = [F("INBOX")]
    assert map_folders(source, target, {"Old": "Archivio/Old"}) == {
        "INBOX": "INBOX", "Old": "Archivio/Old", "Parent/Child": "Parent/Child"}


def test_collision_is_refused() -> None:
    source = [F("A.B", "/"), F("A_B", "/")]  # on a '.' target, "A.B" becomes "A_B"
    with pytest.raises(FolderMapError, match="folder_map"):
        map_folders(source, [F("INBOX", ".")])
    # sanity: the same names with distinct targets pass
    assert map_folders([F("A", "/"), F("B", "/")], [F("INBOX", "/")]) == {"A": "A", "B": "B"}


def test_a_child_of_inbox_to_a_courier_namespace_is_a_child_of_inbox_there_and_back() -> None:
    """Dovecot ("" and "/") to Courier ("INBOX." and "."): INBOX/x is INBOX.x there, never INBOX.INBOX.x; the
    way back finds the INBOX/x it came from."""
    dovecot = [F("INBOX"), F("INBOX/x"), F("INBOX/x/y"), F("Archivio")]
    courier = [F("INBOX", ".")]
    forward = map_folders(dovecot, courier, target_prefix="INBOX.")
    assert forward == {"INBOX": "INBOX", "INBOX/x": "INBOX.x", "INBOX/x/y": "INBOX.x.y", "Archivio": "INBOX.Archivio"}
    after = [F(name, ".") for name in forward.values()] + [F("INBOX.nuova", ".")]  # one made after the switch
    assert map_folders(after, dovecot, source_prefix="INBOX.") == {
        "INBOX": "INBOX", "INBOX.x": "INBOX/x", "INBOX.x.y": "INBOX/x/y", "INBOX.Archivio": "Archivio",
        "INBOX.nuova": "nuova"}


def test_a_child_of_inbox_keeps_the_long_name_when_the_short_one_is_taken_or_already_there() -> None:
    both = [F("INBOX"), F("x"), F("INBOX/x")]  # two folders: "x" takes INBOX.x, nothing is merged
    forward = map_folders(both, [F("INBOX", ".")], target_prefix="INBOX.")
    assert forward == {"INBOX": "INBOX", "x": "INBOX.x", "INBOX/x": "INBOX.INBOX.x"}
    assert map_folders([F(n, ".") for n in forward.values()], both, source_prefix="INBOX.") == {
        "INBOX": "INBOX", "INBOX.x": "x", "INBOX.INBOX.x": "INBOX/x"}
    # a target where an earlier copy already made INBOX.INBOX.x: the messages stay where they are
    assert map_folders([F("INBOX"), F("INBOX/x")], [F("INBOX", "."), F("INBOX.INBOX.x", ".")],
                       target_prefix="INBOX.") == {"INBOX": "INBOX", "INBOX/x": "INBOX.INBOX.x"}


@pytest.mark.parametrize("sizes, max_messages, max_bytes, expected", [
    ({1: 10, 2: 10, 3: 10}, 2, 1000, [[1, 2], [3]]),
    ({1: 600, 2: 600, 3: 100}, 10, 1000, [[1], [2, 3]]),
    ({1: 5000, 2: 10}, 10, 1000, [[1], [2]]),  # a message larger than a batch goes alone
    ({}, 10, 1000, []),
])
def test_plan_batches(sizes, max_messages, max_bytes, expected) -> None:
    assert plan_batches(sorted(sizes), sizes, max_messages, max_bytes) == expected


@pytest.mark.parametrize("text, expected", [("5", [5]), ("5:7", [5, 6, 7]), ("5:6,9,11:12", [5, 6, 9, 11, 12])])
def test_expand_uid_set(text, expected) -> None:
    assert expand_uid_set(text) == expected
