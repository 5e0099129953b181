"""The lab's default limits (issue 26): the rule that gives a spec without limits the
operator's, how the service page shows them, how a runtime gets them from the settings,
and what they become in Kubernetes' manifests. What each runtime enforces is proven
against the runtimes in tests/security/test_hardening_limits.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate

from servicelab.config import Settings
from servicelab.runtimes.kubernetes_manifests import ClusterOptions, instance_manifests
from servicelab.runtimes.limits import Limits, effective_resources, shown_limits
from servicelab.runtimes.local import LocalRuntime
from servicelab.runtimes.select import make_runtime
from servicelab.spec import Resources, ServiceSpec, normalize

MIB = 2**20
SMALL = Limits(memory=96 * MIB, cpus=0.5, pids=48)


def test_a_spec_without_limits_gets_the_lab_defaults_and_keeps_its_own() -> None:
    limits = Limits.from_settings(
        Settings(default_memory="96MiB", default_cpus=0.5, default_pids=48)
    )
    assert limits == SMALL
    assert effective_resources(Resources(), limits) == Resources(cpus=0.5, memory=96 * MIB)
    own = effective_resources(Resources(memory=512 * MIB, gpus=1), limits)
    assert own == Resources(cpus=0.5, memory=512 * MIB, gpus=1)
    # A default above the engine's CPUs is capped; an explicit ask is not (Docker refuses it).
    assert effective_resources(Resources(), Limits(cpus=8), engine_cpus=2).cpus == 2
    assert effective_resources(Resources(cpus=4), Limits(cpus=8), engine_cpus=2).cpus == 4
    # 0 turns a default off.
    none = Limits.from_settings(Settings(default_memory=0, default_cpus=0, default_pids=0))
    assert effective_resources(Resources(), none) == Resources()


def test_the_defaults_out_of_the_box_and_on_the_page(tmp_path: Path) -> None:
    limits = Limits.from_settings(Settings())
    assert (limits.memory, limits.cpus, limits.pids) == (2 * 1024**3, 2.0, 512)
    shown = {s.name: (s.value, s.lab_default) for s in shown_limits(Resources(cpus=1), SMALL)}
    assert shown == {"memory": (96 * MIB, True), "cpus": (1, False), "pids": (48, True)}
    runtime = make_runtime(Settings(runtime="local", default_pids=48, data_dir=tmp_path))
    assert isinstance(runtime, LocalRuntime) and runtime.limits.pids == 48


def test_kubernetes_defaults_are_ceilings_not_reservations() -> None:
    options = ClusterOptions(instance_id="lab", limits=SMALL)
    bare = normalize(ServiceSpec(project="proj1", name="web", image="web:1", ports=[8080]))
    (container,) = _deployment(options, bare)["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "limits": {"cpu": "500m", "memory": str(96 * MIB)},
        # Requested as 0: a default keeps no node's capacity from smaller services.
        "requests": {"cpu": "0", "memory": "0"},
    }
    asked = ServiceSpec(
        project="proj1", name="big", image="web:1", ports=[8080], resources=Resources(memory=2**30)
    )
    deployment = _deployment(options, normalize(asked))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # What a spec asks for is requested too, as before.
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": str(2**30)}
    assert container["resources"]["requests"] == {"cpu": "0", "memory": str(2**30)}
    assert kubernetes_validate.validate(deployment, "1.31", strict=True)


def _deployment(options: ClusterOptions, spec: ServiceSpec) -> dict[str, Any]:
    manifests = instance_manifests(options, spec, "a1b2c3", {})
    return next(m for m in manifests if m["kind"] == "Deployment")
