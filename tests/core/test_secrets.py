"""Secrets resolve from env, files and Prefect blocks, and never show themselves."""

from __future__ import annotations

import logging
import pickle

import pytest

from cutover.errors import SecretError
from cutover.secrets import MASK, Secret, parse_ref, resolve

VALUE = "s3cr3t-Value-42"


def test_env_reference(monkeypatch):
    monkeypatch.setenv("PEC_TEST_PW", VALUE)
    assert resolve("env:PEC_TEST_PW").reveal() == VALUE


def test_env_missing_names_variable_not_value():
    with pytest.raises(SecretError, match="env:PEC_NOT_SET is not set"):
        resolve("env:PEC_NOT_SET", environ={})


def test_file_reference_private_file_trailing_newline_dropped(tmp_path):
    f = tmp_path / "pw"
    f.write_text(VALUE + "\n")
    f.chmod(0o600)
    assert resolve(f"file:{f}").reveal() == VALUE


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_file_readable_by_others_refused(tmp_path, mode):
    f = tmp_path / "pw"
    f.write_text(VALUE)
    f.chmod(mode)
    with pytest.raises(SecretError) as exc:
        resolve(f"file:{f}")
    assert "chmod 600" in str(exc.value) and VALUE not in str(exc.value)


def test_file_missing_and_relative_base(tmp_path):
    with pytest.raises(SecretError, match="does not exist"):
        resolve("file:pw", base_dir=tmp_path)
    assert parse_ref("file:sub/pw", base_dir=tmp_path).target == str(tmp_path / "sub" / "pw")


@pytest.mark.parametrize("text,msg", [("nocolon", "has no scheme"), ("vault:x", "unknown secret scheme 'vault'"), ("env:", "names nothing")])
def test_bad_references(text, msg):
    with pytest.raises(SecretError, match=msg):
        parse_ref(text)


def test_secret_never_shows_itself(caplog):
    """Every way the value could be rendered goes through the Secret's own methods (str, repr, format with and
    without a spec, %-formatting, containers, JSON, logging, a rendered traceback with its locals): none shows it."""
    import json
    import traceback

    s = resolve("env:PEC_TEST_SHOWN", environ={"PEC_TEST_SHOWN": VALUE})
    assert s.reveal() == VALUE  # the value is there, only reveal() gives it
    shown = {
        "str": str(s), "repr": repr(s), "f": f"{s}", "f!r": f"{s!r}", "f spec": f"{s:>40}", "format spec": "{:s}".format(s),
        "%s": "%s" % s, "%-30s": "%-30s" % s, "%r": "%r" % (s,), "list": str([s]), "dict": str({"pw": s}),
        "tuple": repr((s, 1)), "json": json.dumps({"pw": s}, default=str),
    }
    leaked = {how: text for how, text in shown.items() if VALUE in text}
    assert not leaked, f"the value shows through: {sorted(leaked)}"
    assert all(MASK in text for text in shown.values())
    assert "env:PEC_TEST_SHOWN" in repr(s)  # where it came from is shown, the value never

    with caplog.at_level(logging.DEBUG):
        logging.getLogger("cutover.test").info("login with %s / %r / %-20s", s, s, s)
    assert caplog.records and VALUE not in caplog.text

    def fails(password):  # a local holding the secret, as in any login function
        raise RuntimeError("login refused")

    try:
        fails(s)
    except RuntimeError as exc:
        rendered = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
    assert "password = " in rendered and VALUE not in rendered


def test_secret_cannot_be_pickled():
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(VALUE))


@pytest.mark.parametrize("pasted", ["Sup3rS3cret!", "abc:def-secret", "Mario:Rossi1975"])
def test_a_password_pasted_instead_of_a_reference_is_never_echoed(pasted):
    with pytest.raises(SecretError) as exc:
        parse_ref(pasted)
    text = str(exc.value)
    assert "pasted by mistake" in text
    assert pasted not in text and pasted.split(":")[0] not in text and pasted.split(":")[-1] not in text
