"""``eventmicro deadletters``: the operator's view of dead letters, through the real CLI entry point."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from eventmicro import Client, Connection, ConnectOptions, DeadLetters, NatsServer, Service, Stream
from eventmicro._cli import main
from schemas.shop.orders.v1 import orders_pb2 as orders


async def make_dead_letters(url: str, service: str, count: int) -> None:
    stream = f"CLI{uuid.uuid4().hex[:8]}"
    svc = Service(service, version="1.0.0", streams=[Stream(stream, [f"{stream}.>"])])

    @svc.subscribe(subject=f"{stream}.placed", durable=True, max_deliver=1)
    async def charge(event: orders.OrderPlaced) -> None:
        raise LookupError("no such card")

    async with Connection(ConnectOptions.from_env(url, environ={})) as conn, svc.serving(conn):
        client = Client(conn, source="/cli-test")
        for i in range(count):
            await client.publish(
                orders.OrderPlaced(order_id=f"o-{i}"), subject=f"{stream}.placed", durable=True
            )
        async with asyncio.timeout(10):
            while len(await DeadLetters(conn).list(service)) < count:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.02)


def test_list_show_replay_and_purge(nats_server: NatsServer, capsys: pytest.CaptureFixture[str]) -> None:
    service = f"cli{uuid.uuid4().hex[:8]}"
    asyncio.run(make_dead_letters(nats_server.url, service, 2))
    base = ["deadletters", "--url", nats_server.url]

    assert main([*base, "ls", service]) == 0
    table = capsys.readouterr().out
    assert f"{service}.charge" in table
    assert "LookupError" in table
    assert "shop.orders.v1.OrderPlaced" in table

    assert main([*base, "ls", service, "--json"]) == 0
    letters = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["code"], d["deliveries"], d["handler"]) for d in letters] == [(500, 1, "charge")] * 2
    first, second = (d["seq"] for d in letters)

    assert main([*base, "show", str(first), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["headers"]["ce-type"] == "shop.orders.v1.OrderPlaced"
    assert shown["body_bytes"] > 0  # a protobuf body, shown as base64
    assert main([*base, "show", "999999"]) == 1
    assert "no dead letter 999999" in capsys.readouterr().out

    assert main([*base, "replay", str(first)]) == 0
    assert f"replayed {first}" in capsys.readouterr().out
    assert main([*base, "ls", service, "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [second]

    assert main([*base, "purge", service]) == 2  # asks for --yes
    capsys.readouterr()
    assert main([*base, "purge", service, "--yes"]) == 0
    capsys.readouterr()
    assert main([*base, "ls", service]) == 0
    assert "no dead letters" in capsys.readouterr().out


def test_an_unreachable_server_is_a_clear_error_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["deadletters", "--url", "nats://127.0.0.1:1", "ls"]) == 2
    captured = capsys.readouterr()
    assert "cannot connect to NATS at nats://127.0.0.1:1" in captured.err
    assert "Traceback" not in captured.err + captured.out
