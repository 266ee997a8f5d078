"""Inventory validation: every problem reported with its line, nothing accepted half-valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutover.errors import InventoryError
from cutover.inventory import read_inventory

HEADER = "address,source_secret,target_secret,canary,notes\n"


def _inv(tmp_path: Path, body: str, **kw):
    path = tmp_path / "mailboxes.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return read_inventory(path, domain="pec.fnofi.it", **kw)


def _problems(tmp_path: Path, body: str, **kw) -> list[str]:
    with pytest.raises(InventoryError) as exc:
        _inv(tmp_path, body, **kw)
    return exc.value.problems


def test_valid_inventory_resolves_relative_file_refs(tmp_path):
    inv = _inv(tmp_path, "Mario.Rossi@PEC.fnofi.it,file:s/a,env:TGT_PW,yes,note\nb@pec.fnofi.it,env:A,env:B,no,\n")
    assert [m.address for m in inv] == ["mario.rossi@pec.fnofi.it", "b@pec.fnofi.it"]
    first = inv.mailboxes[0]
    assert first.canary and first.source_secret.target == str((tmp_path / "s" / "a").resolve())
    assert first.target_secret.scheme == "env" and first.target_secret.target == "TGT_PW"
    assert len(inv.canaries) == 1


def test_malformed_address_with_line(tmp_path):
    problems = _problems(tmp_path, "ok@pec.fnofi.it,env:A,env:B,no,\nnot-an-address,env:A,env:B,no,\n")
    assert problems == ["line 3: 'not-an-address' is not a valid mailbox address"]


def test_address_outside_domain(tmp_path):
    problems = _problems(tmp_path, "x@gmail.com,env:A,env:B,no,\n")
    assert problems == ["line 2: x@gmail.com is outside the plan's domain pec.fnofi.it"]


def test_duplicates_named_with_both_lines(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,\nb@pec.fnofi.it,env:A,env:B,no,\nA@pec.fnofi.it,env:A,env:B,no,\n")
    assert problems == ["line 4: a@pec.fnofi.it is a duplicate of line 2"]


def test_unknown_secret_scheme(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,vault:x,env:B,no,\n")
    assert len(problems) == 1 and problems[0].startswith("line 2: source_secret: unknown secret scheme 'vault'")


def test_missing_secret_when_password_auth(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,,env:B,no,\n")
    assert problems == ["line 2: source_secret is empty but the plan logs in with each member's password"]
    # with master-user auth on the source the column may be empty
    assert len(_inv(tmp_path, "a@pec.fnofi.it,,env:B,no,\n", need_source_secret=False)) == 1


def test_bad_canary_and_all_problems_at_once(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,env:A,env:B,maybe,\nbad,env:A,env:B,no,\n")
    assert problems == ["line 2: canary 'maybe' is not yes/no", "line 3: 'bad' is not a valid mailbox address"]


def test_bad_header(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("mail,password\nx@pec.fnofi.it,y\n")
    with pytest.raises(InventoryError) as exc:
        read_inventory(path, domain="pec.fnofi.it")
    assert exc.value.problems[0].startswith("line 1: unknown column(s) mail, password")


def test_too_many_fields_hint(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,note, with comma\n")
    assert "quote it" in problems[0] and problems[0].startswith("line 2:")


def test_comments_and_blank_lines_skipped(tmp_path):
    inv = _inv(tmp_path, "# chased by phone\n\na@pec.fnofi.it,env:A,env:B,no,\n")
    assert len(inv) == 1 and inv.mailboxes[0].line == 4


def test_missing_file_and_empty(tmp_path):
    with pytest.raises(InventoryError, match="file not found"):
        read_inventory(tmp_path / "nope.csv", domain="pec.fnofi.it")
    with pytest.raises(InventoryError, match="no mailboxes listed"):
        _inv(tmp_path, "")


def test_select_unknown_addresses_listed(tmp_path):
    inv = _inv(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,\n")
    assert inv.select(["A@pec.fnofi.it"])[0].address == "a@pec.fnofi.it"
    with pytest.raises(InventoryError, match="z@pec.fnofi.it is not in the inventory"):
        inv.select(["z@pec.fnofi.it"])


def test_password_in_the_secret_column_is_not_echoed(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,Sup3rS3cret!,env:B,no,\n")
    assert len(problems) == 1 and problems[0].startswith("line 2: source_secret: not a secret reference")
    assert "Sup3rS3cret" not in problems[0]


def test_quoted_notes_spanning_lines_keep_line_numbers(tmp_path):
    body = 'a@pec.fnofi.it,env:A,env:B,no,"called twice,\nno answer"\nbad,env:A,env:B,no,\n'
    assert _problems(tmp_path, body) == ["line 4: 'bad' is not a valid mailbox address"]
    inv = _inv(tmp_path, 'a@pec.fnofi.it,env:A,env:B,no,"called twice,\nno answer"\n')
    assert inv.mailboxes[0].notes == "called twice,\nno answer" and inv.mailboxes[0].line == 2
