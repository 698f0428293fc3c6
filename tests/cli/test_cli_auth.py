"""Every CLI command that talks to NATS takes the connection flags (auth, TLS) as well as --url."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from eventmicro import NatsServer
from eventmicro.cli.main import build_parser, main

TOKEN = "s3cret-cli-token"


@pytest.fixture(scope="module")
def token_server() -> Iterator[NatsServer]:
    with NatsServer(jetstream=True, extra_config=f'authorization {{ token: "{TOKEN}" }}') as server:
        yield server


def test_every_networked_command_has_the_connection_flags() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands: dict[str, argparse.ArgumentParser] = dict(subparsers.choices)
    networked = [name for name, p in commands.items() if any("--url" in a.option_strings for a in p._actions)]
    assert {"demo", "run", "call", "publish", "tail", "services", "bench", "deadletters"} <= set(networked)
    for name in networked:
        flags = {flag for action in commands[name]._actions for flag in action.option_strings}
        assert {
            "--user",
            "--password",
            "--token",
            "--creds",
            "--nkey",
            "--tls-ca",
            "--tls-cert",
            "--tls-key",
        } <= flags


def test_the_token_flag_authenticates_and_its_absence_is_a_clear_refusal(
    token_server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["services", "ls", "--url", token_server.url, "--token", TOKEN]) == 0
    capsys.readouterr()
    assert main(["deadletters", "--url", token_server.url, "--token", TOKEN, "ls"]) == 0
    assert "no dead letters" in capsys.readouterr().out
    assert main(["services", "ls", "--url", token_server.url, "--token", "wrong"]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "wrong" not in captured.err + captured.out  # the secret is not echoed
