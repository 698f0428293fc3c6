"""``eventmicro call``: call a service endpoint with a JSON request, print the reply as JSON.

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
import re
import sys
from collections.abc import Sequence
from typing import Any, Final

from eventmicro._errors import NoResponders, PayloadError, Timeout
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
from eventmicro.cli.failures import SERVICE_FAILED, UNKNOWN, ToolError, runner
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
from eventmicro.wire.service_errors import ServiceError
from eventmicro.wire.types import load_schemas

__all__ = ["register"]

_SERVICE_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
EXIT_HELP: Final = (
    "exit: 0 ok, 1 the service answered an error or timed out, 2 bad input or no NATS, 3 unknown"
)
EXAMPLES: Final = f"""examples:
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


def register(subparsers: Subparsers) -> None:
    """Add ``call`` to the ``eventmicro`` parser."""
    call = subparsers.add_parser(
        "call",
        help="call a service endpoint with a JSON request, print the reply as JSON",
        epilog=EXAMPLES,
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
    add_nats_options(call, schemas=True)
    call.set_defaults(run=runner(_call))


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
