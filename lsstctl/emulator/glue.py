"""What makes moto behave like AWS for this control plane (see shared/notes).

- Lambda: moto runs function code only in Docker. Here a function's handler
  ("module.function") is imported and called in this process, and exceptions come back
  as {"errorType", "errorMessage"} so Step Functions' Retry/Catch see their names.
- SSM Run Command: moto executes nothing. Here AWS-RunShellScript runs with bash on this
  machine, which plays every head node: status goes InProgress -> Success/Failed with the
  real exit code, stdout and stderr (truncated as SSM does).
- Step Functions: moto's ASL interpreter is switched on.
- EventBridge: moto raises NotImplementedError for Lambda, Step Functions and SNS targets.
  Here they are delivered as AWS does, asynchronously: the Lambda is invoked, the state
  machine started, the topic published to, with the rule's Input/InputPath/InputTransformer.
- CloudWatch: moto never evaluates alarms and a state change emits nothing. Here a state
  change (set_alarm_state, or the emulator's own evaluation) emits the "CloudWatch Alarm
  State Change" event on the default bus, as AWS does, so rules route it.
- Clock: EC2 launch and termination times follow the emulator's clock (the cost simulation
  runs hours in seconds).
- DynamoDB: moto checks a write's condition and applies it without a lock, so two threads
  can both pass the same condition. Writes are serialised here, as they are on AWS.

All patches are idempotent (install() may be called more than once) and reversible.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import re
import subprocess
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

SSM_OUTPUT_LIMIT = 24_000  # characters SSM keeps of stdout/stderr


@dataclass
class LambdaContext:
    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    timeout_seconds: int = 900
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_seconds - (time.monotonic() - self._started)) * 1000))


def resolve_handler(handler: str) -> Callable[..., Any]:
    module_name, _, attr = handler.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def _as_aws_sends(event: Any) -> Any:
    """moto's SNS envelope says "EXAMPLE" where AWS sends URLs (Powertools' SnsModel
    validates them); give them the shape AWS uses."""
    for record in (event or {}).get("Records", []) if isinstance(event, dict) else []:
        sns = record.get("Sns") or {}
        region = str(sns.get("TopicArn", "::::")).split(":")[3] or "us-east-1"
        for key, path in (
            ("SigningCertUrl", "SimpleNotificationService-local.pem"),
            ("UnsubscribeUrl", "?Action=Unsubscribe"),
        ):
            if sns.get(key) == "EXAMPLE":
                sns[key] = f"https://sns.{region}.amazonaws.com/{path}"
    return event


def invoke_in_process(handler: str, event: Any, context: LambdaContext) -> tuple[str, bool]:
    """Call a handler as Lambda would: (JSON payload, errored)."""
    try:
        result = resolve_handler(handler)(event, context)
        return json.dumps(result), False
    except Exception as error:  # the boundary: Lambda reports every exception
        return (
            json.dumps(
                {
                    "errorType": type(error).__name__,
                    "errorMessage": str(error),
                    "stackTrace": traceback.format_exception(error)[-5:],
                }
            ),
            True,
        )


@dataclass
class HeadNodeShell:
    """Runs head-node commands on this machine with the environment a head node has.
    Commands still running when the emulator stops are ended with it (`stop_all`)."""

    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/tmp"
    _running: set[subprocess.Popen[str]] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stopped: bool = False

    def run(self, script: str, timeout: float) -> tuple[int, str, str]:
        with self._lock:
            if self._stopped:
                return 143, "", "the emulator is stopping"
            proc = subprocess.Popen(
                ["bash", "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=self.workdir,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
            self._running.add(proc)
        try:
            out, err = proc.communicate(timeout=timeout)
            return proc.returncode, out, err
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, _ = proc.communicate()
            return 124, str(out or ""), f"timed out after {timeout}s"
        finally:
            with self._lock:
                self._running.discard(proc)

    def stop_all(self) -> int:
        """End every command still running (and what it started); how many there were."""
        with self._lock:
            self._stopped = True
            running = list(self._running)
        for proc in running:
            _kill_group(proc)
        return len(running)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=3)
    except (ProcessLookupError, PermissionError):
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_state: dict[str, Any] = {}
_invocation = threading.local()


def current_invocation() -> dict[str, Any] | None:
    """The Lambda invocation this thread runs ({function, action, request_id}), if any."""
    return getattr(_invocation, "value", None)


@contextmanager
def invocation(function: str, event: Any, request_id: str) -> Iterator[None]:
    """Mark this thread as running one Lambda invocation (fault plans key on it)."""
    outer = current_invocation()
    _invocation.value = {
        "function": function,
        "request_id": request_id,
        "action": event.get("action") if isinstance(event, dict) else None,
    }
    try:
        yield
    finally:
        _invocation.value = outer


def current_shell() -> HeadNodeShell:
    """Where head-node commands run (the emulator's cron uses it too)."""
    return _state["shell"]


_DYNAMODB_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")


def install_atomic_dynamodb_writes() -> None:
    """Make each conditional write atomic (check and apply under one lock)."""
    from moto.dynamodb.models import DynamoDBBackend

    if "dynamodb" in _state:
        return
    lock = threading.RLock()
    originals = {name: getattr(DynamoDBBackend, name) for name in _DYNAMODB_WRITES}
    _state["dynamodb"] = originals

    def locked(original: Callable[..., Any]) -> Callable[..., Any]:
        def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return original(self, *args, **kwargs)

        return write

    for name, original in originals.items():
        setattr(DynamoDBBackend, name, locked(original))


def install_fast_dispatch() -> None:
    """moto's server finds the service of every request by listing its own package's
    directories and matching every service's URL patterns, under one lock: with a few
    lifecycles at once, a third of the emulator's time, and every request waits for every
    other. The answer for a host never changes, so it is remembered."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if "dispatch" in _state:
        return
    original = DomainDispatcherApplication.get_backend_for_host
    _state["dispatch"] = original
    known: dict[str, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host is None:
            return None
        try:
            return known[host]
        except KeyError:
            found = known[host] = original(self, host)
            return found

    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host


def install_ec2_tag_index() -> None:
    """moto finds one EC2 resource's tags by matching every tag of the account against its
    id (a regular expression per tag): listing N tagged nodes costs N x all tags, minutes at
    a few thousand clusters. A resource's tags are a lookup in the same table."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    if "ec2_tags" in _state:
        return
    _state["ec2_tags"] = TaggedEC2Resource.get_tags

    def get_tags(self: Any) -> list[dict[str, str]]:
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        tags = self.ec2_backend.tags.get(self.id) or {}
        return [{"resource_id": self.id, "key": k, "value": v, "resource_type": kind} for k, v in tags.items()]

    TaggedEC2Resource.get_tags = get_tags

    # And a tag filter compiled each of its values to a regular expression for every resource
    # it looked at (a share of the guard's pass: 200 names x every instance): once per filter.
    from moto.ec2 import utils

    _state["ec2_tag_filter"] = utils.tag_filter_matches

    @functools.lru_cache(maxsize=256)
    def matcher(values: tuple[str, ...]) -> tuple[frozenset[str], Any]:
        literal = frozenset(v for v in values if not any(c in v for c in "*?[\\"))
        patterns = [utils.simple_aws_filter_to_re(v) for v in values if v not in literal]
        return frozenset(values), re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def tag_filter_matches(obj: Any, filter_name: str, filter_values: list[str]) -> bool:
        if filter_name == "tag-key":
            tag_values: Any = utils.get_obj_tag_names(obj)
        elif filter_name == "tag-value":
            tag_values = utils.get_obj_tag_values(obj)
        elif filter_name.startswith("tag:"):
            tag_values = utils.get_obj_tag_values(obj, key=filter_name[4:])
        else:
            tag_values = [utils.get_obj_tag(obj, filter_name) or ""]
        exact, pattern = matcher(tuple(filter_values))
        return any(v in exact or (pattern is not None and pattern.match(v)) for v in tag_values)

    utils.tag_filter_matches = tag_filter_matches


def install_ec2_instance_lookup() -> None:
    """moto finds an instance by id by copying every reservation of the account and scanning
    them from the oldest (every instance launched attaches its root volume that way: making N
    instances costs N x N). The same scan, from the newest, without the copies."""
    from moto.ec2.exceptions import InvalidInstanceIdError
    from moto.ec2.models.instances import InstanceBackend

    if "ec2_instance" in _state:
        return
    _state["ec2_instance"] = InstanceBackend.get_instance

    def get_instance(self: Any, instance_id: str) -> Any:
        for reservation in reversed(list(self.reservations.values())):
            for instance in reservation.instances:
                if instance.id == instance_id:
                    return instance
        raise InvalidInstanceIdError(instance_id)

    InstanceBackend.get_instance = get_instance


class _Only:
    """A CloudWatch backend as one query sees it: only its own metric's datapoints."""

    def __init__(self, data: list[Any]):
        self.data = data

    def get_all_metrics(self) -> list[Any]:
        return self.data


def install_cloudwatch_metric_index() -> None:
    """moto's GetMetricData compares every query, in every period of its window, with every
    datapoint of every metric in the window: the guard's one call about 500 clusters' queue
    depths over 30 minutes costs 500 x 30 x all their datapoints (hours at 10,000 clusters).
    Each single-dimension query (the queue depth's) is answered by moto's own code from its
    own metric's datapoints, found by lookup; any other query goes to moto as it came."""
    from moto.cloudwatch.models import CloudWatchBackend

    if "cloudwatch_index" in _state:
        return
    original = _state["cloudwatch_index"] = CloudWatchBackend.get_metric_data

    def get_metric_data(
        self: Any, queries: list[dict[str, Any]], start_time: Any, end_time: Any, scan_by: str = "TimestampAscending"
    ) -> list[dict[str, Any]]:
        def single(query: dict[str, Any]) -> bool:
            dimensions = query.get("MetricStat", {}).get("Metric", {}).get("Dimensions", [])
            return len(dimensions) == 1 and dimensions[0].get("Value") is not None

        if not queries or not all(single(q) for q in queries):
            return original(self, queries, start_time, end_time, scan_by)
        index: dict[tuple[str, str, str], list[Any]] = {}
        for datum in self.get_all_metrics():
            if len(datum.dimensions) == 1:
                dimension = datum.dimensions[0]
                index.setdefault((datum.name, dimension.name, dimension.value), []).append(datum)
        answers = []
        for query in queries:
            metric = query["MetricStat"]["Metric"]
            dimension = metric["Dimensions"][0]
            own = index.get((metric["MetricName"], dimension["Name"], dimension["Value"]), [])
            answers += original(_Only(own), [query], start_time, end_time, scan_by)
        return answers

    CloudWatchBackend.get_metric_data = get_metric_data


_WIRE_SCALARS = {"S": str, "N": str, "BOOL": bool, "NULL": bool}


def _in_wire_form(value: Any) -> bool:
    """A DynamoDB attribute value already as the wire carries it, with no binary in it (B
    and BS are base64 on the wire; moto keeps them otherwise)."""
    if not isinstance(value, dict) or len(value) != 1:
        return False
    ((kind, inner),) = value.items()
    if kind in _WIRE_SCALARS:
        return isinstance(inner, _WIRE_SCALARS[kind])
    if kind in ("SS", "NS"):
        return isinstance(inner, list) and all(isinstance(v, str) for v in inner)
    if kind == "M":
        return isinstance(inner, dict) and all(_in_wire_form(v) for v in inner.values())
    if kind == "L":
        return isinstance(inner, list) and all(_in_wire_form(v) for v in inner)
    return False


def install_dynamodb_value_passthrough() -> None:
    """moto answers a DynamoDB read by walking every attribute value through botocore's
    AttributeValue shape, member by member (ten members, each through a value picker): a
    Query of a thousand records with their nested documents costs seconds. moto keeps item
    values in the wire's form already ({"S": ...}, {"N": "1"}, {"M": {...}}): such a value is
    answered as it is; any other (binary in it) takes moto's walk."""
    from moto.core.serialize import JSONSerializer

    if "dynamodb_values" in _state:
        return
    original = _state["dynamodb_values"] = JSONSerializer._serialize_type_structure

    def serialize_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if key and shape.name == "AttributeValue" and _in_wire_form(value):
            serialized[self.get_serialized_name(shape, key)] = value
            return
        original(self, serialized, value, shape, key)

    JSONSerializer._serialize_type_structure = serialize_structure


def _applies_to_callers(statement: dict[str, Any]) -> bool:
    """Whether a bucket-policy statement can concern the control plane's own calls: not one
    for a service principal (logs.amazonaws.com), not the TLS-only deny (AWS's SDKs speak
    TLS; the emulator plain HTTP)."""
    principal = statement.get("Principal")
    if isinstance(principal, dict) and set(principal) == {"Service"}:
        return False
    return statement.get("Condition") != {"Bool": {"aws:SecureTransport": "false"}}


def install_bucket_policy_scope() -> None:
    """moto judges an object call against every statement of the bucket's policy, whoever
    the statement's principal and whatever its conditions: ParallelCluster's own bucket
    (a Deny on `parallelcluster/*` for CloudWatch Logs, a TLS-only Deny) then refuses
    ParallelCluster itself. Only the statements that can concern the caller are judged."""
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    if "bucket_policy" in _state:
        return
    _state["bucket_policy"] = FakeBucket.get_permission

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None:
            return PermissionResult.NEUTRAL
        document = json.loads(self.policy.decode())
        statements = document.get("Statement", [])
        statements = [
            s for s in (statements if isinstance(statements, list) else [statements]) if _applies_to_callers(s)
        ]
        if not statements:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**document, "Statement": statements})).is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission


_DELIVERED = ("lambda", "states", "sns")


def _target_input(target: dict[str, Any], event: dict[str, Any]) -> Any:
    """What EventBridge sends a target: Input, InputPath, InputTransformer, or the event."""
    from moto.events.models import EventTemplateParser

    if "Input" in target:
        return json.loads(target["Input"])
    if "InputPath" in target:
        # The emulator supports the dotted form ($.detail.cluster), which is what we use.
        path = target["InputPath"]
        if not path.startswith("$"):
            raise ValueError(f"unsupported InputPath {path!r}")
        value: Any = event
        for key in [k for k in path[1:].split(".") if k]:
            value = value[key]
        return value
    transformer = target.get("InputTransformer")
    if transformer:
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event=event,
        )
    return event


def _deliver(arn: str, payload: Any) -> None:
    import boto3

    body = payload if isinstance(payload, str) else json.dumps(payload)
    service = arn.split(":")[2]
    try:
        if service == "lambda":
            boto3.client("lambda").invoke(FunctionName=arn, InvocationType="Event", Payload=body.encode())
        elif service == "states":
            boto3.client("stepfunctions").start_execution(stateMachineArn=arn, input=body)
        else:
            boto3.client("sns").publish(TopicArn=arn, Message=body)
    except Exception:  # EventBridge retries and then drops; here we log and drop
        log.exception("EventBridge delivery to %s failed", arn)


def install_eventbridge_targets() -> None:
    from moto.events.models import Rule

    if "events" in _state:
        return
    original = Rule.send_to_targets
    _state["events"] = original
    lock = threading.Lock()

    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        # A schedule rule (no event pattern) takes no events: moto matched it to every event
        # on its bus, so each alarm change on the default bus also ran the guard and the
        # reconciler, out of schedule and at once with the ones the scheduler runs.
        if self.scheduled_expression and not self.event_pattern._raw_pattern:
            return
        if not self.event_pattern.matches_event(original_event):
            return
        ours = [t for t in self.targets if t["Arn"].split(":")[2] in _DELIVERED]
        with lock:  # moto's own targets go through the original, ours are left out of it
            everything = self.targets
            self.targets = [t for t in everything if t not in ours]
            try:
                original(self, original_event, transform_input)
            finally:
                self.targets = everything
        for target in ours:
            payload = _target_input(target, dict(original_event))
            deliver = _track(lambda arn=target["Arn"], body=payload: _deliver(arn, body))
            threading.Thread(target=deliver, daemon=True).start()

    Rule.send_to_targets = send_to_targets


def install_alarm_events() -> None:
    from moto.cloudwatch.models import Alarm

    if "alarm" in _state:
        return
    original = Alarm.update_state
    _state["alarm"] = original

    def update_state(self: Any, reason: str, reason_data: str, state_value: str) -> None:
        previous = self.state_value
        original(self, reason, reason_data, state_value)
        if previous == state_value:
            return
        from moto.events.models import events_backends

        detail = {
            "alarmName": self.name,
            "state": {"value": state_value, "reason": reason, "timestamp": self.state_updated_timestamp.isoformat()},
            "previousState": {"value": previous},
            "configuration": {
                "metrics": [
                    {
                        "metricStat": {
                            "metric": {
                                "namespace": self.namespace,
                                "name": self.metric_name,
                                "dimensions": {d.name: d.value for d in (self.dimensions or [])},
                            }
                        }
                    }
                ]
            },
        }
        events_backends[self.alarm_arn.split(":")[4]][self.region_name].put_events(
            [
                {
                    "Source": "aws.cloudwatch",
                    "DetailType": "CloudWatch Alarm State Change",
                    "Detail": json.dumps(detail),
                    "Resources": [self.alarm_arn],
                }
            ]
        )

    Alarm.update_state = update_state


_busy = [0]
_busy_lock = threading.Lock()


def _track(work: Callable[[], None]) -> Callable[[], None]:
    """Count asynchronous work (SSM commands, EventBridge deliveries) until it ends."""
    with _busy_lock:
        _busy[0] += 1

    def run() -> None:
        try:
            work()
        finally:
            with _busy_lock:
                _busy[0] -= 1

    return run


def busy() -> int:
    """Asynchronous deliveries and commands still under way (the simulation waits for 0)."""
    with _busy_lock:
        return _busy[0]


def use_virtual_waits(clock: Any | None) -> None:
    """Step Functions Wait states wait on `clock` (a VirtualClock) instead of real time;
    None restores real waits. Waits then last exactly their length in simulated time."""
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    if "wait" not in _state:
        _state["wait"] = WaitFunction._wait_interval
    if clock is None:
        WaitFunction._wait_interval = _state.pop("wait")
        return

    def _wait_interval(self: Any, env: Any, wait_seconds: int) -> None:
        clock.wait_until(clock() + timedelta(seconds=wait_seconds), env.is_running)

    WaitFunction._wait_interval = _wait_interval


_TERMINATED_AT = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC\)")


def expire_terminated_instances(now: Any, after: timedelta = timedelta(hours=1)) -> int:
    """EC2 stops listing terminated instances after about an hour; moto keeps them forever
    (and every DescribeInstances grows). `now`: naive UTC. Returns how many were dropped."""
    from datetime import datetime

    from moto.ec2.models import ec2_backends

    dropped = 0
    for account in ec2_backends.values():
        for backend in account.values():
            for rid, reservation in list(backend.reservations.items()):
                keep = []
                for instance in reservation.instances:
                    match = _TERMINATED_AT.search(instance._reason or "")
                    ended = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S") if match else None
                    if instance.state == "terminated" and ended is not None and now - ended > after:
                        dropped += 1
                    else:
                        keep.append(instance)
                reservation.instances = keep
                if not keep:
                    del backend.reservations[rid]
    return dropped


_CLOCK_MODULES = ("moto.ec2.models.instances", "moto.ec2.models.elastic_block_store")


def set_clock(clock: Callable[[], Any] | None) -> None:
    """EC2 times follow `clock` (naive UTC datetimes, as moto uses); None restores real time."""
    import importlib

    from moto.core.utils import utcnow

    for name in _CLOCK_MODULES:
        module = importlib.import_module(name)
        module.utcnow = clock or utcnow  # type: ignore[attr-defined]


def set_spot_prices(prices: Mapping[tuple[str, str], float] | None) -> None:
    """What EC2's spot price history answers: USD per hour by (instance type, availability
    zone); offerings not in `prices` keep moto's answer ($0.00001 for every offering). None
    restores moto's answer for all."""
    from moto.ec2.responses.spot_instances import SpotInstances

    if prices is None:
        if "spot" in _state:
            SpotInstances.describe_spot_price_history = _state.pop("spot")
        return
    original = _state.setdefault("spot", SpotInstances.describe_spot_price_history)
    table = dict(prices)

    def describe_spot_price_history(self: Any) -> Any:
        result = original(self)
        for row in result.result["SpotPriceHistory"]:  # moto's ActionResult
            usd = table.get((row["InstanceType"], row["AvailabilityZone"]))
            if usd is not None:
                row["SpotPrice"] = f"{usd:.6f}"
        return result

    SpotInstances.describe_spot_price_history = describe_spot_price_history


def set_unreachable(instance_id: str, unreachable: bool = True) -> None:
    """A dead instance: SSM cannot deliver commands to it (its agent does not answer), though
    EC2 still lists it running and it still bills."""
    dead = _state.setdefault("unreachable", set())
    if unreachable:
        dead.add(instance_id)
    else:
        dead.discard(instance_id)


def install(shell: HeadNodeShell) -> None:
    """Apply all patches; `shell` is where SSM commands run."""
    from moto.awslambda.models import LambdaFunction
    from moto.core.config import default_user_config
    from moto.ssm.models import SimpleSystemManagerBackend

    _state["shell"] = shell
    install_atomic_dynamodb_writes()
    install_eventbridge_targets()
    install_alarm_events()
    install_fast_dispatch()
    install_ec2_tag_index()
    install_ec2_instance_lookup()
    install_cloudwatch_metric_index()
    install_dynamodb_value_passthrough()
    install_bucket_policy_scope()
    _state.setdefault(
        "config",
        {
            "execute_state_machine": default_user_config["stepfunctions"].get("execute_state_machine"),
            "load_aws_managed_policies": default_user_config["iam"].get("load_aws_managed_policies"),
        },
    )
    default_user_config["stepfunctions"]["execute_state_machine"] = True
    # The head node policy names AWS-managed policies (AmazonSSMManagedInstanceCore).
    default_user_config["iam"]["load_aws_managed_policies"] = True
    if "lambda" in _state:
        return
    _state["lambda"] = LambdaFunction._invoke_lambda
    _state["ssm"] = SimpleSystemManagerBackend.send_command

    def _invoke_lambda(self: Any, event: Any = None) -> tuple[str, bool, str]:
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        event = _as_aws_sends(event)
        context = LambdaContext(
            function_name=self.function_name,
            invoked_function_arn=self.function_arn,
            memory_limit_in_mb=int(self.memory_size or 512),
            timeout_seconds=int(self.timeout or 900),
        )
        with invocation(self.function_name, event, context.aws_request_id):
            payload, errored = invoke_in_process(self.handler, event or {}, context)
        return payload, errored, ""

    original_send = _state["ssm"]

    def send_command(self: Any, **kwargs: Any) -> Any:
        _require_live_instances(self, kwargs.get("instance_ids") or [])
        named = set(kwargs.get("instance_ids") or [])  # before moto extends that very list
        command = original_send(self, **kwargs)
        if not kwargs.get("targets"):
            # moto reads "no Targets" as a filter matching every instance of the account: a
            # command for one head node ran on as many as the account had (an install twice,
            # an archive once per node). AWS runs it on the instances named, only.
            command.instance_ids = [i for i in command.instance_ids if i in named]
            command.invocations = [i for i in command.invocations if i["InstanceId"] in named]
            command.target_count = command.completed_count = len(command.instance_ids)
        if command.document_name == "AWS-RunShellScript":
            _execute(command, _state["shell"])
        else:
            script = _document_script(self, command.document_name, kwargs.get("parameters") or {})
            if script is not None:
                _execute(command, _state["shell"], script=script)
        return command

    LambdaFunction._invoke_lambda = _invoke_lambda
    SimpleSystemManagerBackend.send_command = send_command


# The patches that replace one attribute of one moto class, each kept in `_state` under its
# key by its install_*: (key, module, class, attribute), restored by `uninstall`.
_ONE_ATTRIBUTE_PATCHES = (
    ("events", "moto.events.models", "Rule", "send_to_targets"),
    ("alarm", "moto.cloudwatch.models", "Alarm", "update_state"),
    ("dispatch", "moto.moto_server.werkzeug_app", "DomainDispatcherApplication", "get_backend_for_host"),
    ("ec2_instance", "moto.ec2.models.instances", "InstanceBackend", "get_instance"),
    ("cloudwatch_index", "moto.cloudwatch.models", "CloudWatchBackend", "get_metric_data"),
    ("dynamodb_values", "moto.core.serialize", "JSONSerializer", "_serialize_type_structure"),
    ("bucket_policy", "moto.s3.models", "FakeBucket", "get_permission"),
)


def uninstall() -> None:
    from moto.awslambda.models import LambdaFunction
    from moto.core.config import default_user_config
    from moto.dynamodb.models import DynamoDBBackend
    from moto.ssm.models import SimpleSystemManagerBackend

    # moto's process-wide settings back as they were (loading AWS's managed policies into
    # every later account costs seconds).
    config = _state.pop("config", None)
    if config is not None:
        default_user_config["stepfunctions"]["execute_state_machine"] = config["execute_state_machine"]
        default_user_config["iam"]["load_aws_managed_policies"] = config["load_aws_managed_policies"]

    if "lambda" in _state:
        LambdaFunction._invoke_lambda = _state.pop("lambda")
        SimpleSystemManagerBackend.send_command = _state.pop("ssm")
    for name, original in _state.pop("dynamodb", {}).items():
        setattr(DynamoDBBackend, name, original)
    for key, module, owner, name in _ONE_ATTRIBUTE_PATCHES:
        if key in _state:
            setattr(getattr(importlib.import_module(module), owner), name, _state.pop(key))
    if "ec2_tags" in _state:
        from moto.ec2.models.core import TaggedEC2Resource

        TaggedEC2Resource.get_tags = _state.pop("ec2_tags")
        from moto.ec2 import utils

        utils.tag_filter_matches = _state.pop("ec2_tag_filter")
    for owner, name, original in _state.pop("cloudformation", []):
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    set_spot_prices(None)
    _state.pop("unreachable", None)
    set_clock(None)
    if "wait" in _state:
        use_virtual_waits(None)


def _require_live_instances(backend: Any, instance_ids: list[str]) -> None:
    """SSM refuses instances that are not running (a terminated head node, say)."""
    from moto.ec2.models import ec2_backends
    from moto.ssm.exceptions import SSMException

    ec2 = ec2_backends[backend.account_id][backend.region_name]
    for instance_id in instance_ids:
        try:
            instance = ec2.get_instance(instance_id)
        except Exception:
            instance = None
        if instance is None or instance.state != "running" or instance_id in _state.get("unreachable", ()):
            raise SSMException("InvalidInstanceId", f"Instances [[{instance_id}]] not in a valid state for account")


def _document_script(backend: Any, name: str, given: dict[str, list[str]]) -> str | None:
    """The shell a Command document of the account's own (the control plane's queue probe)
    runs, its `{{ parameter }}`s substituted as SSM does: given, else the default, checked
    against the parameter's allowedPattern. None for a document that is not ours or runs
    no shell."""
    from moto.ssm.exceptions import SSMException

    try:
        content = json.loads(backend.get_document(name, None, None, "JSON")["Content"])
    except Exception:
        return None
    values: dict[str, str] = {}
    for key, declared in (content.get("parameters") or {}).items():
        value = (given.get(key) or [declared.get("default", "")])[0]
        if declared.get("allowedPattern") and not re.fullmatch(declared["allowedPattern"], value):
            raise SSMException("InvalidParameters", f"{key} does not match its allowedPattern")
        values[key] = value
    lines = [
        line
        for step in content.get("mainSteps", [])
        if step.get("action") == "aws:runShellScript"
        for line in step["inputs"]["runCommand"]
    ]
    if not lines:
        return None
    script = "\n".join(lines)
    for key, value in values.items():
        script = re.sub(r"\{\{\s*" + re.escape(key) + r"\s*\}\}", lambda _: value, script)  # noqa: B023 (used at once)
    return script


def _execute(command: Any, shell: HeadNodeShell, script: str | None = None) -> None:
    if script is None:
        script = "\n".join(command.parameters.get("commands", []))
    timeout = float((command.parameters.get("executionTimeout") or [command.timeout_seconds])[0])
    command.status = "InProgress"
    command.status_details = "InProgress"
    for invocation in command.invocations:
        invocation.update(Status="InProgress", StatusDetails="InProgress", ResponseCode=-1)

    def run() -> None:
        for invocation in command.invocations:
            started = time.time()
            code, out, err = shell.run(script, timeout)
            status = "Success" if code == 0 else ("TimedOut" if code == 124 else "Failed")
            invocation.update(
                Status=status,
                StatusDetails=status,
                ResponseCode=code,
                StandardOutputContent=out[-SSM_OUTPUT_LIMIT:],
                StandardErrorContent=err[-SSM_OUTPUT_LIMIT:],
                ExecutionElapsedTime=f"PT{time.time() - started:.1f}S",
            )
            log.debug("ssm %s on %s: %s", command.command_id, invocation["InstanceId"], status)
        statuses = {i["Status"] for i in command.invocations}
        command.status = "Success" if statuses == {"Success"} else "Failed"
        command.status_details = command.status

    threading.Thread(target=_track(run), name=f"ssm-{command.command_id[:8]}", daemon=True).start()


def install_cloudformation_gaps() -> None:
    """What moto's CloudFormation gets wrong where AWS's does not, for our template:
    - `!Ref` of an `AWS::Events::EventBus` or an `AWS::Lambda::LayerVersion` gives moto's
      object, not the bus's name or the layer version's ARN (the models have no
      physical_resource_id), which breaks a rule on that bus and a function update;
    - `!FindInMap` with a Number parameter looks up the map with an int (CloudFormation
      passes parameters as strings, and map keys are strings);
    - a state machine's `DefinitionS3Location` and `DefinitionSubstitutions` are ignored
      (the machine gets an empty definition): read the object from (moto's) S3 and substitute;
    - on a stack update, resources moto cannot update vanish, an executed change set leaves
      the old outputs, and a Swagger `Body` of a REST API is ignored (below).
    """
    import moto.cloudformation.parsing as parsing
    from moto.apigateway.models import RestAPI
    from moto.awslambda.models import LayerVersion
    from moto.cloudformation.models import ChangeSet
    from moto.events.models import EventBus
    from moto.stepfunctions.models import StateMachine

    if "cloudformation" in _state:
        return
    # What uninstall() puts back: (owner, attribute, original or None when moto had none).
    _state["cloudformation"] = [
        (owner, name, owner.__dict__.get(name))
        for owner, name in (
            (EventBus, "physical_resource_id"),
            (LayerVersion, "physical_resource_id"),
            (parsing, "clean_json"),
            (parsing, "parse_and_update_resource"),
            (StateMachine, "create_from_cloudformation_json"),
            (StateMachine, "update_from_cloudformation_json"),
            (ChangeSet, "apply"),
            (RestAPI, "create_from_cloudformation_json"),
        )
    ]
    EventBus.physical_resource_id = property(lambda self: self.name)  # type: ignore[attr-defined]
    LayerVersion.physical_resource_id = property(lambda self: self.arn)  # type: ignore[attr-defined]

    original = parsing.clean_json

    def clean_json(resource_json: Any, resources_map: Any) -> Any:
        if isinstance(resource_json, dict) and "Fn::FindInMap" in resource_json:
            name, *path = resource_json["Fn::FindInMap"]
            result = resources_map[original(name, resources_map)]
            for key in path:
                result = result[str(original(key, resources_map))]
            return result
        return original(resource_json, resources_map)

    parsing.clean_json = clean_json

    def with_definition(cloudformation_json: Any, account_id: str) -> Any:
        props = cloudformation_json.get("Properties", {})
        location = props.get("DefinitionS3Location")
        if not location or "DefinitionString" in props:
            return cloudformation_json
        from moto.s3.models import s3_backends

        bucket = s3_backends[account_id]["aws"].get_bucket(location["Bucket"])
        definition = bucket.keys[location["Key"]].value.decode()
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            definition = definition.replace("${" + key + "}", str(value))
        return {**cloudformation_json, "Properties": {**props, "DefinitionString": definition}}

    create = StateMachine.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    update = StateMachine.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        return create(
            cls, resource_name, with_definition(cloudformation_json, account_id), account_id, region_name, **kwargs
        )

    def update_from_cloudformation_json(
        cls: Any,
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> Any:
        return update(
            cls,
            original_resource,
            new_resource_name,
            with_definition(cloudformation_json, account_id),
            account_id,
            region_name,
        )

    StateMachine.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]
    StateMachine.update_from_cloudformation_json = classmethod(update_from_cloudformation_json)  # type: ignore[assignment]

    # A resource type moto cannot update (a log group, say) is dropped from the stack on any
    # update, so everything referring to it breaks: it is kept as it was instead.
    update_resource = parsing.parse_and_update_resource

    def parse_and_update_resource(
        logical_id: str, resource_json: Any, resources_map: Any, account_id: str, region_name: str
    ) -> Any:
        updated = update_resource(
            logical_id, resource_json, resources_map, account_id=account_id, region_name=region_name
        )
        return updated if updated is not None else resources_map[logical_id]

    parsing.parse_and_update_resource = parse_and_update_resource

    # An executed change set leaves the stack's outputs (and, on update, its template and
    # parameters) as they were before: what describe_stacks reports is refreshed here.
    apply = ChangeSet.apply

    def apply_and_refresh(self: Any) -> None:
        apply(self)
        stack = self.stack
        stack.template = self.template
        stack._parse_template()
        if self.parameters:
            stack.parameters = self.parameters
        stack.output_map = stack._create_output_map()

    ChangeSet.apply = apply_and_refresh  # type: ignore[method-assign]

    # An `AWS::ApiGateway::RestApi` with a `Body` gets none of it in moto (and moto's import
    # takes OpenAPI 3 only): build the resources, methods (their authorisation) and
    # integrations the way API Gateway imports a Swagger 2.0 body.
    from moto.apigateway.models import apigateway_backends

    create_api = RestAPI.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_api_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        api = create_api(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        body = cloudformation_json.get("Properties", {}).get("Body")
        if body:
            import_swagger(apigateway_backends[account_id][region_name], api, body)
        return api

    RestAPI.create_from_cloudformation_json = classmethod(create_api_from_cloudformation_json)  # type: ignore[assignment]


def import_swagger(backend: Any, api: Any, body: dict[str, Any]) -> None:
    """Swagger 2.0 paths into a moto REST API: resources, methods, AWS_PROXY integrations."""
    schemes = {name: d.get("x-amazon-apigateway-authtype") for name, d in body.get("securityDefinitions", {}).items()}
    for path, methods in sorted(body.get("paths", {}).items()):
        parent = api.get_resource_for_path("/")
        so_far = ""
        for part in [p for p in path.split("/") if p]:
            so_far += "/" + part
            resource = api.get_resource_for_path(so_far) or backend.create_resource(api.id, parent.id, part)
            parent = resource
        for verb, doc in methods.items():
            named = [name for requirement in doc.get("security", []) for name in requirement]
            auth = "AWS_IAM" if any(schemes.get(n) == "awsSigv4" for n in named) else "NONE"
            backend.put_method(api.id, parent.id, verb.upper(), auth)
            integration = doc.get("x-amazon-apigateway-integration")
            if integration:
                backend.put_integration(
                    api.id,
                    parent.id,
                    verb.upper(),
                    integration_type=integration["type"].upper(),
                    uri=integration["uri"],
                    integration_method=integration["httpMethod"],
                )
