"""``eventmicro tail``: print the CloudEvents on a subject as they arrive, in either mode.

Pretty by default (one header line, then the data as indented JSON), ``--json`` for machines
(one object per line: the attributes, the NATS subject and mode, and the data decoded). A
message that is not a CloudEvent is printed as such, with the reason; it never stops the tail.
Anyone may publish: every text is printed through `printable` / `json_text`, so an escape
sequence in an attribute or in the data shows as ``\\x1b[2J`` instead of clearing the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

from eventmicro._errors import EventMicroError
from eventmicro.cli.common import NATS_HELP, Subparsers, add_nats_options, connection
from eventmicro.cli.failures import ToolError, runner
from eventmicro.cli.text import json_text, printable
from eventmicro.transport.connection import Message
from eventmicro.wire.documents import event_document, foreign_document, one_line, time_text
from eventmicro.wire.types import load_schemas

__all__ = ["register", "render"]

_SUBJECT: Final = re.compile(r"[^\s.]+(\.[^\s.]+)*")
EXAMPLES: Final = f"""examples:
  eventmicro tail                                   # every event (events.>), pretty
  eventmicro tail 'events.shop.orders.>'            # the orders' events
  eventmicro tail orders.place --json               # requests on an endpoint, one JSON per line
  eventmicro tail --count 1 --json                  # wait for one event, print it, exit

Data is shown as JSON when it is JSON, or protobuf of an installed type (--schemas).
{NATS_HELP}
"""


def register(subparsers: Subparsers) -> None:
    """Add ``tail`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "tail",
        help="print the CloudEvents on a subject as they arrive (either mode)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "subject",
        metavar="SUBJECT",
        nargs="?",
        default="events.>",
        help="subject, wildcards allowed (default events.>)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", type=int, default=0, metavar="N", help="exit after N messages")
    add_nats_options(parser, schemas=True)
    parser.set_defaults(run=runner(_tail))


async def _tail(args: argparse.Namespace) -> int:
    if not _SUBJECT.fullmatch(args.subject):
        raise ToolError(f"{args.subject!r} is not a NATS subject")
    if args.count < 0:
        raise ToolError("--count must not be negative")
    load_schemas(args.schemas)
    done = asyncio.Event()
    seen = 0

    async def show(msg: Message) -> None:
        nonlocal seen
        if done.is_set():
            return  # past --count: what was still queued is not printed
        print(render(msg, as_json=args.json), flush=True)
        seen += 1
        if seen == args.count:
            done.set()

    async with connection(args) as conn:
        subscription = await conn.subscribe(args.subject, show)
        print(f"listening on {args.subject} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        await done.wait()  # forever without --count: Ctrl-C ends it
        await subscription.unsubscribe()
    return 0


def render(msg: Message, *, as_json: bool) -> str:
    """One message as text: pretty, or a line of JSON."""
    try:
        document = event_document(msg)
    except (EventMicroError, ValueError, TypeError) as exc:  # not a CloudEvent, or a broken one
        document = foreign_document(msg, one_line(exc))
    if as_json:
        return json_text(document)
    return _pretty(document)


def _pretty(document: dict[str, Any]) -> str:
    data_key = "data" if "data" in document else "data_base64"
    data = document.get(data_key)
    if document.get("cloudevent") is False and "reason" in document:
        head = f"{_now()}  (not a CloudEvent) on {document['nats_subject']}: {document['reason']}"
    else:
        details = [f"source={document.get('source')}", f"id={document.get('id')}"]
        if document.get("subject"):
            details.append(f"subject={document['subject']}")
        details.append(f"on {document['nats_subject']} ({document['mode']})")
        when = document.get("time") or "-"
        head = f"{when}  {document.get('type')}  {'  '.join(details)}"
    head = printable(head)
    if data is None:
        return head
    if data_key == "data_base64":
        size = len(base64.b64decode(data))
        return f"{head}\n  <{size} bytes, base64> {data}"
    if isinstance(data, str):  # text: its own lines, each escaped
        lines = [printable(line) for line in data.split("\n")]
    else:
        lines = json_text(data, indent=2).split("\n")
    return head + "\n" + "\n".join(f"  {line}" for line in lines)


def _now() -> str:
    return time_text(datetime.now(UTC))
