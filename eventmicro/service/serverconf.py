"""nats-server configuration of accounts' users and their `Permissions` (static mode).

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

`render_accounts` writes several accounts (teams, `eventmicro.service.accounts`) the same way,
each with its ``exports`` (open only to the accounts that import them) and ``imports``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from eventmicro._errors import ConfigurationError
from eventmicro.service.accounts import Account, Link, LinkKind
from eventmicro.service.permissions import Permissions
from eventmicro.wire.names import check_service_name

__all__ = ["render", "render_accounts"]


def render(account: str, users: Sequence[tuple[Permissions, str]], *, header: str = "") -> str:
    """The ``accounts`` block for ``account`` with each (permissions, public nkey) user.

    Raises `ConfigurationError` for an account name nats-server would not take, a key that is
    not a user's public nkey, or two users of one name.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += ["accounts {", *_account(account, users, set()), "}"]
    return "\n".join(lines) + "\n"


def render_accounts(accounts: Sequence[Account], keys: Mapping[str, str], *, header: str = "") -> str:
    """The ``accounts`` block of several accounts (teams), their exports and imports;
    ``keys``: each user's public nkey by user name. Raises `ConfigurationError` as `render`."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("accounts {")
    seen: set[str] = set()
    for account in accounts:
        try:
            users = [(user, keys[user.user]) for user in account.users]
        except KeyError as exc:
            raise ConfigurationError(f"account {account.name}: no key for user {exc.args[0]}") from None
        block = _account(account.name, users, seen)
        lines += [*block[:-1], *_exports(account.exports), *_imports(account.imports), block[-1]]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _account(account: str, users: Sequence[tuple[Permissions, str]], seen: set[str]) -> list[str]:
    """One account's lines, from its name to its closing brace; ``seen``: user names so far."""
    check_service_name(account)
    lines = [f"  {account} {{", "    jetstream: enabled", "    users: ["]
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
    return [*lines, "    ]", "  }"]


def _exports(links: Sequence[Link]) -> list[str]:
    """Each exported subject once, open only to the accounts that import it."""
    importers: dict[tuple[LinkKind, str, bool], list[str]] = {}
    for link in links:
        importers.setdefault((link.kind, link.subject, link.many), []).append(link.importer)
    if not importers:
        return []
    lines = ["    exports: ["]
    for (kind, subject, many), accounts in importers.items():
        response = ", response_type: stream" if many else ""
        names = ", ".join(_quoted(name) for name in sorted(set(accounts)))
        lines.append(f"      {{{kind.value}: {_quoted(subject)}{response}, accounts: [{names}]}}")
    return [*lines, "    ]"]


def _imports(links: Sequence[Link]) -> list[str]:
    """Each imported subject under its own name (no ``to:``: subjects mean the same everywhere)."""
    if not links:
        return []
    lines = ["    imports: ["]
    for link in links:
        source = f"account: {_quoted(link.exporter)}, subject: {_quoted(link.subject)}"
        lines.append(f"      {{{link.kind.value}: {{{source}}}}}")
    return [*lines, "    ]"]


def _quoted(text: str) -> str:
    return json.dumps(text)  # a quoted string is taken literally: "$JS.API..." is no variable


def _allowed(subjects: Sequence[str]) -> str:
    """An allow list; none at all is a deny of everything (an empty allow list allows all)."""
    return f"{{allow: {_list(subjects)}}}" if subjects else '{deny: [">"]}'


def _list(subjects: Sequence[str]) -> str:
    inner = ",\n          ".join(_quoted(s) for s in subjects)
    return f"[\n          {inner}\n        ]"
