"""Price List refresh and spot prices. Moto has no Pricing API, so GetProducts is stubbed on a
real botocore client with entries shaped as AWS returns them; spot history runs on moto
where it helps (it prices every zone alike) and on a stub where the zones must differ."""

import json
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
from botocore.stub import ANY, Stubber

from lsstctl.adapters.price_list import (
    PRICING_API_REGION,
    MissingPricesError,
    PriceListRefresher,
    SpotPrices,
    lustre_key,
    main,
    on_demand_usd,
)
from lsstctl.domain.pricing import PriceCatalog, UnknownPriceError

REGION = "us-east-1"
LOCATION = "US East (N. Virginia)"


# Price List entries, as GetProducts returns them: JSON strings, one product each ---------
def _offer(sku: str, usd: str, unit: str, description: str, *, code: str = "JRTCKXETXF") -> dict:
    rate = f"{sku}.{code}.6YS6EN2CT7"
    return {
        f"{sku}.{code}": {
            "priceDimensions": {
                rate: {
                    "unit": unit,
                    "endRange": "Inf",
                    "description": description,
                    "appliesTo": [],
                    "rateCode": rate,
                    "beginRange": "0",
                    "pricePerUnit": {"USD": usd},
                }
            },
            "sku": sku,
            "effectiveDate": "2026-10-01T00:00:00Z",
            "offerTermCode": code,
            "termAttributes": {},
        }
    }


def _entry(service: str, family: str, sku: str, attributes: dict, usd: str, unit: str, description: str) -> str:
    item = {
        "product": {
            "productFamily": family,
            "attributes": {
                "regionCode": REGION,
                "location": LOCATION,
                "locationType": "AWS Region",
                "servicecode": service,
                **attributes,
            },
            "sku": sku,
        },
        "serviceCode": service,
        "terms": {"OnDemand": _offer(sku, usd, unit, description)},
        "version": "20261015001204",
        "publicationDate": "2026-10-15T00:12:04Z",
    }
    return json.dumps(item)


def ec2_entry(instance_type: str, usd: str, *, reserved_usd: str = "0.0500000000") -> str:
    sku = "SKU" + instance_type.replace(".", "").upper()
    item = json.loads(
        _entry(
            "AmazonEC2",
            "Compute Instance",
            sku,
            {
                "instanceType": instance_type,
                "operatingSystem": "Linux",
                "tenancy": "Shared",
                "preInstalledSw": "NA",
                "capacitystatus": "Used",
                "licenseModel": "No License required",
                "usagetype": f"BoxUsage:{instance_type}",
                "operation": "RunInstances",
                "vcpu": "4",
                "memory": "8 GiB",
                "instanceFamily": "Compute optimized",
                "marketoption": "OnDemand",
                "servicename": "Amazon Elastic Compute Cloud",
            },
            usd,
            "Hrs",
            f"${float(usd)} per On Demand Linux {instance_type} Instance Hour",
        )
    )
    # A Reserved offer sits beside the on-demand one; it must not be read as the price.
    reserved = _offer(sku, reserved_usd, "Hrs", "Linux/UNIX (Amazon VPC), c5 reserved", code="4NA7Y494T4")
    for term in reserved.values():
        term["termAttributes"] = {
            "LeaseContractLength": "1yr",
            "OfferingClass": "standard",
            "PurchaseOption": "No Upfront",
        }
    item["terms"]["Reserved"] = reserved
    return json.dumps(item)


def ebs_entry(volume_type: str, usd: str) -> str:
    return _entry(
        "AmazonEC2",
        "Storage",
        f"EBS{volume_type.upper()}",
        {
            "volumeApiName": volume_type,
            "volumeType": "General Purpose",
            "usagetype": f"EBS:VolumeUsage.{volume_type}",
            "storageMedia": "SSD-backed",
            "maxVolumeSize": "16 TiB",
        },
        usd,
        "GB-Mo",
        f"${float(usd)} per GB-month of {volume_type} provisioned storage - US East (Northern Virginia)",
    )


def efs_entry(usd: str) -> str:
    return _entry(
        "AmazonEFS",
        "Storage",
        "EFSSTANDARD",
        {"storageClass": "General Purpose", "usagetype": "TimedStorage-ByteHrs", "operation": ""},
        usd,
        "GB-Mo",
        f"${float(usd)} per GB-Mo for Standard storage (USE1)",
    )


def lustre_entry(deployment: str, throughput: str, usd: str, *, storage: str = "SSD", sku: str = "") -> str:
    return _entry(
        "AmazonFSx",
        "Storage",
        sku or f"FSX{deployment}{throughput}{storage}",
        {
            "fileSystemType": "Lustre",
            "storageType": storage,
            "deploymentOption": deployment,
            "throughputCapacity": throughput,
            "usagetype": f"USE1-Storage.{storage}.{throughput}",
            "operation": "CreateFileSystem:Lustre",
        },
        usd,
        "GB-Mo",
        f"${float(usd)} per GB-month of Lustre {deployment} {storage} storage",
    )


LUSTRE_ENTRIES = [
    lustre_entry("Scratch_2", "N/A", "0.1400000000"),
    lustre_entry("Persistent_1", "50", "0.1450000000"),
    lustre_entry("Persistent", "250", "0.2100000000"),  # generation told by the tier
    lustre_entry("Persistent_1", "12", "0.0250000000", storage="HDD"),  # not in the catalog
    lustre_entry("N/A", "N/A", "0.0500000000", storage="N/A", sku="FSXBACKUP"),  # backups
]


def term_filters(**terms: str) -> list[dict]:
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in terms.items()]


def ec2_filters(instance_type: str, region: str = REGION) -> list[dict]:
    return term_filters(
        regionCode=region,
        locationType="AWS Region",
        instanceType=instance_type,
        operatingSystem="Linux",
        tenancy="Shared",
        preInstalledSw="NA",
        capacitystatus="Used",
    )


def ebs_filters(volume_type: str, region: str = REGION) -> list[dict]:
    return term_filters(
        regionCode=region, locationType="AWS Region", productFamily="Storage", volumeApiName=volume_type
    )


def expect(
    stubber: Stubber,
    service: str,
    filters: list[dict],
    entries: list[str],
    *,
    next_token: str | None = None,
    token: str | None = None,
) -> None:
    response = {"FormatVersion": "aws_v1", "PriceList": entries}
    if next_token:
        response["NextToken"] = next_token
    params = {"ServiceCode": service, "Filters": filters}
    if token:
        params["NextToken"] = token
    stubber.add_response("get_products", response, expected_params=params)


def expect_region(stubber: Stubber, ec2: dict[str, list[str]], ebs: dict[str, list[str]], region: str = REGION) -> None:
    for instance_type, entries in ec2.items():
        expect(stubber, "AmazonEC2", ec2_filters(instance_type, region), entries)
    for volume_type, entries in ebs.items():
        expect(stubber, "AmazonEC2", ebs_filters(volume_type, region), entries)
    expect(
        stubber,
        "AmazonEFS",
        term_filters(regionCode=region, productFamily="Storage", storageClass="General Purpose"),
        [efs_entry("0.3000000000")],
    )
    expect(stubber, "AmazonFSx", term_filters(regionCode=region, fileSystemType="Lustre"), LUSTRE_ENTRIES)


@pytest.fixture
def pricing():
    client = boto3.client("pricing", region_name=PRICING_API_REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


LUSTRE_KEYS = ["SCRATCH_2", "PERSISTENT_1_50", "PERSISTENT_2_250"]


def test_fetch_reads_on_demand_prices_from_price_list_entries(pricing):
    client, stubber = pricing
    # Given c5.xlarge on one page, and m5.large over two pages (the second empty)
    expect(stubber, "AmazonEC2", ec2_filters("c5.xlarge"), [ec2_entry("c5.xlarge", "0.1700000000")])
    expect(stubber, "AmazonEC2", ec2_filters("m5.large"), [ec2_entry("m5.large", "0.0960000000")], next_token="page-2")
    expect(stubber, "AmazonEC2", ec2_filters("m5.large"), [], token="page-2")
    expect_region(stubber, {}, {"gp3": [ebs_entry("gp3", "0.0800000000")], "io2": [ebs_entry("io2", "0.1250000000")]})

    # When the refresher reads them
    catalog = PriceListRefresher(client).fetch(
        [REGION], ["c5.xlarge", "m5.large"], volume_types=["gp3", "io2"], lustre_keys=LUSTRE_KEYS
    )

    # Then the on-demand (not the reserved) prices land in a dated catalog
    assert catalog.as_of == date.today().isoformat()
    assert "Price List API" in catalog.source
    assert catalog.instance_hourly(REGION, "c5.xlarge") == 0.17
    assert catalog.instance_hourly(REGION, "m5.large") == 0.096
    assert catalog.ebs_gb_month(REGION, "gp3") == 0.08
    assert catalog.ebs_gb_month(REGION, "io2") == 0.125
    assert catalog.efs_gb_month(REGION) == 0.30
    assert catalog.fsx_lustre_gb_month(REGION, "SCRATCH_2") == 0.14
    assert catalog.fsx_lustre_gb_month(REGION, "PERSISTENT_1", 50) == 0.145
    assert catalog.fsx_lustre_gb_month(REGION, "PERSISTENT_2", 250) == 0.21
    assert dict(catalog.regions[REGION].fsx_lustre_gb_month) == {
        "SCRATCH_2": 0.14,
        "PERSISTENT_1_50": 0.145,
        "PERSISTENT_2_250": 0.21,
    }
    assert on_demand_usd(ec2_entry("c5.xlarge", "0.1700000000"), "Hrs") == [0.17]  # not the Reserved 0.05
    # and what it writes reads back as the same catalog
    assert PriceCatalog.from_dict(json.loads(catalog.to_json())) == PriceCatalog.from_dict(catalog.to_dict())


def test_a_type_without_a_product_is_reported_not_zeroed(pricing):
    client, stubber = pricing
    # Given the Price List knows c5.xlarge but not c5.bogus, and prices t3.nano at $0
    expect(stubber, "AmazonEC2", ec2_filters("c5.xlarge"), [ec2_entry("c5.xlarge", "0.1700000000")])
    expect(stubber, "AmazonEC2", ec2_filters("c5.bogus"), [])
    expect(stubber, "AmazonEC2", ec2_filters("t3.nano"), [ec2_entry("t3.nano", "0.0000000000")])
    expect_region(stubber, {}, {"gp3": [ebs_entry("gp3", "0.0800000000")]})

    # When the refresher reads them
    with pytest.raises(MissingPricesError) as caught:
        PriceListRefresher(client).fetch(
            [REGION],
            ["c5.xlarge", "c5.bogus", "t3.nano"],
            volume_types=["gp3"],
            lustre_keys=["SCRATCH_2", "PERSISTENT_2_1000"],
        )

    # Then both are reported, with what was found kept aside, and neither is priced
    error = caught.value
    assert isinstance(error, UnknownPriceError)
    assert error.missing == [
        "us-east-1 EC2 c5.bogus",
        "us-east-1 EC2 t3.nano",
        "us-east-1 FSx Lustre PERSISTENT_2_1000",
    ]
    assert "c5.bogus" in error.message
    assert error.catalog.instance_hourly(REGION, "c5.xlarge") == 0.17
    with pytest.raises(UnknownPriceError):
        error.catalog.instance_hourly(REGION, "c5.bogus")
    with pytest.raises(UnknownPriceError):
        error.catalog.instance_hourly(REGION, "t3.nano")


@pytest.mark.parametrize(
    "attributes, key",
    [
        ({"deploymentOption": "Scratch_1", "throughputCapacity": "N/A", "storageType": "SSD"}, "SCRATCH_1"),
        ({"deploymentOption": "SCRATCH_2", "throughputCapacity": "N/A", "storageType": "SSD"}, "SCRATCH_2"),
        ({"deploymentOption": "Persistent_1", "throughputCapacity": "200", "storageType": "SSD"}, "PERSISTENT_1_200"),
        ({"deploymentOption": "Persistent 2", "throughputCapacity": "1000", "storageType": "SSD"}, "PERSISTENT_2_1000"),
        ({"deploymentOption": "Persistent", "throughputCapacity": "125", "storageType": "SSD"}, "PERSISTENT_2_125"),
        ({"deploymentOption": "Persistent_1", "throughputCapacity": "125", "storageType": "SSD"}, None),
        ({"deploymentOption": "Persistent_1", "throughputCapacity": "40", "storageType": "HDD"}, None),
        ({"deploymentOption": "Scratch", "throughputCapacity": "N/A", "storageType": "SSD"}, None),
        ({"deploymentOption": "N/A", "throughputCapacity": "N/A", "storageType": "N/A"}, None),
    ],
)
def test_lustre_products_map_to_catalog_keys(attributes, key):
    assert lustre_key(attributes) == key


def test_default_pricing_client_is_built_lazily_in_us_east_1(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    refresher = PriceListRefresher()
    assert refresher._pricing is None  # nothing built at construction
    assert refresher.pricing.meta.region_name == "us-east-1"
    assert refresher.pricing is refresher.pricing


# the refresh command -------------------------------------------------------------------
@pytest.fixture
def catalog_file(tmp_path):
    path = tmp_path / "price_catalog.json"
    path.write_text(
        PriceCatalog.from_dict(
            {
                "as_of": "2026-11-01",
                "source": "transcribed",
                "regions": {
                    REGION: {
                        "ec2_hourly": {"c5.large": 0.08, "t3.micro": 0.0104},
                        "ebs_gb_month": {"gp3": 0.08},
                        "efs_standard_gb_month": 0.3,
                        "fsx_lustre_gb_month": {"SCRATCH_2": 0.14},
                    },
                    "eu-west-1": {"ec2_hourly": {"c5.large": 0.096}},
                },
            }
        ).to_json()
    )
    return path


def test_command_writes_the_refreshed_catalog_and_prints_changes(pricing, catalog_file, capsys):
    client, stubber = pricing
    # Given AWS now lists c5.large at 0.085 (the catalog has 0.08) and the rest unchanged
    expect_region(
        stubber,
        {"c5.large": [ec2_entry("c5.large", "0.0850000000")], "t3.micro": [ec2_entry("t3.micro", "0.0104000000")]},
        {"gp3": [ebs_entry("gp3", "0.0800000000")]},
    )

    # When the command refreshes us-east-1 into the same file
    code = main(["--regions", REGION, "--output", str(catalog_file)], refresher=PriceListRefresher(client))

    # Then it reports the change and writes a catalog dated today, keeping eu-west-1
    out = capsys.readouterr().out
    assert code == 0
    assert "us-east-1 ec2_hourly c5.large: 0.08 -> 0.085" in out
    assert "t3.micro" not in out
    written = PriceCatalog.from_dict(json.loads(catalog_file.read_text()))
    assert written.as_of == date.today().isoformat()
    assert written.instance_hourly(REGION, "c5.large") == 0.085
    assert written.instance_hourly("eu-west-1", "c5.large") == 0.096
    assert "eu-west-1" in written.source and "2026-11-01" in written.source
    assert catalog_file.read_text() == written.to_json()


def test_command_exits_non_zero_and_writes_nothing_when_a_price_is_missing(pricing, catalog_file, capsys):
    client, stubber = pricing
    before = catalog_file.read_text()
    # Given AWS no longer lists t3.micro
    expect_region(
        stubber,
        {"c5.large": [ec2_entry("c5.large", "0.0850000000")], "t3.micro": []},
        {"gp3": [ebs_entry("gp3", "0.0800000000")]},
    )

    code = main(["--regions", REGION, "--output", str(catalog_file)], refresher=PriceListRefresher(client))

    out = capsys.readouterr().out
    assert code == 1
    assert "us-east-1 EC2 t3.micro" in out
    assert "c5.large: 0.08 -> 0.085" in out
    assert catalog_file.read_text() == before


# spot prices ---------------------------------------------------------------------------
def test_spot_prices_on_moto_leave_out_types_without_history(aws):
    # moto prices every offered type at $0.00001 in each zone of the region
    prices = SpotPrices().latest(["c5.large", "r5.4xlarge", "hpc7a.96xlarge"])
    assert prices == {"c5.large": pytest.approx(0.00001), "r5.4xlarge": pytest.approx(0.00001)}


def test_spot_prices_for_another_region(aws):
    spot = SpotPrices(boto3.client("ec2", region_name="us-east-1"))
    assert spot.latest(["m5.large"], region="eu-west-1") == {"m5.large": pytest.approx(0.00001)}
    assert spot._client("eu-west-1").meta.region_name == "eu-west-1"


def test_spot_price_is_the_newest_per_zone_then_the_highest_zone():
    client = boto3.client("ec2", region_name=REGION)
    now = datetime.now(UTC)

    def row(instance_type, zone, usd, minutes_ago):
        return {
            "AvailabilityZone": zone,
            "InstanceType": instance_type,
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": usd,
            "Timestamp": now - timedelta(minutes=minutes_ago),
        }

    params = {
        "InstanceTypes": ["c5.large", "r5.large", "x9.huge"],
        "ProductDescriptions": ["Linux/UNIX"],
        "StartTime": ANY,
    }
    with Stubber(client) as stubber:
        # Given us-east-1a's price fell from 0.050 to 0.031, 1b is at 0.042 and 1c (next page) at 0.038
        stubber.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [
                    row("c5.large", "us-east-1a", "0.050000", 90),
                    row("c5.large", "us-east-1a", "0.031000", 5),
                    row("c5.large", "us-east-1b", "0.042000", 30),
                    row("r5.large", "us-east-1a", "0.040100", 12),
                ],
                "NextToken": "page-2",
            },
            expected_params=params,
        )
        stubber.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [row("c5.large", "us-east-1c", "0.038000", 1)],
                "NextToken": "",
            },
            expected_params={**params, "NextToken": "page-2"},
        )

        spot = SpotPrices(client)
        book = spot.by_zone(["r5.large", "c5.large", "x9.huge", "c5.large"])
        stubber.add_response(
            "describe_spot_price_history",
            {
                "SpotPriceHistory": [
                    row("c5.large", "us-east-1a", "0.031000", 5),
                    row("c5.large", "us-east-1b", "0.042000", 30),
                    row("r5.large", "us-east-1a", "0.040100", 12),
                ],
                "NextToken": "",
            },
            expected_params=params,
        )
        prices = spot.latest(["r5.large", "c5.large", "x9.huge", "c5.large"])
        stubber.assert_no_pending_responses()

    # Then each zone is at its newest price (what a node there is charged), x9.huge is absent...
    assert book == {
        ("c5.large", "us-east-1a"): 0.031,
        ("c5.large", "us-east-1b"): 0.042,
        ("c5.large", "us-east-1c"): 0.038,
        ("r5.large", "us-east-1a"): 0.0401,
    }
    # ...and for an estimate before nodes exist, the dearest zone wins
    assert prices == {"c5.large": 0.042, "r5.large": 0.0401}


def test_no_instance_types_asks_nothing():
    client = boto3.client("ec2", region_name=REGION)
    with Stubber(client):  # any call would fail: nothing is stubbed
        assert SpotPrices(client).latest([]) == {}
