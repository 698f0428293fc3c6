"""A service run by the cluster system tests, attached to one node of a cluster:
``python cluster_service.py echo`` (the echo service) or ``python cluster_service.py durable``
(the durable consumer, configured as ``durable_consumer.py`` is).

``$EVENTMICRO_NATS_URL`` lists every node, the one to attach to first: the connection is made
with ``no_randomize=True``, so it goes to that node and fails over to the others in order.
``$EVENTMICRO_NATS_NAME`` names the connection, so a test can find it in a node's ``/connz``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from eventmicro import ConnectOptions, Service


def service(kind: str) -> Service:
    if kind == "echo":
        from echo_service import svc

        return svc
    if kind == "durable":
        from durable_consumer import build

        env = os.environ
        return build(env["DURABLE_SUBJECT"], env["DURABLE_STREAM"], env["DURABLE_LOG"])
    raise SystemExit(f"unknown service {kind!r}: echo or durable")


if __name__ == "__main__":
    name = os.environ.get("EVENTMICRO_NATS_NAME", "")
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s %(levelname)s {name}[%(process)d] %(message)s"
    )
    sys.exit(service(sys.argv[1]).run(options=ConnectOptions.from_env(no_randomize=True)))
