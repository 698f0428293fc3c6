"""Secret files of ``eventmicro permissions``: nkey seeds kept between runs, written mode 0600.

A seed that exists is kept, so running the command again after a change of code changes only
permissions; ``renew`` (``--rotate``) replaces it. A file is written beside its target and
renamed over it, so a reader never sees half a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventmicro._errors import ConfigurationError
from eventmicro.cli.failures import ToolError
from eventmicro.wire.natsjwt import a_kind, new_seed, public_key

__all__ = ["kept_seed", "write_secret"]


def kept_seed(path: Path, kind: str, *, renew: bool = False) -> str:
    """The nkey seed of ``kind`` (operator, account, user) in ``path``, made there when missing
    or ``renew``. Raises `ToolError` naming the file when it holds no such seed."""
    if renew or not path.exists():
        try:
            write_secret(path, new_seed(kind) + "\n")
        except ConfigurationError as exc:  # nkeys is not installed: the install hint
            raise ToolError(exc.message) from None
    seed = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        public_key(seed, kind)
    except ConfigurationError as exc:
        raise ToolError(
            f"{path} does not hold {a_kind(kind)} nkey seed ({exc.message}); --rotate makes a new one"
        ) from None
    return seed


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600)."""
    fresh = path.with_name(path.name + ".new")
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(text)
    fresh.replace(path)
