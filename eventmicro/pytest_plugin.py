"""pytest fixtures for code that talks to NATS: a real nats-server, never a mock.

Installed with eventmicro and registered through the ``pytest11`` entry point, so a project
that depends on eventmicro gets these fixtures without importing anything:

=====================  ========  =======================================================
fixture                scope     what it gives
=====================  ========  =======================================================
``nats_server``        session   a `NatsServer` with JetStream, shared by all tests
``fresh_nats_server``  function  a server of the test's own, to stop, kill or restart
``nats_cluster``       function  a 3-node `NatsCluster` with JetStream (R3 streams work)
``nats_url``           function  the session server's URL
``nats_connection``    function  an open `Connection` to the session server (async)
=====================  ========  =======================================================

``nats_connection`` is an async fixture and needs pytest-asyncio
(``pip install 'eventmicro[testing]'``). Share the session server by using subjects unique
to each test.

Two helpers, imported from here, test services the way users write them:

- ``capture(connection, subject_or_type)`` subscribes for the block (to a subject, wildcards
  allowed, or to a message class's default ``events.<type>`` subject) and collects the
  CloudEvents; ``await events.wait_for(type=..., count=...)`` waits for them (no sleeping)
  and returns them decoded when ``type`` is a class, as `Event` objects for a type name, or
  fails with the types that did arrive.
- ``TestContext(service, calls={...})`` is a `Context` for calling a handler function
  directly: ``ctx.publish`` is recorded (``ctx.published``, ``ctx.messages(Cls)``) and also
  sent when ``connection=`` is given; ``ctx.call(name, ...)`` is answered by ``calls[name]``
  (a function of the request, sync or async) and recorded in ``ctx.calls``; a name without
  a fake raises `NoResponders`. ``call_handler(service, name, message)`` runs a handler by
  name, passing a `TestContext` when it takes one.

A runnable example (``asyncio_mode = "auto"``, or mark the tests ``@pytest.mark.asyncio``)::

    from eventmicro import Client, Connection, Context, Service
    from eventmicro.pytest_plugin import TestContext, capture
    from schemas.shop.orders.v1 import orders_pb2 as orders

    svc = Service("orders", version="1.0.0")

    @svc.rpc
    async def place(req: orders.PlaceOrder, ctx: Context) -> orders.OrderAccepted:
        await ctx.publish(orders.OrderPlaced(order_id="o-1", customer_id=req.customer_id))
        return orders.OrderAccepted(order_id="o-1")

    async def test_place_publishes_order_placed() -> None:  # no server needed
        ctx = TestContext(svc)
        reply = await place(orders.PlaceOrder(customer_id="c-1"), ctx)
        assert reply.order_id == "o-1"
        assert ctx.messages(orders.OrderPlaced) == [orders.OrderPlaced(order_id="o-1", customer_id="c-1")]

    async def test_the_running_service_publishes(nats_connection: Connection) -> None:
        async with capture(nats_connection, orders.OrderPlaced) as events, svc.serving(nats_connection):
            await Client(nats_connection).call(
                "orders.place", orders.PlaceOrder(customer_id="c-2"), returns=orders.OrderAccepted
            )
            (placed,) = await events.wait_for(type=orders.OrderPlaced, count=1)
        assert placed.customer_id == "c-2"
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from eventmicro._testing import Captured, TestContext, call_handler, capture
from eventmicro.transport.cluster import NatsCluster
from eventmicro.transport.config import ConnectOptions
from eventmicro.transport.connection import Connection
from eventmicro.transport.server import NatsServer

__all__ = [
    "Captured",
    "TestContext",
    "call_handler",
    "capture",
    "fresh_nats_server",
    "nats_cluster",
    "nats_connection",
    "nats_server",
    "nats_url",
]


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free loopback port, for the whole test session."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def fresh_nats_server() -> Iterator[NatsServer]:
    """A nats-server for this test alone: stop, kill or restart it freely."""
    with NatsServer() as server:
        yield server


@pytest.fixture
def nats_cluster() -> Iterator[NatsCluster]:
    """A 3-node nats-server cluster with JetStream, for this test alone."""
    with NatsCluster(3) as cluster:
        yield cluster


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """URL of the session server."""
    return nats_server.url


try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - only without the testing extra
    pytest_asyncio = None  # type: ignore[assignment]

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def nats_connection(nats_server: NatsServer) -> AsyncIterator[Connection]:
        """An open connection to the session server, drained and closed after the test."""
        options = ConnectOptions.from_env(nats_server.url, environ={}, connect_attempts=3)
        async with Connection(options) as connection:
            yield connection
