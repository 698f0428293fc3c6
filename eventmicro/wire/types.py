"""Type lookup by name: the installed schema modules loaded, protobuf message types found by full name.

Types are found the way a program without the services' Python code must find them (the CLI,
the gateway, the dashboard): import every module under the schema packages (``schemas`` by
default), then look protobuf full names (or type URLs) up in the default descriptor pool.
Nothing here does I/O beyond importing those modules.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from eventmicro._errors import ConfigurationError
from eventmicro.wire.codecs import TYPE_URL_PREFIX

__all__ = [
    "DEFAULT_SCHEMAS",
    "SchemaPackageError",
    "load_schemas",
    "message_class",
    "message_descriptor",
]

log = logging.getLogger("eventmicro.schemas")

DEFAULT_SCHEMAS: Final = ("schemas",)


class SchemaPackageError(ConfigurationError):
    """A schema package given by name cannot be imported."""


def load_schemas(packages: Sequence[str] | None) -> None:
    """Import every module under ``packages`` (default: ``schemas``, when it is installed).

    A package given explicitly that cannot be imported is a `SchemaPackageError`; a module
    inside it that fails to import is logged and skipped (its types stay unknown).
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
            raise SchemaPackageError(f"cannot import schema package {name!r}: {_one_line(exc)}") from exc
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
    log.warning("schema module %s not loaded: %s", name, _one_line(exc or sys.exc_info()[1]))


def _one_line(exc: BaseException | None) -> str:
    """An import error's text with its whitespace folded into single spaces."""
    return " ".join(str(exc).split())


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
