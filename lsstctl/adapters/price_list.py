"""Prices from AWS itself: the Price List API (to refresh the shipped catalog) and the
EC2 spot price history.

The Pricing API answers only in a few regions; its endpoint for the whole world's prices
is us-east-1, whatever region the control plane runs in. Refresh the catalog with

    python -m lsstctl.adapters.price_list --regions us-east-1 us-west-2 \
        --output lsstctl/data/price_catalog.json

which prints what changed and what AWS did not price, and writes nothing (exit 1) when
anything is missing: a missing price must stay an error, never become $0.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from lsstctl.adapters.aws import LazyClient
from lsstctl.domain.pricing import (
    DEFAULT_CATALOG_PATH,
    EBS_VOLUME_TYPES,
    FSX_LUSTRE_KEYS,
    FSX_LUSTRE_TIERS,
    PriceCatalog,
    RegionPrices,
    UnknownPriceError,
)

PRICING_API_REGION = "us-east-1"
SPOT_PRODUCT = "Linux/UNIX"


def _regional_client(service: str, region: str) -> Any:
    # A fresh session per client: the default session is not thread-safe (see aws.py).
    import boto3

    return boto3.session.Session().client(service, region_name=region)


class MissingPricesError(UnknownPriceError):
    """The Price List had no product for some of what a refresh asked for. `details` lists
    them; `catalog` holds what was found, so a caller can still show the rest."""

    code = "missing_prices"

    def __init__(
        self, message: str, *, field: str | None = None, details: Any = None, catalog: PriceCatalog | None = None
    ):
        super().__init__(message, field=field, details=details)
        self.catalog = catalog

    @property
    def missing(self) -> list[str]:
        return list(self.details or [])


def _filters(**terms: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": name, "Value": value} for name, value in terms.items()]


def on_demand_usd(price_list_item: str | Mapping[str, Any], unit: str) -> list[float]:
    """Positive first-tier on-demand USD prices in `unit` from one Price List entry (a JSON
    string: product.attributes plus terms.OnDemand.<offer>.priceDimensions.<rate>)."""
    item = json.loads(price_list_item) if isinstance(price_list_item, str) else price_list_item
    prices = []
    for term in item.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit", "").lower() != unit.lower() or str(dimension.get("beginRange", "0")) != "0":
                continue
            usd = float(dimension.get("pricePerUnit", {}).get("USD", "0"))
            if usd > 0:
                prices.append(usd)
    return prices


def lustre_key(attributes: Mapping[str, str]) -> str | None:
    """The catalog key (SCRATCH_2, PERSISTENT_1_200, ...) of an FSx for Lustre SSD storage
    product, or None for anything else (HDD, backups, throughput). Matched here rather than
    in a filter so that the Price List's spelling of deploymentOption ("Scratch_2",
    "Persistent_1" or "Persistent") does not silently drop a tier."""
    if attributes.get("storageType", "SSD").upper() != "SSD":
        return None
    option = re.sub(r"[^A-Z0-9]", "", attributes.get("deploymentOption", "").upper())
    match = re.fullmatch(r"(SCRATCH|PERSISTENT)([12]?)", option)
    if not match:
        return None
    kind, generation = match.groups()
    if kind == "SCRATCH":
        return f"SCRATCH_{generation}" if generation else None
    throughput = attributes.get("throughputCapacity", "")
    if not throughput.isdigit():
        return None
    generations = [g for g in ("1", "2") if int(throughput) in FSX_LUSTRE_TIERS[f"PERSISTENT_{g}"]]
    if generation:
        return f"PERSISTENT_{generation}_{throughput}" if generation in generations else None
    # Persistent 1 and 2 tiers do not overlap, so the tier says which generation it is.
    return f"PERSISTENT_{generations[0]}_{throughput}" if len(generations) == 1 else None


class PriceListRefresher:
    """Reads on-demand list prices from the AWS Price List API into a PriceCatalog."""

    def __init__(self, client: Any = None):
        self._pricing = client

    @property
    def pricing(self) -> Any:
        if self._pricing is None:
            self._pricing = _regional_client("pricing", PRICING_API_REGION)
        return self._pricing

    def products(self, service_code: str, filters: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
        paginator = self.pricing.get_paginator("get_products")
        for page in paginator.paginate(ServiceCode=service_code, Filters=filters):
            for item in page.get("PriceList", []):
                yield json.loads(item) if isinstance(item, str) else item

    def fetch(
        self,
        regions: list[str],
        instance_types: list[str],
        *,
        volume_types: Sequence[str] = EBS_VOLUME_TYPES,
        lustre_keys: Sequence[str] = FSX_LUSTRE_KEYS,
    ) -> PriceCatalog:
        """Prices for every region and item asked for; raises MissingPricesError (with the
        rest in `.catalog`) when the Price List has no positive price for any of them."""
        today = date.today().isoformat()
        missing: list[str] = []
        found: dict[str, RegionPrices] = {}
        for region in regions:
            ec2 = self._each(region, "EC2", instance_types, missing, self._instance_hourly)
            ebs = self._each(region, "EBS", volume_types, missing, self._ebs_gb_month)
            efs = self._efs_gb_month(region)
            if efs is None:
                missing.append(f"{region} EFS standard")
            lustre = self._lustre(region)
            for key in lustre_keys:
                if key not in lustre:
                    missing.append(f"{region} FSx Lustre {key}")
            found[region] = RegionPrices(
                ec2_hourly=ec2,
                ebs_gb_month=ebs,
                efs_standard_gb_month=efs,
                fsx_lustre_gb_month={k: lustre[k] for k in lustre_keys if k in lustre},
            )
        catalog = PriceCatalog(
            as_of=today,
            source=(
                f"AWS Price List API (pricing:GetProducts), read {today}: on-demand list prices (USD) for "
                "Linux, shared tenancy, no pre-installed software; EBS, EFS Standard and FSx for Lustre SSD "
                "storage per GB-month (storage only). Written by `python -m lsstctl.adapters.price_list`."
            ),
            regions=found,
        )
        if missing:
            raise MissingPricesError(
                f"the AWS Price List has no on-demand price for {len(missing)} item(s): {', '.join(missing)}",
                details=missing,
                catalog=catalog,
            )
        return catalog

    def _instance_hourly(self, region: str, instance_type: str) -> float | None:
        return self._max(
            self.products(
                "AmazonEC2",
                _filters(
                    regionCode=region,
                    locationType="AWS Region",
                    instanceType=instance_type,
                    operatingSystem="Linux",
                    tenancy="Shared",
                    preInstalledSw="NA",
                    capacitystatus="Used",
                ),
            ),
            "Hrs",
        )

    def _ebs_gb_month(self, region: str, volume_type: str) -> float | None:
        return self._max(
            self.products(
                "AmazonEC2",
                _filters(
                    regionCode=region,
                    locationType="AWS Region",
                    productFamily="Storage",
                    volumeApiName=volume_type,
                ),
            ),
            "GB-Mo",
        )

    def _efs_gb_month(self, region: str) -> float | None:
        return self._max(
            self.products(
                "AmazonEFS",
                _filters(
                    regionCode=region,
                    productFamily="Storage",
                    storageClass="General Purpose",
                ),
            ),
            "GB-Mo",
        )

    def _lustre(self, region: str) -> dict[str, float]:
        prices: dict[str, float] = {}
        for product in self.products("AmazonFSx", _filters(regionCode=region, fileSystemType="Lustre")):
            key = lustre_key(product.get("product", {}).get("attributes", {}))
            usd = on_demand_usd(product, "GB-Mo")
            if key and usd:
                prices[key] = max(usd + [prices.get(key, 0.0)])
        return prices

    @staticmethod
    def _max(products: Iterable[Mapping[str, Any]], unit: str) -> float | None:
        # Filters normally leave one product; if AWS lists several, the dearest is the safe one.
        prices = [usd for product in products for usd in on_demand_usd(product, unit)]
        return max(prices) if prices else None

    @staticmethod
    def _each(
        region: str, kind: str, names: Iterable[str], missing: list[str], price: Callable[[str, str], float | None]
    ) -> dict[str, float]:
        found = {}
        for name in names:
            usd = price(region, name)
            if usd is None:
                missing.append(f"{region} {kind} {name}")
            else:
                found[name] = usd
        return found


class SpotPrices:
    """Current spot prices, for estimating queues that run on spot capacity."""

    ec2 = LazyClient("ec2")

    def __init__(self, client: Any = None):
        self.ec2 = client
        self._regional: dict[str, Any] = {}

    def by_zone(self, instance_types: list[str], region: str | None = None) -> dict[tuple[str, str], float]:
        """The current Linux spot price of each instance type in each availability zone
        (what a spot node is charged: `lsstctl.domain.pricing.spot_hourly`). Types without
        history are left out, for the caller to price on demand."""
        if not instance_types:
            return {}  # an empty InstanceTypes would ask for every type
        client = self._client(region)
        newest: dict[tuple[str, str], tuple[datetime, float]] = {}
        pages = client.get_paginator("describe_spot_price_history").paginate(
            InstanceTypes=sorted(set(instance_types)),
            ProductDescriptions=[SPOT_PRODUCT],
            StartTime=datetime.now(UTC),  # from now: the price in effect in each zone
        )
        for page in pages:
            for row in page.get("SpotPriceHistory", []):
                key = (row["InstanceType"], row["AvailabilityZone"])
                if key not in newest or row["Timestamp"] > newest[key][0]:
                    newest[key] = (row["Timestamp"], float(row["SpotPrice"]))
        return {key: usd for key, (_at, usd) in newest.items() if usd > 0}

    def latest(self, instance_types: list[str], region: str | None = None) -> dict[str, float]:
        """The highest current Linux spot price over availability zones, per instance type:
        a cluster's nodes may land in any zone (for estimates, before nodes exist)."""
        prices: dict[str, float] = {}
        for (instance_type, _zone), usd in self.by_zone(instance_types, region).items():
            prices[instance_type] = max(usd, prices.get(instance_type, 0.0))
        return prices

    def _client(self, region: str | None) -> Any:
        if region is None or self.ec2.meta.region_name == region:
            return self.ec2
        if region not in self._regional:
            self._regional[region] = _regional_client("ec2", region)
        return self._regional[region]


# command -------------------------------------------------------------------------------
def _changes(old: PriceCatalog, new: PriceCatalog) -> list[str]:
    lines = []
    for region, prices in sorted(new.regions.items()):
        before = old.regions.get(region, RegionPrices()).to_dict()
        for table, values in sorted(prices.to_dict().items()):
            if not isinstance(values, dict):
                values, was = {"standard": values}, {"standard": before.get(table)}
            else:
                was = before.get(table, {})
            for item, usd in sorted(values.items()):
                if was.get(item) is None:
                    lines.append(f"  {region} {table} {item}: new {usd}")
                elif was[item] != usd:
                    lines.append(f"  {region} {table} {item}: {was[item]} -> {usd}")
    return lines


def main(argv: Sequence[str] | None = None, *, refresher: PriceListRefresher | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lsstctl.adapters.price_list",
        description="Refresh the price catalog from the AWS Price List API (needs AWS credentials).",
    )
    parser.add_argument("--regions", nargs="+", help="default: the regions already in the catalog")
    parser.add_argument(
        "--instance-types",
        nargs="+",
        help="default: per region, the types already in the catalog (all of them for a new region)",
    )
    parser.add_argument(
        "--catalog", type=Path, help="the current catalog (default: --output if it exists, else the shipped one)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_CATALOG_PATH)
    args = parser.parse_args(argv)

    current_path = args.catalog or (args.output if args.output.exists() else DEFAULT_CATALOG_PATH)
    current = PriceCatalog.from_dict(json.loads(current_path.read_text()), origin=str(current_path))
    regions = args.regions or sorted(current.regions)
    refresher = refresher or PriceListRefresher()

    fetched: dict[str, RegionPrices] = {}
    missing: list[str] = []
    source = ""
    for region in regions:
        known = current.regions.get(region)
        try:
            catalog = refresher.fetch(
                [region],
                args.instance_types or current.instance_types(region) or current.instance_types(),
                volume_types=sorted(known.ebs_gb_month) if known else EBS_VOLUME_TYPES,
                lustre_keys=sorted(known.fsx_lustre_gb_month) if known else FSX_LUSTRE_KEYS,
            )
        except MissingPricesError as error:
            missing += error.missing
            catalog = error.catalog or PriceCatalog(as_of=current.as_of, source="", regions={})
        fetched.update(catalog.regions)
        source = catalog.source

    kept = sorted(set(current.regions) - set(fetched))
    if kept:
        source += f" Regions not refreshed ({', '.join(kept)}) keep the prices of {current.as_of}."
    refreshed = PriceCatalog(as_of=date.today().isoformat(), source=source, regions={**current.regions, **fetched})
    changes = _changes(current, refreshed)
    print(f"Changes against {current_path} (as of {current.as_of}):")
    print("\n".join(changes) if changes else "  none")
    if missing:
        print(f"Missing from the AWS Price List ({len(missing)}); {args.output} left unchanged:")
        print("\n".join(f"  {item}" for item in missing))
        return 1
    args.output.write_text(refreshed.to_json())
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
