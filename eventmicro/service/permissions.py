"""Least privilege from declarations: the NATS subjects a service's user needs, and no others.

A service declares what it serves (``@svc.rpc``), consumes (``@svc.subscribe``, durable or
not), publishes (``publishes=``), calls (``calls=``), stores (``stores=``) and the streams it
declares (``streams=``). `for_service` turns that into the `Permissions` of its NATS user::

    subscribe   its endpoints and core event subjects, its $SRV discovery subjects, its own inbox
    publish     the event types it publishes, the endpoints it calls, the JetStream API of its
                own streams, consumers and buckets, its consumers' acks, its dead letters
    responses   replies to the requests it receives (``allow_responses``): no publish on _INBOX

Each user has its own inbox prefix (`inbox_prefix`: ``_INBOX_<user>``), so no service can
subscribe to another's replies. `for_client` does the same for a program that only calls
and publishes (a web front end, the demo's driver). `eventmicro.service.serverconf` writes
them as nats-server configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from eventmicro._errors import ConfigurationError
from eventmicro.service.declared import Declared
from eventmicro.service.durable import handled_bucket
from eventmicro.service.handlers import HandlerKind, HandlerSpec
from eventmicro.wire.codecs import type_name_of
from eventmicro.wire.names import (
    DEAD_LETTER_STREAM,
    check_service_name,
    consumer_name,
    dead_letter_subject,
    event_subject,
    within,
)

__all__ = ["JS_API", "Permissions", "admin", "for_client", "for_service", "inbox_prefix"]

JS_API = "$JS.API"
_DISCOVERY_VERBS = ("PING", "INFO", "STATS")


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one NATS user may publish and subscribe to (subjects, wildcards allowed).

    ``responses``: it may answer the requests it receives (nats-server ``allow_responses``),
    whatever their reply subject. ``inbox`` is the prefix its connection must use for its own
    replies (`eventmicro.ConnectOptions.inbox_prefix`); ``admin`` users may do anything.
    """

    user: str
    inbox: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    responses: bool = True
    admin: bool = False
    comment: str = ""


def inbox_prefix(user: str) -> str:
    """The inbox prefix of ``user``'s connections: ``_INBOX_<user>``."""
    return f"_INBOX_{check_service_name(user)}"


def for_service(service: Declared) -> Permissions:
    """The permissions of ``service``'s NATS user (named like the service)."""
    name = service.name
    publish: list[str] = [subject for target in service.calls for subject in _call_subjects(target)]
    publish += [_event_subject(cls) for cls in service.publishes]
    subscribe: list[str] = [f"{inbox_prefix(name)}.>"]
    subscribe += _discovery(name)
    stores = list(service.stores)
    for stream in service.streams:
        publish += _stream_api(stream.name)
    for spec in service.handlers:
        if spec.kind is HandlerKind.RPC or (spec.durable is None and spec.ordered is None):
            subscribe.append(spec.subject)
            if spec.versioned is not None:
                subscribe.append(spec.versioned)
        elif spec.durable is not None:
            source = spec.durable.stream or _stream_of(service, spec)
            publish += _consumer_api(source, consumer_name(name, spec.name))
            if spec.durable.dead_letter:
                publish.append(dead_letter_subject(name, spec.name))
                publish += _stream_api(DEAD_LETTER_STREAM)
            if spec.durable.idempotent_ttl is not None:
                stores.append(handled_bucket(name, spec.name))
        else:
            assert spec.ordered is not None
            source = spec.ordered.stream or _stream_of(service, spec)
            publish += _ephemeral_consumer_api(source)
    if any(spec.durable is not None or spec.ordered is not None for spec in service.handlers):
        publish.append(f"{JS_API}.STREAM.NAMES")  # a durable handler finds its stream by subject
    for bucket in stores:
        publish += _bucket_api(bucket)
    return Permissions(
        user=name,
        inbox=inbox_prefix(name),
        publish=_unique(publish),
        subscribe=_unique(subscribe),
        comment=f"service {name} {service.version}",
    )


def for_client(
    user: str,
    *,
    calls: Sequence[str] = (),
    publishes: Sequence[type | str] = (),
    discovery: bool = True,
) -> Permissions:
    """The permissions of a program that calls services and publishes events, serving nothing.

    ``calls``: service names or endpoint subjects; ``publishes``: event types (classes or type
    names); ``discovery``: it may send ``$SRV`` requests (list, ping, describe services).
    """
    publish = [subject for target in calls for subject in _call_subjects(target)]
    publish += [_event_subject(cls) for cls in publishes]
    if discovery:
        publish += ["$SRV.*", "$SRV.*.*", "$SRV.*.*.*"]
    return Permissions(
        user=check_service_name(user),
        inbox=inbox_prefix(user),
        publish=_unique(publish),
        subscribe=(f"{inbox_prefix(user)}.>",),
        responses=False,
        comment=f"client {user}",
    )


def admin(user: str) -> Permissions:
    """A user that may publish and subscribe to anything in its account (operators' tools)."""
    return Permissions(
        user=user,
        inbox=inbox_prefix(user),
        publish=(">",),
        subscribe=(">",),
        admin=True,
        comment=f"administrator {user}: every subject of the account",
    )


def _call_subjects(target: str) -> list[str]:
    """A whole service: its default endpoints, of any major (``orders.v2.place``); one
    endpoint: itself and its versioned subjects; any other subject: itself."""
    if "." not in target:
        return [f"{target}.*", f"{target}.*.*"]
    service, _, endpoint = target.partition(".")
    return [target] if "." in endpoint else [target, f"{service}.*.{endpoint}"]


def _event_subject(cls: type | str) -> str:
    name = cls if isinstance(cls, str) else type_name_of(cls)
    if not name:
        raise ConfigurationError(f"publishes: {getattr(cls, '__name__', cls)} has no CloudEvent type")
    return event_subject(name)


def _discovery(name: str) -> list[str]:
    subjects = []
    for verb in _DISCOVERY_VERBS:
        subjects += [f"$SRV.{verb}", f"$SRV.{verb}.{name}", f"$SRV.{verb}.{name}.*"]
    return subjects


def _stream_api(stream: str) -> list[str]:
    """Declaring a stream: look it up, create it, bring its settings up to date."""
    return [f"{JS_API}.STREAM.{verb}.{stream}" for verb in ("INFO", "CREATE", "UPDATE")]


def _consumer_api(stream: str, consumer: str) -> list[str]:
    """One durable pull consumer: create or update it, read it, fetch from it, ack its messages."""
    return [
        f"{JS_API}.CONSUMER.INFO.{stream}.{consumer}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{consumer}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{consumer}.>",  # the filter subject follows the name
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",  # a dead letter keeps the original: read by sequence
        f"$JS.ACK.{stream}.{consumer}.>",
    ]


def _ephemeral_consumer_api(stream: str) -> list[str]:
    """Ephemeral (ordered) consumers on ``stream``: created, read and deleted by the client."""
    return [
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
    ]


def _bucket_api(bucket: str) -> list[str]:
    """A key-value bucket: its stream ``KV_<bucket>`` (created if missing), reads, writes, watches."""
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        *_stream_api(stream),
        f"{JS_API}.DIRECT.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        *_ephemeral_consumer_api(stream)[1:],
    ]


def _stream_of(service: Declared, spec: HandlerSpec) -> str:
    """The declared stream whose subjects take in the handler's subject; ``*`` when none does
    (the consumer's name still limits the grant to this service's own consumer)."""
    for stream in service.streams:
        if any(within(spec.subject, pattern) for pattern in stream.subjects):
            return stream.name
    return "*"


def _unique(subjects: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(subjects))
