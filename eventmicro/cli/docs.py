"""``eventmicro docs``: the AsyncAPI 3.0 document of services, from their module or from ``$SRV.INFO``.

::

    eventmicro docs subscribers.orders                 # the module's `svc` (MODULE[:ATTR])
    eventmicro docs --discover orders billing          # the running services, via $SRV.INFO

From a module the document is complete; from discovery, payload types are the protobuf types
installed here (``--schemas``), other types are described as any JSON (see `eventmicro.docs.asyncapi`).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from pathlib import Path
from typing import Any, Final

from eventmicro._errors import ConfigurationError
from eventmicro.cli.common import NATS_HELP, Subparsers, add_nats_options, connect_options, connection
from eventmicro.cli.failures import UNKNOWN, ToolError, runner
from eventmicro.cli.run import load_services
from eventmicro.cli.text import json_text, printable
from eventmicro.docs.asyncapi import asyncapi_for_services, asyncapi_from_discovery
from eventmicro.service.discovery import discover
from eventmicro.service.service import Service
from eventmicro.wire.documents import one_line
from eventmicro.wire.types import load_schemas

__all__ = ["register"]

_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
EXAMPLES: Final = f"""examples:
  eventmicro docs subscribers.orders                          # AsyncAPI JSON of the module's `svc`
  eventmicro docs subscribers.orders subscribers.billing -o shop.asyncapi.yaml --format yaml
  eventmicro docs myapp.services:services --server nats://nats.internal:4222
  eventmicro docs --discover --url nats://127.0.0.1:4222      # every running service
  eventmicro docs --discover orders --schemas myshop.schemas  # one service; its protobuf types

The document follows AsyncAPI 3.0.0: channels are NATS subjects, RPC endpoints are operations
with a reply (including the reply schema), messages are CloudEvents (ce-* headers).
exit: 0 ok, 2 bad input or no NATS, 3 no such service.
{NATS_HELP}
"""


def register(subparsers: Subparsers) -> None:
    """Add ``docs`` to the ``eventmicro`` parser."""
    parser = subparsers.add_parser(
        "docs",
        help="print the AsyncAPI 3.0 document of services (from a module, or --discover)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "targets",
        metavar="MODULE[:ATTR] | SERVICE",
        nargs="*",
        help="modules of services (ATTR default: svc); with --discover, service names (default: all)",
    )
    parser.add_argument("--discover", action="store_true", help="describe the running services ($SRV.INFO)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the document to FILE (default: stdout)")
    parser.add_argument("--format", choices=("json", "yaml"), default="json", help="default json")
    parser.add_argument("--title", help="the document's title (default: the service's name)")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="NATS URL(s) for `servers` (default: --url; with --discover, the URL used)",
    )
    parser.add_argument(
        "--window", type=float, default=0.5, metavar="S", help="--discover: seconds to collect answers (0.5)"
    )
    add_nats_options(parser, schemas=True)
    parser.set_defaults(run=runner(_docs))


async def _docs(args: argparse.Namespace) -> int:
    dump = _dumper(args.format)  # before any work: a missing PyYAML fails at once
    if args.discover:
        document = await _discovered(args)
    else:
        if not args.targets:
            raise ToolError("give MODULE[:ATTR] (for example subscribers.orders), or --discover")
        services = [service for target in args.targets for service in _services(target)]
        try:
            document = asyncapi_for_services(services, title=args.title, server=args.server or args.url)
        except ValueError as exc:
            raise ToolError(f"--server: {exc}") from exc
    text = dump(document)
    if args.output:
        try:
            await asyncio.to_thread(Path(args.output).write_text, text, encoding="utf-8")
        except OSError as exc:
            raise ToolError(f"cannot write {args.output}: {exc.strerror}") from exc
    else:
        sys.stdout.write(text)
    return 0


def _services(target: str) -> list[Service]:
    try:
        return load_services(target)
    except ConfigurationError as exc:
        raise ToolError(exc.message) from exc
    except Exception as exc:  # the module itself failed while importing: one line, no traceback
        raise ToolError(f"cannot load {target}: {type(exc).__name__}: {one_line(exc)}") from exc


async def _discovered(args: argparse.Namespace) -> dict[str, Any]:
    for name in args.targets:
        if not _NAME.fullmatch(name):
            raise ToolError(f"{name!r} is not a service name (letters, digits, '-' and '_')")
    if not args.window > 0:
        raise ToolError("--window must be a positive number of seconds")
    load_schemas(args.schemas)
    async with connection(args) as conn:
        answers = []
        for name in args.targets or [None]:
            found = await discover(conn, "INFO", name, window=args.window)
            if name is not None and not found:
                raise ToolError(f"no service named {name!r} answers", UNKNOWN)
            answers.extend(found)
    if not answers:
        raise ToolError("no services answer", UNKNOWN)
    server = args.server or ",".join(connect_options(args).servers)
    try:
        return asyncapi_from_discovery(answers, title=args.title, server=server)
    except ValueError as exc:
        raise ToolError(f"--server: {exc}") from exc


def _dumper(kind: str) -> Any:
    """The document as text that is safe to print: with --discover its names, descriptions and
    metadata are whatever a service answered, control and bidi characters included."""
    if kind == "json":
        return lambda document: json_text(document, indent=2) + "\n"  # escaped, the same JSON value
    try:
        import yaml
    except ImportError:
        raise ToolError("--format yaml needs PyYAML: pip install pyyaml") from None

    def dump(document: Any) -> str:
        text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=110)
        if printable(text, keep_newlines=True) != text:  # YAML writes C1 and bidi controls raw
            text = yaml.safe_dump(document, sort_keys=False, allow_unicode=False, width=110)  # all escaped
        return text

    return dump
