"""The shipped price catalog and the arithmetic on it: prices are looked up, never guessed."""

import json
from datetime import date

import pytest

from lsstctl.domain.pricing import (
    DEFAULT_CATALOG_PATH,
    EBS_VOLUME_TYPES,
    HOURS_PER_MONTH,
    PriceCatalog,
    UnknownPriceError,
    gb_month_to_hourly,
    load_catalog,
)
from lsstctl.errors import ControlPlaneError

REQUIRED_REGIONS = ("us-east-1", "us-west-2", "eu-west-1")
REQUIRED_TYPES = (
    "t2.micro t2.xlarge t3.micro t3.small t3.medium t3.large t3.xlarge t3.2xlarge "
    "c5.large c5.xlarge c5.2xlarge c5.4xlarge c5.9xlarge c5.18xlarge c5n.18xlarge "
    "c6i.large c6i.xlarge c6i.2xlarge c6i.4xlarge c6i.8xlarge "
    "m5.large m5.xlarge m5.2xlarge m5.4xlarge m5.8xlarge m6i.large m6i.xlarge m6i.2xlarge m6i.4xlarge "
    "r5.large r5.xlarge r5.2xlarge r5.4xlarge r5.8xlarge r5a.4xlarge r6i.large r6i.xlarge r6i.2xlarge r6i.4xlarge"
).split()


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_catalog()


def test_catalog_loads_once_per_path(catalog):
    assert load_catalog() is catalog
    assert load_catalog(DEFAULT_CATALOG_PATH) is catalog
    assert set(REQUIRED_REGIONS) <= set(catalog.regions)


def test_as_of_is_a_date_and_the_source_says_how_to_refresh(catalog):
    assert date.fromisoformat(catalog.as_of) == date(2026, 11, 1)
    assert "lsstctl.adapters.price_list" in catalog.source


def test_shipped_file_is_in_canonical_form(catalog):
    # Sorted keys and a two-space indent: what the refresh command writes, so diffs stay small.
    assert DEFAULT_CATALOG_PATH.read_text() == catalog.to_json()
    assert PriceCatalog.from_dict(json.loads(catalog.to_json())) == catalog


@pytest.mark.parametrize("region", REQUIRED_REGIONS)
def test_every_required_price_is_present_and_positive(catalog, region):
    assert set(REQUIRED_TYPES) <= set(catalog.instance_types(region))
    for instance_type in catalog.instance_types(region):
        assert catalog.instance_hourly(region, instance_type) > 0
    for volume_type in EBS_VOLUME_TYPES:
        assert catalog.ebs_gb_month(region, volume_type) > 0
    assert catalog.efs_gb_month(region) > 0
    for deployment in ("SCRATCH_1", "SCRATCH_2", "PERSISTENT_1", "PERSISTENT_2"):
        assert catalog.fsx_lustre_gb_month(region, deployment) > 0


def test_hpc_instances_are_priced_only_where_offered(catalog):
    assert catalog.instance_hourly("us-east-2", "hpc6a.48xlarge") == 2.88
    assert catalog.instance_hourly("us-east-2", "hpc7a.96xlarge") == 7.2
    with pytest.raises(UnknownPriceError):
        catalog.instance_hourly("us-east-1", "hpc7a.96xlarge")


@pytest.mark.parametrize(
    "instance_type, hourly",
    [
        ("t3.medium", 0.0416),
        ("c5.large", 0.085),
        ("c5.xlarge", 0.17),
        ("m5.large", 0.096),
        ("r5.large", 0.126),
        ("r5.4xlarge", 1.008),
    ],
)
def test_us_east_1_list_prices(catalog, instance_type, hourly):
    assert catalog.instance_hourly("us-east-1", instance_type) == hourly


def test_instance_cost_for_ninety_minutes(catalog):
    hourly = catalog.instance_hourly("us-east-1", "c5.xlarge")
    assert hourly * 1.5 == pytest.approx(0.255)


def test_gp3_volume_cost_per_hour_and_per_month(catalog):
    # Given a 200 GiB gp3 volume at $0.08 per GB-month
    price = catalog.ebs_gb_month("us-east-1", "gp3")
    assert price == 0.08
    # Then one hour costs 200 * 0.08 / 730 and a 730-hour month costs $16.00
    hourly = gb_month_to_hourly(price, 200)
    assert HOURS_PER_MONTH == 730
    assert hourly == pytest.approx(200 * 0.08 / 730)
    assert hourly == pytest.approx(0.0219178, rel=1e-5)
    assert hourly * 730 == pytest.approx(16.00)


def test_fsx_lustre_scratch_2_cost(catalog):
    price = catalog.fsx_lustre_gb_month("us-east-1")  # SCRATCH_2 by default
    assert price == 0.14
    hourly = gb_month_to_hourly(price, 1200)
    assert hourly * HOURS_PER_MONTH == pytest.approx(168.00)
    assert hourly == pytest.approx(168 / 730)
    assert hourly * 24 == pytest.approx(5.5233, rel=1e-4)


def test_efs_standard(catalog):
    assert catalog.efs_gb_month("us-east-1") == 0.30
    assert gb_month_to_hourly(catalog.efs_gb_month("us-east-1"), 100) * 730 == pytest.approx(30.00)


def test_persistent_lustre_by_throughput_tier(catalog):
    assert catalog.fsx_lustre_gb_month("us-east-1", "PERSISTENT_1", 50) == 0.145
    assert catalog.fsx_lustre_gb_month("us-east-1", "PERSISTENT_1", 200) == 0.29
    assert catalog.fsx_lustre_gb_month("us-east-1", "PERSISTENT_2", 125) == 0.145
    # Without a tier, the dearest one: an estimate feeding a budget guard may only err high.
    assert catalog.fsx_lustre_gb_month("us-east-1", "PERSISTENT_1") == 0.29
    assert catalog.fsx_lustre_gb_month("us-east-1", "PERSISTENT_2") == 0.6


def test_regional_prices_differ(catalog):
    assert catalog.instance_hourly("us-west-2", "c5.large") == catalog.instance_hourly("us-east-1", "c5.large")
    assert catalog.instance_hourly("eu-west-1", "c5.large") > catalog.instance_hourly("us-east-1", "c5.large")
    assert catalog.ebs_gb_month("eu-west-1", "gp3") > catalog.ebs_gb_month("us-east-1", "gp3")


def test_unknown_instance_type_is_an_error_naming_it(catalog):
    with pytest.raises(UnknownPriceError) as caught:
        catalog.instance_hourly("us-east-1", "c5.bogus")
    error = caught.value
    assert isinstance(error, ControlPlaneError)
    assert (error.code, error.http_status) == ("unknown_price", 500)
    assert "c5.bogus" in error.message and "us-east-1" in error.message
    assert "python -m lsstctl.adapters.price_list --regions us-east-1" in error.message
    assert error.to_dict()["details"]["item"] == "c5.bogus"


def test_unknown_region_is_an_error_naming_region_and_type(catalog):
    with pytest.raises(UnknownPriceError) as caught:
        catalog.instance_hourly("ap-south-9", "c5.large")
    assert "ap-south-9" in caught.value.message and "c5.large" in caught.value.message
    assert "no prices for that region" in caught.value.message


@pytest.mark.parametrize(
    "lookup",
    [
        lambda c: c.ebs_gb_month("us-east-1", "gp9"),
        lambda c: c.ebs_gb_month("ap-south-9", "gp3"),
        lambda c: c.efs_gb_month("ap-south-9"),
        lambda c: c.fsx_lustre_gb_month("us-east-1", "SCRATCH_9"),
        lambda c: c.fsx_lustre_gb_month("us-east-1", "PERSISTENT_1", 125),
        lambda c: c.fsx_lustre_gb_month("us-east-1", "SCRATCH_2", 200),
        lambda c: c.fsx_lustre_gb_month("ap-south-9", "PERSISTENT_2"),
    ],
)
def test_unknown_storage_prices_are_errors(catalog, lookup):
    with pytest.raises(UnknownPriceError):
        lookup(catalog)


def test_a_region_without_efs_has_no_efs_price():
    catalog = PriceCatalog.from_dict(
        {"as_of": "2026-11-01", "regions": {"us-east-1": {"ec2_hourly": {"t3.micro": 0.0104}}}}
    )
    with pytest.raises(UnknownPriceError, match="EFS"):
        catalog.efs_gb_month("us-east-1")


@pytest.mark.parametrize("bad", [0, -0.1, "0.08", None, True, float("nan")])
def test_catalog_rejects_prices_that_are_not_positive_numbers(bad):
    with pytest.raises(ValueError, match="positive number"):
        PriceCatalog.from_dict({"as_of": "2026-11-01", "regions": {"us-east-1": {"ebs_gb_month": {"gp3": bad}}}})


@pytest.mark.parametrize("as_of", ["", "November 2026", "2026-13-01"])
def test_catalog_rejects_an_undated_file(as_of):
    with pytest.raises(ValueError, match="as_of"):
        PriceCatalog.from_dict({"as_of": as_of, "regions": {}})


def test_load_catalog_reads_another_path(tmp_path, catalog):
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {"as_of": "2025-01-31", "source": "test", "regions": {"us-east-1": {"ec2_hourly": {"c5.large": 0.09}}}}
        )
    )
    other = load_catalog(path)
    assert other is not catalog and other.as_of == "2025-01-31"
    assert other.instance_hourly("us-east-1", "c5.large") == 0.09
    assert load_catalog(path) is other


def test_a_spot_node_is_charged_its_zones_price_bounded_to_a_sane_range() -> None:
    from lsstctl.domain.pricing import SPOT_FLOOR_FRACTION, spot_hourly

    book = {("c5.large", "us-east-1a"): 0.031, ("c5.large", "us-east-1b"): 0.042, ("m5.large", "us-east-1a"): 0.00001}
    on_demand = 0.085
    assert spot_hourly(book, "c5.large", "us-east-1a", on_demand) == 0.031  # its own zone's
    assert spot_hourly(book, "c5.large", "us-east-1f", on_demand) == 0.042  # zone unknown: the dearest
    assert spot_hourly(book, "c5.large", "", on_demand) == 0.042
    # $0.00001 is no price (the emulator's answer): never below a tenth of on-demand
    assert spot_hourly(book, "m5.large", "us-east-1a", 0.096) == pytest.approx(SPOT_FLOOR_FRACTION * 0.096)
    # never above on-demand (EC2 interrupts spot nodes above it)
    assert spot_hourly({("c5.large", "us-east-1a"): 0.5}, "c5.large", "us-east-1a", on_demand) == on_demand
    # no price, or an implausible one: the caller charges on-demand
    for bad in (
        {},
        {("c5.large", "us-east-1a"): 0.0},
        {("c5.large", "us-east-1a"): float("nan")},
        {("c5.large", "us-east-1a"): -1.0},
    ):
        assert spot_hourly(bad, "c5.large", "us-east-1a", on_demand) is None
