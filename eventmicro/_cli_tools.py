"""``eventmicro call`` and ``eventmicro publish``; registers ``tail`` and ``services`` too.

``call`` needs no Python code of the service: it asks ``$SRV.INFO.<service>`` for the
endpoint's subject and request/reply types, finds protobuf types among the installed schema
modules, and sends JSON as it is for endpoints whose types are not protobuf::

    eventmicro call orders.place '{"customerId": "c-1"}'
        $SRV.INFO.orders  ->  endpoint place: subject orders.place,
                              request shop.orders.v1.PlaceOrder, reply shop.orders.v1.OrderAccepted
        JSON -> PlaceOrder -> Client.call("orders.place") -> OrderAccepted -> JSON on stdout

What the service (or anyone answering ``$SRV.INFO``) sent is printed through `printable` /
`json_text`: its control characters show as escapes and never reach the terminal raw.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, Final

from eventmicro import _jetstream as jetstream
from eventmicro import cloudevents_nats as binding
from eventmicro._adapter import Connection
from eventmicro._cli_common import connect_options
from eventmicro._cli_schemas import (
    SERVICE_FAILED,
    UNKNOWN,
    ToolError,
    load_schemas,
    message_class,
    read_json,
    runner,
    to_message,
)
from eventmicro._cli_text import json_text, printable
from eventmicro._client import Client
from eventmicro._codecs import JSON
from eventmicro._endpoints import (
    EndpointNotFound,
    RequestInvalid,
    TypeNotInstalled,
    build_request,
    find_endpoint,
    reply_to_json,
    reply_type,
    service_info,
)
from eventmicro._errors import JetStreamError, NoResponders, PayloadError, Timeout
from eventmicro._event import Event
from eventmicro._names import check_subject, event_subject
from eventmicro._service_errors import ServiceError

__all__ = ["add_parser"]

SOURCE: Final = "/eventmicro/cli"
_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
_TYPE_NAME: Final = re.compile(r"[A-Za-z_][\w.]*")

NATS_HELP: Final = "NATS: --url, or EVENTMICRO_NATS_URL / NATS_URL and the other EVENTMICRO_NATS_* variables."
EXIT_HELP: Final = (
    "exit: 0 ok, 1 the service answered an error or timed out, 2 bad input or no NATS, 3 unknown"
)
CALL_EXAMPLES: Final = f"""examples:
  eventmicro call orders.place '{{"customerId": "c-1", "items": [{{"sku": "apple", "quantity": 2}}]}}'
  eventmicro call orders.get '{{"orderId": "o-1"}}' --timeout 2
  eventmicro call orders.get @request.json          # the JSON from a file (or - for stdin)
  eventmicro call billing.charge '{{}}' --schemas myshop.schemas --schemas other.protos

The request and reply types come from the endpoint's $SRV.INFO metadata; protobuf types are
looked up in the modules of the schema packages (default: schemas). Replies print as JSON.
{EXIT_HELP}.
{NATS_HELP}
"""
PUBLISH_EXAMPLES: Final = f"""examples:
  eventmicro publish shop.orders.v1.OrderCancelled '{{"orderId": "o-1", "reason": "test"}}'
  eventmicro publish shop.orders.v1.OrderPlaced '{{"orderId": "o-2"}}' --durable
  eventmicro publish com.example.note '{{"text": "hi"}}' --subject notes.new --source /me

A TYPE that names an installed protobuf message is sent as protobuf, any other as JSON.
The subject defaults to events.<TYPE>. Prints the event id (and stream and sequence when durable).
{NATS_HELP}
"""


def add_parser(commands: Any) -> None:
    """Add ``call``, ``publish``, ``tail`` and ``services`` to the ``eventmicro`` parser."""
    call = commands.add_parser(
        "call",
        help="call a service endpoint with a JSON request, print the reply as JSON",
        epilog=CALL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("endpoint", metavar="SERVICE.ENDPOINT", help="e.g. orders.place")
    call.add_argument(
        "json",
        metavar="JSON",
        nargs="?",
        default="{}",
        help="the request (default {}); - reads stdin, @FILE a file",
    )
    call.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    add_common(call, schemas=True)
    call.set_defaults(run=runner(_call))

    publish = commands.add_parser(
        "publish",
        help="publish a CloudEvent with JSON data (protobuf when TYPE is an installed message)",
        epilog=PUBLISH_EXAMPLES,
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
    add_common(publish, schemas=True)
    publish.set_defaults(run=runner(_publish))

    from eventmicro import _cli_services, _cli_tail

    _cli_tail.add_parser(commands)
    _cli_services.add_parser(commands)


def add_common(parser: argparse.ArgumentParser, *, schemas: bool) -> None:
    """The options every tool has: ``--url`` and, where payloads are typed, ``--schemas``."""
    parser.add_argument("--url", default=None, help="NATS URL (default: from the environment)")
    if schemas:
        parser.add_argument(
            "--schemas",
            action="append",
            metavar="PKG",
            default=None,
            help="a package of protobuf modules to load, repeatable (default: schemas)",
        )


def connection(args: argparse.Namespace) -> Connection:
    """A connection per ``--url``, with auth and TLS from the ``EVENTMICRO_NATS_*`` environment."""
    return Connection(connect_options(args))


# --- call ---------------------------------------------------------------------------------


async def _call(args: argparse.Namespace) -> int:
    service, _, endpoint = str(args.endpoint).partition(".")
    if not _SERVICE_NAME.fullmatch(service) or not endpoint:
        raise ToolError(f"{args.endpoint!r} is not SERVICE.ENDPOINT (for example orders.place)")
    if not args.timeout > 0:
        raise ToolError("--timeout must be a positive number of seconds")
    value = read_json(args.json, "the request")
    load_schemas(args.schemas)
    async with connection(args) as conn:
        try:
            info = await service_info(conn, service, min(args.timeout, 2.0))
            found = find_endpoint(info, service, endpoint)
            metadata = found.get("metadata") or {}
            request = build_request(value, metadata)
            returns = reply_type(metadata)
        except TypeNotInstalled as exc:
            raise ToolError(f"{printable(exc)}: pass --schemas PACKAGE", UNKNOWN) from exc
        except EndpointNotFound as exc:
            hint = " (eventmicro services ls lists them)" if "answers" in str(exc) else ""
            raise ToolError(f"{printable(exc)}{hint}", UNKNOWN) from exc
        except RequestInvalid as exc:
            raise ToolError(printable(exc)) from exc
        subject = str(found.get("subject") or args.endpoint)
        try:
            reply = await Client(conn, source=SOURCE).call(
                subject, request, returns=returns, timeout=args.timeout
            )
        except ServiceError as error:
            name = error.id.rsplit(".", 1)[-1]
            print(printable(f"error {error.instance_code} {name}: {error.detail}"), file=sys.stderr)
            return SERVICE_FAILED
        except NoResponders as exc:
            raise ToolError(f"nobody serves {printable(subject)} any more", UNKNOWN) from exc
        except Timeout as exc:
            raise ToolError(
                f"{printable(subject)} did not answer within {args.timeout:g}s", SERVICE_FAILED
            ) from exc
        except PayloadError as exc:
            raise ToolError(f"the reply could not be decoded: {printable(exc)}", SERVICE_FAILED) from exc
    print(json_text(reply_to_json(reply), indent=2))
    return 0


# --- publish ------------------------------------------------------------------------------


async def _publish(args: argparse.Namespace) -> int:
    value = read_json(args.json, "the data")
    load_schemas(args.schemas)
    cls = message_class(args.type)
    if cls is not None:
        event = Event.of(to_message(value, cls, "the data"), source=args.source)
    else:
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
            where = f"stream {stored.stream} seq {stored.seq}" + (" (duplicate)" if stored.duplicate else "")
            print(
                printable(f"published {event.get_id()} ({event.get_type()}) on {subject}: stored in {where}")
            )
        else:
            await Client(conn, source=args.source).publish(event, subject=subject)
            print(f"published {event.get_id()} ({event.get_type()}) on {subject}")
    return 0
