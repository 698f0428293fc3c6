"""Names and subjects: service names and versions (ADR-32), endpoint and event subjects.

==========================  ========================================================
what                        rule
==========================  ========================================================
service name                ``[A-Za-z0-9_-]+`` (ADR-32)
service version             SemVer 2.0 (``1.0.0``, ``1.0.0-rc.1+b5``; not ``1.0``)
RPC endpoint subject        ``<service>.<endpoint>``; queue group: the service name
event subject               ``events.<type>`` (``events.shop.orders.v1.OrderPlaced``)
event handler queue group   ``<service>.<handler>``; none with ``Broadcast()``
durable consumer            ``<service>-<handler>``, shared by the service's instances
dead-letter subject         ``deadletter.<service>.<handler>``, in stream ``DEADLETTERS``
==========================  ========================================================
"""

from __future__ import annotations

import re
from typing import Final

from eventmicro._errors import ConfigurationError

__all__ = [
    "DEAD_LETTER_PREFIX",
    "DEAD_LETTER_STREAM",
    "EVENT_PREFIX",
    "MAX_SUBJECT_LENGTH",
    "check_handler_name",
    "check_service_name",
    "check_subject",
    "check_version",
    "consumer_name",
    "dead_letter_subject",
    "endpoint_subject",
    "event_subject",
    "major_of",
    "versioned_subject",
    "within",
]

EVENT_PREFIX: Final = "events"
DEAD_LETTER_PREFIX: Final = "deadletter"
DEAD_LETTER_STREAM: Final = "DEADLETTERS"
_NAME: Final = re.compile(r"[A-Za-z0-9\-_]+")
# The official regex from semver.org.
_SEMVER: Final = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_TOKEN: Final = re.compile(r"[\x21-\x7e]+")
# characters (ASCII: bytes) of a subject. nats-server cuts a client whose protocol line is longer
# than its max_control_line (4 KiB), and nats-py then closes the connection for good: one event
# type of 5,000 characters sent to the gateway left it without NATS until restarted.
MAX_SUBJECT_LENGTH: Final = 1024


def check_service_name(name: str) -> str:
    """Return ``name`` if ADR-32 allows it; raise `ConfigurationError` otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"service name {name!r} may use only letters, digits, '-' and '_' (ADR-32)")
    return name


def check_handler_name(name: str) -> str:
    """Return an endpoint or handler name usable in subjects and queue groups."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"handler name {name!r} may use only letters, digits, '-' and '_'")
    return name


def check_version(version: str) -> str:
    """Return ``version`` if it is SemVer 2.0; raise `ConfigurationError` otherwise."""
    if not isinstance(version, str) or not _SEMVER.fullmatch(version):
        raise ConfigurationError(f"service version {version!r} is not SemVer (for example '1.0.0')")
    return version


def check_subject(subject: str, *, wildcards: bool = False) -> str:
    """Return a valid NATS subject; raise `ConfigurationError` otherwise."""
    if isinstance(subject, str) and len(subject) > MAX_SUBJECT_LENGTH:
        raise ConfigurationError(
            f"a NATS subject is at most {MAX_SUBJECT_LENGTH} characters, not {len(subject):,}"
        )
    tokens = subject.split(".") if isinstance(subject, str) else [""]
    last = len(tokens) - 1
    for i, part in enumerate(tokens):
        wildcard = wildcards and (part == "*" or (part == ">" and i == last))
        if not wildcard and (not _TOKEN.fullmatch(part) or "*" in part or ">" in part):
            raise ConfigurationError(f"{subject!r} is not a valid NATS subject")
    if subject.startswith("$SRV"):
        raise ConfigurationError("subjects starting with $SRV are reserved for discovery")
    return subject


def endpoint_subject(service: str, endpoint: str) -> str:
    """The default subject of an RPC endpoint."""
    return f"{service}.{endpoint}"


def versioned_subject(service: str, major: int, endpoint: str) -> str:
    """The subject of an RPC endpoint served by the instances of one major version only
    (``orders.v2.place``); the unversioned `endpoint_subject` reaches every version."""
    return f"{service}.v{major}.{endpoint}"


def major_of(version: str) -> int:
    """The major number of a semantic version: ``2`` for ``"2.1.0"``."""
    return int(version.split(".", 1)[0])


def event_subject(event_type: str) -> str:
    """The default subject of an event type."""
    return f"{EVENT_PREFIX}.{event_type}"


def consumer_name(service: str, handler: str) -> str:
    """The durable consumer of a durable event handler, shared by the service's instances."""
    return f"{service}-{handler}"


def dead_letter_subject(service: str, handler: str) -> str:
    """Where the dead letters of one durable handler are stored."""
    return f"{DEAD_LETTER_PREFIX}.{service}.{handler}"


def within(subject: str, scope: str) -> bool:
    """Whether every subject that ``subject`` matches is matched by ``scope`` too.

    >>> within("events.shop.>", "events.>"), within("events.>", "events.*"), within("a.b", "events.>")
    (True, False, False)
    """
    parts, allowed = subject.split("."), scope.split(".")
    for i, part in enumerate(allowed):
        if part == ">":
            return len(parts) > i
        if i >= len(parts) or parts[i] == ">" or part not in ("*", parts[i]):
            return False
    return len(parts) == len(allowed)
