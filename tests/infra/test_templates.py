"""The deployment template and the state machine definitions, checked offline.

moto accepts definitions a real deploy would reject (a missing Next target, for one) and
cannot deploy a template whose definitions live in S3, so these checks stand in for a
deploy: cfn-lint on the template and on the definitions, structural rules of our ASL, the
template's placeholders and IAM statements (scoped, and allowing what each function's code
calls), and its agreement with the code and the emulator's bootstrap.
"""

from __future__ import annotations

import ast
import copy
import fnmatch
import json
import re
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint, lint_file
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "control-plane.yaml"
STATEMACHINES = ROOT / "statemachines"
ASL_FILES = sorted(STATEMACHINES.glob("*.asl.json"))
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
ENV_PREFIX = "LSSTCTL_"
# Where resolve() pretends the template is deployed (moto's default account).
ACCOUNT, REGION = "123456789012", "us-east-1"
_PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}

# Reads AWS cannot scope to a resource: the only actions allowed on Resource "*" without a
# documented exception (Metadata.lsstctl.ResourceStarWrites). Add to this list consciously.
UNSCOPED_READS = (
    "ec2:Describe*",
    "ssm:GetCommandInvocation",
    "ssm:ListCommandInvocations",
    "ssm:ListCommands",
    "cloudformation:ListStacks",
    "cloudwatch:GetMetricStatistics",  # the guard's idle double-check (queue depth)
    "cloudwatch:GetMetricData",  # the same, for many clusters at once
)
TERMINAL_TYPES = {"Succeed", "Fail"}
API_HANDLER = "app.app"
# JSONata-only or variable fields: moto's interpreter supports neither.
UNSUPPORTED_FIELDS = {"QueryLanguage", "Assign", "Arguments", "Output"}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded, matches = decode(str(TEMPLATE))
    assert not matches, [str(m) for m in matches]
    assert loaded is not None
    return loaded


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def sub_default(value: Any, template: dict[str, Any]) -> str:
    """A plain or !Sub string with parameters replaced by their defaults."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    assert isinstance(text, str), f"expected a string or !Sub string, got {value!r}"
    params = template["Parameters"]
    return PLACEHOLDER.sub(lambda m: str(params[m.group(1)]["Default"]) if m.group(1) in params else m.group(0), text)


def state_machines_by_file(template: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """ASL file name -> (logical id, properties) of the state machine deploying it."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, resource in resources_of(template, "AWS::StepFunctions::StateMachine").items():
        props = resource["Properties"]
        assert "DefinitionS3Location" in props, f"{name}: definitions come from statemachines/ via S3"
        key = sub_default(props["DefinitionS3Location"]["Key"], template)
        file_name = key.rsplit("/", 1)[-1]
        assert file_name not in found, f"{file_name} is deployed by both {found[file_name][0]} and {name}"
        found[file_name] = (name, props)
    return found


def load_asl(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def lint_problems(matches: list[Any]) -> list[str]:
    """Errors and warnings (informational findings are not failures)."""
    return [f"{m.rule.id} {m.message} ({m.filename}:{m.linenumber})" for m in matches if m.rule.id[0] in "EW"]


# --------------------------------------------------------------------------------------
# cfn-lint
# --------------------------------------------------------------------------------------
def test_template_passes_cfn_lint(template: dict[str, Any]) -> None:
    # Rules may be silenced only in the template's Metadata (with a comment saying why),
    # and only warnings: an error is never acceptable.
    ignored = template.get("Metadata", {}).get("cfn-lint", {}).get("config", {}).get("ignore_checks", [])
    assert all(str(rule).startswith("W") for rule in ignored), f"errors may not be ignored: {ignored}"

    assert lint_problems(lint_file(TEMPLATE)) == []


def test_definitions_pass_cfn_lint_state_machine_rules(template: dict[str, Any]) -> None:
    """cfn-lint validates ASL only inline, so lint the repository files as inline
    definitions, with placeholders filled as CloudFormation will fill them."""
    resources: dict[str, Any] = {}
    for index, path in enumerate(ASL_FILES):
        text = PLACEHOLDER.sub(
            lambda m: f"arn:aws:lambda:us-east-1:123456789012:function:{m.group(1)}", path.read_text()
        )
        resources[f"Machine{index}"] = {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "RoleArn": "arn:aws:iam::123456789012:role/lsstctl-states",
                "Definition": json.loads(text),
            },
        }
    probe = json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": resources})
    assert lint_problems(lint(probe)) == []


# --------------------------------------------------------------------------------------
# Placeholders: the files are the single source; the template fills exactly their holes
# --------------------------------------------------------------------------------------
def test_every_definition_file_is_deployed(template: dict[str, Any]) -> None:
    assert ASL_FILES, "no statemachines/*.asl.json found"
    assert sorted(state_machines_by_file(template)) == [p.name for p in ASL_FILES]


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_substitutions_match_placeholders(template: dict[str, Any], path: Path) -> None:
    name, props = state_machines_by_file(template)[path.name]
    used = set(PLACEHOLDER.findall(path.read_text()))
    provided = set(props.get("DefinitionSubstitutions", {}))
    assert used - provided == set(), f"{name}: no substitution for placeholders of {path.name}"
    assert provided - used == set(), f"{name}: substitutions unused by {path.name}"


# --------------------------------------------------------------------------------------
# ASL structure (what moto's create-time validation lets through)
# --------------------------------------------------------------------------------------
def _scopes(definition: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """The top-level state machine and every nested one (Parallel branches, Map processors)."""
    yield where or "<top>", definition
    for name, state in definition.get("States", {}).items():
        for index, branch in enumerate(state.get("Branches", [])):
            yield from _scopes(branch, f"{where}{name}.Branches[{index}]/")
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from _scopes(state[key], f"{where}{name}.{key}/")


def _transitions(state: dict[str, Any]) -> list[str]:
    targets = [state[k] for k in ("Next", "Default") if k in state]
    targets += [rule["Next"] for rule in state.get("Choices", []) if "Next" in rule]
    targets += [catcher["Next"] for catcher in state.get("Catch", []) if "Next" in catcher]
    return targets


def _field_owners(definition: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object where the language defines fields (not Parameters payloads)."""
    for where, scope in _scopes(definition):
        yield where, scope
        for name, state in scope.get("States", {}).items():
            yield f"{where}{name}", state
            for key in ("Catch", "Retry", "Choices"):
                for index, item in enumerate(state.get(key, [])):
                    yield f"{where}{name}.{key}[{index}]", item


def retry_problems(retry: list[dict[str, Any]]) -> list[str]:
    """A Task ends at once on the control plane's permanent errors (lsstctl.errors) and
    retries everything else — transient AWS failures, a Lambda killed mid-step — with
    capped, jittered backoff, long enough to outlast a throttling spell."""
    from lsstctl.errors import PERMANENT_STEP_ERRORS, TransientError

    if not retry:
        return ["Task has no Retry"]
    problems = []
    last = retry[-1]
    if last.get("ErrorEquals") != ["States.ALL"]:
        problems.append("Task's last retrier must retry States.ALL (unknown failures included)")
    else:
        if last.get("MaxAttempts", 3) < 10:
            problems.append("Task retries States.ALL fewer than 10 times")
        if not last.get("MaxDelaySeconds") or last.get("JitterStrategy") != "FULL":
            problems.append("Task's retry backoff is not capped (MaxDelaySeconds) and jittered (FULL)")
    permanent = {e for r in retry[:-1] if r.get("MaxAttempts") == 0 for e in r.get("ErrorEquals", [])}
    if permanent != set(PERMANENT_STEP_ERRORS):
        problems.append(f"Task's permanent errors {sorted(permanent)} are not {list(PERMANENT_STEP_ERRORS)}")
    if TransientError.__name__ in permanent or "AwsUnavailableError" in permanent:
        problems.append("Task treats TransientError as permanent")
    return problems


def asl_problems(definition: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    terminal_states = 0
    for where, owner in _field_owners(definition):
        for field in sorted(UNSUPPORTED_FIELDS & set(owner)):
            problems.append(f"{where}: uses {field} (JSONata / variables; write JSONPath ASL)")

    for where, scope in _scopes(definition):
        states: dict[str, Any] = scope.get("States", {})
        start = scope.get("StartAt")
        if start not in states:
            problems.append(f"{where}: StartAt {start!r} is not a state")
            continue
        # Tasks that Catch leads to: they record the failure (and must not loop back).
        failure_recorders = {catcher.get("Next") for state in states.values() for catcher in state.get("Catch", [])}

        for name, state in states.items():
            here = f"{where}{name}"
            kind = state.get("Type")
            for target in _transitions(state):
                if target not in states:
                    problems.append(f"{here}: transition to missing state {target!r}")
            if kind in TERMINAL_TYPES or state.get("End") is True:
                terminal_states += 1
            if kind not in TERMINAL_TYPES | {"Choice"} and ("Next" in state) == (state.get("End") is True):
                problems.append(f"{here}: needs exactly one of Next and End")
            if kind == "Choice" and "Default" not in state:
                problems.append(f"{here}: Choice without Default fails with States.NoChoiceMatched, skipping cleanup")
            if kind == "Wait":
                if "SecondsPath" not in state:
                    problems.append(f"{here}: Wait must take its length from the input (SecondsPath)")
                for fixed in ("Seconds", "Timestamp", "TimestampPath"):
                    if fixed in state:
                        problems.append(f"{here}: Wait uses {fixed}; wait lengths come from the input")
            for index, catcher in enumerate(state.get("Catch", [])):
                if catcher.get("ResultPath", "$") == "$":
                    problems.append(
                        f"{here}.Catch[{index}]: ResultPath must keep the input (the failure step needs it)"
                    )
            if kind != "Task":
                continue
            problems += [f"{here}: {p}" for p in retry_problems(state.get("Retry", []))]
            catchers = state.get("Catch", [])
            if name in failure_recorders:
                for catcher in catchers:
                    target = states.get(catcher.get("Next"), {})
                    if target.get("Type") != "Fail":
                        problems.append(f"{here}: records a failure, so it may only Catch to a Fail state")
            elif not any("States.ALL" in c.get("ErrorEquals", []) for c in catchers):
                problems.append(f"{here}: Task has no Catch on States.ALL")

        reached = {start}
        queue = deque([start])
        while queue:
            for target in _transitions(states[queue.popleft()]):
                if target in states and target not in reached:
                    reached.add(target)
                    queue.append(target)
        for name in sorted(set(states) - reached):
            problems.append(f"{where}{name}: unreachable from StartAt")

    if terminal_states == 0:
        problems.append("no terminal state (Succeed, Fail or End: true)")
    return problems


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_definition_structure(path: Path) -> None:
    definition = load_asl(path)  # raises on invalid JSON
    assert asl_problems(definition) == []


def test_polls_are_paced_by_their_own_answers() -> None:
    """Every poll loop (a Wait, then a Task that asks again before a deadline) waits as long
    as the previous answer said (`wait`, growing as the wait ages: remote.paced) and hands
    back when the waiting began (`since`), so the pace survives each poll."""
    loops = 0
    for path in ASL_FILES:
        states = load_asl(path)["States"]
        for name, state in states.items():
            poll = states.get(state.get("Next", ""), {})
            if state["Type"] != "Wait" or "deadline.$" not in poll.get("Parameters", {}):
                continue
            loops += 1
            key = poll["ResultPath"]
            assert state["SecondsPath"] == f"{key}.wait", f"{path.name}:{name}"
            assert poll["Parameters"]["since.$"] == f"{key}.since", f"{path.name}:{state['Next']}"
            assert poll["Parameters"]["deadline.$"] == f"{key}.deadline", f"{path.name}:{state['Next']}"
    assert loops == 5  # launch, install, archive, delete, a job


@pytest.mark.parametrize("path", sorted((STATEMACHINES / "samples").glob("*.input.json")), ids=lambda p: p.name)
def test_sample_inputs_carry_what_the_workflows_are_started_with(path: Path) -> None:
    from types import SimpleNamespace

    from lsstctl.services.clusters import poll_settings
    from lsstctl.settings import Settings

    sample = json.loads(path.read_text())
    assert sample["poll"] == poll_settings(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]


def _minimal() -> dict[str, Any]:
    from lsstctl.errors import PERMANENT_STEP_ERRORS

    catch = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Record"}]
    retry = [
        {"ErrorEquals": list(PERMANENT_STEP_ERRORS), "MaxAttempts": 0},
        {"ErrorEquals": ["States.ALL"], "MaxAttempts": 20, "MaxDelaySeconds": 30, "JitterStrategy": "FULL"},
    ]
    return {
        "StartAt": "Work",
        "States": {
            "Work": {"Type": "Task", "Resource": "arn", "Retry": retry, "Catch": catch, "Next": "Pause"},
            "Pause": {"Type": "Wait", "SecondsPath": "$.poll.seconds", "Next": "Done"},
            "Done": {"Type": "Succeed"},
            "Record": {
                "Type": "Task",
                "Resource": "arn",
                "Retry": retry,
                "Next": "Failed",
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.e2", "Next": "Failed"}],
            },
            "Failed": {"Type": "Fail"},
        },
    }


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda d: d["States"]["Work"].update(Next="Nowhere"), "missing state 'Nowhere'"),
        (lambda d: d["States"]["Work"].update(Catch=[]), "no Catch on States.ALL"),
        (lambda d: d["States"]["Work"].update(Retry=[]), "Task has no Retry"),
        (lambda d: d["States"]["Work"].update(Retry=[{"ErrorEquals": ["TransientError"]}]), "must retry States.ALL"),
        (lambda d: d["States"]["Work"]["Retry"][1].update(MaxAttempts=3), "fewer than 10 times"),
        (lambda d: d["States"]["Work"]["Retry"][1].pop("MaxDelaySeconds"), "not capped"),
        (lambda d: d["States"]["Work"]["Retry"][0].update(ErrorEquals=["TransientError"]), "treats TransientError"),
        (lambda d: d["States"]["Pause"].update(Seconds=5), "Wait uses Seconds"),
        (lambda d: d["States"]["Record"]["Catch"][0].update(Next="Work"), "may only Catch to a Fail state"),
        (lambda d: d["States"]["Work"]["Catch"][0].pop("ResultPath"), "ResultPath must keep the input"),
        (lambda d: d["States"].update(Orphan={"Type": "Succeed"}), "Orphan: unreachable"),
        (lambda d: d.update(QueryLanguage="JSONata"), "uses QueryLanguage"),
        (lambda d: d["States"]["Work"].update(Assign={"x": 1}), "uses Assign"),
        (lambda d: d.update(StartAt="Missing"), "StartAt 'Missing' is not a state"),
    ],
)
def test_structure_check_catches_mistakes(break_it: Any, expected: str) -> None:
    """The checker itself: a clean definition passes, each mistake is reported."""
    assert asl_problems(_minimal()) == []
    broken = copy.deepcopy(_minimal())
    break_it(broken)
    assert any(expected in p for p in asl_problems(broken)), asl_problems(broken)


# --------------------------------------------------------------------------------------
# Definitions agree with the handlers they call
# --------------------------------------------------------------------------------------
def _handler_actions(module_path: Path) -> tuple[dict[str, set[str]], str]:
    """(action -> event attributes its lambda reads, the event model's name), from
    `step_handler({...}[, model=...])`."""
    tree = ast.parse(module_path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "step_handler":
            model = next(
                (k.value.id for k in node.keywords if k.arg == "model" and isinstance(k.value, ast.Name)), "StepEvent"
            )
            table = node.args[0]
            assert isinstance(table, ast.Dict)
            actions: dict[str, set[str]] = {}
            for key, value in zip(table.keys, table.values):
                assert isinstance(key, ast.Constant) and isinstance(value, ast.Lambda)
                event = value.args.args[1].arg
                actions[key.value] = {
                    n.attr
                    for n in ast.walk(value.body)
                    if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == event
                }
            return actions, model
    raise AssertionError(f"{module_path}: no step_handler({{...}}) table")


@pytest.mark.parametrize("path", ASL_FILES, ids=lambda p: p.name)
def test_tasks_send_what_their_handler_reads(template: dict[str, Any], path: Path) -> None:
    """StepEvent ignores unknown fields and defaults missing ones (generation=0), so a
    parameter the ASL forgets or misspells fails only at run time, far from the cause."""
    from lsstctl import handlers

    _, props = state_machines_by_file(template)[path.name]
    functions = template["Resources"]
    problems: list[str] = []
    for name, state in load_asl(path)["States"].items():
        if state.get("Type") != "Task":
            continue
        placeholder = PLACEHOLDER.fullmatch(state["Resource"])
        assert placeholder, f"{name}: Resource should be a ${{Placeholder}}"
        function_id = props["DefinitionSubstitutions"][placeholder.group(1)]["Fn::GetAtt"][0]
        handler = functions[function_id]["Properties"]["Handler"]
        module = ROOT / (handler.rsplit(".", 1)[0].replace(".", "/") + ".py")
        actions, model_name = _handler_actions(module)
        model = getattr(handlers, model_name)
        sent = {key.removesuffix(".$") for key in state.get("Parameters", {})}
        action = state.get("Parameters", {}).get("action")
        if action not in actions:
            problems.append(f"{name}: action {action!r} is not handled by {handler} ({sorted(actions)})")
            continue
        if unknown := sent - set(model.model_fields):
            problems.append(f"{name}: sends {sorted(unknown)}, which {model_name} drops")
        if required := {f for f, info in model.model_fields.items() if info.is_required()} - sent:
            problems.append(f"{name}: does not send {sorted(required)}, which {model_name} requires")
        if missing := actions[action] - sent:
            problems.append(f"{name}: {handler} action {action!r} reads {sorted(missing)}, not sent")
    assert problems == []


# --------------------------------------------------------------------------------------
# IAM
# --------------------------------------------------------------------------------------
def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _policy_statements(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, statement) of every PolicyDocument (identity and resource policies; trust
    policies live under AssumeRolePolicyDocument and are not walked)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "PolicyDocument" and isinstance(value, dict):
                for index, statement in enumerate(_listed(value.get("Statement", []))):
                    yield f"{path}.PolicyDocument.Statement[{index}]", statement
            else:
                yield from _policy_statements(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _policy_statements(item, f"{path}[{index}]")


def offending_statements(template: dict[str, Any]) -> list[str]:
    exceptions = template.get("Metadata", {}).get("lsstctl", {}).get("ResourceStarWrites", {})
    found: list[str] = []
    for name, resource in template["Resources"].items():
        for path, statement in _policy_statements(resource.get("Properties", {}), name):
            if statement.get("Effect") != "Allow":
                continue
            sid = statement.get("Sid", "")
            label = f"{path} ({sid or 'no Sid'})"
            if "NotAction" in statement or "NotResource" in statement:
                found.append(f"{label}: Allow with NotAction/NotResource")
            actions = [str(a) for a in _listed(statement.get("Action", []))]
            for action in actions:
                if action == "*" or action.endswith(":*") or action.lower().startswith("iam:*"):
                    found.append(f"{label}: grants {action!r}")
            if "*" not in _listed(statement.get("Resource", [])):
                continue
            writes = [a for a in actions if not any(fnmatch.fnmatchcase(a, p) for p in UNSCOPED_READS)]
            if writes and not str(exceptions.get(sid, "")).strip():
                found.append(f"{label}: {writes} on Resource '*' (not an unscoped read, no documented exception)")
    return found


def test_iam_statements_are_scoped(template: dict[str, Any]) -> None:
    assert offending_statements(template) == []


def test_documented_exceptions_exist(template: dict[str, Any]) -> None:
    """A stale exception would silently cover a future statement reusing its Sid."""
    exceptions = template.get("Metadata", {}).get("lsstctl", {}).get("ResourceStarWrites", {})
    sids = {
        statement.get("Sid")
        for name, resource in template["Resources"].items()
        for _, statement in _policy_statements(resource.get("Properties", {}), name)
    }
    assert set(exceptions) - sids == set()


def test_offending_statements_detects_broad_grants() -> None:
    def role(statement: dict[str, Any]) -> dict[str, Any]:
        return {
            "Resources": {
                "R": {
                    "Type": "AWS::IAM::Role",
                    "Properties": {"Policies": [{"PolicyName": "p", "PolicyDocument": {"Statement": [statement]}}]},
                }
            }
        }

    assert offending_statements(role({"Effect": "Allow", "Action": "*", "Resource": "arn:x"}))
    assert offending_statements(role({"Effect": "Allow", "Action": "iam:*", "Resource": "arn:x"}))
    assert offending_statements(role({"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}))
    assert not offending_statements(role({"Effect": "Allow", "Action": "ec2:DescribeInstances", "Resource": "*"}))
    assert not offending_statements(role({"Effect": "Deny", "Action": "*", "Resource": "*"}))


# --------------------------------------------------------------------------------------
# Settings, outputs and the emulator agree with the template
# --------------------------------------------------------------------------------------
def _settings_variables() -> set[str]:
    from lsstctl.settings import Settings

    names = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        names |= {str(c).upper() for c in getattr(alias, "choices", [alias] if alias else [])}
    return names


def test_function_settings_are_known(template: dict[str, Any]) -> None:
    known = _settings_variables()
    for name, resource in resources_of(template, "AWS::Lambda::Function").items():
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        ours = {v.upper() for v in variables if v.upper().startswith(ENV_PREFIX)}
        assert ours, f"{name} sets no {ENV_PREFIX}* settings"
        assert ours - known == set(), f"{name}: not fields of lsstctl.settings.Settings"


def test_outputs_name_known_settings(template: dict[str, Any]) -> None:
    """Output descriptions start with the API setting they feed; each must exist."""
    named = {
        str(output["Description"]).split(" ", 1)[0].upper()
        for output in template["Outputs"].values()
        if str(output["Description"]).upper().startswith(ENV_PREFIX)
    }
    assert named - _settings_variables() == set()
    for needed in (
        "STATE_TABLE",
        "IDEMPOTENCY_TABLE",
        "ARCHIVE_BUCKET",
        "EVENT_BUS",
        "LAUNCH_STATE_MACHINE_ARN",
        "TEARDOWN_STATE_MACHINE_ARN",
        "JOB_STATE_MACHINE_ARN",
        "NOTIFICATIONS_TOPIC_ARN",
        "GUARD_INTERVAL_SECONDS",
        "ACCOUNT_ID",
        "ADMIN_PRINCIPALS",
    ):
        assert ENV_PREFIX + needed in named, f"no output for {ENV_PREFIX}{needed}"


@pytest.mark.parametrize(
    "value, admitted",
    [
        ("", True),
        ("arn:aws:iam::123456789012:user/ops-admin", True),
        ("arn:aws:iam::123456789012:role/PlatformAdmins,arn:aws:sts::123456789012:assumed-role/SSO/carol", True),
        ("admin", False),  # a bare name: anyone choosing a session name could match it
        ("arn:aws:iam::123456789012:user/ops-admin,admin", False),
        ("arn:aws:iam::123456789012:root", False),
    ],
)
def test_admins_are_full_arns_in_the_template_too(template: dict[str, Any], value: str, admitted: bool) -> None:
    """The parameter's pattern admits what the API's settings admit, and nothing else."""
    from lsstctl.settings import Settings

    parameter = template["Parameters"]["AdminPrincipals"]
    assert parameter["Default"] == ""
    assert bool(re.fullmatch(parameter["AllowedPattern"], value)) is admitted
    try:
        Settings(admin_principals=value)
        settings_admit = True
    except ValueError:
        settings_admit = False
    assert settings_admit is admitted


def test_the_head_nodes_metrics_policy_is_the_domains(template: dict[str, Any]) -> None:
    """What tests/unit/test_head_node_policy.py evaluates is what the template deploys."""
    from lsstctl.domain.policies import head_node_metrics_policy

    deployed = template["Resources"]["HeadNodeMetricsPolicy"]["Properties"]["PolicyDocument"]
    assert deployed == head_node_metrics_policy()


def test_template_creates_what_the_emulator_creates(template: dict[str, Any]) -> None:
    """With the default Prefix, names and handlers match lsstctl/emulator/bootstrap.py."""
    from lsstctl.adapters.dynamodb_state import table_definition
    from lsstctl.emulator import bootstrap
    from lsstctl.settings import Settings

    # Field defaults, not Settings(): the environment of other tests must not leak in.
    default = {name: info.default for name, info in Settings.model_fields.items()}

    def names(kind: str, prop: str) -> dict[str, str]:
        return {sub_default(r["Properties"][prop], template): n for n, r in resources_of(template, kind).items()}

    functions = names("AWS::Lambda::Function", "FunctionName")
    # The emulator serves the API with `chalice local` rather than as a function.
    emulated = [
        *bootstrap.FUNCTIONS.values(),
        *bootstrap.TRIGGER_FUNCTIONS.values(),
        bootstrap.ENGINE_FUNCTION,
        ("lsstctl-api", API_HANDLER),
    ]
    for function_name, handler in emulated:
        assert function_name in functions
        assert template["Resources"][functions[function_name]]["Properties"]["Handler"] == handler
    assert len(functions) == len(emulated)

    # The idle alarm rule: same pattern, on the default bus (where alarm state changes go).
    idle = resources_of(template, "AWS::Events::Rule")["IdleAlarmRule"]["Properties"]
    assert json.loads(json.dumps(idle["EventPattern"])) == bootstrap.IDLE_ALARM_PATTERN
    assert "EventBusName" not in idle
    assert [t["Arn"]["Fn::GetAtt"][0] for t in idle["Targets"]] == [functions[bootstrap.TRIGGER_FUNCTIONS["idle"][0]]]

    machines = state_machines_by_file(template)
    for key, machine_name in bootstrap.STATE_MACHINES.items():
        _, props = machines[f"{key}.asl.json"]
        assert sub_default(props["StateMachineName"], template) == machine_name

    assert set(names("AWS::SNS::Topic", "TopicName")) == {
        "lsstctl-notifications",
        "lsstctl-budget-alerts",
        "lsstctl-operator-alarms",
    }

    tables = names("AWS::DynamoDB::Table", "TableName")
    assert set(tables) == {default["state_table"], default["idempotency_table"]}
    assert set(names("AWS::Events::EventBus", "Name")) == {default["event_bus"]}
    # The dead-letter queue of asynchronous invokes has no local twin: the emulator invokes
    # triggers in-process and a failure is seen where it happens.
    assert set(names("AWS::SQS::Queue", "QueueName")) == {bootstrap.AUDIT_QUEUE, "lsstctl-failed-invocations"}

    state = template["Resources"][tables[default["state_table"]]]["Properties"]
    expected = table_definition(default["state_table"])
    for key in ("KeySchema", "AttributeDefinitions", "GlobalSecondaryIndexes", "BillingMode"):
        assert json.loads(json.dumps(state[key])) == expected[key], key
    assert state["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert state["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    idem = template["Resources"][tables[default["idempotency_table"]]]["Properties"]
    assert idem["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert idem["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def test_template_wires_triggers_as_the_emulator_does(template: dict[str, Any], aws: None) -> None:
    """Run the emulator's bootstrap (in moto) and compare what it wires with the template:
    rules (bus, pattern or schedule, target), topics and their Lambda subscriptions."""
    import boto3

    from lsstctl.emulator.bootstrap import bootstrap

    session = boto3.Session(region_name=REGION)
    bootstrap(session, REGION)
    events, sns = session.client("events"), session.client("sns")

    emulated_rules = {}
    for bus in ("default", "lsstctl-events"):
        for rule in events.list_rules(EventBusName=bus)["Rules"]:
            targets = events.list_targets_by_rule(Rule=rule["Name"], EventBusName=bus)["Targets"]
            emulated_rules[rule["Name"]] = (
                bus,
                json.loads(rule["EventPattern"]) if "EventPattern" in rule else None,
                rule.get("ScheduleExpression"),
                sorted(t["Arn"].rsplit(":", 1)[-1] for t in targets),
            )
    template_rules = {}
    for rule in resources_of(template, "AWS::Events::Rule").values():
        props = rule["Properties"]
        bus = resolve(template, props["EventBusName"]) if "EventBusName" in props else "default"
        pattern = json.loads(json.dumps(props["EventPattern"])) if "EventPattern" in props else None
        schedule = resolve(template, props["ScheduleExpression"]) if "ScheduleExpression" in props else None
        template_rules[resolve(template, props["Name"])] = (
            bus,
            pattern,
            schedule,
            sorted(resolve(template, t["Arn"]).rsplit(":", 1)[-1] for t in props["Targets"]),
        )
    # The emulator's queue ARNs end in the queue name, the template's too.
    assert template_rules == emulated_rules

    topics = {arn.rsplit(":", 1)[-1] for arn in (t["TopicArn"] for t in sns.list_topics()["Topics"])}
    assert {
        resolve(template, t["Properties"]["TopicName"]) for t in resources_of(template, "AWS::SNS::Topic").values()
    } == topics
    emulated_lambda_subs = sorted(
        (s["TopicArn"].rsplit(":", 1)[-1], s["Endpoint"].rsplit(":", 1)[-1])
        for s in sns.list_subscriptions()["Subscriptions"]
        if s["Protocol"] == "lambda"
    )
    template_lambda_subs = sorted(
        (
            resolve(template, s["Properties"]["TopicArn"]).rsplit(":", 1)[-1],
            resolve(template, s["Properties"]["Endpoint"]).rsplit(":", 1)[-1],
        )
        for s in resources_of(template, "AWS::SNS::Subscription").values()
        if s["Properties"]["Protocol"] == "lambda"
    )
    assert template_lambda_subs == emulated_lambda_subs


# --------------------------------------------------------------------------------------
# Functions: handlers exist, triggers may invoke them, roles allow what the code calls
# --------------------------------------------------------------------------------------


def _attribute(template: dict[str, Any], name: str, attribute: str | None) -> str:
    """What Ref (attribute None) or GetAtt gives for a resource, with default parameters."""
    if attribute is None and name in _PSEUDO:
        return _PSEUDO[name]
    if attribute is None and name in template["Parameters"]:
        return str(template["Parameters"][name].get("Default", f"<{name}>"))
    resource = template["Resources"][name]
    props = resource.get("Properties", {})
    arn = f"{REGION}:{ACCOUNT}"
    kind = resource["Type"]
    if kind == "AWS::DynamoDB::Table":
        table = resolve(template, props["TableName"])
        return table if attribute is None else f"arn:aws:dynamodb:{arn}:table/{table}"
    if kind == "AWS::Events::EventBus":
        bus = resolve(template, props["Name"])
        return bus if attribute is None else f"arn:aws:events:{arn}:event-bus/{bus}"
    if kind == "AWS::Events::Rule" and attribute == "Arn":
        bus = resolve(template, props["EventBusName"]) + "/" if "EventBusName" in props else ""
        return f"arn:aws:events:{arn}:rule/{bus}{resolve(template, props['Name'])}"
    if kind == "AWS::SNS::Topic" and attribute in (None, "TopicArn"):
        return f"arn:aws:sns:{arn}:{resolve(template, props['TopicName'])}"
    if kind == "AWS::StepFunctions::StateMachine" and attribute in (None, "Arn"):
        return f"arn:aws:states:{arn}:stateMachine:{resolve(template, props['StateMachineName'])}"
    if kind == "AWS::Lambda::Function":
        function = resolve(template, props["FunctionName"])
        return function if attribute is None else f"arn:aws:lambda:{arn}:function:{function}"
    if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
        return f"arn:aws:logs:{arn}:log-group:{resolve(template, props['LogGroupName'])}:*"
    if kind == "AWS::SQS::Queue" and attribute == "Arn":
        return f"arn:aws:sqs:{arn}:{resolve(template, props['QueueName'])}"
    if kind == "AWS::SecretsManager::Secret" and attribute in (None, "Id"):
        # A secret's ARN ends in a random suffix CloudFormation cannot know in advance.
        return f"arn:aws:secretsmanager:{arn}:secret:{resolve(template, props['Name'])}-AbCdEf"
    if kind == "AWS::SSM::Document" and attribute is None:
        return resolve(template, props["Name"])
    if kind == "AWS::S3::Bucket":
        bucket = resolve(template, props["BucketName"])
        return bucket if attribute is None else f"arn:aws:s3:::{bucket}"
    return f"<{name}.{attribute or 'Ref'}>"


def resolve(template: dict[str, Any], value: Any) -> str:
    """A string property as deployed with the default parameters in account ACCOUNT, region
    REGION (Ref, GetAtt, Sub and FindInMap of them)."""
    if isinstance(value, str):
        return value
    ((function, argument),) = value.items()
    if function == "Ref":
        return _attribute(template, argument, None)
    if function == "Fn::GetAtt":
        name, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
        return _attribute(template, name, attribute)
    if function == "Fn::FindInMap":
        mapping, top, second = (resolve(template, a) for a in argument)
        return str(template["Mappings"][mapping][top][second])
    if function == "Fn::Sub":
        assert isinstance(argument, str), "list-form !Sub is not used"

        def variable(match: re.Match[str]) -> str:
            name, _, attribute = match.group(1).partition(".")
            return _attribute(template, name, attribute or None)

        return re.sub(r"\$\{([A-Za-z0-9_:.]+)\}", variable, argument)
    raise AssertionError(f"cannot resolve {value!r}")


def _handler_module(handler: str) -> tuple[Path, str]:
    module, function = handler.rsplit(".", 1)
    # The API function's code is chalice_app/ (lsstctl-api.zip); the others' the repository root.
    root = ROOT / "chalice_app" if handler == API_HANDLER else ROOT
    return root / (module.replace(".", "/") + ".py"), function


def test_handlers_exist(template: dict[str, Any]) -> None:
    for name, resource in resources_of(template, "AWS::Lambda::Function").items():
        path, function = _handler_module(resource["Properties"]["Handler"])
        assert path.is_file(), f"{name}: no {path.relative_to(ROOT)}"
        body = ast.parse(path.read_text()).body
        defined = {n.name for n in body if isinstance(n, ast.FunctionDef)}
        defined |= {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        assert function in defined, f"{name}: {path.relative_to(ROOT)} defines no {function}()"


def _function_of(template: dict[str, Any], value: Any) -> str:
    """Logical id of the function a Ref / GetAtt (target, endpoint, FunctionName) names."""
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return value["Fn::GetAtt"][0]
    raise AssertionError(f"name functions with Ref or GetAtt, not {value!r}")


def test_triggers_may_invoke_their_functions(template: dict[str, Any]) -> None:
    """Every rule target and SNS subscription has a permission for exactly its source."""
    permissions = {
        (
            _function_of(template, p["Properties"]["FunctionName"]),
            p["Properties"]["Principal"],
            json.dumps(p["Properties"].get("SourceArn"), sort_keys=True),
        )
        for p in resources_of(template, "AWS::Lambda::Permission").values()
    }
    needed = set()
    for name, rule in resources_of(template, "AWS::Events::Rule").items():
        for target in rule["Properties"]["Targets"]:
            if resolve(template, target["Arn"]).startswith("arn:aws:lambda:"):
                needed.add(
                    (
                        _function_of(template, target["Arn"]),
                        "events.amazonaws.com",
                        json.dumps({"Fn::GetAtt": [name, "Arn"]}),
                    )
                )
    for subscription in resources_of(template, "AWS::SNS::Subscription").values():
        props = subscription["Properties"]
        if props["Protocol"] == "lambda":
            needed.add(
                (
                    _function_of(template, props["Endpoint"]),
                    "sns.amazonaws.com",
                    json.dumps(props["TopicArn"], sort_keys=True),
                )
            )
    # The API: API Gateway may invoke its function for every route of this API only.
    needed.add(
        (
            "ApiFunction",
            "apigateway.amazonaws.com",
            json.dumps({"Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${RestApi}/*"}),
        )
    )
    assert needed, "no Lambda triggers found"
    assert permissions == needed  # none missing, none broader (no SourceArn) or stale


def test_guard_schedule_matches_its_interval(template: dict[str, Any]) -> None:
    """Spend bounds assume the guard runs every LSSTCTL_GUARD_INTERVAL_SECONDS."""
    units = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}
    schedule = template["Mappings"]["GuardSchedule"]
    parameter = template["Parameters"]["GuardIntervalSeconds"]
    assert sorted(map(str, parameter["AllowedValues"])) == sorted(schedule)
    for seconds, entry in schedule.items():
        count, unit = re.fullmatch(r"rate\((\d+) (\w+)\)", entry["Expression"]).groups()  # type: ignore[union-attr]
        assert int(count) * units[unit] == int(seconds), entry
        assert (int(count) == 1) == (unit in ("minute", "hour")), (
            f"{entry}: EventBridge wants rate(1 minute), rate(2 minutes)"
        )
    rule = template["Resources"]["GuardScheduleRule"]["Properties"]
    assert rule["ScheduleExpression"] == {
        "Fn::FindInMap": ["GuardSchedule", {"Ref": "GuardIntervalSeconds"}, "Expression"]
    }
    guard = template["Resources"][_function_of(template, rule["Targets"][0]["Arn"])]["Properties"]
    assert guard["Environment"]["Variables"]["LSSTCTL_GUARD_INTERVAL_SECONDS"] == {"Ref": "GuardIntervalSeconds"}
    assert guard["Timeout"] <= int(parameter["Default"]), "a tick must end before the next one"


def test_the_guards_alarms_watch_the_guards_function(template: dict[str, Any]) -> None:
    """A slow pass and a silent guard alarm on Lambda's own metrics of the guard's function
    (none billed as a custom metric), within five minutes, and tell the operator."""
    alarms = {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in resources_of(template, "AWS::CloudWatch::Alarm").values()
    }
    assert set(alarms) == {"Duration", "Invocations"}
    guard = template["Resources"]["GuardFunction"]["Properties"]
    for props in alarms.values():
        assert props["Namespace"] == "AWS/Lambda"
        assert props["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "GuardFunction"}}]
        assert props["AlarmActions"] == props["OKActions"] == [{"Ref": "OperatorAlarmsTopic"}]
        assert props["Period"] * props["EvaluationPeriods"] <= 300
    slow = alarms["Duration"]
    assert slow["Statistic"] == "Maximum" and slow["Threshold"] < 1000 * guard["Timeout"]
    silent = alarms["Invocations"]
    assert silent["TreatMissingData"] == "breaching" and silent["ComparisonOperator"] == "LessThanThreshold"


def test_arns_built_from_names_point_at_real_resources(template: dict[str, Any]) -> None:
    """ARNs written out with !Sub (to avoid cycles) must name what the template creates,
    and alarm names must use the code's prefix."""
    from lsstctl.adapters.cloudwatch import ALARM_PREFIX

    machines = {_attribute(template, n, None) for n in resources_of(template, "AWS::StepFunctions::StateMachine")}
    alarm_arns: set[str] = set()

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict) and "Fn::Sub" in node:
            yield resolve(template, node)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for name, resource in template["Resources"].items():
        for text in walk(resource.get("Properties", {})):
            if ":stateMachine:" in text:
                assert text in machines, f"{name}: {text} is not a state machine of this template"
            if ":alarm:" in text and name not in ("ClusterEnginePolicy", "OperatorAlarmsTopicPolicy"):
                alarm_arns.add(text)
    assert alarm_arns == {f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{ALARM_PREFIX}*"}
    # ParallelCluster's template names its own alarms after the cluster (any name): the
    # engine's policy is the one place alarms are not ours by prefix.
    engine_alarms = {t for t in walk(template["Resources"]["ClusterEnginePolicy"]["Properties"]) if ":alarm:" in t}
    assert engine_alarms == {f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:*"}
    # The operator's topic takes what the guard's alarms publish, and no other alarm's.
    publishers = set(walk(template["Resources"]["OperatorAlarmsTopicPolicy"]["Properties"]))
    guard_alarms = [
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{resolve(template, a['Properties']['AlarmName'])}"
        for a in resources_of(template, "AWS::CloudWatch::Alarm").values()
    ]
    assert len(publishers) == 1 and all(fnmatch.fnmatchcase(a, next(iter(publishers))) for a in guard_alarms)
    assert not fnmatch.fnmatchcase(f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{ALARM_PREFIX}x", *publishers)
    assert template["Resources"]["IdleAlarmRule"]["Properties"]["EventPattern"]["detail"]["alarmName"] == [
        {"prefix": ALARM_PREFIX}
    ]


def test_account_budget_routes_to_the_budget_trigger(template: dict[str, Any]) -> None:
    from lsstctl.services.triggers import OWNER_BUDGET_PREFIX

    budgets = resources_of(template, "AWS::Budgets::Budget")
    assert budgets
    topic = template["Resources"]["BudgetAlertsSubscription"]["Properties"]["TopicArn"]
    for name, budget in budgets.items():
        props = budget["Properties"]
        # An owner-prefixed name would make the backstop end only that "owner's" clusters.
        assert not resolve(template, props["Budget"]["BudgetName"]).startswith(OWNER_BUDGET_PREFIX), name
        kinds = set()
        for entry in props["NotificationsWithSubscribers"]:
            assert entry["Subscribers"] == [{"SubscriptionType": "SNS", "Address": topic}], name
            kinds.add((entry["Notification"]["NotificationType"], entry["Notification"]["Threshold"]))
        assert ("ACTUAL", 100) in kinds and ("FORECASTED", 100) in kinds, name
    policy = template["Resources"]["BudgetAlertsTopicPolicy"]["Properties"]
    assert policy["Topics"] == [topic]
    assert any(
        s["Effect"] == "Allow"
        and s["Principal"] == {"Service": "budgets.amazonaws.com"}
        and s["Action"] == "sns:Publish"
        and s["Resource"] == topic
        for s in policy["PolicyDocument"]["Statement"]
    )


# What each handler's code calls (follow lambdas/<module>.py into lsstctl/services and
# lsstctl/adapters): the settings it must be given and the AWS calls its role must allow,
# as (action, resource) with the default names. Keep in step with the code: a call missing
# here is a call that fails only on AWS.
_ARN = f"{REGION}:{ACCOUNT}"
TABLE = f"arn:aws:dynamodb:{_ARN}:table/lsstctl-state"
BUS = f"arn:aws:events:{_ARN}:event-bus/lsstctl-events"
TEARDOWN = f"arn:aws:states:{_ARN}:stateMachine:lsstctl-teardown"
NOTIFICATIONS = f"arn:aws:sns:{_ARN}:lsstctl-notifications"
IDLE_ALARM = f"arn:aws:cloudwatch:{_ARN}:alarm:lsstctl-idle-demo"
RECORDS = [("dynamodb:GetItem", TABLE), ("dynamodb:PutItem", TABLE), ("events:PutEvents", BUS)]
REQUEST_TEARDOWN = [*RECORDS, ("states:StartExecution", TEARDOWN)]
METER = [("ec2:DescribeInstances", "*"), ("ec2:DescribeVolumes", "*")]  # inventory.Ec2Inventory
# Every engine call goes through the engine's function (adapters/engine_function.py).
ENGINE = [("lambda:InvokeFunction", f"arn:aws:lambda:{_ARN}:function:lsstctl-engine")]
STACK = f"arn:aws:cloudformation:{_ARN}:stack/demo-2bd806c97f/0a1b2c3d"
CACHE_FS = f"arn:aws:elasticfilesystem:{_ARN}:file-system/fs-0123456789abcdef0"
IDEMPOTENCY = f"arn:aws:dynamodb:{_ARN}:table/lsstctl-idempotency"
ASTRONOMER = f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice"
# services/idle.py: the queue probe (a document of the template's own) on a head node.
HEAD_NODE = f"arn:aws:ec2:{_ARN}:instance/i-0123456789abcdef0"
QUEUE_PROBE = [
    ("ssm:SendCommand", f"arn:aws:ssm:{_ARN}:document/lsstctl-queue-probe"),
    ("ssm:SendCommand", HEAD_NODE),
    ("ssm:GetCommandInvocation", "*"),
]
NODE_CAP = [
    ("ssm:SendCommand", f"arn:aws:ssm:{_ARN}:document/lsstctl-node-cap"),
    ("ssm:SendCommand", HEAD_NODE),
    ("ssm:GetCommandInvocation", "*"),
]
KEY_SECRET = f"arn:aws:secretsmanager:{_ARN}:secret:lsstctl/users/alice-AbCdEf"
NEEDS: dict[str, tuple[set[str], list[tuple[str, str]]]] = {
    # The HTTP API (chalice_app/chalicelib/routes.py): records and idempotency, the three
    # workflows, create-user (iam_users.py), validation through the engine, spend views.
    API_HANDLER: (
        {
            "STATE_TABLE",
            "IDEMPOTENCY_TABLE",
            "EVENT_BUS",
            "LAUNCH_STATE_MACHINE_ARN",
            "TEARDOWN_STATE_MACHINE_ARN",
            "JOB_STATE_MACHINE_ARN",
            "CLUSTER_SUBNET_ID",
            "ENGINE",
            "ENGINE_FUNCTION_NAME",
            "ACCOUNT_ID",
            "ADMIN_PRINCIPALS",
            "API_EXECUTE_ARN",
            "HEAD_NODE_METRICS_POLICY_ARN",
            "GUARD_INTERVAL_SECONDS",
            "SLACK_SIGNING_SECRET_ARN",
            "CHATOPS_STATE_MACHINE_ARN",
            "JOB_STEPS_FUNCTION_NAME",
        },
        [
            *RECORDS,
            ("dynamodb:Query", TABLE),
            ("dynamodb:Query", f"{TABLE}/index/by_owner"),
            ("dynamodb:UpdateItem", TABLE),
            ("dynamodb:DeleteItem", TABLE),
            ("dynamodb:GetItem", IDEMPOTENCY),
            ("dynamodb:PutItem", IDEMPOTENCY),
            ("dynamodb:UpdateItem", IDEMPOTENCY),
            ("dynamodb:DeleteItem", IDEMPOTENCY),
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-launch"),
            ("states:StartExecution", TEARDOWN),
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-run-job"),
            *[
                (f"iam:{a}", ASTRONOMER)
                for a in (
                    "GetUser",
                    "CreateUser",
                    "TagUser",
                    "ListUserTags",
                    "PutUserPolicy",
                    "ListAccessKeys",
                    "CreateAccessKey",
                    "DeleteAccessKey",
                )
            ],
            *[
                (f"secretsmanager:{a}", KEY_SECRET)
                for a in ("DescribeSecret", "CreateSecret", "PutResourcePolicy", "PutSecretValue", "TagResource")
            ],
            *ENGINE,
            *METER,
            ("elasticfilesystem:DescribeFileSystems", CACHE_FS),
            # Jobs: what a queue's instance types have (InstanceSizes); cancel and the log's tail
            # through the job steps' function (adapters/job_function.py).
            ("ec2:DescribeInstanceTypes", "*"),
            ("lambda:InvokeFunction", f"arn:aws:lambda:{_ARN}:function:lsstctl-job-steps"),
            # POST /chatops/slack: the signing secret, the chatops workflow.
            (
                "secretsmanager:GetSecretValue",
                f"arn:aws:secretsmanager:{_ARN}:secret:lsstctl/chatops/slack-signing-secret-AbCdEf",
            ),
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-chatops"),
        ],
    ),
    # The chatops workflow's step: up (validation through the engine, the launch), run, cancel
    # (scancel through SSM), down; the audit log (services/chatops.py).
    "lambdas.chatops.lambda_handler": (
        {
            "STATE_TABLE",
            "EVENT_BUS",
            "LAUNCH_STATE_MACHINE_ARN",
            "TEARDOWN_STATE_MACHINE_ARN",
            "JOB_STATE_MACHINE_ARN",
            "CLUSTER_SUBNET_ID",
            "ENGINE",
            "ENGINE_FUNCTION_NAME",
            "ACCOUNT_ID",
            "HEAD_NODE_METRICS_POLICY_ARN",
            "IDEMPOTENCY_TABLE",
        },
        [
            *RECORDS,
            ("dynamodb:Query", TABLE),
            ("dynamodb:Query", f"{TABLE}/index/by_owner"),
            ("dynamodb:UpdateItem", TABLE),
            *[(f"dynamodb:{a}", IDEMPOTENCY) for a in ("GetItem", "PutItem", "UpdateItem", "DeleteItem")],
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-launch"),
            ("states:StartExecution", TEARDOWN),
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-run-job"),
            ("ssm:SendCommand", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"),
            ("ssm:GetCommandInvocation", "*"),
            ("ec2:DescribeInstanceTypes", "*"),
            *ENGINE,
            *METER,
        ],
    ),
    # Notifications: the owner's channel, then Slack (no other AWS call).
    "lambdas.chatops.notify_handler": (
        {"STATE_TABLE"},
        [("dynamodb:GetItem", TABLE), ("dynamodb:PutItem", TABLE), ("dynamodb:DeleteItem", TABLE)],
    ),
    "lambdas.launch_steps.lambda_handler": (
        {
            "STATE_TABLE",
            "EVENT_BUS",
            "TEARDOWN_STATE_MACHINE_ARN",
            "CLUSTER_SUBNET_ID",
            "ENGINE",
            "ENGINE_FUNCTION_NAME",
            "NODE_CAP_DOCUMENT",
        },
        # mark_ready: the idle alarm, a capped launch's node caps; launch_failed: request_teardown.
        [
            *REQUEST_TEARDOWN,
            ("cloudwatch:PutMetricAlarm", IDLE_ALARM),
            ("cloudwatch:TagResource", IDLE_ALARM),
            *ENGINE,
            *NODE_CAP,
            # start_launch: the stack cache (adapters/efs_cache.py); poll_install counts its use.
            ("elasticfilesystem:CreateFileSystem", CACHE_FS),
            ("elasticfilesystem:DescribeFileSystems", CACHE_FS),
            ("elasticfilesystem:DescribeMountTargets", CACHE_FS),
            ("elasticfilesystem:CreateMountTarget", CACHE_FS),
            ("ec2:CreateSecurityGroup", "*"),
            ("ec2:AuthorizeSecurityGroupIngress", "*"),
            ("ec2:DescribeSubnets", "*"),
            ("dynamodb:UpdateItem", TABLE),
        ],
    ),
    "lambdas.teardown_steps.lambda_handler": (
        {"STATE_TABLE", "EVENT_BUS", "ARCHIVE_BUCKET", "NOTIFICATIONS_TOPIC_ARN", "ENGINE", "ENGINE_FUNCTION_NAME"},
        # begin_teardown: delete the alarm; finish/failed: final_spend, list_jobs, notify.
        [
            *RECORDS,
            ("dynamodb:Query", TABLE),
            ("cloudwatch:DeleteAlarms", IDLE_ALARM),
            *METER,
            ("sns:Publish", NOTIFICATIONS),
            *ENGINE,
        ],
    ),
    "lambdas.job_steps.lambda_handler": ({"STATE_TABLE", "EVENT_BUS"}, [*RECORDS, ("dynamodb:Query", TABLE)]),
    "lambdas.guard.lambda_handler": (
        {
            "STATE_TABLE",
            "EVENT_BUS",
            "TEARDOWN_STATE_MACHINE_ARN",
            "NOTIFICATIONS_TOPIC_ARN",
            "GUARD_INTERVAL_SECONDS",
            "QUEUE_PROBE_DOCUMENT",
            "NODE_CAP_DOCUMENT",
            "GUARD_FUNCTION_NAME",
        },
        [
            *REQUEST_TEARDOWN,
            ("dynamodb:Query", f"{TABLE}/index/by_billing"),
            ("lambda:InvokeFunction", f"arn:aws:lambda:{_ARN}:function:lsstctl-guard"),
            *METER,
            ("ec2:DescribeSpotPriceHistory", "*"),
            ("cloudwatch:GetMetricStatistics", "*"),
            ("cloudwatch:GetMetricData", "*"),
            ("dynamodb:BatchGetItem", TABLE),
            ("dynamodb:UpdateItem", TABLE),
            ("sns:Publish", NOTIFICATIONS),
            *QUEUE_PROBE,
            *NODE_CAP,
        ],
    ),
    # on_idle_alarm: a premature alarm is reset to OK; Slurm is asked before an idle teardown.
    "lambdas.idle_alarm.lambda_handler": (
        {"STATE_TABLE", "EVENT_BUS", "TEARDOWN_STATE_MACHINE_ARN", "NOTIFICATIONS_TOPIC_ARN", "QUEUE_PROBE_DOCUMENT"},
        [*REQUEST_TEARDOWN, ("cloudwatch:SetAlarmState", IDLE_ALARM), ("sns:Publish", NOTIFICATIONS), *QUEUE_PROBE],
    ),
    # reconcile: inventory, engine stacks, alarms, executions, unrecorded users.
    "lambdas.reconciler.lambda_handler": (
        {
            "STATE_TABLE",
            "EVENT_BUS",
            "LAUNCH_STATE_MACHINE_ARN",
            "TEARDOWN_STATE_MACHINE_ARN",
            "JOB_STATE_MACHINE_ARN",
            "ENGINE",
            "ENGINE_FUNCTION_NAME",
        },
        [
            *REQUEST_TEARDOWN,
            ("dynamodb:Query", f"{TABLE}/index/by_billing"),
            ("dynamodb:Query", f"{TABLE}/index/by_kind"),
            ("dynamodb:Query", TABLE),
            *METER,
            ("ec2:DescribeSpotPriceHistory", "*"),  # an orphan's spot nodes, priced into its ledger
            *ENGINE,
            ("elasticfilesystem:DeleteMountTarget", CACHE_FS),
            ("elasticfilesystem:DeleteFileSystem", CACHE_FS),
            ("dynamodb:DeleteItem", TABLE),
            ("cloudwatch:DescribeAlarms", IDLE_ALARM),
            ("cloudwatch:PutMetricAlarm", IDLE_ALARM),
            ("cloudwatch:DeleteAlarms", IDLE_ALARM),
            ("states:DescribeExecution", f"arn:aws:states:{_ARN}:execution:lsstctl-teardown:teardown-demo-g1-a1"),
            ("states:StopExecution", f"arn:aws:states:{_ARN}:execution:lsstctl-launch:launch-demo-g1"),
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-launch"),
            ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-run-job"),
            ("iam:ListUsers", f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice"),
            ("iam:ListUserTags", f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice"),
            ("iam:GetUser", f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice"),
            ("secretsmanager:DescribeSecret", f"arn:aws:secretsmanager:{_ARN}:secret:lsstctl/users/alice-AbCdEf"),
        ],
    ),
    # The engine (pcluster.lib): ParallelCluster's create, describe, fleet and delete calls,
    # and delete_cluster's sweep of what a stack left (adapters/pcluster_engine.py).
    "lambdas.engine.lambda_handler": (
        {"ENGINE"},
        [
            ("cloudformation:CreateStack", STACK),
            ("cloudformation:DescribeStacks", STACK),
            ("cloudformation:DeleteStack", STACK),
            ("cloudformation:GetTemplate", STACK),
            ("dynamodb:GetItem", f"arn:aws:dynamodb:{_ARN}:table/parallelcluster-demo-2bd806c97f"),
            ("dynamodb:UpdateItem", f"arn:aws:dynamodb:{_ARN}:table/parallelcluster-demo-2bd806c97f"),
            ("s3:PutObject", "arn:aws:s3:::parallelcluster-0a1b2c3d4e5f6a7b-v1-do-not-delete/parallelcluster/3.16.1/x"),
            ("s3:CreateBucket", "arn:aws:s3:::parallelcluster-0a1b2c3d4e5f6a7b-v1-do-not-delete"),
            ("ec2:RunInstances", "*"),
            ("ec2:DescribeInstances", "*"),
            ("ec2:DescribeInstanceTypes", "*"),
            ("ec2:TerminateInstances", f"arn:aws:ec2:{_ARN}:instance/i-0123456789abcdef0"),
            ("ec2:StopInstances", f"arn:aws:ec2:{_ARN}:instance/i-0123456789abcdef0"),
            ("ec2:StartInstances", f"arn:aws:ec2:{_ARN}:instance/i-0123456789abcdef0"),
            ("ec2:DeleteVolume", f"arn:aws:ec2:{_ARN}:volume/vol-0123456789abcdef0"),
            ("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/parallelcluster/demo/RoleHeadNode-0a1b"),
            ("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/parallelcluster/demo/RoleHeadNode-0a1b"),
            ("iam:GetPolicy", "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"),
            ("lambda:CreateFunction", f"arn:aws:lambda:{_ARN}:function:pcluster-CleanupResources-0a1b"),
            ("logs:CreateLogGroup", f"arn:aws:logs:{_ARN}:log-group:/aws/parallelcluster/demo-202612051200"),
            ("ssm:GetParametersByPath", f"arn:aws:ssm:{REGION}::parameter/aws/service/ami-amazon-linux-latest"),
        ],
    ),
    # on_budget_notification: below the budget, owners are only warned.
    "lambdas.budget_alarm.lambda_handler": (
        {"STATE_TABLE", "EVENT_BUS", "TEARDOWN_STATE_MACHINE_ARN", "NOTIFICATIONS_TOPIC_ARN"},
        [*REQUEST_TEARDOWN, ("dynamodb:Query", f"{TABLE}/index/by_billing"), ("sns:Publish", NOTIFICATIONS)],
    ),
}
# Every function that acts for a caller or on its own (a teardown, caps, a kept busy
# cluster, a reconciler finding) adds to the audit trail (services/audit.py); the API reads it.
AUDIT_GROUP = f"arn:aws:logs:{_ARN}:log-group:lsstctl-audit"
AUDIT_STREAM = f"{AUDIT_GROUP}:log-stream:2026/12/06/lsstctl-guard"
AUDIT_WRITERS = (
    API_HANDLER,
    "lambdas.chatops.lambda_handler",
    "lambdas.launch_steps.lambda_handler",
    "lambdas.teardown_steps.lambda_handler",
    "lambdas.job_steps.lambda_handler",
    "lambdas.guard.lambda_handler",
    "lambdas.idle_alarm.lambda_handler",
    "lambdas.reconciler.lambda_handler",
    "lambdas.budget_alarm.lambda_handler",
)
for _writer in AUDIT_WRITERS:
    NEEDS[_writer][0].add("AUDIT_LOG_GROUP")
    NEEDS[_writer][1].extend([("logs:CreateLogStream", AUDIT_STREAM), ("logs:PutLogEvents", AUDIT_STREAM)])
NEEDS[API_HANDLER][1].append(("logs:FilterLogEvents", f"{AUDIT_GROUP}:*"))
# Nobody may change what the audit trail holds: no role of the stack may delete the group,
# its streams or events, shorten its retention, export or re-key it.
AUDIT_REWRITES = [
    "logs:DeleteLogGroup",
    "logs:DeleteLogStream",
    "logs:PutRetentionPolicy",
    "logs:DeleteRetentionPolicy",
    "logs:AssociateKmsKey",
    "logs:DisassociateKmsKey",
    "logs:PutDataProtectionPolicy",
    "logs:PutSubscriptionFilter",
    "logs:CreateExportTask",
    "logs:TagResource",
]

# Least privilege: what the trigger functions must not be able to do.
TRIGGER_HANDLERS = (
    "lambdas.guard.lambda_handler",
    "lambdas.idle_alarm.lambda_handler",
    "lambdas.budget_alarm.lambda_handler",
)
TRIGGERS_MUST_NOT = [
    ("dynamodb:Query", f"{TABLE}/index/by_owner"),
    ("dynamodb:Query", TABLE),
    ("dynamodb:DeleteItem", TABLE),
    ("ec2:TerminateInstances", f"arn:aws:ec2:{_ARN}:instance/i-0123456789abcdef0"),
    # A trigger may ask a head node's Slurm (the queue probe document) and the guard cap its
    # nodes (the node cap document), never run any shell.
    ("ssm:SendCommand", f"arn:aws:ssm:{REGION}::document/AWS-RunShellScript"),
    ("ssm:SendCommand", f"arn:aws:ssm:{_ARN}:document/lsstctl-other"),
    ("states:StartExecution", f"arn:aws:states:{_ARN}:stateMachine:lsstctl-launch"),
    ("cloudwatch:DeleteAlarms", IDLE_ALARM),
    ("sns:Publish", f"arn:aws:sns:{_ARN}:lsstctl-budget-alerts"),
]


def role_statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Identity statements of a role: inline policies and this template's managed ones."""
    props = template["Resources"][role]["Properties"]
    documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
    for arn in props.get("ManagedPolicyArns", []):
        assert isinstance(arn, dict) and "Ref" in arn, f"{role}: managed policies come from this template"
        documents.append(template["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
    return [s for d in documents for s in _listed(d["Statement"])]


def allows(template: dict[str, Any], statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Allowed by some statement (conditions ignored; the template has no Deny for roles)."""
    for statement in statements:
        if statement.get("Effect") != "Allow":
            continue
        actions = [str(a).lower() for a in _listed(statement.get("Action", []))]
        resources = [resolve(template, r) for r in _listed(statement.get("Resource", []))]
        if any(fnmatch.fnmatchcase(action.lower(), a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


def _functions_by_handler(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        r["Properties"]["Handler"]: r["Properties"] for r in resources_of(template, "AWS::Lambda::Function").values()
    }


def test_every_function_declares_its_needs(template: dict[str, Any]) -> None:
    assert set(_functions_by_handler(template)) == set(NEEDS)


@pytest.mark.parametrize("handler", sorted(NEEDS))
def test_function_gets_the_settings_its_code_reads(template: dict[str, Any], handler: str) -> None:
    variables = _functions_by_handler(template)[handler].get("Environment", {}).get("Variables", {})
    missing = {ENV_PREFIX + n for n in NEEDS[handler][0]} - set(variables)
    assert missing == set(), f"{handler}: settings left at their defaults"


@pytest.mark.parametrize("handler", sorted(NEEDS))
def test_function_role_allows_what_its_code_calls(template: dict[str, Any], handler: str) -> None:
    role = _function_of(template, _functions_by_handler(template)[handler]["Role"])
    statements = role_statements(template, role)
    denied = [(a, r) for a, r in NEEDS[handler][1] if not allows(template, statements, a, r)]
    assert denied == [], f"{role} does not allow calls of {handler}"
    if handler in TRIGGER_HANDLERS:
        excess = [(a, r) for a, r in TRIGGERS_MUST_NOT if allows(template, statements, a, r)]
        assert excess == [], f"{role} allows more than {handler} needs"
    if handler == API_HANDLER:
        # Users it makes are astronomers under /lsstctl/, never anyone else; no EC2 or SSM power.
        excess = [
            (a, r)
            for a, r in [
                ("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/admin"),
                ("iam:PutUserPolicy", f"arn:aws:iam::{ACCOUNT}:user/lsst-x"),
                ("iam:AttachUserPolicy", ASTRONOMER),
                ("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/lsstctl/x"),
                ("secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{_ARN}:secret:prod/db-AbCdEf"),
                # It writes users' keys and never reads them back (their secrets' policies deny it too).
                ("secretsmanager:GetSecretValue", KEY_SECRET),
                ("ec2:TerminateInstances", f"arn:aws:ec2:{_ARN}:instance/i-1"),
                ("ssm:SendCommand", f"arn:aws:ec2:{_ARN}:instance/i-1"),
                ("dynamodb:Scan", TABLE),
            ]
            if allows(template, statements, a, r)
        ]
        assert excess == [], f"{role} allows more than the API needs"
    if handler == "lambdas.reconciler.lambda_handler":
        # It finds and records users, never reads their keys or makes new ones.
        secret = f"arn:aws:secretsmanager:{_ARN}:secret:lsstctl/users/alice-AbCdEf"
        user = f"arn:aws:iam::{ACCOUNT}:user/lsstctl/lsst-alice"
        excess = [
            (a, r)
            for a, r in [
                ("secretsmanager:GetSecretValue", secret),
                ("iam:CreateAccessKey", user),
                ("iam:PutUserPolicy", user),
                ("ssm:SendCommand", f"arn:aws:ec2:{_ARN}:instance/i-1"),
            ]
            if allows(template, statements, a, r)
        ]
        assert excess == [], f"{role} allows more than the reconciler needs"


def test_no_role_can_rewrite_the_audit_trail(template: dict[str, Any]) -> None:
    group = template["Resources"]["AuditLogGroup"]
    assert group["DeletionPolicy"] == "Retain" and group["UpdateReplacePolicy"] == "Retain"
    assert sub_default(group["Properties"]["LogGroupName"], template) == "lsstctl-audit"
    roles = resources_of(template, "AWS::IAM::Role")
    assert len(roles) > 10
    # API Gateway's logging role has AWS's managed policy: these actions, on "*".
    push_to_logs = {
        "Effect": "Allow",
        "Resource": "*",
        "Action": [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:DescribeLogGroups",
            "logs:DescribeLogStreams",
            "logs:PutLogEvents",
            "logs:GetLogEvents",
            "logs:FilterLogEvents",
        ],
    }
    aws_managed = {"ApiGatewayCloudWatchRole": [push_to_logs]}
    rewrites = [
        (role, action, resource)
        for role in roles
        for action in AUDIT_REWRITES
        for resource in (AUDIT_GROUP, f"{AUDIT_GROUP}:*", AUDIT_STREAM)
        if allows(template, aws_managed.get(role) or role_statements(template, role), action, resource)
    ]
    assert rewrites == []
    # ... and the check sees such a grant when there is one.
    broad = [{"Effect": "Allow", "Action": "logs:*", "Resource": {"Fn::GetAtt": ["AuditLogGroup", "Arn"]}}]
    assert allows(template, broad, "logs:DeleteLogStream", AUDIT_STREAM)


def test_role_check_resolves_and_matches() -> None:
    """The checker itself, on a small template."""
    tiny = {
        "Parameters": {"Prefix": {"Default": "lsstctl"}},
        "Resources": {
            "T": {"Type": "AWS::DynamoDB::Table", "Properties": {"TableName": {"Fn::Sub": "${Prefix}-state"}}},
        },
    }
    statements = [
        {"Effect": "Allow", "Action": ["dynamodb:Query"], "Resource": {"Fn::Sub": "${T.Arn}/index/by_billing"}}
    ]
    assert allows(tiny, statements, "dynamodb:Query", f"{TABLE}/index/by_billing")
    assert not allows(tiny, statements, "dynamodb:Query", TABLE)
    assert not allows(tiny, statements, "dynamodb:GetItem", f"{TABLE}/index/by_billing")
    assert allows(tiny, [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}], "ec2:DescribeVolumes", "*")
    assert not allows(
        tiny, [{"Effect": "Allow", "Action": "sns:Publish", "Resource": NOTIFICATIONS}], "sns:Publish", "*"
    )


@pytest.mark.parametrize(
    "resource, content, emulator_name, setting",
    [
        ("QueueProbeDocument", "queue_probe_document", "QUEUE_PROBE_DOCUMENT", "queue_probe_document"),
        ("NodeCapDocument", "node_cap_document", "NODE_CAP_DOCUMENT", "node_cap_document"),
    ],
)
def test_each_ssm_document_is_the_one_the_code_and_the_emulator_run(
    template: dict[str, Any], resource: str, content: str, emulator_name: str, setting: str
) -> None:
    from lsstctl.domain import scripts
    from lsstctl.emulator import bootstrap
    from lsstctl.settings import Settings

    props = template["Resources"][resource]["Properties"]
    assert props["DocumentType"] == "Command"
    assert props["Content"] == getattr(scripts, content)()
    # The code's default and the emulator's document are the template's name with its default prefix.
    assert (
        resolve(template, props["Name"]) == getattr(bootstrap, emulator_name) == Settings.model_fields[setting].default
    )
