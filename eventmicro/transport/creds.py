"""`.creds` files (operator mode): checked when the options are made, explained when refused.

nats-py reads a `.creds` file only while connecting, and fails on a malformed one with a bare
``TypeError``; a server refuses an expired or foreign user JWT with the same "Authorization
Violation" as a wrong password. `check_creds` turns the first into a `ConfigurationError`
when the options are made; `refusal_hint` says which of the second it is, when it can tell.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from eventmicro._errors import ConfigurationError
from eventmicro.wire.natsjwt import expiry, read_creds

__all__ = ["check_creds", "refusal_hint"]


def check_creds(path: str) -> None:
    """Raise `ConfigurationError` unless ``path`` holds a user JWT and a user seed."""
    try:
        read_creds(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the creds file {path}: {exc.strerror or exc}") from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"creds file {path}: {exc.message}") from None


def refusal_hint(path: str | None) -> str:
    """Why the server may have refused the creds file at ``path``: its JWT expired, or it was
    issued by an account (or operator) this server does not trust; "" without a creds file."""
    if path is None:
        return ""
    try:
        token, _ = read_creds(Path(path).read_text(encoding="utf-8", errors="replace"))
    except (OSError, ConfigurationError):
        return f"; the creds file {path} cannot be read as one"
    expires = expiry(token)
    if expires is not None and expires <= time.time():
        when = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"; the user JWT in {path} expired at {when}: issue new creds"
    return f"; is {path} issued by an account of this server's operator (and not revoked)?"
