"""An N-node nats-server cluster on loopback: full-mesh routes, a JetStream store per node."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Self

from eventmicro.transport.server import NatsServer, _Process, free_port

__all__ = ["NatsCluster"]


class NatsCluster(_Process):
    """An N-node nats-server cluster on loopback: full-mesh routes, a JetStream store per node.

    `url` lists every node (comma-separated, as ``NATS_URL`` takes it). Nodes are
    `NatsServer` objects: kill, stop and restart them one by one for fault tests.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        jetstream: bool = True,
        binary: str | os.PathLike[str] | None = None,
        extra_config: str = "",
        name: str = "eventmicro",
    ) -> None:
        if size < 2:
            raise ValueError("a cluster needs at least 2 nodes")
        self.name = name
        self.nodes = [
            NatsServer(jetstream=jetstream, binary=binary, extra_config=extra_config, name=f"{name}-n{i + 1}")
            for i in range(size)
        ]
        ports = [free_port() for _ in self.nodes]
        for node, port in zip(self.nodes, ports, strict=True):
            node.cluster_name = name
            node.cluster_port = port
            node.routes = tuple(ports)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node, then wait until all routes are up and JetStream is healthy."""
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                # A clustered JetStream node is healthy only once its peers are up.
                node.start(deadline - time.monotonic(), wait_healthy=False)
            for node in self.nodes:
                node.wait_healthy(deadline - time.monotonic(), routes=len(self.nodes) - 1)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_formed(self, timeout: float = 30.0) -> None:
        """Wait until every running node sees all other running nodes and is healthy."""
        deadline = time.monotonic() + timeout
        running = [node for node in self.nodes if node.is_running]
        for node in running:
            node.wait_healthy(deadline - time.monotonic(), routes=len(running) - 1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __iter__(self) -> Iterator[NatsServer]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> NatsServer:
        return self.nodes[index]
