"""One contract for both ClusterEngines: the local engine (the emulator, the demo, the cost
bench) and the ParallelCluster engine (pcluster.lib; production).

What moto can follow of a real ParallelCluster create: the validators, the cluster's S3
bucket and CDK's synthesis of its template (about 60 resources); moto's CloudFormation then
refuses the template (it has no AWS::CloudFormation::CustomResource nor
AWS::CloudWatch::Alarm, so a GetAtt on the head node's health alarm dangles). So for the
ParallelCluster engine the contract's cluster is materialised the way ParallelCluster
leaves one in an account (a tagged stack, its `parallelcluster-<name>` table, tagged
instances: what the local engine does), and describe, list, fleet stop, head-node stop and
start, and delete run through pcluster.lib against it. The create itself is tested up to
where moto stops, below.
"""

from __future__ import annotations

import copy
import io
import json

import boto3
import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext

from lsstctl import wiring
from lsstctl.adapters.engine_function import FunctionClusterEngine
from lsstctl.adapters.local_engine import LocalClusterEngine
from lsstctl.adapters.pcluster_engine import ParallelClusterEngine
from lsstctl.adapters.pcluster_validation import EMULATOR_SUPPRESSED, reset_pcluster_caches
from lsstctl.domain.models import ClusterSpec, cluster_id
from lsstctl.domain.pcluster_config import render_cluster_config
from lsstctl.emulator.faults import FaultInjector
from lsstctl.emulator.glue import install_bucket_policy_scope
from lsstctl.errors import AwsError, AwsUnavailableError, ClusterConfigError
from tests.conftest import live_instances, pcluster_network

NAME = cluster_id("alice", "contract")
STOPPING = {"STOP_REQUESTED", "STOPPING", "STOPPED"}


def _config(**queue: object) -> dict:
    net = pcluster_network(boto3.Session())
    spec = ClusterSpec.model_validate(
        {
            "name": "contract",
            "region": "us-east-1",
            "budget_usd": 5,
            "queues": [{"name": "q", "instance_types": ["c5.large"], "min_nodes": 1, "max_nodes": 2, **queue}],
        }
    )
    return render_cluster_config(
        spec,
        owner="alice",
        subnet_id=net["subnet"],
        key_name=net["key"],
        archive_bucket="archive",
        archive_prefix=f"alice/{NAME}",
        metrics_policy_arn=net["metrics_policy"],
        cluster_id=NAME,
    )


class InProcessLambda:
    """Lambda's Invoke for the engine function, run in this process (the transport only:
    the handler, its wiring and the envelope are the product's)."""

    def invoke(self, *, FunctionName: str, InvocationType: str, Payload: bytes) -> dict:
        from lambdas.engine import lambda_handler

        answer = lambda_handler(json.loads(Payload), LambdaContext())
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(answer).encode())}


@pytest.fixture
def engine_function(monkeypatch):
    """Settings as the engine function has them on AWS."""
    monkeypatch.setenv("LSSTCTL_ENGINE", "parallelcluster")
    monkeypatch.setenv("LSSTCTL_SUPPRESSED_VALIDATORS", ",".join(EMULATOR_SUPPRESSED))
    wiring.reset()
    yield FunctionClusterEngine("lsstctl-engine", client=InProcessLambda())
    wiring.reset()


class Materialised:
    """The ParallelCluster engine, with `create` standing for what CloudFormation would
    build (moto cannot run ParallelCluster's template); every other call is pcluster.lib's."""

    def __init__(self, engine=None) -> None:
        self.engine = engine or ParallelClusterEngine(region="us-east-1", suppress_validators=EMULATOR_SUPPRESSED)
        self._cloudformation = LocalClusterEngine()
        self.created = False

    def create_cluster(self, name: str, config: dict):
        if not self.created:  # the first create: CloudFormation's work
            self._cloudformation.create_cluster(name, config)
            self.created = True
        return self.engine.create_cluster(name, config)  # converges on what exists: no pcluster create

    def __getattr__(self, item: str):
        return getattr(self.engine, item)


@pytest.fixture(params=["local", "parallelcluster", "parallelcluster-function"])
def engine(request, aws):
    reset_pcluster_caches()
    if request.param == "local":
        return LocalClusterEngine()
    if request.param == "parallelcluster-function":  # as every function but the engine's own calls it
        return Materialised(request.getfixturevalue("engine_function"))
    return Materialised()


def test_an_unknown_cluster_is_not_found_and_every_call_on_it_converges(engine):
    assert engine.describe_cluster("nobody-1234567890").status == "NOT_FOUND"
    assert engine.stop_compute_fleet("nobody-1234567890").status == "NOT_FOUND"
    assert engine.delete_cluster("nobody-1234567890").status in {"NOT_FOUND", "DELETE_IN_PROGRESS"}
    assert engine.describe_cluster("nobody-1234567890").status == "NOT_FOUND"
    assert "nobody-1234567890" not in {c.name for c in engine.list_clusters()}


def test_a_created_cluster_is_described_listed_and_a_repeated_create_converges(engine):
    config = _config()
    engine.create_cluster(NAME, config)
    described = engine.describe_cluster(NAME)
    assert described.status == "CREATE_COMPLETE" and described.fleet_status == "RUNNING"
    assert described.head_node_instance_id and described.reason is None
    assert NAME in {c.name for c in engine.list_clusters()}
    nodes = sorted(live_instances(NAME))
    again = engine.create_cluster(NAME, config)
    assert again.status == "CREATE_COMPLETE" and sorted(live_instances(NAME)) == nodes


def test_fleet_stop_head_node_stop_and_start(engine):
    engine.create_cluster(NAME, _config())
    head = engine.describe_cluster(NAME).head_node_instance_id
    assert engine.stop_compute_fleet(NAME).fleet_status in STOPPING
    assert engine.stop_compute_fleet(NAME).fleet_status in STOPPING  # repeated: harmless
    ec2 = boto3.client("ec2")

    def head_state() -> str:
        return ec2.describe_instances(InstanceIds=[head])["Reservations"][0]["Instances"][0]["State"]["Name"]

    engine.stop_head_node(NAME)
    assert head_state() == "stopped"
    engine.start_head_node(NAME)
    assert head_state() == "running"


def test_delete_leaves_nothing_tagged_with_the_name(engine):
    engine.create_cluster(NAME, _config(min_nodes=2))
    assert len(live_instances(NAME)) == 3
    assert engine.delete_cluster(NAME).status in {"DELETE_IN_PROGRESS", "NOT_FOUND"}
    assert engine.delete_cluster(NAME).status in {"DELETE_IN_PROGRESS", "NOT_FOUND"}  # repeated
    assert engine.describe_cluster(NAME).status == "NOT_FOUND"
    assert live_instances(NAME) == []
    volumes = boto3.client("ec2").describe_volumes(
        Filters=[{"Name": "tag:parallelcluster:cluster-name", "Values": [NAME]}]
    )["Volumes"]
    assert volumes == []
    assert NAME not in {c.name for c in engine.list_clusters()}


# The ParallelCluster engine alone ------------------------------------------------------
@pytest.fixture
def pcluster_engine(aws_account):
    reset_pcluster_caches()
    install_bucket_policy_scope()  # see lsstctl/emulator/glue.py: moto judges other principals' statements
    return ParallelClusterEngine(region="us-east-1", suppress_validators=EMULATOR_SUPPRESSED)


def test_create_runs_parallelclusters_create_until_moto_refuses_its_template(pcluster_engine):
    # Given a valid config, When ParallelCluster creates the cluster (validators, its
    # bucket, CDK synth, CloudFormation's CreateStack)
    with pytest.raises(AwsError) as refused:
        pcluster_engine.create_cluster(NAME, _config())
    # Then what moto cannot do is a permanent AwsError (the launch ends in teardown), naming it
    # (a resource of the template CDK synthesised: the head node's health alarm)
    assert "Template error" in refused.value.message and "HeadNodeHealthAlarm" in refused.value.message
    assert refused.value.http_status == 502
    buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert any(b.startswith("parallelcluster-") for b in buckets)  # ParallelCluster's own bucket was set up
    # And the teardown that follows leaves nothing
    pcluster_engine.delete_cluster(NAME)
    assert pcluster_engine.describe_cluster(NAME).status == "NOT_FOUND" and live_instances(NAME) == []


def test_create_with_a_bad_config_answers_the_validators_messages(pcluster_engine):
    with pytest.raises(ClusterConfigError, match="Max count must be greater than or equal to min count") as refused:
        pcluster_engine.create_cluster(NAME, _config(min_nodes=3, max_nodes=2))
    assert refused.value.http_status == 400 and all(d["level"] == "ERROR" for d in refused.value.details)
    assert pcluster_engine.describe_cluster(NAME).status == "NOT_FOUND"


def test_throttling_behind_parallelcluster_is_transient(pcluster_engine):
    with FaultInjector(plan=lambda call: call.service == "cloudformation") as faults:
        with pytest.raises(AwsUnavailableError) as throttled:
            pcluster_engine.describe_cluster(NAME)
    assert faults.log and throttled.value.http_status == 503


class _FailedLib:
    """pcluster.lib as it answers for a stack that failed to create (moto cannot fail one)."""

    @staticmethod
    def update_compute_fleet(**_: object) -> dict:
        raise AssertionError("ParallelCluster refuses a fleet update of a cluster that failed to create")

    @staticmethod
    def describe_cluster(**_: object) -> dict:
        return {
            "clusterName": NAME,
            "clusterStatus": "CREATE_FAILED",
            "computeFleetStatus": "UNKNOWN",
            "cloudFormationStackStatus": "CREATE_FAILED",
            "failures": [
                {
                    "failureCode": "HeadNodeBootstrapFailure",
                    "failureReason": "Cluster creation timed out: head node bootstrap did not finish.",
                }
            ],
        }


def test_create_failed_carries_parallelclusters_reason(monkeypatch):
    engine = ParallelClusterEngine(region="us-east-1")
    monkeypatch.setattr(ParallelClusterEngine, "_lib", staticmethod(lambda: _FailedLib))
    described = engine.describe_cluster(NAME)
    assert described.status == "CREATE_FAILED"
    assert (
        described.reason == "HeadNodeBootstrapFailure: Cluster creation timed out: head node bootstrap did not finish."
    )
    # And teardown's fleet stop passes over it (the delete that follows removes everything)
    assert engine.stop_compute_fleet(NAME).status == "CREATE_FAILED"


def test_the_engine_functions_errors_cross_whole(aws_account, engine_function):
    reset_pcluster_caches()
    # A bad config: every validator message, as ClusterConfigError (400), through the function
    bad = _config(min_nodes=3, max_nodes=2)
    with pytest.raises(ClusterConfigError, match="Max count must be greater") as refused:
        engine_function.create_cluster(NAME, bad)
    assert refused.value.details and all(d["level"] == "ERROR" for d in refused.value.details)
    with pytest.raises(ClusterConfigError, match="Max count must be greater"):
        engine_function.validate(NAME, bad)
    good = copy.deepcopy(bad)
    good["Scheduling"]["SlurmQueues"][0]["ComputeResources"][0]["MinCount"] = 1
    assert isinstance(engine_function.validate(NAME, good), list)
    # AWS throttling behind ParallelCluster: transient (503, retried by the workflows)
    reset_pcluster_caches()  # its clients are built anew, and seen by the fault layer
    with FaultInjector(plan=lambda call: call.service == "cloudformation"):
        with pytest.raises(AwsUnavailableError) as throttled:
            engine_function.describe_cluster(NAME)
    assert throttled.value.http_status == 503 and throttled.value.operation
