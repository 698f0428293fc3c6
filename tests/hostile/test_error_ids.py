"""Error ids over the wire: a 500 reply carries a random id in a header and its JSON body, and
nothing of the failure; an id a foreign or hostile responder sends is taken only when it looks
like one (no terminal escapes, no megabyte of text reaches a caller's exception message)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import nats
import pytest

from eventmicro import Client, Connection, NatsServer, Service, ServiceError


async def test_a_500_reply_carries_the_error_id_and_nothing_else(
    nats_server: NatsServer, service_conn: Connection
) -> None:
    name = f"ids{uuid.uuid4().hex[:8]}"
    svc = Service(name, version="1.0.0")

    @svc.rpc
    async def fail(req: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("secret-table-name")

    headers = {"ce-specversion": "1.0", "ce-id": uuid.uuid4().hex, "ce-source": "/hostile",
               "ce-type": "object", "content-type": "application/json"}  # fmt: skip
    async with svc.serving(service_conn):
        client = await nats.connect(nats_server.url)
        try:
            reply = await client.request(f"{name}.fail", b"{}", timeout=10, headers=headers)
        finally:
            await client.close()
    assert reply.headers is not None
    assert reply.headers["Nats-Service-Error-Code"] == "500"
    error_id = reply.headers["Eventmicro-Error-Id"]
    assert re.fullmatch(r"[0-9a-f]{12}", error_id)
    body = json.loads(reply.data)
    assert body["error_id"] == error_id
    assert "secret-table-name" not in reply.data.decode() + json.dumps(dict(reply.headers))
    assert "KeyError" not in reply.data.decode() + json.dumps(dict(reply.headers))


FORGED = [
    "\x1b]0;owned\x07",  # a terminal title change
    "a" * 100_000,  # a megabyte-ish id to print
    "id with spaces\nand a second line",
]


@pytest.mark.parametrize("forged", FORGED, ids=["escape", "huge", "lines"])
async def test_a_forged_error_id_is_not_taken(
    nats_server: NatsServer, nats_connection: Connection, forged: str
) -> None:
    subject = f"foreign.{uuid.uuid4().hex[:8]}"
    foreign = await nats.connect(nats_server.url)
    answered = asyncio.Event()

    async def respond(msg: Any) -> None:
        body = json.dumps({"id": "eventmicro.InternalError", "code": 500, "detail": "x", "error_id": forged})
        headers = {"Nats-Service-Error": "x", "Nats-Service-Error-Code": "500"}
        if "\n" not in forged and len(forged) < 1000:  # what a header can carry
            headers["Eventmicro-Error-Id"] = forged
        await foreign.publish(msg.reply, body.encode(), headers=headers)
        answered.set()

    await foreign.subscribe(subject, cb=respond)
    await foreign.flush()
    try:
        with pytest.raises(ServiceError) as caught:
            await Client(nats_connection).call(subject, {}, returns=dict, timeout=10)
    finally:
        await foreign.close()
    assert answered.is_set()
    assert caught.value.incident is None
    assert "error id" not in str(caught.value)
    assert "\x1b" not in str(caught.value)
