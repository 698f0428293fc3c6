"""FastStream's part of the peers benchmark: its ``NatsBroker`` as responder, subscriber, caller, publisher.

The one module of ``bench/`` that imports FastStream (the ``bench`` extra, ``pip install -e
'.[bench]'``, which ``make bench`` installs); ``bench/peers.py`` and ``bench/peers_service.py``
import it only when the ``faststream`` peer runs, so the rest of the suite (and ``make test``)
works without it.

Both sides are FastStream as its documentation shows it: ``@broker.subscriber(subject)`` on an
``async def`` taking the body (here ``bytes``: the protobuf the other peers send, parsed in the
handler) and returning the reply, ``broker.request`` to call, ``broker.publish`` to publish.
FastStream adds its own headers (``content-type``, ``correlation_id``) in both directions. Its
per-message log lines (``Received``/``Processed`` at INFO, on by default) are turned off
(``logger=None``): every other peer logs nothing per message either.
"""

from __future__ import annotations

from collections.abc import Callable

# faststream is optional (the bench extra): without it this module is never imported, and mypy,
# which checks bench/ in every venv, sees its names as Any instead of failing on the import.
from faststream.nats import NatsBroker  # type: ignore[import-not-found, unused-ignore]

from bench.services import REQUEST
from schemas.shop.orders.v1 import orders_pb2 as orders

PENDING_SIZE = 64 * 1024 * 1024  # the publisher's buffer, as for the other peers


def serving_broker(url: str, *, rpc_subject: str, event_subject: str, seen: Callable[[], None]) -> NatsBroker:
    """A broker answering ``PlaceOrder`` on ``rpc_subject`` and taking ``OrderPlaced`` on ``event_subject``;
    ``seen()`` is called once per event handled. Start it with ``await broker.start()``."""
    broker = NatsBroker(url, logger=None)

    async def work(body: bytes) -> bytes:
        request = orders.PlaceOrder.FromString(body)
        return orders.OrderAccepted(
            order_id=request.customer_id, total_cents=len(request.items)
        ).SerializeToString()

    async def placed(body: bytes) -> None:
        orders.OrderPlaced.FromString(body)
        seen()

    # registered by calling the decorators, so that they stay typed when faststream is absent
    broker.subscriber(rpc_subject)(work)
    broker.subscriber(event_subject)(placed)
    return broker


class FastStreamPeer:
    """The calling and publishing side: one connected ``NatsBroker``."""

    name = "faststream"

    def __init__(self, url: str, *, rpc_subject: str, event_subject: str, event: orders.OrderPlaced) -> None:
        self.broker = NatsBroker(url, logger=None, pending_size=PENDING_SIZE)
        self.rpc_subject = rpc_subject
        self.event_subject = event_subject
        self.event = event

    async def open(self) -> None:
        await self.broker.connect()

    async def call(self) -> None:
        reply = await self.broker.request(REQUEST.SerializeToString(), self.rpc_subject, timeout=10)
        orders.OrderAccepted.FromString(reply.body)

    async def publish(self) -> None:
        await self.broker.publish(self.event.SerializeToString(), self.event_subject)

    async def flush(self) -> None:
        await self.broker.connection.flush()  # nats-py's client underneath

    async def close(self) -> None:
        await self.broker.stop()
