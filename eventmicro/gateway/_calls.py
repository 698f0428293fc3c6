"""``POST /api/{service}/{endpoint}``: an HTTP request in, an RPC over NATS, the reply out.

::

    POST /api/orders/place  {"customerId": "c-1", ...}       (or application/protobuf bytes)
      $SRV.INFO.orders (cached)  -> subject orders.place, request PlaceOrder, reply OrderAccepted
      JSON -> PlaceOrder -> Client.call("orders.place", timeout=X-Timeout capped) -> OrderAccepted
    200 {"orderId": "o-1", ...}                               (protobuf when Accept asks for it)

Status mapping::

    service error reply            its code (400, 404, 409, 500, ...) when 400-599, else 500
    no responders                  503        deadline passed           504
    circuit open (config.breaker)  503, Retry-After
    no or unknown token            401        out of the client's scope 403 (see _access)
    over the client's rate         429, Retry-After
    unknown service or endpoint    404        request type not installed 501
    bad JSON, body not the type    400        reply not decodable       502
    request over NATS max_payload  413        endpoint subject not callable 502

Only the subject discovery gives for the endpoint is called, and only when it is one literal
subject outside the ``$`` system subjects (``$JS.API``, ``$SYS``, ...): a service that
advertises ``orders.*`` or ``$JS.API.STREAM.DELETE.X`` gets no request from the gateway.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from eventmicro._errors import CircuitOpen, NoResponders, PayloadError, PayloadTooLarge, Timeout
from eventmicro.gateway._access import refuse_call
from eventmicro.gateway._catalog import Catalog
from eventmicro.gateway._config import GatewayConfig
from eventmicro.gateway._problems import (
    PRINTABLE,
    Problem,
    call_timeout,
    load_json,
    media_type,
    protobuf_body,
    read_body,
    require_nats,
    trace_context,
    unsupported_media,
    wants_protobuf,
)
from eventmicro.service.client import Client, Trace
from eventmicro.service.endpoints import (
    EndpointNotFound,
    RequestInvalid,
    TypeNotInstalled,
    build_request,
    endpoint_metadata,
    find_endpoint,
    protobuf_type,
    reply_to_json,
    reply_type,
)
from eventmicro.wire.media import PROTOBUF_MEDIA
from eventmicro.wire.names import check_subject
from eventmicro.wire.service_errors import ServiceError

__all__ = ["Calls"]

log = logging.getLogger("eventmicro.gateway")

_JSON_MEDIA: Final = frozenset({"application/json", "text/json"})


class Calls:
    """The ``/api`` route: calls endpoints found by discovery."""

    def __init__(self, client: Client, catalog: Catalog, config: GatewayConfig) -> None:
        self.client = client
        self.catalog = catalog
        self.config = config

    async def handle(self, request: Request) -> Response:
        service = request.path_params["service"]
        endpoint = request.path_params["endpoint"]
        refuse_call(request, service, endpoint)  # before discovery: out of scope says nothing of what exists
        timeout = call_timeout(request, self.config.default_timeout, self.config.max_timeout)
        protobuf_reply = wants_protobuf(request)
        body = await read_body(request, self.config.max_body)
        connection = self.catalog.connection
        require_nats(connection)
        try:
            found = find_endpoint(await self.catalog.info(service), service, endpoint)
        except EndpointNotFound as exc:
            require_nats(connection)  # the outage began while discovery asked: not an unknown service
            raise Problem(404, "UnknownEndpoint", str(exc)) from None
        metadata = endpoint_metadata(found)
        subject = _callable(str(found.get("subject") or f"{service}.{endpoint}"), service)
        try:
            message = self._request(request, body, metadata)
            returns = reply_type(metadata)
        except TypeNotInstalled as exc:
            raise Problem(
                501, "TypeNotInstalled", f"{exc} in the gateway (start it with --schemas)"
            ) from None
        if protobuf_reply and not (isinstance(returns, type) and issubclass(returns, Message)):
            raise Problem(
                406, "NotAcceptable", f"{subject} does not answer protobuf: ask for application/json"
            )
        try:
            reply = await self.client.call(
                subject,
                message,
                returns=returns,
                timeout=timeout,
                idempotent=metadata.get("eventmicro.idempotent") == "true",
                trace=_trace(request),
            )
        except ServiceError as error:
            status = error.instance_code if 400 <= error.instance_code <= 599 else 500
            raise Problem(status, error.id, error.detail) from None
        except CircuitOpen as exc:  # failing fast: the endpoint kept failing (GatewayConfig.breaker)
            wait = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
            raise Problem(503, "CircuitOpen", f"{subject} is failing: not called", headers=wait) from None
        except NoResponders:
            self.catalog.forget(service)
            raise Problem(503, "NoResponders", f"no instance of {service!r} serves {subject} now") from None
        except Timeout:
            require_nats(connection)  # no answer because NATS went away: 503, not the service's 504
            raise Problem(504, "Timeout", f"{subject} did not answer within {timeout:g}s") from None
        except PayloadError as exc:
            log.warning("gateway: the reply of %s could not be decoded: %s", subject, exc)
            raise Problem(502, "BadReply", f"the reply of {subject} could not be decoded") from None
        except PayloadTooLarge as exc:  # the body fits max_body, not the server's max_payload
            raise Problem(413, "BodyTooLarge", str(exc)) from None
        if reply is None and returns is type(None):
            return Response(status_code=204)
        if protobuf_reply and isinstance(reply, Message):
            return Response(reply.SerializeToString(), media_type="application/protobuf")
        return JSONResponse(reply_to_json(reply))

    def _request(self, request: Request, body: bytes, metadata: dict[str, str]) -> object:
        media = media_type(request)
        if media in PROTOBUF_MEDIA:
            cls = protobuf_type(metadata, "request")
            if cls is None:
                raise Problem(415, "UnsupportedMediaType", "this endpoint takes JSON, not protobuf")
            return protobuf_body(cls, body)
        if media is not None and media not in _JSON_MEDIA and not media.endswith("+json"):
            raise unsupported_media(media, "application/json or application/protobuf")
        value = _parse_json(body)
        try:
            return build_request(value, metadata)
        except RequestInvalid as exc:
            raise Problem(400, "BadRequest", str(exc)) from None


def _parse_json(body: bytes) -> Any:
    return load_json(body) if body.strip() else {}


def _callable(subject: str, service: str) -> str:
    """``subject`` when the gateway may send requests to it (see the module docstring), else 502."""
    try:
        check_subject(subject)  # one literal subject: no wildcard, no whitespace, not $SRV
    except ValueError:
        pass
    else:
        if not subject.startswith("$"):
            return subject
    detail = f"service {service!r} advertises the subject {subject[:200]!r}, which the gateway does not call"
    raise Problem(502, "BadEndpoint", detail)


def _trace(request: Request) -> Trace | None:
    """The caller's trace context and correlation id, carried into the call's CloudEvent."""
    traceparent, tracestate = trace_context(request)
    correlation = request.headers.get("x-correlation-id")
    if correlation is not None and not PRINTABLE.fullmatch(correlation):
        correlation = None
    if traceparent is None and correlation is None:
        return None
    return Trace(correlation_id=correlation, traceparent=traceparent, tracestate=tracestate)
