"""The control plane in moto, in-process, on a clock the test controls: the resources the
emulator's bootstrap creates, workflows recorded (their executions never run, so a test
plays their steps itself), EC2's launch and termination times following the clock.
Shared by the guard, reconciler and fault tests of this layer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from lsstctl import wiring
from lsstctl.domain.models import ClusterSpec
from lsstctl.emulator import glue
from lsstctl.emulator.bootstrap import bootstrap
from lsstctl.emulator.clock import VirtualClock
from lsstctl.services import clusters, costs, launch_workflow
from lsstctl.services.identity import Principal
from tests.conftest import cid, cluster_spec

ALICE = Principal("alice")

SUPPRESSED = "type:HeadNodeLaunchTemplateValidator,type:ComputeResourceLaunchTemplateValidator"


@pytest.fixture
def plane(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualClock]:
    from moto.core.config import default_user_config

    # Recorded, not run (an emulator test earlier in this process may have switched it on).
    monkeypatch.setitem(default_user_config["stepfunctions"], "execute_state_machine", False)
    env = bootstrap(boto3.Session(region_name="us-east-1"), "us-east-1")
    # moto cannot deliver bus events to a Lambda without the emulator's glue: notifications
    # (tests/integration/test_chatops.py) are not this layer's subject, so their rule goes.
    boto3.client("events", region_name="us-east-1").remove_targets(
        Rule="lsstctl-notify", EventBusName="lsstctl-events", Ids=["notify"]
    )
    # ParallelCluster's schema judges the specs here (its full validator set, which needs
    # AWS's managed policies loaded, is tested in test_pcluster_validation.py).
    for key, value in {
        **env,
        "LSSTCTL_TRUST_PRINCIPAL_HEADER": "true",
        "LSSTCTL_CONFIG_VALIDATION": "schema",
        "LSSTCTL_SUPPRESSED_VALIDATORS": SUPPRESSED,
    }.items():
        monkeypatch.setenv(key, value)
    clock = VirtualClock()
    glue.set_clock(clock.naive)
    wiring.reset()
    wiring.use_clock(clock)
    yield clock
    wiring.use_clock(None)
    glue.set_clock(None)


def launched(name: str, **overrides: Any) -> Any:
    return clusters.launch_cluster(wiring.deps(), ALICE, ClusterSpec.model_validate(cluster_spec(name, **overrides)))


def ready(name: str, clock: VirtualClock | None = None, **overrides: Any) -> Any:
    """A cluster taken through the launch steps (SSM in moto reports success at once)."""
    deps = wiring.deps()
    cluster = launched(name, **overrides)
    key, poll = cluster.id, clusters.poll_settings(deps)
    launch_workflow.start_launch(deps, key, cluster.generation, poll)
    launch_workflow.poll_launch(deps, key, cluster.generation, None)
    install = launch_workflow.start_install(deps, key, cluster.generation, poll)
    launch_workflow.poll_install(deps, key, cluster.generation, install["command_id"], None)
    launch_workflow.mark_ready(deps, key, cluster.generation)
    return deps.store.get_cluster(key)


def tick(clock: VirtualClock, minutes: int = 1) -> dict[str, Any]:
    clock.advance(60 * minutes)
    return costs.guard_tick(wiring.deps())


def play_teardown(name: str) -> Any:
    """The teardown workflow's steps, in order, for the execution that holds the claim
    (`name`: alice's cluster)."""
    from lsstctl.services import teardown_workflow as steps

    deps, name = wiring.deps(), cid(name)
    record = deps.store.get_cluster(name)
    poll = clusters.poll_settings(deps)
    claim = steps.begin_teardown(deps, name, record.generation, record.teardown_execution, record.teardown_reason)
    if claim["claimed"]:
        steps.end_jobs(deps, name)  # its grace (a Wait state) is the test's to play
        steps.stop_fleet(deps, name)
        if claim["archive"]:
            archive = steps.start_archive(deps, name, poll)
            steps.poll_archive(deps, name, archive["command_id"], archive["deadline"])
        deleting = steps.delete_cluster(deps, name, poll)
        assert steps.poll_delete(deps, name, deleting["deadline"])["gone"]
        steps.finish_teardown(deps, name)
    return deps.store.get_cluster(name)


def billing(name: str, owner: str | None = ALICE.name) -> list[str]:
    """What of `owner`'s cluster `name` still exists in EC2 (instances not terminated,
    volumes); with no owner, `name` is the name in AWS (of resources no record holds)."""
    ec2 = boto3.client("ec2")
    tag = [{"Name": "tag:parallelcluster:cluster-name", "Values": [cid(name, owner) if owner else name]}]
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=tag)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    return instances + [v["VolumeId"] for v in ec2.describe_volumes(Filters=tag)["Volumes"]]
