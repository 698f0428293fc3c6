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
import difflib
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from eventmicro._errors import JetStreamError, NoResponders, PayloadError, Timeout
from eventmicro.cli.common import connect_options
from eventmicro.cli.text import json_text, printable
from eventmicro.service.client import Client
from eventmicro.service.endpoints import (
    EndpointNotFound,
    RequestInvalid,
    TypeNotInstalled,
    build_request,
    find_endpoint,
    reply_to_json,
    reply_type,
    service_info,
)
from eventmicro.transport import jetstream
from eventmicro.transport.connection import Connection
from eventmicro.wire import binding
from eventmicro.wire.codecs import JSON
from eventmicro.wire.event import Event
from eventmicro.wire.names import check_subject, event_subject
from eventmicro.wire.service_errors import ServiceError
from eventmicro.wire.types import (
    DEFAULT_SCHEMAS,
    SERVICE_FAILED,
    UNKNOWN,
    ToolError,
    load_schemas,
    message_class,
    read_json,
    runner,
    to_message,
)

__all__ = ["add_parser"]

SOURCE: Final = "/eventmicro/cli"
_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
_TYPE_NAME: Final = re.compile(r"[A-Za-z_][\w.]*")

SCHEMAS_VARIABLE: Final = "EVENTMICRO_SCHEMAS"  # default --schemas: packages, comma-separated
NATS_HELP: Final = "NATS: --url, or EVENTMICRO_NATS_URL / NATS_URL and the other EVENTMICRO_NATS_* variables."
EXIT_HELP: Final = (
    "exit: 0 ok, 1 the service answered an error or timed out, 2 bad input or no NATS, 3 unknown"
)
CALL_EXAMPLES: Final = f"""examples:
  eventmicro call orders.place '{{"customerId": "c-1", "items": [{{"sku": "apple", "quantity": 2}}]}}'
  eventmicro call orders.get '{{"orderId": "o-1"}}' --timeout 2
  eventmicro call orders.get @request.json          # the JSON from a file (or - for stdin)
  eventmicro call billing.get_payment '{{"orderId": "o-1"}}' --schemas myshop.schemas --schemas other.protos
  EVENTMICRO_SCHEMAS=myshop.schemas eventmicro call inventory.get_stock '{{"sku": "apple"}}'

The request and reply types come from the endpoint's $SRV.INFO metadata; protobuf types are
looked up in the modules of the schema packages (--schemas, else {SCHEMAS_VARIABLE} with
packages separated by commas, else schemas); a type still missing is looked for in the package
of the current directory its name starts with (order_tracker.v1.Greet: ./order_tracker).
Replies print as JSON.
{EXIT_HELP}.
{NATS_HELP}
"""
PUBLISH_EXAMPLES: Final = f"""examples:
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
    publish.add_argument(
        "--json",
        action="store_true",
        dest="as_json",
        help="print what was published as one JSON object (id, type, subject, stream, seq...)",
    )
    add_common(publish, schemas=True)
    publish.set_defaults(run=runner(_publish))

    from eventmicro.cli import services as _cli_services
    from eventmicro.cli import tail as _cli_tail

    _cli_tail.add_parser(commands)
    _cli_services.add_parser(commands)


def add_common(parser: argparse.ArgumentParser, *, schemas: bool) -> None:
    """The options every tool has: ``--url`` and, where payloads are typed, ``--schemas``."""
    parser.add_argument("--url", default=None, help="NATS URL (default: from the environment)")
    if schemas:
        parser.add_argument(
            "--schemas",
            action=_Packages,
            metavar="PKG",
            default=_env_schemas(),
            help=f"a package of protobuf modules to load, repeatable (default: {SCHEMAS_VARIABLE}, "
            "comma-separated, else schemas)",
        )


class _Packages(argparse._AppendAction):
    """``--schemas``: repeatable; given at all, it replaces the packages of the environment."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


def _env_schemas() -> list[str] | None:
    packages = [p.strip() for p in os.environ.get(SCHEMAS_VARIABLE, "").split(",") if p.strip()]
    return packages or None


def load_type_package(type_name: str, loaded: Sequence[str] | None) -> bool:
    """Load the package of the current directory that ``type_name`` starts with (the layout of
    `eventmicro new`: type ``order_tracker.v1.Greet``, package ``./order_tracker``); whether
    there was one to load. Only the current directory is looked in: a type named by a remote
    service never makes this process import an arbitrary installed module.
    """
    top = type_name.removeprefix("type.googleapis.com/").partition(".")[0]
    if not top.isidentifier() or top in (loaded or DEFAULT_SCHEMAS):
        return False
    if not (Path.cwd() / top / "__init__.py").is_file():
        return False
    load_schemas([top])
    return True


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
            request, returns = _types(value, metadata, args.schemas)
        except TypeNotInstalled as exc:
            raise ToolError(
                f"{printable(exc)}: pass --schemas PACKAGE (or set {SCHEMAS_VARIABLE})", UNKNOWN
            ) from exc
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


def _types(value: Any, metadata: dict[str, Any], schemas: Sequence[str] | None) -> tuple[Any, Any]:
    """The request built from ``value`` and the reply type; a missing type's package is looked
    for once in the current directory (`load_type_package`)."""
    try:
        return build_request(value, metadata), reply_type(metadata)
    except TypeNotInstalled as exc:
        if not load_type_package(exc.name, schemas):
            raise
    return build_request(value, metadata), reply_type(metadata)


# --- publish ------------------------------------------------------------------------------


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
