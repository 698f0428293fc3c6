"""``eventmicro deadletters``: the operator's view of dead letters, through the real CLI entry point."""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest

from eventmicro import Client, Connection, ConnectOptions, DeadLetters, Durable, NatsServer, Service, Stream
from eventmicro.cli.main import main
from eventmicro.transport.jetstream import ensure_stream
from schemas.shop.orders.v1 import orders_pb2 as orders


async def make_dead_letters(url: str, service: str, count: int) -> None:
    stream = f"CLI{uuid.uuid4().hex[:8]}"
    svc = Service(service, version="1.0.0", streams=[Stream(stream, [f"{stream}.>"])])

    @svc.subscribe(subject=f"{stream}.placed", delivery=Durable(max_deliver=1))
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


async def poison(url: str, port: int, service: str) -> tuple[str, int]:
    """A durable message with a header name eventmicro cannot publish (``x/y``), sent over a
    raw socket, that its handler refuses: the dead letter is stored wrapped (its headers in the
    body). Returns the original stream and the dead letter's sequence."""
    stream = f"CLI{uuid.uuid4().hex[:8]}"
    svc = Service(service, version="1.0.0", streams=[Stream(stream, [f"{stream}.>"])])

    @svc.subscribe(subject=f"{stream}.placed", delivery=Durable(max_deliver=1))
    async def charge(event: orders.OrderPlaced) -> None:
        raise LookupError("no such card")

    headers = (
        b"NATS/1.0\r\nce-specversion: 1.0\r\nce-id: e-1\r\nce-source: /raw\r\n"
        b"ce-type: shop.orders.v1.OrderPlaced\r\ncontent-type: application/json\r\nx/y: 1\r\n\r\n"
    )
    body = b'{"orderId": "o-raw"}'
    async with Connection(ConnectOptions.from_env(url, environ={})) as conn, svc.serving(conn):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n')
        writer.write(f"HPUB {stream}.placed {len(headers)} {len(headers) + len(body)}\r\n".encode())
        writer.write(headers + body + b"\r\nPING\r\n")
        await writer.drain()
        while await reader.readline() != b"PONG\r\n":
            pass
        writer.close()
        async with asyncio.timeout(10):
            while not (letters := await DeadLetters(conn).list(service)):  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.02)
    return stream, letters[0].seq


def test_a_wrapped_dead_letter_is_shown_and_replayed_with_what_could_not_be_restored(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    service = f"cli{uuid.uuid4().hex[:8]}"
    _stream, seq = asyncio.run(poison(nats_server.url, nats_server.port, service))
    base = ["deadletters", "--url", nats_server.url]

    assert main([*base, "show", str(seq), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["headers"]["x/y"] == "1"  # the original headers, from the dead letter's body
    assert shown["headers"]["ce-id"] == "e-1"
    assert shown["body"] == {"orderId": "o-raw"}
    assert (shown["reason"], shown["event_type"]) == ("LookupError", "shop.orders.v1.OrderPlaced")

    assert main([*base, "replay", str(seq)]) == 0
    out = capsys.readouterr().out
    assert f"replayed {seq}" in out
    assert "not restored: headers whose names eventmicro cannot publish: 'x/y'" in out


def test_replaying_a_dead_letter_whose_body_is_gone_says_so(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dead letter stored without its body (too large with the failure) replays the body from
    the original stream; when that message is gone too, the replay refuses and says why."""
    service = f"cli{uuid.uuid4().hex[:8]}"
    stream, seq = asyncio.run(poison(nats_server.url, nats_server.port, service))

    async def drop_body_and_original() -> int:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        letter = await js.get_msg("DEADLETTERS", seq)
        kept = {k: v for k, v in (letter.headers or {}).items() if not k.startswith("Nats-")}
        headers = {**kept, "eventmicro-dlqbodydropped": "true"}
        size = int(headers["eventmicro-dlqheaders"])
        ack = await js.publish(letter.subject or "", (letter.data or b"")[:size], headers=headers)
        await js.delete_msg("DEADLETTERS", seq)
        await js.delete_msg(stream, 1)
        await nc.close()
        return ack.seq

    bodiless = asyncio.run(drop_body_and_original())
    base = ["deadletters", "--url", nats_server.url]
    assert main([*base, "show", str(bodiless), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["body_dropped"] is True
    assert main([*base, "replay", str(bodiless)]) == 1
    out = capsys.readouterr().out
    assert f"dead letter {bodiless} has no body and the original is gone from stream {stream}" in out
    assert main([*base, "ls", service, "--json"]) == 0
    assert [json.loads(line)["seq"] for line in capsys.readouterr().out.splitlines()] == [bodiless]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def placed(order_id: str) -> orders.OrderPlaced:
    return orders.OrderPlaced(order_id=order_id, customer_id="c-1", total_cents=100)


async def durable_setup(conn: Connection) -> tuple[str, str]:
    name = unique("R")
    await ensure_stream(conn, Stream(name, [f"{name}.>"]))
    return name, f"{name}.placed"


def test_replay_all_of_a_service_as_the_help_shows(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``eventmicro deadletters replay --all billing`` (the help's example) was a usage error."""
    service = unique("cliall")

    async def make() -> None:
        async with Connection(ConnectOptions.from_env(nats_server.url, environ={})) as c:
            _stream, subject = await durable_setup(c)
            svc = Service(service, version="1.0.0")

            @svc.subscribe(subject=subject, delivery=Durable(terminal=[LookupError]))
            async def charge(event: orders.OrderPlaced) -> None:
                raise LookupError

            async with svc.serving(c):
                await Client(c).publish(placed("o-1"), subject=subject, durable=True)
                async with asyncio.timeout(10):
                    while not await DeadLetters(c).list(service):  # noqa: ASYNC110 - no event to wait on
                        await asyncio.sleep(0.02)

    asyncio.run(make())
    assert main(["deadletters", "--url", nats_server.url, "replay", "--all", service]) == 0
    assert "replayed 1 dead letter" in capsys.readouterr().out
