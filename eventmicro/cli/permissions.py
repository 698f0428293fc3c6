"""``eventmicro permissions``: least-privilege NATS users for services, from their declarations.

::

    eventmicro permissions subscribers.orders subscribers.billing          # what each may do
    eventmicro permissions subscribers.orders ... --client web=orders --admin ops --out secrets/

    eventmicro permissions --team SHOP=subscribers.orders --team BILLING=subscribers.billing ...

With ``--team`` each team's services get an account of their own, with the exports and imports
their calls and event handlers need (`eventmicro.service.accounts`). With ``--out DIR`` it
writes, for nats-server's static configuration:

    DIR/accounts.conf     the accounts, their users (public nkeys only) and their permissions;
                          include it from nats-server.conf: include "accounts.conf"
    DIR/<user>.nk         each user's nkey seed (mode 0600): the secret its service holds
    DIR/<user>.env        EVENTMICRO_NATS_NKEY_SEED and EVENTMICRO_NATS_INBOX_PREFIX for it

A seed that exists is kept (running again after a change of code changes only permissions);
``--rotate USER`` replaces that user's seed (then reload nats-server). Nothing secret is
printed. ``--operator`` writes operator mode instead (JWTs, ``<user>.creds``: see
`eventmicro.cli.operator`). The model, and both modes, in docs/permissions.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from eventmicro._errors import ConfigurationError, EventMicroError
from eventmicro.cli import operator
from eventmicro.cli.common import Subparsers
from eventmicro.cli.failures import ToolError
from eventmicro.cli.run import load_services
from eventmicro.cli.secrets import kept_seed
from eventmicro.cli.text import printable
from eventmicro.service.accounts import Account, Team, plan
from eventmicro.service.declared import Declared
from eventmicro.service.permissions import Permissions, admin, for_client
from eventmicro.service.serverconf import render, render_accounts
from eventmicro.wire.documents import one_line
from eventmicro.wire.natsjwt import public_key

__all__ = ["register", "user_seed"]

CONFIG_FILE: Final = "accounts.conf"
EXAMPLES: Final = """examples:
  eventmicro permissions subscribers.orders subscribers.billing    # each service's subjects
  eventmicro permissions subscribers.orders subscribers.inventory subscribers.billing \\
      subscribers.notifications subscribers.audit --account SHOP \\
      --client web=orders,inventory --admin ops --out secrets/
  eventmicro permissions subscribers.billing --out secrets/ --rotate billing   # a new key
  eventmicro permissions subscribers.billing --client web=billing --operator --expires-in 90 \\
      --out secrets/     # operator mode: operator.conf (JWTs) and <user>.creds

Then nats-server.conf holds `include "secrets/accounts.conf"` (reload it after a change), and
each service runs with its own secrets/<name>.env (EVENTMICRO_NATS_NKEY_SEED, _INBOX_PREFIX).
exit: 0 ok, 2 bad input.
"""


def register(subparsers: Subparsers) -> None:
    """Add ``permissions`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "permissions",
        help="derive least-privilege NATS users for services (nats-server config and nkeys)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", metavar="MODULE[:ATTR]", nargs="*", help="modules of services (ATTR: svc)")
    parser.add_argument("--account", default="APP", help="the NATS account of these users (default APP)")
    parser.add_argument(
        "--team",
        action="append",
        default=[],
        metavar="ACCOUNT=MODULE,...",
        help="a team's services, in an account of their own (exports and imports derived); repeatable",
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME[@ACCOUNT]=SERVICE,...",
        help="a user that only calls these services (and may discover services); repeatable",
    )
    parser.add_argument(
        "--admin",
        action="append",
        default=[],
        metavar="NAME[@ACCOUNT]",
        help="a user with every subject of its account",
    )
    parser.add_argument(
        "--operator",
        action="store_true",
        help="operator mode: write operator.conf (JWTs, memory resolver) and <user>.creds instead",
    )
    parser.add_argument(
        "--expires-in", type=float, metavar="DAYS", help="with --operator: the users' JWTs expire then"
    )
    parser.add_argument(
        "--new-signing-key",
        action="store_true",
        help="with --operator: a new account signing key; after a reload every older .creds is refused",
    )
    parser.add_argument("--out", metavar="DIR", help="write accounts.conf, <user>.nk and <user>.env there")
    parser.add_argument("--rotate", action="append", default=[], metavar="USER", help="a new seed for USER")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        accounts = _accounts(args)
        users = [user for account in accounts for user in account.users]
        unknown = set(args.rotate) - {user.user for user in users}
        if unknown:
            raise ToolError(f"--rotate: no user named {', '.join(sorted(unknown))}")
        if args.out is None:
            for flag, given in (("--rotate", args.rotate), ("--operator", args.operator)):
                if given:
                    raise ToolError(f"{flag} needs --out (the directory holding the keys)")
            sys.stdout.write(describe_accounts(accounts) if len(accounts) > 1 else describe(users))
            return 0
        written, config, hint = _write(args, accounts, users)
    except ToolError as exc:
        print(f"eventmicro: error: {exc}", file=sys.stderr)
        return exc.exit_code
    for user in users:
        print(f"{user.user}: {written / (user.user + '.env')} ({user.comment})")
    print(f'nats-server.conf: include "{written / config}" (relative to nats-server.conf; {hint})')
    return 0


def _write(
    args: argparse.Namespace, accounts: list[Account], users: list[Permissions]
) -> tuple[Path, str, str]:
    """Write static or operator mode files; the folder, the server's file and what to do next."""
    out, rotate = Path(args.out), set(args.rotate)
    if args.operator:
        if len(accounts) > 1:
            raise ToolError(
                "--operator writes one account: --team (accounts, exports, imports) is static mode only"
            )
        renew = args.new_signing_key
        written = operator.write(
            out, accounts[0].name, users, rotate=rotate, days=args.expires_in, new_signing_key=renew
        )
        return written, operator.CONFIG_FILE, operator.HINT
    if args.expires_in is not None or args.new_signing_key:
        raise ToolError("--expires-in and --new-signing-key need --operator (static users have no JWT)")
    return write(out, args.account, users, rotate=rotate, accounts=accounts), CONFIG_FILE, "then reload"


def _accounts(args: argparse.Namespace) -> list[Account]:
    """The accounts to configure: ``--account`` with the positional modules, one per ``--team``,
    and the clients and administrators placed in them (``NAME@ACCOUNT``)."""
    services: dict[str, list[Declared]] = {args.account: _load(args.targets)}
    for spec in args.team:
        account, sep, modules = spec.partition("=")
        if not sep or not modules:
            raise ToolError(f"--team {spec!r}: give ACCOUNT=MODULE[,MODULE...]")
        services.setdefault(account, []).extend(_load(m for m in modules.split(",") if m))
    others: dict[str, list[Permissions]] = {}
    try:
        for spec in args.client:
            who, sep, calls = spec.partition("=")
            if not sep:
                raise ToolError(
                    f"--client {spec!r}: give NAME=SERVICE[,SERVICE...] (NAME@ACCOUNT=... elsewhere)"
                )
            name, account = _placed(who, args.account)
            others.setdefault(account, []).append(for_client(name, calls=[c for c in calls.split(",") if c]))
        for who in args.admin:
            name, account = _placed(who, args.account)
            others.setdefault(account, []).append(admin(name))
        names = [
            name for name in dict.fromkeys([*services, *others]) if services.get(name) or others.get(name)
        ]
        if not names:
            raise ToolError("give the modules of services, or --team ACCOUNT=MODULE,...")
        return plan([Team(name, services.get(name, []), others.get(name, [])) for name in names])
    except EventMicroError as exc:
        raise ToolError(exc.message) from exc


def _placed(who: str, default: str) -> tuple[str, str]:
    """``NAME@ACCOUNT`` as (name, account); a bare name is in the ``--account`` account."""
    name, _, account = who.partition("@")
    return name, account or default


def _load(targets: Iterable[str]) -> list[Declared]:
    services: list[Declared] = []
    for target in targets:
        try:
            services += load_services(target)
        except ConfigurationError as exc:
            raise ToolError(exc.message) from exc
        except Exception as exc:  # the module failed while importing: one line, no traceback
            raise ToolError(f"cannot load {target}: {type(exc).__name__}: {one_line(exc)}") from exc
    return services


def describe(users: Sequence[Permissions]) -> str:
    """The users and their subjects as text (nothing secret: no keys are made)."""
    lines = []
    for user in users:
        lines.append(f"{user.user}  ({user.comment}; inbox {user.inbox}.>)")
        if user.admin:
            lines.append("  every subject of the account")
        for label, subjects in (("publish", user.publish), ("subscribe", user.subscribe)):
            lines += [f"  {label:9}  {printable(subject)}" for subject in subjects]
        if user.responses:
            lines.append("  respond    to the requests it receives (allow_responses)")
        lines.append("")
    return "\n".join(lines)


def describe_accounts(accounts: Sequence[Account]) -> str:
    """Each account: what it exports to whom, what it imports from whom, then its users."""
    parts = []
    for account in accounts:
        lines = [f"account {account.name}", ""]
        lines += [
            f"  exports {x.kind.value:7}  {printable(x.subject)}  to {x.importer}" for x in account.exports
        ]
        lines += [
            f"  imports {x.kind.value:7}  {printable(x.subject)}  from {x.exporter}" for x in account.imports
        ]
        parts.append("\n".join(lines) + ("\n\n" if len(lines) > 2 else "") + describe(account.users))
    return "\n".join(parts)


def write(
    folder: Path,
    account: str,
    users: Sequence[Permissions],
    *,
    rotate: set[str],
    accounts: Sequence[Account] = (),
) -> Path:
    """Write the configuration (of ``account`` with ``users``, or of ``accounts`` when given),
    each user's seed (kept unless rotated) and env file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        keys = {user.user: user_seed(folder / f"{user.user}.nk", renew=user.user in rotate) for user in users}
        names = ", ".join(a.name for a in accounts) or account
        plural = "s" if len(accounts) > 1 else ""
        header = f"generated by eventmicro permissions for account{plural} {names}; seeds: <user>.nk here"
        if accounts:
            text = render_accounts(accounts, keys, header=header)
        else:
            text = render(account, [(user, keys[user.user]) for user in users], header=header)
        for user in users:
            seed = (folder / f"{user.user}.nk").resolve()
            env = f"EVENTMICRO_NATS_NKEY_SEED={seed}\nEVENTMICRO_NATS_INBOX_PREFIX={user.inbox}\n"
            (folder / f"{user.user}.env").write_text(env, encoding="utf-8")
        (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ToolError(f"cannot write to {folder}: {exc.strerror or exc}") from exc
    except ConfigurationError as exc:
        raise ToolError(exc.message) from exc
    return folder


def user_seed(path: Path, *, renew: bool = False) -> str:
    """The public key of the user nkey whose seed is in ``path``, made there (mode 0600) when
    missing or ``renew``. Needs the ``nkeys`` package (``pip install 'eventmicro[permissions]'``)."""
    try:
        return public_key(kept_seed(path, "user", renew=renew), "user")
    except ConfigurationError as exc:
        raise ToolError(exc.message) from None
