"""A network of its own for every Docker service (issue 27), tried by a member.

The hostile service (tests/services/hostile-net) runs as an ordinary member's code
service in the runtime image, on its project's network (a Linux bridge `slb<hash>`,
servicelab/runtimes/docker_egress.py), and tries TCP connections from inside its
container: to a host-only listener this test opens on the host's own addresses (Docker's
default bridge gateway, its project network's gateway, the host's LAN address), to the
test PostgreSQL, to another project's container, and to hosts in private, shared and
link-local ranges and on a network the host is on that this test makes in a network
namespace of its own (the host reaches each of them, so every refusal is the rule's).
What must still work: LAB_ENDPOINT, a sibling service of the same project (by name and
by address), and the lab's proxy.

Every packet stays on this machine: loopback, the host's own addresses, Docker's
networks here, and the namespace made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from servicelab.runtimes.docker_egress import bridge_name, ensure_egress_rules
from servicelab.runtimes.docker_engine import DockerEngine
from servicelab.runtimes.docker_networks import ProjectNetworks
from servicelab.runtimes.egress import Egress

from ..dockertools import LABEL_INSTANCE, remove_everything_of
from ..labtools import LabProcess
from ..test_models_docker import gateway
from .attack import ECHO, SERVICES, deploy, member_token, proxied, set_up_victim, wait_running
from .test_network_local import (
    FAR_LAN,
    FarHosts,
    Listeners,
    can_connect,
    connected,
    far_hosts,
    host_port,
    postgres_address,
    run,
)

pytestmark = pytest.mark.docker

RUNTIME_IMAGE = "servicelab/runtime:test"
HOSTILE_NET = SERVICES / "hostile-net"


# -- the lab, its containers, its networks -----------------------------------------------


@pytest.fixture(scope="module")
def far(docker_engine: Any) -> Iterator[FarHosts]:
    """Made before the lab starts: its egress rule holds the host's networks as they are
    at its start (the stand-in LAN among them)."""
    with far_hosts() as hosts:
        yield hosts


@pytest.fixture(scope="module")
def lab(
    docker_engine: Any, far: FarHosts, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabProcess]:
    """A lab on Docker whose services reach it at the default bridge's gateway (it
    listens on every address, as tests/test_models_docker.py's)."""
    instance_id = f"nettest-{secrets.token_hex(4)}"
    data_dir = tmp_path_factory.mktemp("docker-net-lab") / "data"
    data_dir.mkdir()
    process = LabProcess(data_dir)
    process.env = {
        "SERVICELAB_RUNTIME": "docker",
        "SERVICELAB_RUNTIME_IMAGE": RUNTIME_IMAGE,
        "SERVICELAB_INSTANCE_ID": instance_id,
        "SERVICELAB_CODE_ROOTS": str(SERVICES),
        "SERVICELAB_HOST": "0.0.0.0",
        "SERVICELAB_PUBLIC_URL": f"http://{gateway(docker_engine)}:{process.port}",
    }
    process.start()
    try:
        yield process
    finally:
        process.stop()
        remove_everything_of(docker_engine, instance_id)


def container_of(engine: Any, lab: LabProcess, key: str) -> Any:
    (container,) = [
        c
        for c in engine.containers.list(filters={"label": f"servicelab.key={key}"})
        if c.labels.get(LABEL_INSTANCE) == lab.env["SERVICELAB_INSTANCE_ID"]
    ]
    return container


def network_of(engine: Any, container: Any) -> tuple[Any, str]:
    """A container's (only) network, and its address there."""
    ((name, settings),) = container.attrs["NetworkSettings"]["Networks"].items()
    return engine.networks.get(name), str(settings["IPAddress"])


def network_gateway(network: Any) -> str:
    (config,) = [c for c in network.attrs["IPAM"]["Config"] if ":" not in c["Subnet"]]
    return str(config["Gateway"])


def bridge_of(network: Any) -> str:
    return str(network.attrs["Options"]["com.docker.network.bridge.name"])


def addresses_of(interface: str) -> list[str]:
    return [
        info["local"]
        for link in json.loads(run("ip", "-j", "-4", "addr", "show", "dev", interface))
        for info in link.get("addr_info", [])
    ]


def default_interface() -> str:
    return run("ip", "-4", "route", "show", "default").split(" dev ")[1].split()[0]


@dataclass
class Hostile:
    """The member's hostile-net service in project `attack`, and how to ask it."""

    lab: LabProcess
    token: str
    port: int
    container: Any
    network: Any
    address: str

    def get(self, path: str, **params: str) -> Any:
        with self.lab.client(self.token) as api:
            r = api.get(
                f"/api/projects/attack/services/hostile/{self.port}/{path}",
                params=params,
                timeout=120,
            )
        assert r.status_code == 200, r.text
        return r.json()

    def probe(self, targets: dict[str, str]) -> dict[str, dict]:
        answers = self.get("probe", targets=",".join(targets.values()))
        return {name: answers[target] for name, target in targets.items()}


@pytest.fixture(scope="module")
def victim(lab: LabProcess, docker_engine: Any) -> Any:
    """Another project's service (an admin's echo service in `victim`): its container."""
    set_up_victim(lab)
    return container_of(docker_engine, lab, "victim--vault")


@pytest.fixture(scope="module")
def token(lab: LabProcess) -> str:
    return member_token(lab)


@pytest.fixture(scope="module")
def hostile(lab: LabProcess, token: str, victim: Any, docker_engine: Any) -> Hostile:
    port = host_port()
    with lab.client(token) as api:
        deploy(api, "attack", "hostile", str(HOSTILE_NET), PORT=str(port))
        wait_running(api, "attack", "hostile")
    container = container_of(docker_engine, lab, "attack--hostile")
    network, address = network_of(docker_engine, container)
    return Hostile(lab, token, port, container, network, address)


@pytest.fixture(scope="module")
def listeners(hostile: Hostile, docker_engine: Any) -> Iterator[tuple[Listeners, int]]:
    """A host-only listener on one port (a database's, an admin console's), on the
    host's loopback and on each of its addresses a container may aim at: Docker's default
    bridge gateway (where LAB_ENDPOINT is), the project network's gateway, the LAN's."""
    port = host_port()
    opened = Listeners()
    try:
        opened.open("loopback", socket.AF_INET, ("127.0.0.1", port))
        opened.open("docker0_gateway", socket.AF_INET, (gateway(docker_engine), port))
        opened.open("project_gateway", socket.AF_INET, (network_gateway(hostile.network), port))
        for address in addresses_of(default_interface()):
            opened.open(f"lan_{address}", socket.AF_INET, (address, port))
        yield opened, port
    finally:
        opened.close()


# -- what a member's service reaches -----------------------------------------------------


def test_nothing_of_the_host_is_reachable(
    hostile: Hostile, listeners: tuple[Listeners, int], docker_engine: Any
) -> None:
    """A host-only port on every address of the host a container can aim at, and the
    test PostgreSQL's port there: the host reaches each listener, the service none.
    (127.0.0.1 in a container is the container's own loopback: the host's is not
    reachable from one anyway, and PostgreSQL listens there only, so its port on the
    gateways is the way a member would try.)"""
    opened, port = listeners
    pg_host, pg_port = postgres_address()
    accepted = opened.reached_by_the_host()
    assert can_connect((pg_host, pg_port))
    targets = {
        name: f"{address[0]}:{port}"
        for name, (_, address) in opened.addresses.items()
        if name != "loopback"
    }
    targets |= {
        "postgres_via_docker0_gateway": f"{gateway(docker_engine)}:{pg_port}",
        "postgres_via_project_gateway": f"{network_gateway(hostile.network)}:{pg_port}",
        "own_loopback": f"127.0.0.1:{port}",
    }
    report = hostile.probe(targets)

    assert connected(report) == {}, json.dumps(report, indent=1)
    assert opened.accepted == accepted
    # ... while the lab's API answers, at its LAB_ENDPOINT, and the service calls itself.
    lab = hostile.get("lab")
    assert lab["status"] == 200, lab
    assert lab["endpoint"] == f"http://{gateway(docker_engine)}:{hostile.lab.port}"
    assert hostile.get("selfcall")["ok"] is True


def test_private_shared_link_local_and_lan_hosts_are_out_of_reach(
    hostile: Hostile, far: FarHosts
) -> None:
    """Hosts in 192.168/16, 172.16/12, 100.64/10, 169.254/16 and fc00::/7, and a
    neighbour on a network the host is on (198.51.100.0/24, a range neither private nor
    public, as a LAN may be): the host reaches each, the service none."""
    assert far.reached_from_the_host()
    targets = far.targets() | {"lan_neighbour": f"{FAR_LAN[0]}:{far.port}"}
    report = hostile.probe(targets)
    assert connected(report) == {}, json.dumps(report, indent=1)
    assert hostile.get("lab")["status"] == 200


def test_another_projects_container_is_out_of_reach(
    lab: LabProcess, hostile: Hostile, victim: Any, docker_engine: Any
) -> None:
    """The victim's container on its own network's address and port, and through the
    gateways at its port published on the host: the host reaches it, the member's code
    not; the lab's proxy still does."""
    victim_network, address = network_of(docker_engine, victim)
    assert victim_network.name != hostile.network.name
    published = int(victim.attrs["NetworkSettings"]["Ports"]["8091/tcp"][0]["HostPort"])
    assert can_connect((address, 8091)) and can_connect(("127.0.0.1", published))
    report = hostile.probe(
        {
            "other_container": f"{address}:8091",
            "other_network_gateway": f"{network_gateway(victim_network)}:{published}",
            "published_via_project_gateway": f"{network_gateway(hostile.network)}:{published}",
            "published_via_docker0_gateway": f"{gateway(docker_engine)}:{published}",
        }
    )
    assert connected(report) == {}, json.dumps(report, indent=1)
    with lab.client() as api:
        assert proxied(api, "victim", "vault").text == "ok"


def test_a_sibling_of_the_same_project_is_reachable(
    lab: LabProcess, token: str, hostile: Hostile, docker_engine: Any
) -> None:
    """The services of a project call each other on its network, by container name and
    by address: the egress rule leaves that to Docker."""
    with lab.client(token) as api:
        deploy(api, "attack", "sibling", str(ECHO))
        wait_running(api, "attack", "sibling")
    sibling = container_of(docker_engine, lab, "attack--sibling")
    network, address = network_of(docker_engine, sibling)
    assert network.name == hostile.network.name
    report = hostile.probe({"by_name": f"{sibling.name}:8091", "by_address": f"{address}:8091"})
    assert {name: answer["outcome"] for name, answer in report.items()} == {
        "by_name": "connected",
        "by_address": "connected",
    }, json.dumps(report, indent=1)


def test_the_service_is_reached_by_the_proxy_only(hostile: Hostile) -> None:
    """It listens on 0.0.0.0 in its container; its port is published on the host's
    loopback only, where the lab's proxy reaches it."""
    bindings = hostile.container.attrs["NetworkSettings"]["Ports"][f"{hostile.port}/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    with hostile.lab.client(hostile.token) as api:
        r = api.get(f"/api/projects/attack/services/hostile/{hostile.port}/")
    assert (r.status_code, r.text) == (200, "ok")
    assert not can_connect((network_gateway(hostile.network), int(bindings[0]["HostPort"])))


def test_the_host_is_out_of_reach_over_ipv6_link_local(hostile: Hostile) -> None:
    """A host port open on every IPv6 address (`::`, as sshd and many daemons listen):
    the project network's bridge has a link-local address (the host's `ip -6 addr`),
    which is also what a container derives from its gateway's MAC. Docker turns IPv6 off
    in containers of networks without it, and the service cannot turn it back on."""
    bridge = bridge_of(hostile.network)
    link_local = [
        info["local"]
        for link in json.loads(run("ip", "-j", "-6", "addr", "show", "dev", bridge))
        for info in link.get("addr_info", [])
        if info.get("scope") == "link"
    ]
    assert link_local, run("ip", "-6", "addr", "show", "dev", bridge)
    assert hostile.get("lab")["status"] == 200  # the gateway is in its ARP table now
    (gateway_mac,) = [
        n["link_local"]
        for n in hostile.get("neighbours")
        if n["ip"] == network_gateway(hostile.network)
    ]
    opened = Listeners()
    port = host_port()
    try:
        opened.open("every_ipv6_address", socket.AF_INET6, ("::", port))
        accepted = opened.reached_by_the_host()
        targets = {f"bridge_{a}": f"[{a}%eth0]:{port}" for a in link_local}
        targets["gateway_eui64"] = f"[{gateway_mac}%eth0]:{port}"
        report = hostile.probe(targets)
        assert connected(report) == {}, json.dumps(report, indent=1)
        assert opened.accepted == accepted
    finally:
        opened.close()


# -- Podman's Docker-compatible API --------------------------------------------------------

PODMAN_SOCKET = Path("/run/podman/podman.sock")


PODMAN_IMAGE = "servicelab/python:bookworm"
#: Run in a container: a TCP connection to each `host:port` of argv, its outcome.
TRY_CONNECT = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        out[target] = "connected"
    except OSError as exc:
        out[target] = type(exc).__name__
print(json.dumps(out))
"""


@pytest.mark.podman
def test_podman_project_networks_are_on_bridges_the_rule_covers() -> None:
    """The lab asks for the bridge's name through Docker's option
    (`com.docker.network.bridge.name`); Podman's API honours it (its network's
    `network_interface`), so the same `slb+` rules (installed as a lab's start does)
    keep a Podman container off the host's ports."""
    import docker

    if not PODMAN_SOCKET.exists():
        pytest.skip(f"no Podman API at {PODMAN_SOCKET}; run scripts/setup-podman.sh")
    client = docker.DockerClient(base_url=f"unix://{PODMAN_SOCKET}", timeout=60)
    tag = f"nettest-{secrets.token_hex(4)}"
    networks = ProjectNetworks(DockerEngine(client), tag, "sln")
    name = networks.name("attack")
    opened = Listeners()
    try:
        asyncio.run(networks.ensure("attack"))
        (info,) = json.loads(run("podman", "network", "inspect", name))
        assert info["network_interface"] == bridge_name(name)
        ensure_egress_rules(Egress(), "", local_engine=True)
        # Podman makes the bridge with the network's first container.
        container = client.containers.run(
            PODMAN_IMAGE, ["sleep", "600"], network=name, detach=True, labels={LABEL_INSTANCE: tag}
        )
        port = host_port()
        podman_gateway = info["subnets"][0]["gateway"]
        opened.open("podman_gateway", socket.AF_INET, (podman_gateway, port))
        for address in addresses_of(default_interface()):
            opened.open(f"lan_{address}", socket.AF_INET, (address, port))
        accepted = opened.reached_by_the_host()
        targets = [f"{address[0]}:{port}" for _, address in opened.addresses.values()]
        done = container.exec_run(["python3", "-c", TRY_CONNECT, *targets])
        assert done.exit_code == 0, done.output
        outcomes = json.loads(done.output)
        assert set(outcomes) == set(targets)
        assert {t: o for t, o in outcomes.items() if o == "connected"} == {}, outcomes
        assert opened.accepted == accepted
    finally:
        opened.close()
        remove_everything_of(client, tag)
        with contextlib.suppress(docker.errors.NotFound):
            client.networks.get(name).remove()
        client.close()
