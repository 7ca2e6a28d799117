"""Presets: sized by memory per vCPU, overridable field by field, priced from the catalog."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lsstctl.domain.models import ClusterSpec
from lsstctl.domain.presets import PRESETS, describe_presets, hourly_prices
from lsstctl.domain.pricing import load_catalog

GIB_PER_VCPU = {"m6i": 4, "r6i": 8}


def test_there_is_a_spot_variant_of_every_size():
    assert sorted(PRESETS) == sorted(["small", "medium", "large", "small-spot", "medium-spot", "large-spot"])
    for name in ("small", "medium", "large"):
        ondemand, spot = PRESETS[name], PRESETS[f"{name}-spot"]
        assert [q["instance_types"] for q in ondemand.queues] == [q["instance_types"] for q in spot.queues]
        assert {q["capacity_type"] for q in spot.queues} == {"spot"}


def test_queues_are_sized_by_memory_per_vcpu():
    for preset in PRESETS.values():
        by_name = {q["name"]: q for q in preset.queues}
        # pipelines: about 4 GB per process; large-memory steps: about 30 GB (r6i.xlarge: 32 GiB)
        assert GIB_PER_VCPU[by_name["compute"]["instance_types"][0].split(".")[0]] == 4
        if "highmem" in by_name:
            assert GIB_PER_VCPU[by_name["highmem"]["instance_types"][0].split(".")[0]] == 8
        assert all(q["min_nodes"] == 0 for q in preset.queues)  # at rest: no compute node billing


def test_a_spec_names_a_preset_and_its_own_fields_win():
    spec = ClusterSpec.model_validate(
        {"preset": "medium", "name": "rc2", "budget_usd": 100, "head_node_type": "m6i.xlarge"}
    )
    assert spec.head_node_type == "m6i.xlarge"  # overridden
    assert [q.name for q in spec.queues] == ["compute", "highmem"]  # the preset's
    assert spec.shared_storage.type == "efs"
    own = ClusterSpec.model_validate(
        {
            "preset": "large",
            "name": "rc2",
            "budget_usd": 100,
            "queues": [{"name": "q", "instance_types": ["c6i.large"]}],
        }
    )
    assert [q.name for q in own.queues] == ["q"]


def test_an_unknown_preset_is_refused_naming_the_presets():
    with pytest.raises(ValidationError) as refused:
        ClusterSpec.model_validate({"preset": "huge", "name": "rc2", "budget_usd": 100})
    first = refused.value.errors()[0]
    assert first["loc"] == ("preset",) and "small, small-spot, medium" in first["msg"]


def test_hourly_prices_at_rest_and_at_full_size():
    catalog = load_catalog()
    small = PRESETS["small"]
    prices = hourly_prices(catalog, "us-east-1", small.head_node_type, list(small.queues), small.shared_storage)
    head = catalog.instance_hourly("us-east-1", "t3.medium")
    efs = catalog.efs_gb_month("us-east-1") * 100 / 730
    assert prices["at_rest_usd_per_hour"] == pytest.approx(head + efs, abs=1e-4)
    assert prices["full_size_usd_per_hour"] == pytest.approx(
        head + efs + 4 * catalog.instance_hourly("us-east-1", "m6i.xlarge"), abs=1e-4
    )
    listed = {p["name"]: p for p in describe_presets(catalog, "us-east-1")}
    assert (
        listed["large"]["full_size_usd_per_hour"]
        > listed["medium"]["full_size_usd_per_hour"]
        > listed["small"]["full_size_usd_per_hour"]
    )
    assert listed["small-spot"]["full_size_usd_per_hour"] == listed["small"]["full_size_usd_per_hour"]  # an upper bound
