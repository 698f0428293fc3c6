"""Authentication and TLS against a real nats-server: user/password, token, nkey, TLS and mutual TLS.

Every server here is started with ``jetstream=False`` and a raw ``extra_config`` block; nothing
is mocked. What is checked is what a user notices: a connection with the right credentials
carries messages both ways, a wrong credential fails at once with `AuthorizationError`, a
server that cannot be trusted fails with `ConnectError` instead of hanging, and no secret ever
shows up in an error message, a ``repr()`` or a log record.

Two failure symptoms have their own exception types (`RefusalMisclassified`, `ConnectHung`)
so that a regression names itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nkeys
import pytest
import trustme

from eventmicro import (
    AuthorizationError,
    ConfigurationError,
    ConnectError,
    Connection,
    ConnectOptions,
    Message,
    NatsServer,
    TLSOptions,
)
from eventmicro.transport.config import redact_url

USER = "alice"
PASSWORD = "s3cret"
WRONG_PASSWORD = "hunter2-wrong"
TOKEN = "t0ken-xyz"
WRONG_TOKEN = "t0ken-wrong-abc"

# Upper bound for a connect that should succeed or be refused: far above what either takes.
CONNECT_DEADLINE = 15.0
# A connect to an untrusted TLS server fails in milliseconds when it works; after this, it hangs.
HANG_DEADLINE = 2.5
RETRY_LOG = "connect attempt"
# How a refused connection looks when the server's close races the client's writes.
RESET_SYMPTOMS = ("ConnectionResetError", "BrokenPipeError", "ConnectionAbortedError")


# --- failure symptoms ------------------------------------------------------------------------


class RefusalMisclassified(Exception):
    """Refused credentials surfaced as a plain `ConnectError`, or were retried.

    After the server's ``-ERR 'Authorization Violation'`` nats-py often reports a connection
    reset through the same error callback; the refusal must still be recognised.
    """


class ConnectHung(Exception):
    """`Connection.open` did not return after the TLS handshake failed on the client side.

    nats-py 2.16 can wait forever on the pre-TLS socket after a failed upgrade
    (nats-io/nats.py#718); eventmicro must stop the attempt and raise `ConnectError`.
    """


# --- helpers ---------------------------------------------------------------------------------


def options(url: str, **overrides: object) -> ConnectOptions:
    """Options for ``url`` that ignore the process environment (no stray EVENTMICRO_* leaks in)."""
    overrides.setdefault("connect_attempts", 1)
    overrides.setdefault("connect_timeout", 2.0)
    overrides.setdefault("reconnect_wait", 0.1)
    return ConnectOptions.from_env(url, environ={}, **overrides)


async def open_connection(opts: ConnectOptions, deadline: float = CONNECT_DEADLINE) -> Connection:
    """Open a connection; raise `ConnectHung` instead of waiting forever."""
    try:
        return await asyncio.wait_for(Connection(opts).open(), deadline)
    except TimeoutError as exc:
        raise ConnectHung(f"Connection.open() did not return within {deadline}s") from exc


def retry_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if RETRY_LOG in r.getMessage()]


def is_reset(text: str) -> bool:
    return any(symptom in text for symptom in RESET_SYMPTOMS)


async def expect_refused(opts: ConnectOptions, caplog: pytest.LogCaptureFixture) -> AuthorizationError:
    """Connect with credentials the server refuses: `AuthorizationError`, and no retry."""
    try:
        conn = await open_connection(opts)
    except AuthorizationError as exc:
        refused = exc
    except ConnectError as exc:
        if is_reset(str(exc)):
            raise RefusalMisclassified(str(exc)) from exc
        raise
    else:
        await conn.close()
        pytest.fail("the server accepted credentials it should refuse")
    retries = retry_records(caplog)
    if retries and all(is_reset(r.getMessage()) for r in retries):
        raise RefusalMisclassified("; ".join(r.getMessage() for r in retries))
    assert [r.getMessage() for r in retries] == [], "refused credentials must not be retried"
    return refused


async def assert_round_trip(conn: Connection) -> None:
    """Prove the connection carries messages both ways: a responder on it answers its own request."""
    subject = f"auth.echo.{uuid.uuid4().hex}"

    async def echo(msg: Message) -> None:
        await conn.publish(msg.reply, b"echo:" + msg.data)

    sub = await conn.subscribe(subject, echo)
    await conn.flush()
    reply = await conn.request(subject, b"ping", timeout=5.0)
    assert reply.data == b"echo:ping"
    await sub.unsubscribe()


async def assert_publish_subscribe(conn: Connection) -> None:
    """A plain publish with headers reaches a subscriber (waited on with an event, not a sleep)."""
    subject = f"auth.pubsub.{uuid.uuid4().hex}"
    received: list[Message] = []
    got = asyncio.Event()

    async def handler(msg: Message) -> None:
        received.append(msg)
        got.set()

    sub = await conn.subscribe(subject, handler)
    await conn.flush()
    await conn.publish(subject, b"hello", headers={"x-test": "auth"})
    await asyncio.wait_for(got.wait(), 5.0)
    assert [m.data for m in received] == [b"hello"]
    assert received[0].headers is not None
    assert received[0].headers.get("x-test") == "auth"
    await sub.unsubscribe()


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        message = record.getMessage()
        for secret in secrets:
            assert secret not in message, f"secret leaked in log record {record.name}: {message!r}"
    for secret in secrets:
        assert secret not in caplog.text, "secret leaked in the formatted log output"


def assert_no_secret_in_error(exc: BaseException, *secrets: str) -> None:
    texts = [str(exc), repr(exc), *(str(s) for s in getattr(exc, "servers", ()))]
    cause = exc.__cause__
    while cause is not None:
        texts += [str(cause), repr(cause)]
        cause = cause.__cause__
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret leaked in error text: {text!r}"


def read_info(server: NatsServer) -> dict[str, object]:
    """The plain-text INFO a server sends first, before any TLS upgrade."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        line = b""
        while not line.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            assert chunk, "server closed before sending INFO"
            line += chunk
    assert line.startswith(b"INFO ")
    info = json.loads(line[5:])
    assert isinstance(info, dict)
    return info


# --- servers, certificates, keys -------------------------------------------------------------


@pytest.fixture(scope="module")
def userpass_server() -> Iterator[NatsServer]:
    config = f'authorization {{ user: {USER}, password: "{PASSWORD}" }}'
    with NatsServer(jetstream=False, extra_config=config) as server:
        yield server


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with NatsServer(jetstream=False, extra_config=f'authorization {{ token: "{TOKEN}" }}') as server:
        yield server


@dataclass(frozen=True)
class Pki:
    """PEM files: a throw-away CA, a server cert for 127.0.0.1/localhost, a client cert, another CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.eventmicro.test")
    files = Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server-cert.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client-cert.pem",
        client_key=folder / "client-key.pem",
        other_ca=folder / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(files.server_cert), append=i > 0)
    server.private_key_pem.write_to_path(str(files.server_key))
    for i, blob in enumerate(client.cert_chain_pems):
        blob.write_to_path(str(files.client_cert), append=i > 0)
    client.private_key_pem.write_to_path(str(files.client_key))
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    return files


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[NatsServer]:
    config = f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}", timeout: 2 }}'
    with NatsServer(jetstream=False, extra_config=config) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[NatsServer]:
    config = (
        f'tls {{ cert_file: "{pki.server_cert}", key_file: "{pki.server_key}", '
        f'ca_file: "{pki.ca}", verify: true, timeout: 2 }}'
    )
    with NatsServer(jetstream=False, extra_config=config) as server:
        yield server


@dataclass(frozen=True)
class NkeyUser:
    seed_file: Path
    seed: str
    public_key: str


def make_nkey_user(folder: Path, name: str) -> NkeyUser:
    """A fresh user nkey: the seed (``SU...``) in a file, and its public key (``U...``)."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    pair = nkeys.from_seed(bytearray(seed))
    public: str = pair.public_key.decode()
    pair.wipe()
    assert seed.startswith(b"SU")
    assert public.startswith("U")
    seed_file = folder / f"{name}.nk"
    seed_file.write_bytes(seed + b"\n")
    seed_file.chmod(0o600)
    return NkeyUser(seed_file=seed_file, seed=seed.decode(), public_key=public)


@pytest.fixture(scope="module")
def nkey_users(tmp_path_factory: pytest.TempPathFactory) -> tuple[NkeyUser, NkeyUser]:
    """Two nkey users: the first is known to `nkey_server`, the second is not."""
    folder = tmp_path_factory.mktemp("nkeys")
    return make_nkey_user(folder, "known"), make_nkey_user(folder, "stranger")


@pytest.fixture(scope="module")
def nkey_server(nkey_users: tuple[NkeyUser, NkeyUser]) -> Iterator[NatsServer]:
    known, _ = nkey_users
    config = f"authorization {{ users: [ {{ nkey: {known.public_key} }} ] }}"
    with NatsServer(jetstream=False, extra_config=config) as server:
        yield server


# --- 1. user / password ----------------------------------------------------------------------


async def test_user_password_right_credentials_round_trip(userpass_server: NatsServer) -> None:
    conn = await open_connection(options(userpass_server.url, user=USER, password=PASSWORD))
    try:
        assert conn.is_connected
        assert conn.server_info.get("auth_required") is True
        await assert_round_trip(conn)
        await assert_publish_subscribe(conn)
    finally:
        await conn.close()
    assert not conn.is_connected


async def test_user_password_wrong_password_refused_without_retry(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Default reconnect_wait, five attempts: a retried refusal would show "connect attempt" records.
    opts = ConnectOptions.from_env(
        userpass_server.url, environ={}, user=USER, password=WRONG_PASSWORD, connect_attempts=5
    )
    refused = await expect_refused(opts, caplog)
    assert isinstance(refused, ConnectError)
    assert "authorization" in str(refused).lower()
    assert refused.servers == (userpass_server.url,)
    assert_no_secret_in_error(refused, WRONG_PASSWORD, PASSWORD)
    for text in (repr(opts), str(opts)):
        assert WRONG_PASSWORD not in text


async def test_user_password_missing_credentials_refused(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    await expect_refused(options(userpass_server.url, connect_attempts=3), caplog)


def test_user_password_never_in_options_repr() -> None:
    opts = ConnectOptions.from_env("nats://127.0.0.1:4222", environ={}, user=USER, password=PASSWORD)
    assert opts.password == PASSWORD
    for text in (repr(opts), str(opts), f"{opts}", f"{opts!r}"):
        assert PASSWORD not in text
        assert USER in text  # the user name is not a secret and helps debugging


# --- 2. token --------------------------------------------------------------------------------


async def test_token_right_token_round_trip(token_server: NatsServer) -> None:
    conn = await open_connection(options(token_server.url, token=TOKEN))
    try:
        await assert_round_trip(conn)
    finally:
        await conn.close()


async def test_token_wrong_token_refused(token_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    refused = await expect_refused(options(token_server.url, token=WRONG_TOKEN, connect_attempts=3), caplog)
    assert_no_secret_in_error(refused, WRONG_TOKEN, TOKEN)


async def test_token_missing_refused(token_server: NatsServer, caplog: pytest.LogCaptureFixture) -> None:
    await expect_refused(options(token_server.url, connect_attempts=3), caplog)


def test_token_never_in_options_repr() -> None:
    opts = ConnectOptions.from_env("nats://127.0.0.1:4222", environ={}, token=TOKEN)
    assert opts.token == TOKEN
    assert TOKEN not in repr(opts)
    assert TOKEN not in str(opts)


def test_two_auth_methods_rejected_without_leaking() -> None:
    with pytest.raises(ConfigurationError, match="choose one") as info:
        ConnectOptions(user=USER, password=PASSWORD, token=TOKEN)
    assert PASSWORD not in str(info.value)
    assert TOKEN not in str(info.value)


async def test_refusal_is_classified_as_authorization_every_time(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The server's close races nats-py's writes, so a refusal can also surface as a connection
    # reset: repeat a refused connect to cover both orders.
    opts = options(userpass_server.url, user=USER, password=WRONG_PASSWORD, reconnect_wait=0.01)
    for _ in range(40):
        caplog.clear()
        await expect_refused(opts, caplog)


# --- 3. TLS and mutual TLS -------------------------------------------------------------------


def test_tls_server_sends_plain_info_first(tls_server: NatsServer, mtls_server: NatsServer) -> None:
    # NatsServer's readiness check relies on this: INFO comes in clear text, TLS comes after.
    assert read_info(tls_server).get("tls_required") is True
    info = read_info(mtls_server)
    assert info.get("tls_required") is True
    assert info.get("tls_verify") is True


async def test_tls_with_ca_round_trip(tls_server: NatsServer, pki: Pki) -> None:
    conn = await open_connection(options(tls_server.url, tls=TLSOptions(ca_file=str(pki.ca))))
    try:
        assert conn.server_info.get("tls_required") is True
        await assert_round_trip(conn)
        await assert_publish_subscribe(conn)
    finally:
        await conn.close()


async def test_tls_hostname_option_round_trip(tls_server: NatsServer, pki: Pki) -> None:
    opts = options(tls_server.url, tls=TLSOptions(ca_file=str(pki.ca), hostname="localhost"))
    conn = await open_connection(opts)
    try:
        await assert_round_trip(conn)
    finally:
        await conn.close()


UNTRUSTED_CASES = ["default-trust-store", "other-ca", "wrong-hostname", "no-tls-options"]


def untrusted_tls(case: str, pki: Pki) -> TLSOptions | None:
    return {
        # No ca_file: the system trust store does not know the throw-away CA.
        "default-trust-store": TLSOptions(),
        "other-ca": TLSOptions(ca_file=str(pki.other_ca)),
        "wrong-hostname": TLSOptions(ca_file=str(pki.ca), hostname="not-this-host.test"),
        # nats-py upgrades with a default context when the server requires TLS.
        "no-tls-options": None,
    }[case]


@pytest.mark.parametrize("case", UNTRUSTED_CASES)
async def test_untrusted_tls_server_fails_fast_with_connect_error(
    tls_server: NatsServer, pki: Pki, case: str
) -> None:
    opts = options(tls_server.url, tls=untrusted_tls(case, pki), connect_timeout=1.0)
    with pytest.raises(ConnectError) as info:
        await open_connection(opts, HANG_DEADLINE)
    assert type(info.value) is ConnectError  # not an AuthorizationError: nobody refused credentials
    assert "certificate" in str(info.value).lower()


class _Signal(logging.Handler):
    """Sets an asyncio.Event when a log record's message contains ``needle``."""

    def __init__(self, needle: str, event: asyncio.Event) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.event = event
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.needle in message:
            self.event.set()


@pytest.mark.parametrize("case", UNTRUSTED_CASES)
async def test_untrusted_tls_server_is_never_trusted(tls_server: NatsServer, pki: Pki, case: str) -> None:
    # The handshake is rejected and reported, and the connection never becomes usable
    # (no fallback to plain text).
    rejected = asyncio.Event()
    signal = _Signal("CERTIFICATE_VERIFY_FAILED", rejected)
    logger = logging.getLogger("eventmicro.connection")
    logger.addHandler(signal)
    conn = Connection(options(tls_server.url, tls=untrusted_tls(case, pki), connect_timeout=1.0))
    opening = asyncio.ensure_future(conn.open())
    try:
        await asyncio.wait_for(rejected.wait(), CONNECT_DEADLINE)
        assert not conn.is_connected
        if opening.done():
            with pytest.raises(ConnectError):
                opening.result()
    finally:
        logger.removeHandler(signal)
        opening.cancel()
        with pytest.raises((asyncio.CancelledError, ConnectError)):
            await opening
    assert not conn.is_connected


async def test_mutual_tls_with_client_cert_round_trip(mtls_server: NatsServer, pki: Pki) -> None:
    tls = TLSOptions(ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    conn = await open_connection(options(mtls_server.url, tls=tls))
    try:
        assert conn.server_info.get("tls_verify") is True
        await assert_round_trip(conn)
    finally:
        await conn.close()


async def test_mutual_tls_without_client_cert_refused(mtls_server: NatsServer, pki: Pki) -> None:
    # With TLS 1.3 the client finishes its handshake before the server checks the client
    # certificate, so the refusal arrives as a closed connection: ConnectError (or its
    # subclass AuthorizationError), promptly and without hanging.
    with pytest.raises(ConnectError):
        await open_connection(options(mtls_server.url, tls=TLSOptions(ca_file=str(pki.ca))))


async def test_mutual_tls_client_cert_from_other_ca_refused(
    mtls_server: NatsServer, pki: Pki, tmp_path: Path
) -> None:
    stranger = trustme.CA().issue_cert("client.eventmicro.test")
    cert, key = tmp_path / "stranger-cert.pem", tmp_path / "stranger-key.pem"
    stranger.cert_chain_pems[0].write_to_path(str(cert))
    stranger.private_key_pem.write_to_path(str(key))
    tls = TLSOptions(ca_file=str(pki.ca), cert_file=str(cert), key_file=str(key))
    with pytest.raises(ConnectError):
        await open_connection(options(mtls_server.url, tls=tls))


def test_tls_options_validate_files(pki: Pki) -> None:
    with pytest.raises(ConfigurationError, match="both"):
        TLSOptions(ca_file=str(pki.ca), cert_file=str(pki.client_cert))
    with pytest.raises(ConfigurationError, match="not found"):
        TLSOptions(ca_file=str(pki.ca.with_name("missing.pem")))


# --- 4. nkey ---------------------------------------------------------------------------------


async def test_nkey_known_user_round_trip(
    nkey_server: NatsServer, nkey_users: tuple[NkeyUser, NkeyUser]
) -> None:
    known, _ = nkey_users
    assert read_info(nkey_server).get("nonce"), "an nkey server sends a nonce to sign"
    conn = await open_connection(options(nkey_server.url, nkey_seed_file=str(known.seed_file)))
    try:
        await assert_round_trip(conn)
    finally:
        await conn.close()


async def test_nkey_unknown_user_refused(
    nkey_server: NatsServer, nkey_users: tuple[NkeyUser, NkeyUser], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, stranger = nkey_users
    opts = options(nkey_server.url, nkey_seed_file=str(stranger.seed_file), connect_attempts=3)
    await expect_refused(opts, caplog)


async def test_nkey_seed_never_in_errors_or_logs(
    nkey_server: NatsServer, nkey_users: tuple[NkeyUser, NkeyUser], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, stranger = nkey_users
    opts = options(nkey_server.url, nkey_seed_file=str(stranger.seed_file), connect_attempts=2)
    assert stranger.seed not in repr(opts)
    with pytest.raises(ConnectError) as info:
        await open_connection(opts)
    assert_no_secret_in_error(info.value, stranger.seed)
    assert_no_secret_logged(caplog, stranger.seed)


async def test_nkey_seed_file_from_environment(
    nkey_server: NatsServer, nkey_users: tuple[NkeyUser, NkeyUser]
) -> None:
    known, _ = nkey_users
    opts = ConnectOptions.from_env(
        environ={"EVENTMICRO_NATS_URL": nkey_server.url, "EVENTMICRO_NATS_NKEY_SEED": str(known.seed_file)},
        connect_attempts=1,
    )
    assert opts.nkey_seed_file == str(known.seed_file)
    conn = await open_connection(opts)
    try:
        await assert_round_trip(conn)
    finally:
        await conn.close()


# --- 5. secrets never reach the logs ---------------------------------------------------------


# These use ``pytest.raises(ConnectError)`` (AuthorizationError is one) on purpose: how the
# refusal is classified is tested above; here every run must check the logs.


async def test_failed_password_connect_logs_no_secret(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectError) as info:
        await open_connection(
            options(userpass_server.url, user=USER, password=WRONG_PASSWORD, connect_attempts=2)
        )
    assert caplog.records, "the failed connect should have logged something"
    assert_no_secret_logged(caplog, WRONG_PASSWORD, PASSWORD)
    assert_no_secret_in_error(info.value, WRONG_PASSWORD, PASSWORD)


async def test_failed_token_connect_logs_no_secret(
    token_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConnectError) as info:
        await open_connection(options(token_server.url, token=WRONG_TOKEN, connect_attempts=2))
    assert caplog.records
    assert_no_secret_logged(caplog, WRONG_TOKEN, TOKEN)
    assert_no_secret_in_error(info.value, WRONG_TOKEN, TOKEN)


async def test_failed_url_credentials_connect_logs_no_secret(
    userpass_server: NatsServer, token_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for url, secret in (
        (f"nats://{USER}:{WRONG_PASSWORD}@127.0.0.1:{userpass_server.port}", WRONG_PASSWORD),
        (f"nats://{WRONG_TOKEN}@127.0.0.1:{token_server.port}", WRONG_TOKEN),
    ):
        with pytest.raises(ConnectError) as info:
            await open_connection(options(url, connect_attempts=2))
        assert info.value.servers == (redact_url(url),)
        assert secret not in redact_url(url)
        assert_no_secret_logged(caplog, secret)
        assert_no_secret_in_error(info.value, secret)


async def test_retried_connect_with_url_credentials_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    # A server that was started and stopped: its port is closed, so every attempt fails and
    # the retry path (which logs each failed attempt with its error) runs.
    with NatsServer(jetstream=False) as server:
        port = server.port
    caplog.set_level(logging.DEBUG)
    url = f"nats://{TOKEN}@127.0.0.1:{port},nats://{USER}:{WRONG_PASSWORD}@127.0.0.1:{port}"
    opts = options(url, connect_attempts=2, reconnect_wait=0.05, connect_timeout=1.0)
    with pytest.raises(ConnectError) as info:
        await open_connection(opts)
    assert type(info.value) is ConnectError
    assert len(retry_records(caplog)) == 1  # attempt 1 of 2 failed and was retried; the last raised
    assert f"nats://{USER}:***@127.0.0.1:{port}" in str(info.value)
    assert f"nats://***@127.0.0.1:{port}" in str(info.value)
    assert_no_secret_logged(caplog, WRONG_PASSWORD, TOKEN)
    assert_no_secret_in_error(info.value, WRONG_PASSWORD, TOKEN)


# --- 6. environment and URL credentials ------------------------------------------------------


def test_from_env_reads_user_and_password() -> None:
    opts = ConnectOptions.from_env(
        environ={
            "EVENTMICRO_NATS_URL": "nats://127.0.0.1:4222",
            "EVENTMICRO_NATS_USER": USER,
            "EVENTMICRO_NATS_PASSWORD": PASSWORD,
        }
    )
    assert opts.servers == ("nats://127.0.0.1:4222",)
    assert (opts.user, opts.password, opts.token) == (USER, PASSWORD, None)
    assert PASSWORD not in repr(opts)


def test_from_env_reads_token() -> None:
    opts = ConnectOptions.from_env(environ={"EVENTMICRO_NATS_TOKEN": TOKEN})
    assert opts.token == TOKEN
    assert (opts.user, opts.password) == (None, None)
    assert TOKEN not in repr(opts)


def test_from_env_arguments_win_over_environment() -> None:
    opts = ConnectOptions.from_env(
        environ={"EVENTMICRO_NATS_USER": "env-user", "EVENTMICRO_NATS_PASSWORD": "env-pass"},
        user=USER,
        password=PASSWORD,
    )
    assert (opts.user, opts.password) == (USER, PASSWORD)


def test_from_env_user_without_password_rejected() -> None:
    with pytest.raises(ConfigurationError, match="together"):
        ConnectOptions.from_env(environ={"EVENTMICRO_NATS_USER": USER})


async def test_from_env_credentials_connect(userpass_server: NatsServer) -> None:
    opts = ConnectOptions.from_env(
        environ={
            "NATS_URL": userpass_server.url,
            "EVENTMICRO_NATS_USER": USER,
            "EVENTMICRO_NATS_PASSWORD": PASSWORD,
        },
        connect_attempts=1,
    )
    conn = await open_connection(opts)
    try:
        await assert_round_trip(conn)
    finally:
        await conn.close()


async def test_from_env_tls_files_connect(mtls_server: NatsServer, pki: Pki) -> None:
    opts = ConnectOptions.from_env(
        environ={
            "EVENTMICRO_NATS_URL": mtls_server.url,
            "EVENTMICRO_NATS_TLS_CA": str(pki.ca),
            "EVENTMICRO_NATS_TLS_CERT": str(pki.client_cert),
            "EVENTMICRO_NATS_TLS_KEY": str(pki.client_key),
        },
        connect_attempts=1,
    )
    assert opts.tls == TLSOptions(
        ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)
    )
    conn = await open_connection(opts)
    try:
        await assert_round_trip(conn)
    finally:
        await conn.close()


async def test_url_embedded_credentials_connect_and_hide_password(userpass_server: NatsServer) -> None:
    url = f"nats://{USER}:{PASSWORD}@127.0.0.1:{userpass_server.port}"
    hidden = f"nats://{USER}:***@127.0.0.1:{userpass_server.port}"
    opts = options(url)
    assert opts.redacted_servers == (hidden,)
    conn = await open_connection(opts)
    try:
        await assert_round_trip(conn)
        assert conn.connected_url == hidden
    finally:
        await conn.close()


async def test_url_embedded_token_connect_and_hide_token(token_server: NatsServer) -> None:
    conn = await open_connection(options(f"nats://{TOKEN}@127.0.0.1:{token_server.port}"))
    try:
        await assert_round_trip(conn)
        assert conn.connected_url == f"nats://***@127.0.0.1:{token_server.port}"
    finally:
        await conn.close()


async def test_connected_log_hides_url_password(
    userpass_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = await open_connection(options(f"nats://{USER}:{PASSWORD}@127.0.0.1:{userpass_server.port}"))
    await conn.close()
    assert any("connected to" in r.getMessage() for r in caplog.records)
    assert_no_secret_logged(caplog, PASSWORD)


def test_redact_url_hides_password_and_token() -> None:
    assert redact_url(f"nats://{USER}:{PASSWORD}@h:4222") == f"nats://{USER}:***@h:4222"
    assert redact_url(f"nats://{TOKEN}@h:4222") == "nats://***@h:4222"
    assert redact_url("nats://h:4222") == "nats://h:4222"


@pytest.mark.parametrize(
    ("url", "secret"),
    [(f"nats://{USER}:{PASSWORD}@127.0.0.1:4222", PASSWORD), (f"nats://{TOKEN}@127.0.0.1:4222", TOKEN)],
)
def test_options_repr_hides_url_embedded_secret(url: str, secret: str) -> None:
    # Credentials can hide in the server URLs too, not only in the password and token fields.
    opts = ConnectOptions.from_env(url, environ={})
    assert secret not in repr(opts)
    assert secret not in str(opts)
