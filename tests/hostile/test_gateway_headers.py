"""Attacks on the gateway's request heads, over raw sockets: too large, too many, too slow.

The gateway (behind a bearer token, so every answer below comes before authentication) bounds
each request's head while it arrives: 431 beyond ``max_header_bytes`` or ``max_headers``, 408
when it is not complete ``header_timeout`` after its first byte, and a connection that sends
nothing is closed. Bytes beyond the bound are never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from eventmicro import Connection
from eventmicro.gateway import GatewayConfig, create_app, serving

TOKEN = "s3cret"


@contextlib.asynccontextmanager
async def gateway(connection: Connection, **limits: Any) -> AsyncIterator[tuple[str, int]]:
    config = GatewayConfig(token=TOKEN, **limits)
    async with serving(create_app(connection, config), config=config) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


async def exchange(address: tuple[str, int], *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` (``pause`` seconds apart) on a new connection, stopping once the gateway
    answers; everything it answers until it closes the connection."""
    reader, writer = await asyncio.open_connection(*address)
    received = bytearray()

    async def receive() -> None:
        with contextlib.suppress(ConnectionError):  # a reset after the answer: the answer counts
            while chunk := await reader.read(1 << 16):
                received.extend(chunk)

    receiving = asyncio.create_task(receive())
    try:
        for part in parts:
            if received or receiving.done():
                break  # answered: the attack is over
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
            if pause:
                await asyncio.sleep(pause)  # the attack's pace, not a wait for an outcome
        await receiving  # until the gateway closes the connection
    finally:
        receiving.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return bytes(received)


def answer_of(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def error_of(raw: bytes, status: int) -> dict[str, Any]:
    code, headers, body = answer_of(raw)
    assert code == status, raw[:300]
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error: dict[str, Any] = json.loads(body)["error"]
    assert error["code"] == status
    return error


def get(path: str = "/healthz", *extra: bytes, close: bool = True) -> bytes:
    """A GET request's head; ``close``: the gateway closes the connection after answering."""
    last = b"Connection: close\r\n" if close else b""
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: gw\r\n" + b"".join(extra) + last + b"\r\n"


async def test_an_8_mib_header_is_431_before_authentication(nats_connection: Connection) -> None:
    async with gateway(nats_connection) as address:
        raw = await exchange(address, get("/api/orders/place", b"X-Pad: " + b"a" * (8 << 20) + b"\r\n"))
        error = error_of(raw, 431)
        assert error["id"] == "eventmicro.gateway.HeadersTooLarge"
        assert error["detail"] == "the request's header is larger than 16384 bytes"
        # the gateway still answers, and still asks for the token
        assert answer_of(await exchange(address, get("/api/orders/place")))[0] == 401


async def test_unfinished_headers_on_many_connections_are_cut_at_the_limit(
    nats_connection: Connection,
) -> None:
    """20 connections each sending 2 MiB of a header that never ends: each is answered 431 once
    the head passes the limit (the parser never saw more), and the gateway keeps serving."""
    chunk = b"a" * (64 << 10)
    attack = [b"POST /events HTTP/1.1\r\nHost: gw\r\nX-Pad: ", *([chunk] * 32)]
    async with gateway(nats_connection) as address:
        answers = await asyncio.gather(*(exchange(address, *attack) for _ in range(20)))
        assert all(error_of(raw, 431)["id"] == "eventmicro.gateway.HeadersTooLarge" for raw in answers)
        assert answer_of(await exchange(address, get()))[0] == 200


async def test_too_many_header_fields_is_431(nats_connection: Connection) -> None:
    async with gateway(nats_connection, max_headers=10) as address:
        fields = [b"X-F%d: v\r\n" % i for i in range(8)]  # and Host, Connection: 10 fields
        assert answer_of(await exchange(address, get("/healthz", *fields)))[0] == 200
        raw = await exchange(address, get("/healthz", *fields, b"X-One-Too-Many: v\r\n"))
        assert error_of(raw, 431)["detail"] == "the request has more than 10 header fields"


async def test_a_head_sent_a_byte_at_a_time_is_408(nats_connection: Connection) -> None:
    """Slowloris: the head trickles in and never ends; the gateway answers 408 and closes."""
    async with gateway(nats_connection, header_timeout=0.5) as address:
        drip = [get(close=False)[:-2], *(b"X-Slow: %d\r\n" % i for i in range(1000))]  # the head never ends
        error = error_of(await exchange(address, *drip, pause=0.05), 408)
        assert error["id"] == "eventmicro.gateway.HeaderTimeout"
        assert error["detail"] == "the request's header did not arrive within 0.5 s"


async def test_a_connection_that_sends_nothing_is_closed(nats_connection: Connection) -> None:
    async with gateway(nats_connection, header_timeout=0.5) as address:
        reader, writer = await asyncio.open_connection(*address)
        try:
            assert await reader.read() == b""  # closed by the gateway, nothing answered
        finally:
            writer.close()


async def test_heads_are_bounded_per_request_not_per_connection(nats_connection: Connection) -> None:
    """Requests pipelined on one connection each get the whole limit; a large body is not a head."""
    pad = b"X-Pad: " + b"a" * 12_000 + b"\r\n"  # under 16 KiB each, over it together
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    async with gateway(nats_connection) as address:
        raw = await exchange(address, get("/healthz", pad, close=False) + get("/healthz", pad))
        assert raw.count(b"HTTP/1.1 200 OK") == 2
        body = json.dumps({"data": "x" * 500_000}).encode()
        post = (
            b"POST /events/com.example.big HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            + auth
            + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        assert answer_of(await exchange(address, post, body))[0] == 202


async def test_oversized_ce_header_names_are_refused_before_the_binding(nats_connection: Connection) -> None:
    """A binary-mode event whose ce-* header names are long (the binding caches names) is a 400;
    one whose header is 300 KB is a 431."""
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    event = (
        b"POST /events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"Connection: close\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: /x\r\nce-type: com.example.t\r\n"
    )
    async with gateway(nats_connection) as address:
        raw = await exchange(address, event + auth + b"ce-" + b"x" * 300 + b": v\r\n\r\n{}")
        assert error_of(raw, 400)["detail"] == "the header name ce-xxxxxxxx... is longer than 64 characters"
        raw = await exchange(address, event + auth + b"ce-" + b"y" * 300_000 + b": v\r\n\r\n{}")
        assert error_of(raw, 431)["id"] == "eventmicro.gateway.HeadersTooLarge"
        assert answer_of(await exchange(address, event + auth + b"ce-short: v\r\n\r\n{}"))[0] == 202


async def test_an_endless_trailer_after_a_chunked_body_is_413(nats_connection: Connection) -> None:
    """Trailers are headers too, buffered whole by the parser: a chunked body's wire bytes
    (data, chunk framing, trailers) are bounded, so a trailer that never ends is cut."""
    auth = b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
    head = (
        b"POST /events/com.example.t HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n" + auth + b"\r\n"
    )
    async with gateway(nats_connection, max_body=4096) as address:
        raw = await exchange(address, head, b"2\r\n{}\r\n0\r\nX-Trailer: ", *([b"t" * 65536] * 32))
        error = error_of(raw, 413)
        assert error["id"] == "eventmicro.gateway.BodyTooLarge"
        chunked = head + b"2\r\n{}\r\n0\r\nX-Trailer: fine\r\n\r\n"  # a trailer of a sensible size is read
        assert (
            answer_of(
                await exchange(address, chunked.replace(b"chunked\r\n", b"chunked\r\nConnection: close\r\n"))
            )[0]
            == 202
        )
