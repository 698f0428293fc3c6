"""Teams as NATS accounts: which subjects one team's account exports and another imports.

Each team runs its services in an account of its own; nothing crosses accounts unless the
owner exports it and the user imports it. `plan` derives both sides from what services
already declare, so no subject is shared that no one uses::

    account BILLING                                   account SHOP
      billing ── serves billing.get_payment   ◀──────── orders: calls=["billing"]
               exports service  billing.*              imports service billing.*  (to SHOP only)
               exports service  $SRV.<VERB>.billing    imports it: discovery by name
               publishes PaymentCaptured  ─────────▶ orders: @subscribe(PaymentCaptured)
               exports stream   events...PaymentCaptured, imported by SHOP

- a user (service or client) of team A whose publish grant (`calls=`) reaches an endpoint of a
  service of team B: a **service** import of that grant's subject (``billing.*``, or one
  endpoint), and of B's service's ``$SRV.PING/INFO/STATS.<name>[.<id>]`` discovery subjects;
- an event handler of team A whose subject takes in an event type a service of team B
  `publishes`, or the dead letters of one of B's durable handlers: a **stream** import of
  that subject.

One import per call: a grant inside a wider one between the same accounts is left out (a
request matching two service imports reaches the service twice). Subjects keep their names
across the import (no ``to:`` mapping): an endpoint's subject is
already its service's name, an event's subject its type, so ``client.call("billing.x")`` and a
handler of ``PaymentCaptured`` work unchanged in the importing account. Every export names the
accounts that import it, so no other account can. Administrators (`admin`) get imports of
nothing: they see their own account only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from eventmicro._errors import ConfigurationError
from eventmicro.service.declared import Declared
from eventmicro.service.handlers import HandlerKind
from eventmicro.service.permissions import Permissions, for_service
from eventmicro.wire.codecs import type_name_of
from eventmicro.wire.names import check_service_name, dead_letter_subject, event_subject, within

__all__ = ["Account", "Link", "LinkKind", "Team", "plan"]

_DISCOVERY_VERBS = ("PING", "INFO", "STATS")


class LinkKind(enum.Enum):
    """A NATS service export (request-reply) or stream export (messages flow one way)."""

    SERVICE = "service"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class Team:
    """One team: its NATS account, the services it runs and its other users (clients, admins)."""

    account: str
    services: Sequence[Declared] = ()
    users: Sequence[Permissions] = ()


@dataclass(frozen=True, slots=True)
class Link:
    """One subject that account ``exporter`` exports and account ``importer`` imports.

    ``many``: several instances answer one request (``$SRV`` discovery), which nats-server
    passes back only with ``response_type: stream``.
    """

    kind: LinkKind
    subject: str
    exporter: str
    importer: str
    many: bool = False


@dataclass(frozen=True, slots=True)
class Account:
    """An account as nats-server is to be configured: its users, exports and imports."""

    name: str
    users: tuple[Permissions, ...]
    exports: tuple[Link, ...] = field(default=())
    imports: tuple[Link, ...] = field(default=())


def plan(teams: Sequence[Team]) -> list[Account]:
    """The accounts of ``teams``, each with its users' permissions, exports and imports.

    Raises `ConfigurationError` when two teams share an account, a service or a user name, or
    when one grant reaches endpoints of services in two other accounts (nats-server takes one
    import per subject).
    """
    _check_unique(teams)
    endpoints = _endpoints(teams)
    events = _published(teams)
    links: list[Link] = []
    for team in teams:
        links += _service_links(team, endpoints)
        links += _stream_links(team, events)
    links = sorted(_widest(dict.fromkeys(links)), key=lambda link: (link.kind.value, link.many))
    return [
        Account(
            name=team.account,
            users=_users(team),
            exports=tuple(link for link in links if link.exporter == team.account),
            imports=tuple(link for link in links if link.importer == team.account),
        )
        for team in teams
    ]


def _widest(links: Iterable[Link]) -> list[Link]:
    """The links without those another link between the same accounts takes in: nats-server
    hands a request to every service import it matches, so ``billing.get_payment`` imported
    beside ``billing.*`` would run each such call twice."""
    links = list(links)
    return [
        link
        for link in links
        if not any(
            other != link
            and (other.kind, other.exporter, other.importer) == (link.kind, link.exporter, link.importer)
            and within(link.subject, other.subject)
            for other in links
        )
    ]


def _users(team: Team) -> tuple[Permissions, ...]:
    return tuple(for_service(service) for service in team.services) + tuple(team.users)


def _check_unique(teams: Sequence[Team]) -> None:
    """nats-server needs distinct account names and users; a service lives in one account."""
    for what, names in (
        ("account", [check_service_name(team.account) for team in teams]),
        ("service", [service.name for team in teams for service in team.services]),
        ("user", [user.user for team in teams for user in _users(team)]),
    ):
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigurationError(f"more than one {what} named {', '.join(twice)}")


def _endpoints(teams: Sequence[Team]) -> dict[str, tuple[str, str]]:
    """Every endpoint subject (and versioned subject): its (account, service)."""
    owners: dict[str, tuple[str, str]] = {}
    for team in teams:
        for service in team.services:
            for spec in service.handlers:
                if spec.kind is HandlerKind.RPC:
                    for subject in (spec.subject, spec.versioned):
                        if subject is not None:
                            owners[subject] = (team.account, service.name)
    return owners


def _published(teams: Sequence[Team]) -> list[tuple[str, str]]:
    """Every (subject, account) a service of a team publishes on: the event types it declares,
    and the dead letters of its durable handlers (another team may watch them)."""
    published = []
    for team in teams:
        for service in team.services:
            subjects = [event_subject(name) for cls in service.publishes if (name := type_name_of(cls))]
            subjects += [
                dead_letter_subject(service.name, spec.name)
                for spec in service.handlers
                if spec.durable is not None and spec.durable.dead_letter
            ]
            published += [(subject, team.account) for subject in subjects]
    return published


def _service_links(team: Team, endpoints: dict[str, tuple[str, str]]) -> Iterable[Link]:
    """Service imports for the calls of ``team``'s users into other accounts, with discovery."""
    for user in _users(team):
        if user.admin:
            continue
        for grant in user.publish:
            owners = {owner for subject, owner in endpoints.items() if within(subject, grant)}
            owners = {(account, service) for account, service in owners if account != team.account}
            if len({account for account, _ in owners}) > 1:
                raise ConfigurationError(
                    f"{user.user}: {grant!r} reaches services of the accounts "
                    f"{', '.join(sorted({account for account, _ in owners}))}; call them by name"
                )
            for account, service in sorted(owners):
                yield Link(LinkKind.SERVICE, grant, account, team.account)
                yield from _discovery_links(service, account, team.account)


def _discovery_links(service: str, exporter: str, importer: str) -> Iterable[Link]:
    """``$SRV`` discovery of one service by name; the unnamed ``$SRV.PING`` cannot cross (an
    account takes one import per subject, and two accounts importing each other's is a cycle)."""
    for verb in _DISCOVERY_VERBS:
        for subject in (f"$SRV.{verb}.{service}", f"$SRV.{verb}.{service}.*"):
            yield Link(LinkKind.SERVICE, subject, exporter, importer, many=True)


def _stream_links(team: Team, events: list[tuple[str, str]]) -> Iterable[Link]:
    """Stream imports for the event handlers of ``team`` that take in other accounts' events."""
    for service in team.services:
        for spec in service.handlers:
            if spec.kind is HandlerKind.RPC:
                continue
            for subject, account in events:
                if account != team.account and within(subject, spec.subject):
                    yield Link(LinkKind.STREAM, subject, account, team.account)
