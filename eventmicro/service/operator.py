"""Operator mode (decentralized NATS auth): the JWTs and `.creds` of users with `Permissions`.

Static mode (`eventmicro.service.serverconf`) lists every user in nats-server's configuration.
In operator mode the server trusts an operator instead, and a user proves itself with a JWT
its account signed, carrying its permissions; the server holds public JWTs only::

    operator   seed SO...  signs itself and the account JWTs            kept offline by NATS admins
    account    seed SA...  its identity (JetStream enabled), signs none NATS admins
    signing    seed SA...  the account's signing key: its users' JWTs   whoever issues credentials
    SYS        seed SA...  the system account nats-server needs         NATS admins
    <user>     .creds      user JWT (its derived permissions) + seed    that service's instances
    nats-server            operator JWT, system_account, resolver MEMORY with the accounts preloaded

A user's permissions live in its JWT: changing them is issuing a new `.creds` (`user_creds`)
and restarting the service; the server needs no reload. JWT encoding: `eventmicro.wire.natsjwt`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from eventmicro._errors import ConfigurationError
from eventmicro.service.permissions import Permissions
from eventmicro.wire.names import check_service_name
from eventmicro.wire.natsjwt import creds, encode, new_seed, public_key

__all__ = ["SYSTEM_ACCOUNT", "Authority", "account_jwt", "server_config", "user_claims", "user_creds"]

SYSTEM_ACCOUNT: Final = "SYS"
_UNLIMITED: Final = {"subs": -1, "data": -1, "payload": -1}
_ACCOUNT_LIMITS: Final = {
    **_UNLIMITED,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}
_JETSTREAM: Final = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
_RESPONSES: Final = {"max": 1, "ttl": 0}  # answer each request received once (allow_responses)


@dataclass(frozen=True, slots=True)
class Authority:
    """The seeds that sign: the operator's, the system account's and the application account's.

    ``account`` names the application account (its users' account), ``operator`` the operator.
    ``signing_seed``: an account signing key that issues the users' JWTs instead of the
    account's identity key; the account JWT lists it, so a new one (and a server restart)
    invalidates every `.creds` the old one issued, while the account keeps its identity.
    Seeds are secrets: `repr` does not show them.
    """

    operator_seed: str
    system_seed: str
    account_seed: str
    account: str = "APP"
    operator: str = "eventmicro"
    signing_seed: str | None = None

    def __post_init__(self) -> None:
        check_service_name(self.account)
        if self.account == SYSTEM_ACCOUNT:
            raise ConfigurationError(f"{SYSTEM_ACCOUNT} is the system account's name: choose another")
        public_key(self.operator_seed, "operator")
        for seed in (self.system_seed, self.account_seed, self.signing_seed):
            if seed is not None:
                public_key(seed, "account")

    def __repr__(self) -> str:
        return f"Authority(account={self.account!r}, operator={self.operator!r}, seeds hidden)"

    @classmethod
    def new(cls, account: str = "APP", *, operator: str = "eventmicro") -> Authority:
        """An authority with fresh keys, an account signing key among them."""
        seeds = new_seed("operator"), new_seed("account"), new_seed("account")
        return cls(*seeds, account=account, operator=operator, signing_seed=new_seed("account"))

    @property
    def account_key(self) -> str:
        """The application account's public key (``A...``): its name to the server."""
        return public_key(self.account_seed, "account")

    @property
    def system_key(self) -> str:
        return public_key(self.system_seed, "account")


def user_claims(permissions: Permissions) -> dict[str, Any]:
    """The ``nats`` section of ``permissions``' user JWT: pub/sub allow lists, ``resp``.

    An empty allow list would allow everything, so a user that may publish nothing is denied
    ``>`` instead; an administrator has no permissions section (every subject).
    """
    section: dict[str, Any] = dict(_UNLIMITED)
    if permissions.admin:
        return section
    section["pub"] = {"allow": list(permissions.publish)} if permissions.publish else {"deny": [">"]}
    section["sub"] = {"allow": list(permissions.subscribe)} if permissions.subscribe else {"deny": [">"]}
    if permissions.responses:
        section["resp"] = dict(_RESPONSES)
    return section


def user_creds(
    permissions: Permissions, seed: str, authority: Authority, *, expires: int | None = None
) -> str:
    """The `.creds` of ``permissions``' user with nkey ``seed``: a JWT the account signs.

    ``expires``: a Unix time after which the server refuses the JWT (none: it never expires).
    Raises `ConfigurationError` for a seed that is not a user's.
    """
    section = user_claims(permissions)
    if authority.signing_seed is not None:  # the server finds the account by this, then the key
        section["issuer_account"] = authority.account_key
    subject = public_key(seed, "user")
    signer = authority.signing_seed or authority.account_seed
    token = encode("user", section, subject=subject, name=permissions.user, signer=signer, expires=expires)
    return creds(token, seed)


def account_jwt(authority: Authority, *, system: bool = False) -> str:
    """The application account's JWT (JetStream enabled, no limits), or the system account's."""
    seed, name = (
        (authority.system_seed, SYSTEM_ACCOUNT) if system else (authority.account_seed, authority.account)
    )
    limits = _ACCOUNT_LIMITS if system else {**_ACCOUNT_LIMITS, **_JETSTREAM}
    section: dict[str, Any] = {"limits": limits, "default_permissions": {"pub": {}, "sub": {}}}
    if authority.signing_seed is not None and not system:
        section["signing_keys"] = [public_key(authority.signing_seed, "account")]
    subject = public_key(seed, "account")
    return encode("account", section, subject=subject, name=name, signer=authority.operator_seed)


def operator_jwt(authority: Authority) -> str:
    """The operator's self-signed JWT, naming the system account."""
    subject = public_key(authority.operator_seed, "operator")
    section = {"system_account": authority.system_key}
    return encode(
        "operator", section, subject=subject, name=authority.operator, signer=authority.operator_seed
    )


def server_config(authority: Authority, *, header: str = "") -> str:
    """nats-server configuration for operator mode: the operator, the system account, and a
    memory resolver preloaded with both account JWTs (public: no seed is written)."""
    preload: Mapping[str, str] = {
        authority.system_key: account_jwt(authority, system=True),
        authority.account_key: account_jwt(authority),
    }
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [
        f"operator: {json.dumps(operator_jwt(authority))}",
        f"system_account: {json.dumps(authority.system_key)}",
        "resolver: MEMORY",
        "resolver_preload: {",
        *(f"  # {_name(authority, key)}\n  {key}: {json.dumps(token)}" for key, token in preload.items()),
        "}",
    ]
    return "\n".join(lines) + "\n"


def _name(authority: Authority, key: str) -> str:
    return (
        f"account {SYSTEM_ACCOUNT} (system)"
        if key == authority.system_key
        else f"account {authority.account}"
    )
