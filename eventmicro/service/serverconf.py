"""nats-server configuration of one account's users and their `Permissions` (static mode).

Every user authenticates with an nkey: the file holds only public keys (``U...``); each
service keeps its own seed. What `render` writes, to be included from nats-server.conf
(``include "accounts.conf"``)::

    accounts {
      SHOP {
        jetstream: enabled
        users: [
          # service billing 1.0.0 (inbox _INBOX_billing)
          {nkey: "UB...", permissions: {
            publish: {allow: ["events.shop.billing.v1.PaymentCaptured", ...]},
            subscribe: {allow: ["_INBOX_billing.>", "billing.get_payment", ...]},
            allow_responses: true}}
        ]
      }
    }
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from eventmicro._errors import ConfigurationError
from eventmicro.service.permissions import Permissions
from eventmicro.wire.names import check_service_name

__all__ = ["render"]


def render(account: str, users: Sequence[tuple[Permissions, str]], *, header: str = "") -> str:
    """The ``accounts`` block for ``account`` with each (permissions, public nkey) user.

    Raises `ConfigurationError` for an account name nats-server would not take, a key that is
    not a user's public nkey, or two users of one name.
    """
    check_service_name(account)
    seen: set[str] = set()
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += ["accounts {", f"  {account} {{", "    jetstream: enabled", "    users: ["]
    for permissions, public_key in users:
        if permissions.user in seen:
            raise ConfigurationError(f"two users are named {permissions.user!r}")
        seen.add(permissions.user)
        if not (public_key.startswith("U") and len(public_key) == 56 and public_key.isalnum()):
            raise ConfigurationError(
                f"user {permissions.user}: {public_key[:8]!r}... is not a user's public nkey"
            )
        lines.append(f"      # {permissions.comment or permissions.user} (inbox {permissions.inbox})")
        if permissions.admin:
            lines.append(f"      {{nkey: {_quoted(public_key)}}}")
            continue
        lines += [
            f"      {{nkey: {_quoted(public_key)}, permissions: {{",
            f"        publish: {_allowed(permissions.publish)},",
            f"        subscribe: {_allowed(permissions.subscribe)},",
            f"        allow_responses: {'true' if permissions.responses else 'false'}}}}}",
        ]
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return json.dumps(text)  # a quoted string is taken literally: "$JS.API..." is no variable


def _allowed(subjects: Sequence[str]) -> str:
    """An allow list; none at all is a deny of everything (an empty allow list allows all)."""
    return f"{{allow: {_list(subjects)}}}" if subjects else '{deny: [">"]}'


def _list(subjects: Sequence[str]) -> str:
    inner = ",\n          ".join(_quoted(s) for s in subjects)
    return f"[\n          {inner}\n        ]"
