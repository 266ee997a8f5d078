"""The switch as the copy engine sees it: the switch mark (``cutover.switch_mark``) read back from the ledger.

Once an MX change to the target was marked, the members use the target: what they do with a copy there
(delete, move, flag) is theirs. From then on a forward run copies a source message only if the ledger never
copied it (late mail above the source mark, or one the final delta missed below it): a copy the member
deleted or moved is never brought back. A rollback copies back only target messages above the target mark
(what reached the target after the switch), less what this tool put there. ``copy --repair --reason`` lifts
the rule for one run (a full mirror, recorded). Pure reads of the ledger; no IMAP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cutover.ledger import Ledger


@dataclass(frozen=True)
class SwitchView:
    """Whether the switch to the target happened (a mark was taken) and, per side and folder, where it stood."""

    mark: str | None = None  # id of the latest mark before an MX change to the target
    marked: bool = False  # this mailbox's folders were recorded by that mark (it may have failed for one mailbox)
    folders: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (side, folder) -> (UIDVALIDITY, UIDNEXT)

    @property
    def after(self) -> bool:
        """The MX went to the target at some point: the members may have used their copies there."""
        return self.mark is not None

    def above(self, side: str, folder: str, uidvalidity: int, uid: int) -> bool:
        """Message ``uid`` of ``folder`` reached that side after the switch (a folder made since, or whose
        UIDVALIDITY changed since, holds nothing the mark saw)."""
        at = self.folders.get((side, folder))
        return at is None or at[0] != uidvalidity or uid >= at[1]


def switch_view(ledger: Ledger, address: str) -> SwitchView:
    """The latest complete mark before an MX change to the target, as it concerns ``address``."""
    to_target = [m for m in ledger.switch_marks() if m.to_side == "target"]
    if not to_target:
        return SwitchView()
    latest = to_target[-1]
    rows = ledger.switch_mark_folders(latest.mark, address)
    return SwitchView(latest.mark, bool(rows), {(r.side, r.folder): (r.uidvalidity, r.uidnext) for r in rows})
