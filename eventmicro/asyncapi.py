"""AsyncAPI 3.0 documents of services: from their code, or from ``$SRV`` discovery.

::

    from eventmicro import asyncapi

    document = asyncapi.for_services([svc], title="shop")            # from Service objects
    infos = await eventmicro.discover(connection, "INFO")
    document = asyncapi.from_discovery(infos)                         # from running services

Channels for the events each service publishes and subscribes to, RPC endpoints as
request/reply operations with their reply schemas, the CloudEvents NATS binding headers, and
payload schemas from the protobuf or JSON types. ``eventmicro docs`` prints the same.
"""

from __future__ import annotations

from eventmicro.docs.asyncapi import asyncapi_for_services as for_services
from eventmicro.docs.asyncapi import asyncapi_from_discovery as from_discovery

__all__ = ["for_services", "from_discovery"]
