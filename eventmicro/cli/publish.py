"""``eventmicro publish``: publish a CloudEvent with JSON data (protobuf when TYPE is an installed message).

The data is given as JSON; when ``TYPE`` names a protobuf message among the installed schema
modules, it is built as that message (the protobuf JSON mapping; unknown fields fail) and sent
as protobuf, else it goes out as JSON, with a warning naming a near miss among the loaded types.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from typing import Any, Final

from google.protobuf.message import Message as ProtobufMessage

from eventmicro._errors import JetStreamError
from eventmicro.cli.common import (
    NATS_HELP,
    SCHEMAS_VARIABLE,
    SOURCE,
    Subparsers,
    add_nats_options,
    connection,
    load_type_package,
    read_json,
)
from eventmicro.cli.failures import SERVICE_FAILED, ToolError, runner
from eventmicro.cli.text import json_text, printable
from eventmicro.service.client import Client
from eventmicro.service.endpoints import RequestInvalid, parse_message
from eventmicro.transport import jetstream
from eventmicro.wire import binding
from eventmicro.wire.event import Event
from eventmicro.wire.media import JSON
from eventmicro.wire.names import check_subject, event_subject
from eventmicro.wire.types import load_schemas, message_class

__all__ = ["register", "to_message"]

EXAMPLES: Final = f"""examples:
  eventmicro publish shop.orders.v1.OrderCancelled '{{"orderId": "o-1", "reason": "test"}}'
  eventmicro publish shop.orders.v1.OrderPlaced '{{"orderId": "o-2"}}' --durable
  eventmicro publish com.example.note '{{"text": "hi"}}' --subject notes.new --source /me
  eventmicro publish shop.orders.v1.OrderCancelled '{{"orderId": "o-3"}}' --json   # what was sent, as JSON

A TYPE that names an installed protobuf message is sent as protobuf, any other as JSON (with a
warning on stderr: a protobuf type whose module is not loaded would go out as JSON too).
Types are found as for call: --schemas, {SCHEMAS_VARIABLE}, schemas, or the package of the
current directory the TYPE starts with. The subject defaults to events.<TYPE>.
Prints the event id (and stream and sequence when durable); --json prints one JSON object.
{NATS_HELP}
"""


def register(subparsers: Subparsers) -> None:
    """Add ``publish`` to the ``eventmicro`` parser."""
    publish = subparsers.add_parser(
        "publish",
        help="publish a CloudEvent with JSON data (protobuf when TYPE is an installed message)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    publish.add_argument("type", metavar="TYPE", help="the CloudEvent type, e.g. shop.orders.v1.OrderPlaced")
    publish.add_argument(
        "json",
        metavar="JSON",
        nargs="?",
        default="{}",
        help="the data (default {}); - reads stdin, @FILE a file",
    )
    publish.add_argument("--subject", help="NATS subject (default: events.<TYPE>)")
    publish.add_argument("--source", default=SOURCE, help=f"CloudEvent source (default {SOURCE})")
    publish.add_argument("--durable", action="store_true", help="wait until a JetStream stream stored it")
    publish.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for --durable")
    publish.add_argument(
        "--json",
        action="store_true",
        dest="as_json",
        help="print what was published as one JSON object (id, type, subject, stream, seq...)",
    )
    add_nats_options(publish, schemas=True)
    publish.set_defaults(run=runner(_publish))


def to_message(value: Any, cls: type[ProtobufMessage], what: str) -> ProtobufMessage:
    """Build a protobuf message from parsed JSON (the protobuf JSON mapping; unknown fields fail)."""
    try:
        return parse_message(value, cls, what)
    except RequestInvalid as exc:
        raise ToolError(str(exc)) from exc


async def _publish(args: argparse.Namespace) -> int:
    value = read_json(args.json, "the data")
    load_schemas(args.schemas)
    cls = message_class(args.type)
    if cls is None and load_type_package(args.type, args.schemas):
        cls = message_class(args.type)
    if cls is not None:
        event = Event.of(to_message(value, cls, "the data"), source=args.source)
    else:
        _warn_not_installed(args.type)
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        event = Event.create(type=args.type, source=args.source, data=body, datacontenttype=JSON)
    subject = check_subject(args.subject or event_subject(event.get_type()))
    async with connection(args) as conn:
        if args.durable:
            wire = binding.to_binary(event, None)
            msg_id = jetstream.message_id(event.get_source(), event.get_id())
            try:
                stored = await jetstream.publish(
                    conn, subject, wire.data, wire.headers, msg_id=msg_id, timeout=args.timeout
                )
            except JetStreamError as exc:  # NotStored among them: no stream took it
                raise ToolError(str(exc), SERVICE_FAILED) from exc
            if args.as_json:
                stream = {"stream": stored.stream, "seq": stored.seq, "duplicate": stored.duplicate}
                print(json_text(_published(event, subject, cls is not None) | stream))
                return 0
            where = f"stream {stored.stream} seq {stored.seq}" + (" (duplicate)" if stored.duplicate else "")
            print(
                printable(f"published {event.get_id()} ({event.get_type()}) on {subject}: stored in {where}")
            )
        else:
            await Client(conn, source=args.source).publish(event, subject=subject)
            if args.as_json:
                print(json_text(_published(event, subject, cls is not None)))
                return 0
            print(f"published {event.get_id()} ({event.get_type()}) on {subject}")
    return 0


def _published(event: Event, subject: str, protobuf: bool) -> dict[str, Any]:
    return {
        "id": event.get_id(),
        "type": event.get_type(),
        "source": event.get_source(),
        "subject": subject,
        "datacontenttype": event.get_attributes().get("datacontenttype"),
        "encoding": "protobuf" if protobuf else "json",
    }


def _warn_not_installed(type_name: str) -> None:
    """One line on stderr: the data goes out as JSON; a near miss among the loaded types is named."""
    near = difflib.get_close_matches(type_name, _loaded_message_types(), n=1, cutoff=0.8)
    hint = f" (did you mean {near[0]}?)" if near else ""
    print(
        f"eventmicro: warning: {printable(type_name)} is not an installed protobuf type{hint}; "
        f"sending the data as JSON (--schemas PKG or {SCHEMAS_VARIABLE} loads a type's package)",
        file=sys.stderr,
    )


def _loaded_message_types() -> list[str]:
    """The full names of the protobuf messages of every generated module imported so far."""
    names: list[str] = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "DESCRIPTOR", None) if name.endswith("_pb2") else None
        for message in getattr(file, "message_types_by_name", {}).values():
            names.append(message.full_name)
    return names
