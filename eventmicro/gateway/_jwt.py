"""HS256 JSON Web Tokens (RFC 7519) naming a gateway client, checked with the standard library.

An identity service that shares the gateway's secret can hand out short-lived tokens instead
of the static ones in the clients file::

    header   {"alg": "HS256", "typ": "JWT"}            only HS256: "none", RS256, ... are refused
    payload  {"sub": "shop-web", "exp": 1767225600}    sub: a client of the clients file
                                                       exp: required; nbf: honoured when given

The client's scopes and rate are the file's (claims grant nothing more), so memory stays
bounded by the file. ``iss`` and ``aud`` are not checked: give the gateway a secret of its
own. Anything wrong (shape, base64, JSON, algorithm, signature, times, an unknown client)
makes `client_of` answer ``None``, never raise: the token comes from anyone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from eventmicro._errors import ConfigurationError
from eventmicro.gateway._clients import GatewayClient
from eventmicro.wire import strictjson

__all__ = ["JwtVerifier", "check_secret", "sign"]

MIN_SECRET: Final = 32  # bytes: RFC 7518 §3.2 asks HS256 keys of at least 256 bits
LEEWAY: Final = 30.0  # seconds of clock difference allowed on exp and nbf
_MAX_PART: Final = 4096  # characters of a header or payload: a token is a few hundred


class JwtVerifier:
    """Checks HS256 tokens signed with ``secret`` and returns the client their ``sub`` names."""

    def __init__(self, secret: str, clients: Mapping[str, GatewayClient]) -> None:
        check_secret(secret)
        self._key = secret.encode("utf-8")
        self._clients = dict(clients)

    def client_of(self, token: str, now: float) -> GatewayClient | None:
        """The client a valid token names at time ``now`` (seconds since the epoch), else None."""
        parts = token.split(".")
        if len(parts) != 3 or any(len(part) > _MAX_PART for part in parts[:2]):
            return None
        header, payload = _json_part(parts[0]), _json_part(parts[1])
        signature = _unb64(parts[2])
        if header is None or payload is None or signature is None or header.get("alg") != "HS256":
            return None
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected) or not _in_time(payload, now):
            return None
        subject = payload.get("sub")
        return self._clients.get(subject) if isinstance(subject, str) else None


def check_secret(secret: str) -> None:
    """`ConfigurationError` unless ``secret`` is long enough for HS256."""
    if len(secret.encode("utf-8")) < MIN_SECRET:
        raise ConfigurationError(f"jwt_secret must be at least {MIN_SECRET} bytes (HS256, RFC 7518)")


def _in_time(payload: dict[str, Any], now: float) -> bool:
    expires, not_before = _number(payload.get("exp")), _number(payload.get("nbf", -math.inf))
    if expires is None or not_before is None:  # exp is required: a token without it is good for ever
        return False
    return not_before - LEEWAY <= now < expires + LEEWAY


def _number(value: object) -> float | None:
    """A claim's NumericDate as a float, or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:  # an int beyond a double
        return None
    return None if math.isnan(seconds) else seconds


def _json_part(part: str) -> dict[str, Any] | None:
    raw = _unb64(part)
    if raw is None:
        return None
    try:
        value = strictjson.loads(raw, max_depth=8)
    except strictjson.JSONError:
        return None
    return value if isinstance(value, dict) else None


def _unb64(part: str) -> bytes | None:
    """base64url without padding, strictly (RFC 7515 §2), or None."""
    try:
        standard = part.replace("-", "+").replace("_", "/") + "=" * (-len(part) % 4)
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        return None


def sign(claims: Mapping[str, Any], secret: str) -> str:
    """An HS256 token of ``claims`` (for tests, and issuers without a JWT library)."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing = f"{header}.{_b64(json.dumps(dict(claims)).encode())}"
    mac = hmac.new(secret.encode("utf-8"), signing.encode("ascii"), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
