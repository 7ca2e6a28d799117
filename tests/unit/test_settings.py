"""Settings come from LSSTCTL_* variables, typed and validated; the region also from AWS's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lsstctl.settings import Settings, from_environment


def test_each_field_comes_from_its_variable_typed() -> None:
    settings = from_environment(
        {
            "LSSTCTL_STATE_TABLE": "t",
            "LSSTCTL_GOVERNOR": "false",
            "LSSTCTL_POLL_SECONDS": "3",
            "LSSTCTL_STEP_BACKOFF_SECONDS": "0.25",
            "LSSTCTL_ENGINE": "parallelcluster",
            "LSSTCTL_NOT_A_SETTING": "ignored",
            "STATE_TABLE": "not ours",
        }
    )
    assert (settings.state_table, settings.governor, settings.poll_seconds) == ("t", False, 3)
    assert (settings.step_backoff_seconds, settings.engine) == (0.25, "parallelcluster")
    assert from_environment({}) == Settings()


@pytest.mark.parametrize(
    ("environ", "region"),
    [
        ({"LSSTCTL_REGION": "eu-west-1", "AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "ap-south-1"}, "eu-west-1"),
        ({"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "ap-south-1"}, "us-west-2"),
        ({"AWS_DEFAULT_REGION": "ap-south-1"}, "ap-south-1"),
        ({"LSSTCTL_REGION": "", "AWS_REGION": "us-west-2"}, "us-west-2"),
        ({}, "us-east-1"),
    ],
)
def test_the_region_is_ours_then_aws_then_the_default(environ: dict[str, str], region: str) -> None:
    assert from_environment(environ).region == region


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LSSTCTL_POLL_SECONDS", "soon"),
        ("LSSTCTL_ENGINE", "slurm"),
        ("LSSTCTL_ACCOUNT_ID", "12345"),
        ("LSSTCTL_ADMIN_PRINCIPALS", "admin"),  # a bare name is nobody's ARN
        ("LSSTCTL_STEP_ATTEMPTS", "0"),
    ],
)
def test_a_bad_value_stops_the_container_naming_the_field(name: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        from_environment({name: value})
    assert name.removeprefix("LSSTCTL_").lower() in str(refused.value)
