"""``eventmicro services [ls|info|stats] [NAME]``: the running services, from ``$SRV``, as tables.

Every instance answers ``$SRV.INFO`` / ``$SRV.STATS`` (ADR-32); answers are collected for
``--window`` seconds, then grouped by service name and version. Foreign services (Go, JS,
nats-py ``micro``) show up too: only the fields ADR-32 requires are relied on, a field of the
wrong shape is shown as missing, and every text is printed through `printable` (anyone can
answer ``$SRV``: an escape sequence in a description must not reach the terminal).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from eventmicro.cli.common import NATS_HELP, Subparsers, add_nats_options, connection
from eventmicro.cli.failures import UNKNOWN, ToolError, runner
from eventmicro.cli.text import json_text, printable
from eventmicro.service.discovery import discover

__all__ = ["register"]

_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
EXAMPLES: Final = f"""examples:
  eventmicro services                     # = services ls: name, version, instances, description
  eventmicro services info orders         # endpoints (subject, queue group, types) and events
  eventmicro services stats               # requests, errors, average time per instance and endpoint
  eventmicro services ls --json           # one JSON object per line (info/stats: the $SRV answers)

{NATS_HELP}
"""


def register(subparsers: Subparsers) -> None:
    """Add ``services`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "services",
        help="list the running services, their endpoints and statistics ($SRV)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "verb", nargs="?", choices=("ls", "info", "stats"), default="ls", help="what to show (default ls)"
    )
    parser.add_argument("name", metavar="NAME", nargs="?", help="only this service")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--window", type=float, default=0.5, metavar="S", help="seconds to collect answers (default 0.5)"
    )
    add_nats_options(parser, schemas=False)
    parser.set_defaults(run=runner(_services))


async def _services(args: argparse.Namespace) -> int:
    if args.name is not None and not _NAME.fullmatch(args.name):
        raise ToolError(f"{args.name!r} is not a service name (letters, digits, '-' and '_')")
    if not args.window > 0:
        raise ToolError("--window must be a positive number of seconds")
    verb = "STATS" if args.verb == "stats" else "INFO"
    async with connection(args) as conn:
        answers = await discover(conn, verb, args.name, window=args.window)
    answers.sort(key=lambda a: (str(a.get("name")), str(a.get("version")), str(a.get("id"))))
    if not answers:
        if args.name:
            raise ToolError(f"no service named {args.name!r} answers", UNKNOWN)
        if not args.json:
            print("no services answer")
        return 0
    if args.verb == "ls":
        summaries = _summaries(answers)
        if args.json:
            _json_lines(summaries)
        else:
            rows = [(s["name"], s["version"], str(s["instances"]), s["description"]) for s in summaries]
            _table([("NAME", "VERSION", "INSTANCES", "DESCRIPTION"), *rows])
    elif args.json:
        _json_lines(answers)
    elif args.verb == "info":
        _info(answers)
    else:
        _stats(answers)
    return 0


def _groups(answers: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for answer in answers:
        groups.setdefault((str(answer.get("name")), str(answer.get("version"))), []).append(answer)
    return groups


def _summaries(answers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "version": version,
            "instances": len(group),
            "description": str(group[0].get("description") or ""),
        }
        for (name, version), group in _groups(answers).items()
    ]


def _info(answers: Sequence[dict[str, Any]]) -> None:
    for index, ((name, version), group) in enumerate(_groups(answers).items()):
        first = group[0]
        description = f"  {first['description']}" if first.get("description") else ""
        if index:
            print()
        _print(f"{name} {version}  ({len(group)} instance(s)){description}")
        rows = [("  ENDPOINT", "SUBJECT", "QUEUE GROUP", "REQUEST", "REPLY")]
        for endpoint in _objects(first.get("endpoints")):
            metadata = _object(endpoint.get("metadata"))
            rows.append(
                (
                    f"  {endpoint.get('name')}",
                    str(endpoint.get("subject")),
                    str(endpoint.get("queue_group") or "-"),
                    str(metadata.get("eventmicro.request", "-")),
                    str(metadata.get("eventmicro.reply", "-")),
                )
            )
        if len(rows) > 1:
            _table(rows)
        else:
            print("  no endpoints")
        metadata = _object(first.get("metadata"))
        for key, label in (("eventmicro.subscribes", "subscribes"), ("eventmicro.publishes", "publishes")):
            if key in metadata:
                _print(f"  {label}: {', '.join(str(metadata.pop(key)).split(','))}")
        for key, value in sorted(metadata.items()):
            _print(f"  {key}: {value}")
        _print(f"  instances: {', '.join(str(a.get('id')) for a in group)}")


def _stats(answers: Sequence[dict[str, Any]]) -> None:
    rows = [("SERVICE", "INSTANCE", "ENDPOINT", "REQUESTS", "ERRORS", "AVERAGE", "LAST ERROR")]
    for answer in answers:
        service, instance = str(answer.get("name")), str(answer.get("id"))
        for endpoint in _objects(answer.get("endpoints")):
            rows.append(
                (
                    service,
                    instance,
                    str(endpoint.get("name")),
                    str(endpoint.get("num_requests", 0)),
                    str(endpoint.get("num_errors", 0)),
                    _duration(endpoint.get("average_processing_time")),
                    _clip(str(endpoint.get("last_error") or "-"), 50),
                )
            )
        events = _object(_object(answer.get("data")).get("events"))
        for handler, value in events.items():
            counts = _object(value)
            rows.append(
                (
                    service,
                    instance,
                    f"{handler} (events)",
                    str(counts.get("received", 0)),
                    str(counts.get("errors", 0)),
                    "-",
                    _clip(str(counts.get("last_error") or "-"), 50),
                )
            )
    _table(rows)


def _duration(nanoseconds: object) -> str:
    if not isinstance(nanoseconds, int | float) or nanoseconds <= 0:
        return "-"
    if nanoseconds < 1_000_000:
        return f"{nanoseconds / 1000:.0f}µs"
    if nanoseconds < 1_000_000_000:
        return f"{nanoseconds / 1_000_000:.1f}ms"
    return f"{nanoseconds / 1_000_000_000:.2f}s"


def _objects(value: object) -> list[dict[str, Any]]:
    """The JSON objects of a list from an answer (anything else: none)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _object(value: object) -> dict[str, Any]:
    """A JSON object from an answer, or ``{}`` when it is something else."""
    return dict(value) if isinstance(value, dict) else {}


def _print(text: str) -> None:
    """One line of text from the answers: control characters (newlines too) escaped."""
    print(printable(text))


def _table(rows: Sequence[Sequence[str]]) -> None:
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _json_lines(documents: Iterable[dict[str, Any]]) -> None:
    for document in documents:
        print(json_text(document))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
