"""Secret references (``env:NAME``, ``file:PATH``, ``prefect:BLOCK``) and a value wrapper that never shows itself.

References are what plans and inventories hold; values are resolved at the last moment with
:func:`resolve` and wrapped in :class:`Secret`, whose ``str``/``repr``/format/pickle never reveal them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from cutover.errors import SecretError

SCHEMES = ("env", "file", "prefect")
# Schemes of other tools that people write by habit: safe to name in an error. Anything else is not echoed.
_FOREIGN_SCHEMES = {"vault", "ansible-vault", "sops", "aws", "gcp", "azure", "k8s", "secret", "pass", "op", "keyring"}
MASK = "**********"


class Secret:
    """A secret value. Only :meth:`reveal` gives the value; everything else prints a mask."""

    __slots__ = ("_value", "_source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self._source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._source or 'value'}={MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # noqa: D401 - pickling would write the value to disk (Prefect results, caches)
        raise TypeError("a Secret cannot be pickled or serialised; pass the reference, resolve it where it is used")


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference: scheme plus target (env var name, file path, Prefect block name)."""

    scheme: str
    target: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"


def parse_ref(text: str, *, base_dir: Path | None = None) -> SecretRef:
    """Parse ``scheme:target``; relative ``file:`` paths are resolved against ``base_dir``."""
    # Never echo the text in these errors: a value pasted where a reference belongs is the secret itself.
    expected = ", ".join(s + ":..." for s in SCHEMES)
    if not isinstance(text, str) or ":" not in text:
        raise SecretError(f"not a secret reference (it has no scheme; it may be a password pasted by mistake: "
                          f"remove it from the file); write one of {expected}")
    scheme, _, target = text.partition(":")
    scheme = scheme.strip().lower()
    target = target.strip()
    if scheme not in SCHEMES:
        shown = f" {scheme!r}" if scheme in _FOREIGN_SCHEMES else ""
        raise SecretError(f"unknown secret scheme{shown} (or a password pasted by mistake: remove it from the file); "
                          f"write one of {expected}")
    if not target:
        raise SecretError(f"secret reference {scheme}: names nothing; write {scheme}:<name>")
    if scheme == "file" and base_dir is not None and not os.path.isabs(target):
        target = str((base_dir / target).resolve())
    return SecretRef(scheme, target)


def resolve(ref: SecretRef | str, *, environ: Mapping[str, str] | None = None, base_dir: Path | None = None) -> Secret:
    """Resolve a reference to its value, wrapped. Errors name the reference, never the value."""
    if isinstance(ref, str):
        ref = parse_ref(ref, base_dir=base_dir)
    if ref.scheme == "env":
        env = os.environ if environ is None else environ
        if ref.target not in env:
            raise SecretError(f"secret env:{ref.target} is not set; export {ref.target} in the environment that runs pec-cutover")
        return Secret(env[ref.target], str(ref))
    if ref.scheme == "file":
        return Secret(_read_secret_file(Path(ref.target)), str(ref))
    return Secret(_read_prefect_block(ref.target), str(ref))


def _read_secret_file(path: Path) -> str:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"secret file:{path} does not exist; create it with mode 600") from None
    except OSError as exc:
        raise SecretError(f"secret file:{path} cannot be read: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"secret file:{path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"secret file:{path} cannot be read: {type(exc).__name__}") from None
    # A trailing newline from an editor is not part of the secret.
    return text.rstrip("\r\n")


def _read_prefect_block(name: str) -> str:
    # Imported here: the core library does not depend on Prefect except to read a Secret block by name.
    try:
        from prefect.blocks.system import Secret as PrefectSecret
    except ImportError:  # pragma: no cover - prefect is a dependency
        raise SecretError(f"secret prefect:{name} needs Prefect installed") from None
    try:
        block = PrefectSecret.load(name)
    except Exception as exc:  # Prefect raises ValueError / ObjectNotFound / httpx errors
        raise SecretError(f"secret prefect:{name} cannot be loaded from Prefect ({type(exc).__name__}); create the Secret block first") from None
    value = block.get()
    if not isinstance(value, str):
        raise SecretError(f"secret prefect:{name} is not a string")
    return value
