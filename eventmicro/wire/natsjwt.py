"""NATS JWT v2 (decentralized authentication): claims signed with an nkey, and `.creds` files.

No well-kept Python library issues NATS JWTs (PyPI's ``nats-jwt`` 0.2 and ``nats-nsc`` 0.4
are small projects outside the NATS organisation), so this writes the small format itself on
``nkeys`` (the NATS project's ed25519 nkeys, which nats-py uses), as nats-io/jwt v2 defines it
(``claims.go``, ``header.go``, ``creds_utils.go``)::

    base64url(header) "." base64url(claims) "." base64url(ed25519 signature of the first two)
    header  {"typ":"JWT","alg":"ed25519-nkey"}
    claims  {"jti": base32(sha512/256 of the claims data), "iat", "iss", "sub", "name", ["exp"],
             "nats": {"type": "operator" | "account" | "user", "version": 2, ...}}

An operator signs itself and its accounts; an account signs its users. A `.creds` file is the
user's JWT and its nkey seed, in the armour ``nsc`` writes (`creds`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Final

from eventmicro._errors import ConfigurationError

__all__ = ["KINDS", "a_kind", "creds", "decode", "encode", "expiry", "new_seed", "public_key", "read_creds"]

KINDS: Final = {"operator": "O", "account": "A", "user": "U"}  # who signs what: _ISSUERS
_ISSUERS: Final = {"operator": "O", "account": "O", "user": "A"}
_HEADER: Final = {"typ": "JWT", "alg": "ed25519-nkey"}
_CLAIMS_DATA: Final = ("aud", "exp", "jti", "iat", "iss", "name", "nbf", "sub")  # jwt's order
_PUBLIC_KEY: Final = re.compile(r"[A-Z2-7]{56}")
_ARMOURED: Final = re.compile(r"-{3,}[^\n]*-{3,}\r?\n([\w\-.=]+)\r?\n-{3,}[^\n]*-{3,}")  # jwt's userConfigRE
_WARNING: Final = """************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.
"""


def _nkeys() -> Any:
    """The ``nkeys`` module, or a `ConfigurationError` saying how to install it. Imported by
    name: it is optional and untyped, and a user's mypy follows this module (transport reads
    `.creds` with it) without the overrides of eventmicro's own configuration."""
    try:
        return importlib.import_module("nkeys")
    except ImportError:
        raise ConfigurationError(
            "NATS JWTs need the nkeys package: pip install 'eventmicro[permissions]'"
        ) from None


def new_seed(kind: str) -> str:
    """A fresh nkey seed (``SO...``, ``SA...``, ``SU...``) for an operator, account or user."""
    nkeys = _nkeys()
    prefix = {"O": nkeys.PREFIX_BYTE_OPERATOR, "A": nkeys.PREFIX_BYTE_ACCOUNT, "U": nkeys.PREFIX_BYTE_USER}
    seed: bytes = nkeys.encode_seed(os.urandom(32), prefix[KINDS[kind]])
    return seed.decode("ascii")


def public_key(seed: str, kind: str) -> str:
    """The public key of ``seed``; `ConfigurationError` when it is not a seed of ``kind``."""
    try:
        pair = _nkeys().from_seed(bytearray(seed.strip().encode("ascii")))
        public: str = pair.public_key.decode("ascii")
    except Exception as exc:  # nkeys raises its own errors (ErrInvalidSeed, ...): name the kind only
        raise ConfigurationError(f"not an nkey seed ({type(exc).__name__})") from None
    if not public.startswith(KINDS[kind]):
        raise ConfigurationError(f"the seed is not {a_kind(kind)}'s (its public key starts {public[:1]!r})")
    return public


def encode(
    kind: str, nats: Mapping[str, Any], *, subject: str, name: str, signer: str, expires: int | None = None
) -> str:
    """A JWT of ``kind`` for ``subject`` (a public key), signed with the ``signer`` seed.

    ``nats`` is the kind's own section (permissions, limits, ...); ``expires`` a Unix time.
    Raises `ConfigurationError` for a subject or signer of the wrong kind.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"a NATS JWT is of kind operator, account or user, not {kind!r}")
    if not (_PUBLIC_KEY.fullmatch(subject) and subject.startswith(KINDS[kind])):
        raise ConfigurationError(f"{kind} JWT: {subject[:8]!r}... is not {a_kind(kind)}'s public key")
    issuer = public_key(signer, "operator" if kind != "user" else "account")
    if kind == "operator" and issuer != subject:
        raise ConfigurationError("an operator JWT is signed by the operator itself")
    data: dict[str, Any] = {"exp": expires, "iat": _now(), "iss": issuer, "name": name, "sub": subject}
    data = {key: data[key] for key in _CLAIMS_DATA if data.get(key) is not None}
    claims = {**data, "jti": _hash(data), "nats": {**nats, "type": kind, "version": 2}}
    signing_input = f"{_b64(_compact(_HEADER))}.{_b64(_compact(claims))}"
    signature = _nkeys().from_seed(bytearray(signer.strip().encode("ascii"))).sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


def decode(token: str) -> dict[str, Any]:
    """The claims of ``token``, once its header, kind and signature (by its issuer) are checked.

    Raises `ConfigurationError` naming what is wrong; never the token's content. It does not
    check that the issuer is trusted: that is the server's (and the caller's) business.
    """
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise ConfigurationError("not a JWT: it has not three parts")
    try:
        header, claims = (json.loads(_unb64(part)) for part in parts[:2])
        signature = _unb64(parts[2])
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise ConfigurationError("not a JWT: a part is not base64url JSON") from None
    if not isinstance(claims, dict) or header != _HEADER:
        raise ConfigurationError('not a NATS JWT: the header is not {"typ":"JWT","alg":"ed25519-nkey"}')
    kind = claims.get("nats", {}).get("type") if isinstance(claims.get("nats"), dict) else None
    issuer = claims.get("iss")
    if kind not in _ISSUERS or not isinstance(issuer, str) or not issuer.startswith(_ISSUERS[kind]):
        raise ConfigurationError("not a NATS JWT: no operator, account or user claims of a fitting issuer")
    if not _verifies(issuer, f"{parts[0]}.{parts[1]}".encode(), signature):
        raise ConfigurationError("the JWT's signature does not verify with its issuer's key")
    return claims


def creds(token: str, seed: str) -> str:
    """A `.creds` file: the user's JWT and nkey seed, armoured as ``nsc`` writes them."""
    if not seed.strip().startswith("SU"):
        raise ConfigurationError("a .creds file holds a user's seed (SU...)")
    return (
        f"-----BEGIN NATS USER JWT-----\n{token.strip()}\n------END NATS USER JWT------\n\n"
        f"{_WARNING}\n-----BEGIN USER NKEY SEED-----\n{seed.strip()}\n------END USER NKEY SEED------\n\n"
        f"*************************************************************\n"
    )


def read_creds(text: str) -> tuple[str, str]:
    """The user JWT and seed of a `.creds` file's text; `ConfigurationError` when it has not
    both (the message never quotes the file: it holds a secret)."""
    blocks = _ARMOURED.findall(text)
    if len(blocks) < 2 or blocks[0].count(".") != 2 or not blocks[1].startswith("SU"):
        raise ConfigurationError(
            "it is not a .creds file: a user JWT and a user seed (SU...), each between armour lines"
        )
    return blocks[0], blocks[1]


def expiry(token: str) -> int | None:
    """The ``exp`` claim of ``token`` (Unix time), unverified: to explain a refusal, nothing more."""
    try:
        claims = json.loads(_unb64(token.split(".")[1]))
    except (ValueError, IndexError, binascii.Error):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return expires if isinstance(expires, int) and not isinstance(expires, bool) else None


def _verifies(issuer: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` of ``data`` is ``issuer``'s (a public nkey: prefix, key, crc16)."""
    nkeys = _nkeys()
    bad_signature = importlib.import_module("nacl.exceptions").BadSignatureError  # nkeys' own dependency
    verify_key = importlib.import_module("nacl.signing").VerifyKey

    try:
        raw = base64.b32decode(issuer + "=" * (-len(issuer) % 8))
        if len(raw) != 35 or nkeys.crc16_checksum(raw[:33]) != raw[33:]:
            return False
        verify_key(raw[1:33]).verify(data, signature)
    except (ValueError, binascii.Error, bad_signature):
        return False
    return True


def a_kind(kind: str) -> str:
    """``kind`` with its article: "an operator", "an account", "a user"."""
    return f"a {kind}" if kind == "user" else f"an {kind}"


def _hash(data: Mapping[str, Any]) -> str:
    """The claim's ``jti``: sha512/256 of its claims data, base32 without padding (jwt's hash())."""
    digest = hashlib.new("sha512_256", _compact(data).encode()).digest()
    return base64.b32encode(digest).decode().rstrip("=")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now() -> int:
    return int(time.time())
