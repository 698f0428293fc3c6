"""compose.yaml and compose.cluster.yaml cannot be run here (no Docker engine): check what can be
checked — every service command names a real MODULE[:ATTR] of services, and the NATS wiring
(URLs, ports, health checks) is consistent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from eventmicro.cli.run import load_services

ROOT = Path(__file__).resolve().parents[2]
SHOP = {"orders", "inventory", "billing", "notifications", "audit"}


def load(name: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(document, dict)
    return document


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_every_shop_service_runs_a_real_service_target(name: str) -> None:
    services = load(name)["services"]
    shop = {
        key: value
        for key, value in services.items()
        if "command" in value and value["command"][:2] == ["eventmicro", "run"]
    }
    assert set(shop) == SHOP
    for key, spec in shop.items():
        target = spec["command"][2]
        loaded = load_services(target)  # imports the module: a wrong name fails here
        assert [s.name for s in loaded] == [key]
        assert spec.get("build") == "." or "image" in spec


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cluster.yaml"])
def test_the_services_reach_the_nats_nodes_the_file_defines(name: str) -> None:
    services = load(name)["services"]
    nats = {key: spec for key, spec in services.items() if str(spec.get("image", "")).startswith("nats:")}
    assert nats
    for key, spec in nats.items():
        command = " ".join(spec["command"])
        assert "-js" in command.split() or "--jetstream" in command, f"{key} runs without JetStream"
        assert re.search(r"(-m|--http_port)[ =]8222", command), f"{key} has no monitoring port"
        assert "8222/healthz" in " ".join(spec["healthcheck"]["test"]), f"{key} has no health check"
    for key in SHOP:
        spec = services[key]
        urls = spec["environment"]["EVENTMICRO_NATS_URL"].split(",")
        hosts = {urlsplit(url).hostname for url in urls}
        assert hosts == set(nats), f"{key} is not given every NATS node"
        assert {urlsplit(url).port for url in urls} == {4222}
        assert set(spec["depends_on"]) == set(nats)
        assert all(v["condition"] == "service_healthy" for v in spec["depends_on"].values())
