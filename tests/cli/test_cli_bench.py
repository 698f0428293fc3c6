"""``eventmicro bench``: throughput and latency through eventmicro's stack, on a given NATS."""

from __future__ import annotations

import re

import pytest

from eventmicro import NatsServer
from eventmicro.cli.main import main


@pytest.mark.parametrize(
    ("kind", "extra", "rate"),
    [
        ("rpc", ["--clients", "8"], "calls/s"),
        ("pubsub", [], "handled/s"),
        ("pubsub", ["--durable"], "handled/s"),
    ],
)
def test_bench_reports_rates_and_latencies(
    nats_server: NatsServer, capsys: pytest.CaptureFixture[str], kind: str, extra: list[str], rate: str
) -> None:
    assert main(["bench", kind, "--url", nats_server.url, "--msgs", "300", *extra]) == 0
    out = capsys.readouterr().out
    figure = re.search(rf"{re.escape(rate)}\s+([\d,]+)", out)
    assert figure is not None, out
    assert int(figure.group(1).replace(",", "")) > 0
    assert re.search(r"latency p99\s+[\d,]+ µs", out)


def test_bench_refuses_nonsense(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "rpc", "--msgs", "0", "--url", "nats://127.0.0.1:1"]) == 2
    assert "--msgs" in capsys.readouterr().out
