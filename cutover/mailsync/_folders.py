"""Folder names across providers: hierarchy separators, special-use folders, the plan's overrides (pure)."""

from __future__ import annotations

from dataclasses import dataclass

# Special-use folders mapped onto each other (RFC 6154). \All and \Flagged are virtual views on some
# servers (copying them would duplicate every message), so they are never copied.
SPECIAL_USE = ("\\Sent", "\\Trash", "\\Drafts", "\\Junk", "\\Archive")
VIRTUAL = ("\\All", "\\Flagged")
NOT_SELECTABLE = ("\\Noselect", "\\NonExistent")


@dataclass(frozen=True)
class Folder:
    """One folder as LIST shows it (name decoded from modified UTF-7 by imapclient)."""

    name: str
    delimiter: str | None
    flags: frozenset[str] = frozenset()

    @property
    def selectable(self) -> bool:
        return not any(f.lower() in {n.lower() for n in NOT_SELECTABLE} for f in self.flags)

    @property
    def virtual(self) -> bool:
        return any(f.lower() in {n.lower() for n in VIRTUAL} for f in self.flags)

    def special_use(self) -> str | None:
        lowered = {f.lower() for f in self.flags}
        return next((s for s in SPECIAL_USE if s.lower() in lowered), None)

    @property
    def is_inbox(self) -> bool:
        return self.name.upper() == "INBOX"


class FolderMapError(ValueError):
    """Two source folders would land in the same target folder."""


def from_list(listing: list[tuple]) -> list[Folder]:
    """imapclient ``list_folders()`` rows ``(flags, delimiter, name)`` as :class:`Folder`."""
    out = []
    for flags, delim, name in listing:
        d = delim.decode() if isinstance(delim, bytes) else delim
        n = name.decode() if isinstance(name, bytes) else str(name)
        out.append(Folder(n, d, frozenset(f.decode() if isinstance(f, bytes) else str(f) for f in flags)))
    return out


def target_delimiter(target: list[Folder]) -> str:
    return next((f.delimiter for f in target if f.delimiter), "/")


def translate(name: str, source_delim: str | None, target_delim: str) -> str:
    """Re-join a folder path with the target's separator; a target separator inside a part becomes '_'."""
    if name.upper() == "INBOX":
        return "INBOX"
    parts = name.split(source_delim) if source_delim else [name]
    if source_delim != target_delim:
        parts = [p.replace(target_delim, "_") for p in parts]
    if parts and parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return target_delim.join(parts)


def map_folders(source: list[Folder], target: list[Folder], overrides: dict[str, str] | None = None, *,
                source_prefix: str = "", target_prefix: str = "") -> dict[str, str]:
    """Source folder name -> target folder name for every selectable, non-virtual source folder.

    Order of precedence: the plan's override map (target names written with the target's separator),
    INBOX, special-use (a source \\Sent goes to the target's \\Sent whatever its name), then the same path
    re-joined with the target's separator. The personal namespace prefixes (RFC 2342; Courier and Cyrus style
    ``INBOX.``) are taken off the source name and put on the target's. A child of INBOX (``INBOX/x``) goes to
    ``INBOX.x`` on a target whose namespace is ``INBOX.`` (``INBOX.INBOX.x`` only when a source ``x`` takes
    ``INBOX.x`` or the target already has it), and back to the ``INBOX/x`` the target has. Raises
    :class:`FolderMapError` on a collision.
    """
    overrides = overrides or {}
    delim = target_delimiter(target)
    target_special = {f.special_use(): f.name for f in target if f.special_use()}
    on_target = {f.name for f in target}
    mapping: dict[str, str] = {}
    inbox_children: dict[str, tuple[str, str]] = {}  # source name -> (short, long): see below
    for folder in source:
        if not folder.selectable or folder.virtual:
            continue
        if folder.name in overrides:
            mapping[folder.name] = overrides[folder.name]
        elif folder.is_inbox:
            mapping[folder.name] = "INBOX"
        elif folder.special_use() in target_special:
            mapping[folder.name] = target_special[folder.special_use()]
        else:
            name = folder.name
            if source_prefix and name.startswith(source_prefix) and len(name) > len(source_prefix):
                name = name[len(source_prefix):]
            mapped = translate(name, folder.delimiter, delim)
            mapping[folder.name] = target_prefix + mapped if target_prefix and mapped != "INBOX" else mapped
            under_inbox = f"INBOX{delim}"
            if _under_inbox(target_prefix, delim) and mapped.upper().startswith(under_inbox.upper()):
                # A child of INBOX ("INBOX/x") to a target whose personal folders all live under INBOX
                # (Courier's "INBOX."): "INBOX.x" is that child there, not "INBOX.INBOX.x".
                inbox_children[folder.name] = (target_prefix + mapped[len(under_inbox):], mapping[folder.name])
            elif (_under_inbox(source_prefix, folder.delimiter) and not _under_inbox(target_prefix, delim)
                  and mapped.upper() != "INBOX" and mapping[folder.name] not in on_target
                  and f"{under_inbox}{mapped}" in on_target):
                # The way back: Courier's "INBOX.x" goes to the INBOX child "INBOX/x" the target already has
                # (where the forward copy came from), not to a new top-level "x".
                mapping[folder.name] = f"{under_inbox}{mapped}"
    taken = set(mapping.values())
    for name, (short, long) in inbox_children.items():
        # The long name stays where a source folder "x" also claims "INBOX.x" (never merged) or where the
        # target already holds it (an earlier copy put the messages there).
        if short not in taken and long not in on_target:
            mapping[name] = short
            taken.add(short)
    seen: dict[str, str] = {}
    for src, tgt in mapping.items():
        key = "INBOX" if tgt.upper() == "INBOX" else tgt
        if key in seen:
            raise FolderMapError(f"source folders {seen[key]!r} and {src!r} would both go to {tgt!r}; "
                                 "add a folder_map entry to the plan's copy settings")
        seen[key] = src
    return mapping


def _under_inbox(prefix: str, delim: str | None) -> bool:
    """True for a personal namespace that lives under INBOX (Courier's and Cyrus's ``INBOX.``)."""
    return bool(prefix and delim) and prefix.upper() == f"INBOX{delim}"


def personal_prefix(namespace: object) -> str:
    """The personal namespace's prefix from imapclient's ``namespace()`` answer ('' when none or not offered)."""
    try:
        personal = namespace.personal  # type: ignore[attr-defined]
        prefix = personal[0][0] if personal else ""
    except (AttributeError, IndexError, TypeError):
        return ""
    return prefix.decode() if isinstance(prefix, bytes) else str(prefix or "")


def invert(overrides: dict[str, str]) -> dict[str, str]:
    """The override map for the reverse direction (rollback)."""
    return {v: k for k, v in overrides.items()}
