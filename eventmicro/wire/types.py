"""What the CLI tools share: expected failures and exit codes, protobuf types, JSON in and out.

Exit codes: 0 done, 1 the service answered an error (or nothing in time), 2 bad usage or
input, or no NATS, 3 no such service, endpoint or type.

Types are found the way a tool without the services' Python code must find them: import every
module under the schema packages (``schemas`` by default), then look protobuf full names up
in the default descriptor pool. Nothing here does I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import json
import logging
import pkgutil
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError, Message

from eventmicro.wire import strictjson as strict_json
from eventmicro.wire.codecs import PROTOBUF, TYPE_URL_PREFIX, is_json_media

__all__ = [
    "DEFAULT_SCHEMAS",
    "ToolError",
    "data_to_json",
    "load_schemas",
    "message_class",
    "message_descriptor",
    "one_line",
    "read_json",
    "runner",
    "to_message",
]

log = logging.getLogger("eventmicro.cli")

DEFAULT_SCHEMAS: Final = ("schemas",)
_PROTOBUF_MEDIA: Final = frozenset({PROTOBUF, "application/x-protobuf", "application/vnd.google.protobuf"})

# exit codes of the tools
SERVICE_FAILED: Final = 1  # the service answered an error, or did not answer in time
BAD_INPUT: Final = 2  # usage, bad JSON, no server
UNKNOWN: Final = 3  # no such service, endpoint or type


class ToolError(Exception):
    """An expected failure of a CLI tool: printed as one line, then exit with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def runner(
    command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """The ``run`` of a subcommand: ``asyncio.run`` it, a `ToolError` becoming one line and its code.

    Errors of the library (`EventMicroError`: no server, bad options) are left to ``_cli.main``.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(command(args))
        except ToolError as exc:
            print(f"eventmicro: error: {exc}", file=sys.stderr)
            return exc.exit_code

    return run


def one_line(text: object) -> str:
    """``text`` with its whitespace (protobuf's multi-line errors) folded into single spaces."""
    return " ".join(str(text).split())


def load_schemas(packages: Sequence[str] | None) -> None:
    """Import every module under ``packages`` (default: ``schemas``, when it is installed).

    A package given explicitly that cannot be imported is a `ToolError`; a module inside it
    that fails to import is logged and skipped (its types stay unknown).
    """
    if str(Path.cwd()) not in sys.path:  # `eventmicro` as an installed script: the project's schemas
        sys.path.append(str(Path.cwd()))
    for name in packages or DEFAULT_SCHEMAS:
        try:
            package = importlib.import_module(name)
        except ImportError as exc:
            if not packages:
                log.debug("no %s package installed: only JSON payloads", name)
                return
            raise ToolError(f"cannot import schema package {name!r}: {one_line(exc)}") from exc
        path = getattr(package, "__path__", None)
        if path is None:
            continue  # a plain module: importing it was all there was to do
        for module in pkgutil.walk_packages(path, f"{name}.", onerror=_skipped):
            if module.name in sys.modules:
                continue
            try:
                importlib.import_module(module.name)
            except Exception as exc:  # any failure only hides that module's types
                _skipped(module.name, exc)


def _skipped(name: str, exc: BaseException | None = None) -> None:
    log.warning("schema module %s not loaded: %s", name, one_line(exc or sys.exc_info()[1]))


def message_descriptor(full_name: str) -> Descriptor | None:
    """The installed protobuf message type ``full_name`` (or a type URL), or ``None``."""
    try:
        return descriptor_pool.Default().FindMessageTypeByName(full_name.removeprefix(TYPE_URL_PREFIX))
    except KeyError:
        return None


def message_class(full_name: str) -> type[Message] | None:
    """The installed protobuf class of ``full_name`` (or of a type URL), or ``None``."""
    descriptor = message_descriptor(full_name)
    return message_factory.GetMessageClass(descriptor) if descriptor is not None else None


def read_json(text: str, what: str) -> Any:
    """Parse the JSON given on the command line (``-``: standard input, ``@FILE``: a file)."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ToolError(f"cannot read {what} from {text[1:]}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ToolError(f"{what} is not valid JSON: {exc}") from exc


def to_message(value: Any, cls: type[Message], what: str) -> Message:
    """Build a protobuf message from parsed JSON (the protobuf JSON mapping; unknown fields fail)."""
    from eventmicro.service.endpoints import RequestInvalid, parse_message  # it builds on this module

    try:
        return parse_message(value, cls, what)
    except RequestInvalid as exc:
        raise ToolError(str(exc)) from exc


def data_to_json(data: Any, content_type: str | None, type_hint: str | None) -> tuple[str, Any]:
    """Event data as ``("data", JSON value)``, or ``("data_base64", text)`` when it has no JSON form.

    Protobuf data is decoded when its type (``type_hint``: the dataschema or event type) is
    installed; JSON content is read strictly (`eventmicro.wire.strictjson`: NaN, duplicate names or deep
    nesting are shown as the bytes they are, never raise or pass for other JSON); text stays text.
    """
    if not isinstance(data, bytes | bytearray):
        return "data", data  # structured mode: already a JSON value
    data = bytes(data)
    if not data:
        return "data", None
    media = content_type.split(";", 1)[0].strip().lower() if content_type else None
    if media in _PROTOBUF_MEDIA:
        cls = message_class(type_hint) if type_hint else None
        if cls is not None:
            try:
                return "data", json_format.MessageToDict(cls.FromString(data))
            except (DecodeError, RuntimeError, ValueError):
                pass  # not that type after all: shown as bytes
        return "data_base64", base64.b64encode(data).decode("ascii")
    if media is None or (content_type is not None and is_json_media(content_type)):
        try:
            return "data", strict_json.loads(data)
        except strict_json.JSONError:
            if media is not None:
                return "data_base64", base64.b64encode(data).decode("ascii")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "data_base64", base64.b64encode(data).decode("ascii")
    if text.isprintable() or (media is not None and media.startswith("text/")):
        return "data", text
    return "data_base64", base64.b64encode(data).decode("ascii")
