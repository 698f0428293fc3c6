"""A bare NATS client on a TCP socket for the hostile tests, and the header blocks they send.

``Raw.hpub`` only writes: a flood reaches the server as fast as the socket takes it, and
``round_trip`` waits until the server has processed (and routed) all of it. Tests import it
after ``sys.path.insert(0, str(Path(__file__).parent))``.
"""

from __future__ import annotations

import asyncio

from eventmicro import NatsServer


class Raw:
    """A bare NATS client on a TCP socket: what an attacker with network access has."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, server: NatsServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nPING\r\n')
        await writer.drain()
        assert await reader.readline() == b"PONG\r\n"
        return cls(reader, writer)

    def hpub(self, subject: bytes, header_block: bytes, payload: bytes = b"") -> None:
        size = len(header_block)
        self.writer.write(
            b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, size, size + len(payload), header_block, payload)
        )

    async def round_trip(self) -> None:
        """PING/PONG: the server has processed (and routed) everything sent before."""
        self.writer.write(b"PING\r\n")
        await self.writer.drain()
        while (line := await self.reader.readline()) != b"PONG\r\n":
            assert line, "the server closed the raw connection"

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def event_block(padding: int, ce_type: str = "shop.orders.v1.OrderPlaced") -> bytes:
    return (
        b"NATS/1.0\r\nce-specversion: 1.0\r\nce-id: 1\r\nce-source: /attacker\r\n"
        b"ce-datacontenttype: application/protobuf\r\nce-type: %s\r\nx-pad: %s\r\n\r\n"
        % (ce_type.encode(), b"p" * padding)
    )
