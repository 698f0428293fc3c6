"""The codec registry: the codec each Python type selects, and what is dispatched through it.

A type's codec is found once and then read from a dict; `encode_payload` and `decode_payload`
go through it, and so do the CloudEvent type name, ``dataschema`` and media type of a class.

Codecs are asked newest first: a codec registered by an application wins over the built-in
ones for the types it claims. Registering or unregistering clears every per-type cache.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar, cast

from google.protobuf.message import DecodeError

from eventmicro._errors import ConfigurationError, PayloadDecodeError, PayloadEncodeError, UnexpectedType
from eventmicro.wire import media
from eventmicro.wire.codecs.base import Codec, Payload, declared_type_name, python_names, type_names
from eventmicro.wire.codecs.protobuf import _proto_meta, _proto_targets, serialize
from eventmicro.wire.convert import title

__all__ = [
    "TypeRegistry",
    "codec_for",
    "codec_for_target",
    "dataschema_of",
    "decode_payload",
    "encode_payload",
    "media_type_of",
    "media_type_of_label",
    "python_type_name",
    "register_codec",
    "registered_codecs",
    "type_name_of",
    "unregister_codec",
    "wire_type_name",
]

T = TypeVar("T")
Encoder = Callable[[Any], Payload]
Decoder = Callable[[Any, str | None, Any, str | None], Any]

_PROTOBUF: Final = media.PROTOBUF
_CACHED: Final = 4096  # classes and targets remembered per cache (then it starts over)

# The protobuf codec's caches, read on the hot path like the binding's (a name bound by an import
# would cost an attribute lookup per call, hence the bound methods).
_proto_meta_of: Final = _proto_meta.get  # a protobuf class written before -> (full name, dataschema)
_proto_target_of: Final = _proto_targets.get  # a protobuf class read before -> its dataschema
_codecs: list[Codec] = []  # in registration order; asked last first
_encoders: dict[type, Encoder] = {}  # the class of a value -> its codec's encode
_decoders: dict[Any, Decoder] = {}  # a target type -> its codec's decode
_classes: dict[type, Codec | None] = {}  # a class -> the codec that writes its values, if any


def register_codec(codec: Codec) -> None:
    """Add ``codec``; it is asked before every codec registered earlier. Its name must be new."""
    for known in _codecs:
        if known is codec or known.name == codec.name:
            raise ConfigurationError(f"a codec named {codec.name!r} is already registered")
    _codecs.append(codec)
    _forget()


def unregister_codec(codec: Codec) -> None:
    """Remove ``codec`` (registered before); the types it claimed go back to the others."""
    if not any(known is codec for known in _codecs):
        raise ConfigurationError(f"the codec {codec.name!r} is not registered")
    _codecs[:] = [known for known in _codecs if known is not codec]
    _forget()


def registered_codecs() -> tuple[Codec, ...]:
    """The registered codecs, in the order they are asked (the last registered first)."""
    return tuple(reversed(_codecs))


def _forget() -> None:
    for cache in (_encoders, _decoders, _classes, _proto_meta, _proto_targets, type_names, python_names):
        cache.clear()


def codec_for(cls: type) -> Codec | None:
    """The codec that writes values of ``cls``, or ``None`` if none does."""
    try:
        return _classes[cls]
    except KeyError:
        pass
    found = next((codec for codec in reversed(_codecs) if codec.encodes(cls)), None)
    if len(_classes) >= _CACHED:
        _classes.clear()
    _classes[cls] = found
    return found


def codec_for_target(target: object) -> Codec | None:
    """The codec that reads data into ``target`` (a class or an annotation), or ``None``."""
    return next((codec for codec in reversed(_codecs) if codec.decodes(target)), None)


# --- encoding and decoding ----------------------------------------------------------------


def encode_payload(value: object) -> Payload:
    """Encode a value with the codec its type selects (see `eventmicro.wire.codecs`)."""
    meta = _proto_meta_of(value.__class__)
    if meta is not None:  # a protobuf class written before (only its codec fills the cache)
        return Payload(serialize(value), _PROTOBUF, meta[0], meta[1])  # type: ignore[arg-type]
    encode = _encoders.get(value.__class__)
    if encode is None:
        encode = _encoder(value.__class__)
    return encode(value)


def _encoder(cls: type) -> Encoder:
    codec = codec_for(cls)
    encode = _no_codec if codec is None else codec.encode
    if len(_encoders) >= _CACHED:
        _encoders.clear()
    _encoders[cls] = encode
    return encode


def _no_codec(value: object) -> Payload:
    raise PayloadEncodeError(
        f"no codec for {type(value).__name__}: use a protobuf message, a dataclass, a pydantic model, "
        "a dict or list, bytes or str"
    )


def decode_payload(
    data: Any,
    content_type: str | None,
    target: type[T],
    *,
    dataschema: str | None = None,
) -> T:
    """Decode event data into ``target`` with the codec the target selects.

    ``data`` is what the binding delivered: raw ``bytes`` (binary mode, or ``data_base64``)
    or an already-parsed JSON value / string (structured mode).

    Raises `ContentTypeMismatch`, `UnexpectedType` (wrong ``dataschema``) or
    `PayloadDecodeError`.
    """
    if content_type == _PROTOBUF and data.__class__ is bytes:  # a protobuf target read before?
        full_name = _proto_target_of(target)
        if full_name is not None and (dataschema is None or dataschema == full_name):
            message = target()
            try:
                message.ParseFromString(data)  # type: ignore[attr-defined]
            except (DecodeError, RuntimeError, ValueError) as exc:
                raise PayloadDecodeError(
                    target.DESCRIPTOR.full_name,  # type: ignore[attr-defined]
                    "the body is not a valid protobuf message",
                ) from exc
            return message
    try:
        decode = _decoders[target]
    except KeyError:
        decode = _decoder(target)
    except TypeError:  # an unhashable annotation: not cached
        decode = _decoder(target, remember=False)
    return cast(T, decode(data, content_type, target, dataschema))


def _decoder(target: object, *, remember: bool = True) -> Decoder:
    codec = codec_for_target(target)
    decode = _no_reader if codec is None else codec.decode
    if remember:
        if len(_decoders) >= _CACHED:
            _decoders.clear()
        _decoders[target] = decode
    return decode


def _no_reader(data: Any, content_type: str | None, target: Any, dataschema: str | None) -> Any:
    raise PayloadDecodeError(title(target), "no codec reads this type")


# --- what a class's codec says about it ---------------------------------------------------


def type_name_of(value_or_type: object) -> str | None:
    """The CloudEvent type of a payload value or class, if it defines one: the one its codec
    fixes (a protobuf message's full name), else its ``@event_type``."""
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    try:
        return type_names[cls]
    except KeyError:
        pass
    codec = codec_for(cls)
    name = None if codec is None else codec.type_name(cls)
    if name is None:
        name = declared_type_name(cls)
    if len(type_names) >= _CACHED:
        type_names.clear()
    type_names[cls] = name
    return name


def python_type_name(value_or_type: object) -> str:
    """The CloudEvent type of a value or class, falling back to ``<module>.<qualname>``.

    Used for RPC requests and replies, whose types need no registration.
    """
    cls = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    name = python_names.get(cls)
    if name is None:
        name = type_name_of(cls) or f"{cls.__module__}.{cls.__qualname__}"
        if len(python_names) >= _CACHED:
            python_names.clear()
        python_names[cls] = name
    return name


def wire_type_name(cls: object) -> str:
    """How an error reply names a request or event type: its CloudEvent type, a class's own
    name, else its JSON shape (``an object``) — never a Python module path or builtin.

    >>> wire_type_name(dict)
    'an object'
    """
    return type_name_of(cls) or title(cls)


def dataschema_of(cls: type) -> str | None:
    """The ``dataschema`` values of ``cls`` carry (a protobuf message's type URL), or ``None``."""
    codec = codec_for(cls)
    return None if codec is None else codec.dataschema(cls)


def media_type_of(cls: type) -> str:
    """The content type values of ``cls`` are written in (JSON for a class no codec writes)."""
    codec = codec_for(cls)
    return media.JSON if codec is None else codec.media_type


def media_type_of_label(label: str) -> str:
    """The content type of a payload type named in ``$SRV.INFO`` metadata (``builtins.str``): for
    a builtin type, the media type of the codec that reads it; JSON for any other name."""
    module, _, name = label.partition(".")
    cls = getattr(builtins, name, None) if module == "builtins" and name.isidentifier() else None
    codec = codec_for_target(cls) if isinstance(cls, type) else None
    return media.JSON if codec is None else codec.media_type


# --- CloudEvent types to classes ----------------------------------------------------------


class TypeRegistry:
    """Maps CloudEvent types to Python types, for handlers that receive several types.

    >>> registry = TypeRegistry()
    >>> registry.register(dict, "com.example.raw")
    >>> registry.lookup("com.example.raw")
    <class 'dict'>
    """

    def __init__(self, types_: Iterable[type] = ()) -> None:
        self._types: dict[str, type] = {}
        for cls in types_:
            self.register(cls)

    def register(self, cls: type, name: str | None = None) -> None:
        """Register ``cls`` under ``name`` (default: its protobuf full name or ``@event_type``)."""
        name = name or type_name_of(cls)
        if not name:
            raise ValueError(
                f"{cls.__name__} has no CloudEvent type: pass a name or decorate it with @event_type"
            )
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"event type {name!r} is already registered to {existing.__name__}")
        self._types[name] = cls

    def lookup(self, name: str) -> type | None:
        """The Python type registered for a CloudEvent type, or ``None``."""
        return self._types.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Every registered CloudEvent type, sorted."""
        return tuple(sorted(self._types))

    def decode(
        self, type_name: str, data: Any, content_type: str | None, dataschema: str | None = None
    ) -> object:
        """Decode data of CloudEvent type ``type_name`` into its registered Python type.

        Raises `UnexpectedType` for a type nobody registered.
        """
        cls = self._types.get(type_name)
        if cls is None:
            raise UnexpectedType(self.names, type_name)
        return decode_payload(data, content_type, cls, dataschema=dataschema)
