"""NATS JWT v2 as nats-io/jwt writes it, `.creds` as nsc writes them, and the claims of a grant.

Pure: no server (the server accepting them is tests/permissions/test_operator.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from eventmicro import ConfigurationError, ConnectOptions, Service
from eventmicro.service.operator import Authority, account_jwt, user_claims, user_creds
from eventmicro.service.permissions import admin, for_client, for_service
from eventmicro.wire.natsjwt import decode, encode, new_seed, public_key, read_creds
from schemas.shop.orders.v1 import orders_pb2 as orders

AUTHORITY = Authority.new("APP")
quiet = Service("quiet", version="1.0.0")  # serves nothing, publishes nothing


def part(token: str, index: int) -> dict[str, object]:
    text = token.split(".")[index]
    loaded: dict[str, object] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return loaded


def test_a_user_jwt_has_the_v2_header_claims_and_an_account_signature() -> None:
    seed = new_seed("user")
    token = read_creds(
        user_creds(for_client("web", calls=["orders"]), seed, AUTHORITY, expires=2_000_000_000)
    )[0]
    assert part(token, 0) == {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = decode(token)
    assert AUTHORITY.signing_seed is not None
    assert claims["iss"] == public_key(AUTHORITY.signing_seed, "account")  # the account's signing key
    assert claims["sub"] == public_key(seed, "user")
    assert (claims["name"], claims["exp"]) == ("web", 2_000_000_000)
    data = {key: claims[key] for key in ("exp", "iat", "iss", "name", "sub")}
    digest = hashlib.new("sha512_256", json.dumps(data, separators=(",", ":")).encode()).digest()
    assert claims["jti"] == base64.b32encode(digest).decode().rstrip("=")  # jwt's hash of the claims data
    nats = claims["nats"]
    assert (nats["type"], nats["version"], nats["issuer_account"]) == ("user", 2, AUTHORITY.account_key)
    assert nats["pub"] == {"allow": ["orders.*", "orders.*.*", "$SRV.*", "$SRV.*.*", "$SRV.*.*.*"]}
    assert nats["sub"] == {"allow": ["_INBOX_web.>"]}
    assert "resp" not in nats  # a client answers no requests


def test_an_account_jwt_is_signed_by_the_operator_with_jetstream_enabled() -> None:
    claims = decode(account_jwt(AUTHORITY))
    assert claims["iss"] == public_key(AUTHORITY.operator_seed, "operator")
    assert claims["sub"] == AUTHORITY.account_key
    assert AUTHORITY.signing_seed is not None
    assert claims["nats"]["signing_keys"] == [public_key(AUTHORITY.signing_seed, "account")]
    limits = claims["nats"]["limits"]
    assert (limits["disk_storage"], limits["mem_storage"]) == (-1, -1)


def test_a_service_may_answer_requests_and_one_that_publishes_nothing_is_denied_everything() -> None:
    section = user_claims(for_service(quiet))
    assert section["pub"] == {"deny": [">"]}  # an empty allow list would allow every subject
    assert section["resp"] == {"max": 1, "ttl": 0}
    assert user_claims(admin("ops")) == {"subs": -1, "data": -1, "payload": -1}  # every subject


def test_a_tampered_jwt_does_not_verify() -> None:
    token = account_jwt(AUTHORITY)
    header, _, signature = token.split(".")
    forged = dict(part(token, 1), name="EVIL")
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    with pytest.raises(ConfigurationError, match="signature does not verify"):
        decode(f"{header}.{body}.{signature}")
    with pytest.raises(ConfigurationError, match="not a JWT"):
        decode("only.two")


def test_creds_carry_the_nsc_armour_and_read_back() -> None:
    seed = new_seed("user")
    text = user_creds(admin("ops"), seed, AUTHORITY)
    assert text.startswith("-----BEGIN NATS USER JWT-----\n")
    assert "------END NATS USER JWT------" in text
    assert "NKEYs are sensitive and should be treated as secrets." in text
    assert f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------" in text
    token, read_seed = read_creds(text)
    assert read_seed == seed
    assert decode(token)["name"] == "ops"


def test_keys_of_the_wrong_kind_are_refused() -> None:
    user = public_key(new_seed("user"), "user")
    with pytest.raises(ConfigurationError, match="not an account's"):  # users are signed by accounts
        encode("user", {}, subject=user, name="x", signer=AUTHORITY.operator_seed)
    with pytest.raises(ConfigurationError, match="not an operator's"):
        Authority(new_seed("account"), new_seed("account"), new_seed("account"))
    with pytest.raises(ConfigurationError, match="not a user's"):
        user_creds(admin("ops"), new_seed("account"), AUTHORITY)
    with pytest.raises(ConfigurationError, match="not an nkey seed"):
        public_key("SUNOTASEED", "user")
    with pytest.raises(ConfigurationError, match="the system account's name"):
        Authority(AUTHORITY.operator_seed, AUTHORITY.system_seed, AUTHORITY.account_seed, account="SYS")
    assert AUTHORITY.account_seed not in repr(AUTHORITY)


def test_a_malformed_creds_file_is_a_configuration_error_quoting_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broken.creds"
    path.write_text("SUSECRETSECRET\n")
    with pytest.raises(ConfigurationError) as caught:
        ConnectOptions.from_env("nats://127.0.0.1:4222", environ={}, creds_file=str(path))
    assert "is not a .creds file" in str(caught.value)
    assert "SECRET" not in str(caught.value)


def test_a_derived_grant_goes_into_the_jwt_unchanged() -> None:
    shop = Service("shop", version="1.0.0", publishes=[orders.OrderPlaced], calls=["billing"])

    @shop.rpc
    async def place(req: orders.PlaceOrder) -> orders.OrderAccepted:
        return orders.OrderAccepted()

    grant = for_service(shop)
    section = user_claims(grant)
    assert section["pub"] == {"allow": list(grant.publish)}
    assert section["sub"] == {"allow": list(grant.subscribe)}
    assert "shop.place" in section["sub"]["allow"]
