"""Delivery values: each checks its own options when it is written, and a handler takes one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from eventmicro import Broadcast, ConfigurationError, Durable, Ordered, Service, Shared
from schemas.shop.orders.v1 import orders_pb2 as orders


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"max_deliver": 0}, "max_deliver"),
        ({"max_deliver": True}, "max_deliver"),
        ({"backoff": "1s"}, "backoff"),
        ({"backoff": [1, -2]}, "backoff"),
        ({"terminal": ValueError}, "terminal"),
        ({"terminal": [ValueError, "KeyError"]}, "terminal"),
        ({"ack_wait": 0}, "ack_wait"),
        ({"ack_wait": "30"}, "ack_wait"),
        ({"deliver": "yesterday"}, "deliver"),
        ({"deliver": datetime(2026, 1, 1)}, "timezone"),
        ({"idempotent": 0.01}, "idempotent"),
        ({"idempotent": "a day"}, "idempotent"),
        ({"stream": "ORDERS.v1"}, "stream"),
        ({"stream": 3}, "stream"),
        ({"dead_letter": "no"}, "dead_letter"),
    ],
)
def test_a_durable_delivery_refuses_what_cannot_work(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        Durable(**options)


def test_an_ordered_delivery_checks_its_stream_and_start() -> None:
    with pytest.raises(ConfigurationError, match="start sequence"):
        Ordered(deliver=0)
    with pytest.raises(ConfigurationError, match="stream"):
        Ordered(stream="a b")
    assert Ordered(deliver=datetime(2026, 1, 1, tzinfo=UTC)).stream is None


def test_values_are_normalised_and_can_be_shared() -> None:
    policy = Durable(backoff=[1, 2], terminal=[KeyError], idempotent=True)
    assert policy.backoff == (1.0, 2.0)
    assert policy.terminal == (KeyError,)
    assert policy.idempotent_ttl == 24 * 3600.0
    assert Durable(idempotent=60).idempotent_ttl == 60.0
    assert Durable().idempotent_ttl is None
    assert hash(policy) == hash(Durable(backoff=(1.0, 2.0), terminal=(KeyError,), idempotent=True))
    assert [policy.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 2.0]  # the last delay repeats


def test_the_delivery_decides_queue_group_and_consumer() -> None:
    svc = Service("deliveries", version="1.0.0")
    shared_policy = Durable(max_deliver=3)

    @svc.subscribe
    async def shared(event: orders.OrderPlaced) -> None: ...

    @svc.subscribe(delivery=Broadcast())
    async def everyone(event: orders.OrderPlaced) -> None: ...

    @svc.subscribe(delivery=shared_policy)
    async def durable_one(event: orders.OrderPlaced) -> None: ...

    @svc.subscribe(delivery=shared_policy)
    async def durable_two(event: orders.OrderPlaced) -> None: ...

    @svc.subscribe(delivery=Ordered())
    async def replayed(event: orders.OrderPlaced) -> None: ...

    specs = {spec.name: spec for spec in svc.handlers}
    assert specs["shared"].queue == "deliveries.shared"
    assert (specs["shared"].durable, specs["shared"].ordered) == (None, None)
    assert specs["everyone"].queue is None
    assert specs["durable_one"].durable is shared_policy is specs["durable_two"].durable
    assert specs["replayed"].ordered == Ordered()
    assert specs["replayed"].queue is None
    assert Shared() == Shared()


def test_a_handler_takes_a_delivery_value_only() -> None:
    svc = Service("deliveries", version="1.0.0")
    for wrong in ("durable", Durable, True, {"max_deliver": 3}):
        with pytest.raises(ConfigurationError, match="delivery= takes"):

            @svc.subscribe(delivery=wrong)  # type: ignore[call-overload,untyped-decorator]
            async def handler(event: orders.OrderPlaced) -> None: ...

    with pytest.raises(TypeError):  # the old keyword flags are gone, not ignored

        @svc.subscribe(durable=True)  # type: ignore[call-overload,untyped-decorator]
        async def old(event: orders.OrderPlaced) -> None: ...
