"""JSON that is not strict JSON, sent to the gateway over HTTP: refused with a 400 that speaks
JSON, never published, never answered with Python's words.

One reader (`eventmicro.wire.strictjson`) for every JSON body the gateway takes: ``/api`` requests, plain
``/events/{type}`` data, binary-mode JSON data, structured events and batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from eventmicro import Connection, Message, Service
from eventmicro.gateway import create_app, serving

STRICT = {
    "NaN": b'{"total": NaN}',
    "Infinity": b'{"total": Infinity}',
    "-Infinity": b"[-Infinity]",
    "overflow": b'{"total": 1e400}',
    "duplicate": b'{"orderId": "o-1", "orderId": "o-2"}',
    "lone surrogate": b'{"note": "\\ud800"}',
    "too deep": b"[" * 101 + b"]" * 101,
    "absurdly deep": b"[" * 200_000,
    "not utf-8": b'{"note": "\xff"}',
    "huge integer": b"9" * 5000,
}
PYTHON_ISMS = (
    "NoneType",
    "builtins.",
    "__main__.",
    "maximum recursion depth",
    "Traceback",
    "object at 0x",
    "Error(",
    "utf-8-sig",
    "sys.set_int",
)
BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "e-1",
    "ce-source": "/hostile",
    "content-type": "application/json",
}


@dataclasses.dataclass
class Note:
    text: str = ""
    total: float = 0.0


def notes() -> Service:
    svc = Service("strictnotes", version="1.0.0")

    @svc.rpc
    async def keep(req: Note) -> Note:
        return req

    return svc


@pytest.fixture
async def http(nats_connection: Connection) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        notes().serving(nats_connection),
        serving(create_app(nats_connection)) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as client,
    ):
        yield client


@pytest.fixture
async def published(nats_connection: Connection) -> AsyncIterator[tuple[str, asyncio.Queue[Message]]]:
    """An event type of this test's own, and the queue of what NATS carries for it."""
    event_type = f"com.example.strict{uuid.uuid4().hex[:8]}"
    queue: asyncio.Queue[Message] = asyncio.Queue()

    async def seen(msg: Message) -> None:
        queue.put_nowait(msg)

    subscription = await nats_connection.subscribe(f"events.{event_type}", seen)
    try:
        yield event_type, queue
    finally:
        await subscription.unsubscribe()


def assert_wire_safe(answer: httpx.Response) -> dict[str, object]:
    assert answer.status_code == 400, answer.text
    error: dict[str, object] = answer.json()["error"]
    assert error["id"] in ("eventmicro.gateway.BadRequest", "eventmicro.gateway.BadEvent")
    for word in PYTHON_ISMS:
        assert word not in answer.text, (word, answer.text)
    return error


async def next_published(queue: asyncio.Queue[Message]) -> Message:
    async with asyncio.timeout(10):
        return await queue.get()


@pytest.mark.parametrize("body", list(STRICT.values()), ids=list(STRICT))
async def test_every_json_route_refuses_what_is_not_strict_json(
    body: bytes, http: httpx.AsyncClient, published: tuple[str, asyncio.Queue[Message]]
) -> None:
    event_type, queue = published
    json_type = {"content-type": "application/json"}
    answers = {
        "plain event": await http.post(f"/events/{event_type}", content=body, headers=json_type),
        "binary event": await http.post(
            f"/events/{event_type}", content=body, headers={**BINARY, "ce-type": event_type}
        ),
        "batch": await http.post(
            "/events",
            content=b'[{"specversion":"1.0","id":"b","source":"/s","type":"%s","data":%s}]'
            % (event_type.encode(), body),
            headers={"content-type": "application/cloudevents-batch+json"},
        ),
        "structured": await http.post(
            "/events",
            content=b'{"specversion":"1.0","id":"s","source":"/s","type":"%s","data":%s}'
            % (event_type.encode(), body),
            headers={"content-type": "application/cloudevents+json"},
        ),
        "api": await http.post("/api/strictnotes/keep", content=body, headers=json_type),
    }
    for route, answer in answers.items():
        error = assert_wire_safe(answer)
        if route in ("plain event", "binary event", "api"):
            assert str(error["detail"]).startswith("the body is not valid JSON: "), (route, error)
    # none of them reached NATS: the first event published is this good one
    good = await http.post(f"/events/{event_type}", json={"ok": True})
    assert good.status_code == 202
    assert json.loads((await next_published(queue)).data) == {"ok": True}


async def test_the_refusals_say_what_is_wrong(http: httpx.AsyncClient) -> None:
    async def detail(body: bytes) -> object:
        answer = await http.post("/events/com.example.strict", content=body)
        return assert_wire_safe(answer)["detail"]

    prefix = "the body is not valid JSON: "
    assert await detail(b'{"total": NaN}') == prefix + "NaN is not a JSON number"
    assert await detail(b"[1e400]") == prefix + "a number is too large for a double"
    assert await detail(b'{"a": 1, "a": 2}') == prefix + 'the member name "a" appears twice in one object'
    assert await detail(b"[" * 200_000) == prefix + "arrays and objects are nested deeper than 100 levels"
    assert await detail(b'{"a": }') == prefix + "expecting value at line 1 column 7"


BAD_BODIES = {
    "null": b"null",
    "array": b"[1, 2]",
    "string": b'"text"',
    "number": b"42",
    "wrong field type": b'{"sku": {"nested": [null]}}',
    "unknown field": b'{"nosuchfield": 1}',
    "null field": b'{"sku": null}',
    "binary garbage": bytes(range(256)),
    "deep object": b'{"a":' * 150 + b"1" + b"}" * 150,
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_bad_bodies_never_get_python_words_back(
    body: bytes, http: httpx.AsyncClient, published: tuple[str, asyncio.Queue[Message]]
) -> None:
    """Bodies of the wrong shape for a protobuf event type, a CloudEvent, a batch: 4xx answers
    whose text has no Python type names, reprs or recursion messages."""
    event_type, _ = published
    json_type = {"content-type": "application/json"}
    answers = [
        await http.post("/events/shop.inventory.v1.StockReserved", content=body, headers=json_type),
        await http.post("/events", content=body, headers={"content-type": "application/cloudevents+json"}),
        await http.post(
            "/events", content=body, headers={"content-type": "application/cloudevents-batch+json"}
        ),
        await http.post("/events", content=body, headers={**BINARY, "ce-type": event_type}),
        await http.post("/api/strictnotes/keep", content=body, headers=json_type),
    ]
    for answer in answers:
        assert answer.status_code in (200, 202) or 400 <= answer.status_code < 500, answer.text
        for word in PYTHON_ISMS:
            assert word not in answer.text, (word, answer.text)
