"""SERVICELAB_SERVICE_EGRESS: what an operator writes, and what a mistake in it says."""

from __future__ import annotations

import pytest

from servicelab.runtimes.egress import Allowed, Egress
from servicelab.runtimes.sandbox_net import ServiceNetwork


def test_the_default_is_the_internet_and_nothing_more() -> None:
    assert Egress.parse("") == Egress.parse("internet") == Egress(internet=True, allow=())


def test_an_operator_allows_addresses_networks_and_ports() -> None:
    egress = Egress.parse("none, 10.1.2.3:5432, 192.168.7.0/24, [fd00::5]:6379, 10.9.9.9")
    assert not egress.internet
    assert egress.allow == (
        Allowed("10.1.2.3/32", 5432),
        Allowed("192.168.7.0/24"),
        Allowed("fd00::5/128", 6379),
        Allowed("10.9.9.9/32"),
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("internet,none", "not both"),
        ("db.internal:5432", "names are not resolved"),
        ("10.1.2.3:99999", "no valid port"),
        ("10.1.2.3:", "no valid port"),
    ],
)
def test_a_mistake_says_what_to_write(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Egress.parse(text)


def test_a_lab_on_loopback_is_reached_at_the_gateway() -> None:
    net = ServiceNetwork.parse("10.213.0.0/16", "internet")
    assert net.gateway == "10.213.0.1"
    assert net.lab_endpoint("http://127.0.0.1:8080") == "http://10.213.0.1:8080"
    assert net.lab_endpoint("http://localhost:9000/") == "http://10.213.0.1:9000/"
    assert net.lab_endpoint("https://lab.example.com") == "https://lab.example.com"
    config = net.instance_config("http://10.213.0.1:8080")
    assert config["lab"] == [("10.213.0.1", 8080)] and "169.254.0.0/16" in config["blocked"]


@pytest.mark.parametrize("network", ["10.213.0.0/30", "fd00::/64", "not-a-network"])
def test_a_service_network_must_be_ipv4_and_large_enough(network: str) -> None:
    with pytest.raises(ValueError, match="SERVICELAB_SERVICE_NETWORK"):
        ServiceNetwork.parse(network, "internet")
