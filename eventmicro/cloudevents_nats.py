"""CloudEvents NATS protocol binding (spec 1.0.3-wip): events to and from NATS messages.

Usable on its own with plain nats-py: it does no I/O. Functions mirror
``cloudevents.core.bindings.http``::

    binary mode                              structured mode
    HPUB subject                             HPUB subject
      ce-specversion: 1.0                      Content-Type: application/cloudevents+json
      ce-id: 9f3a...-1
      ce-source: /orders                       {"specversion": "1.0", "id": "...",
      ce-type: shop.orders.v1.OrderPlaced       "source": "/orders", "type": "...",
      ce-time: 2026-11-28T16:27:19.123456Z      "data": {...} | "data_base64": "..."}
      ce-datacontenttype: application/protobuf
      <body = the event data, byte for byte>

Receiving (``from_nats``) picks the mode by eventmicro's rule: a ``ce-specversion`` header
means binary; a ``Content-Type`` starting with ``application/cloudevents`` means structured;
a message with no CloudEvents headers is tried as structured JSON (NATS < 2.2, sdk-go). Header
names are matched case-insensitively. Header values are percent-encoded exactly as §3.1.3.2
requires (space, ``"``, ``%`` and non-printable-ASCII only, so ``/`` and ``:`` travel as they
are) and decoded strictly: broken escapes and invalid UTF-8 raise `HeaderDecodeError`.

Every invalid input raises an `EnvelopeError` subclass naming what is wrong.

>>> from eventmicro.wire.binding import to_binary, from_nats
>>> from eventmicro import Event
>>> msg = to_binary(Event.create(type="com.example.hi", source="/hi", data=b"x"), None)
>>> msg.headers["ce-type"], msg.data
('com.example.hi', b'x')
>>> from_nats(msg, None).get_type()
'com.example.hi'
"""

from eventmicro.wire.binding import *  # noqa: F403 - the public face of the binding
from eventmicro.wire.binding import __all__  # noqa: F401 - star-imported names are its __all__
