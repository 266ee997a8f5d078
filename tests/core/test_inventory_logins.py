"""Login names in the inventory (issue 10): optional per side, validated, never secrets, defaulting to the address."""

from __future__ import annotations

from pathlib import Path

import pytest

from cutover.errors import InventoryError
from cutover.inventory import read_inventory
from cutover.sandbox._environment import infocert_user_id, write_mailboxes_csv

HEADER = "address,source_secret,target_secret,canary,notes,source_login,target_login\n"


def _inv(tmp_path: Path, body: str):
    path = tmp_path / "mailboxes.csv"
    path.write_text(HEADER + body, encoding="utf-8")
    return read_inventory(path, domain="pec.fnofi.it")


def _problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(InventoryError) as exc:
        _inv(tmp_path, body)
    return exc.value.problems


def test_logins_default_to_the_address_and_differ_only_where_given(tmp_path):
    inv = _inv(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,,,IC1234567\n"
                         "b@pec.fnofi.it,env:A,env:B,no,,B@pec.fnofi.it,\n")
    a, b = inv.mailboxes
    assert (a.login("source"), a.login("target")) == ("a@pec.fnofi.it", "IC1234567")
    assert a.logins_differ() == {"target": "IC1234567"}
    # the address itself (any case) is no different login
    assert (b.login("source"), b.logins_differ()) == ("b@pec.fnofi.it", {})


def test_a_login_two_members_share_on_one_side_is_named_with_both_lines(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,,,IC1234567\n"
                                   "b@pec.fnofi.it,env:A,env:B,no,,,ic1234567\n")
    assert problems == ["line 3: target login 'ic1234567' of b@pec.fnofi.it is also the target login of "
                        "a@pec.fnofi.it (line 2); each member logs in with its own name"]


def test_a_login_equal_to_another_members_address_is_a_duplicate(tmp_path):
    problems = _problems(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,,,\nb@pec.fnofi.it,env:A,env:B,no,,a@pec.fnofi.it,\n")
    assert len(problems) == 1 and problems[0].startswith("line 3: source login 'a@pec.fnofi.it' of b@pec.fnofi.it")


@pytest.mark.parametrize("login, shown", [("IC 1234567", "U+0020"), ('IC"12', "'\"'"), ("IC\\12", "'\\\\'"),
                                          ("mario:rossi", "':'"), ("x" * 129, "too long")])
def test_characters_a_login_cannot_have(tmp_path, login, shown):
    problems = _problems(tmp_path, f'a@pec.fnofi.it,env:A,env:B,no,,,"{login}"\n'.replace('""', '"'))
    assert len(problems) == 1 and problems[0].startswith("line 2: target_login "), problems
    assert shown in problems[0] and "letters, digits" in problems[0]


def test_a_secret_reference_in_a_login_column_is_refused_without_being_read(tmp_path, monkeypatch):
    monkeypatch.setenv("SOME_PASSWORD", "s3cr3t-value")
    problems = _problems(tmp_path, "a@pec.fnofi.it,env:A,env:B,no,,env:SOME_PASSWORD,\n")
    assert len(problems) == 1 and "is a secret reference; a login is a name" in problems[0]
    assert "s3cr3t-value" not in problems[0]


def test_generated_environments_give_every_member_an_infocert_user_id(tmp_path):
    path = tmp_path / "mailboxes.csv"
    write_mailboxes_csv(path, [f"m{i}" for i in range(30)], state=".sandbox", domain="pec.fnofi.it")
    inv = read_inventory(path, domain="pec.fnofi.it")
    ids = [m.login("target") for m in inv]
    assert ids[0] == infocert_user_id(0) and len(set(ids)) == 30
    assert all(i.startswith("IC") and len(i) == 9 and i[2:].isdigit() for i in ids)
    assert all(m.login("source") == m.address and m.login("target") != m.address for m in inv)


def test_the_rehearsal_inventory_logs_in_to_the_target_with_user_ids():
    rehearsal = Path(__file__).resolve().parents[2] / "inventory" / "rehearsal" / "mailboxes.csv"
    inv = read_inventory(rehearsal, domain="pec.fnofi.it")
    assert all(m.login("target").startswith("IC") and m.login("target") != m.address for m in inv)
