"""Unit prices (pure): what one instance-hour or one GB-month costs, per region.

Moto has no price data (its Pricing API answers 404), so the control plane ships a dated
catalog, lsstctl/data/price_catalog.json, refreshed from the AWS Price List on a real
account by `python -m lsstctl.adapters.price_list`. Tests price against the same file.
A price the catalog lacks is an error, never $0: a budget guard that reads $0 for an
unknown instance type would let that cluster spend without limit.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lsstctl.errors import ControlPlaneError

HOURS_PER_MONTH = 730  # AWS's convention when it turns a GB-month price into an hourly one
DEFAULT_CATALOG_PATH = Path(__file__).resolve().parents[1] / "data" / "price_catalog.json"
REFRESH_COMMAND = "python -m lsstctl.adapters.price_list --regions {region} --output lsstctl/data/price_catalog.json"

EBS_VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")
# Persistent Lustre is priced per throughput tier (MB/s per TiB); the catalog keys those as
# "<DEPLOYMENT>_<tier>". Scratch file systems have no tiers.
FSX_LUSTRE_TIERS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"SCRATCH_1": (), "SCRATCH_2": (), "PERSISTENT_1": (50, 100, 200), "PERSISTENT_2": (125, 250, 500, 1000)}
)
FSX_LUSTRE_KEYS = tuple(
    f"{deployment}_{tier}" if tier else deployment
    for deployment, tiers in FSX_LUSTRE_TIERS.items()
    for tier in (tiers or (0,))
)


class UnknownPriceError(ControlPlaneError):
    """The price catalog has no price for something a cluster would run. A 500, not a 4xx:
    the request may be fine; it is the operator's catalog that needs a refresh."""

    code = "unknown_price"


def _unknown(catalog: PriceCatalog, region: str, what: str, item: str) -> UnknownPriceError:
    if region in catalog.regions:
        where = f"in {region}"
    else:
        known = ", ".join(sorted(catalog.regions)) or "none"
        where = f"in region {region!r}: the catalog has no prices for that region (it has {known})"
    return UnknownPriceError(
        f"no {what} price for {item!r} {where} (price catalog as of {catalog.as_of}); "
        f"add it to the catalog with `{REFRESH_COMMAND.format(region=region)}` on an AWS account",
        details={"region": region, "kind": what, "item": item, "catalog_as_of": catalog.as_of},
    )


def gb_month_to_hourly(price_per_gb_month: float, size_gib: float) -> float:
    """Hourly cost of `size_gib` of storage billed per GB-month (AWS's GB here is a GiB)."""
    return price_per_gb_month * size_gib / HOURS_PER_MONTH


@dataclass(frozen=True)
class RegionPrices:
    """USD list prices in one region: on-demand Linux, shared tenancy."""

    ec2_hourly: Mapping[str, float] = field(default_factory=dict)  # by instance type
    ebs_gb_month: Mapping[str, float] = field(default_factory=dict)  # by volume type (storage only)
    efs_standard_gb_month: float | None = None
    fsx_lustre_gb_month: Mapping[str, float] = field(default_factory=dict)  # by FSX_LUSTRE_KEYS

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> RegionPrices:
        efs = data.get("efs_standard_gb_month")
        return cls(
            ec2_hourly=_prices(data.get("ec2_hourly", {}), f"{where}.ec2_hourly"),
            ebs_gb_month=_prices(data.get("ebs_gb_month", {}), f"{where}.ebs_gb_month"),
            efs_standard_gb_month=None if efs is None else _price(efs, f"{where}.efs_standard_gb_month"),
            fsx_lustre_gb_month=_prices(data.get("fsx_lustre_gb_month", {}), f"{where}.fsx_lustre_gb_month"),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ec2_hourly": dict(self.ec2_hourly),
            "ebs_gb_month": dict(self.ebs_gb_month),
            "fsx_lustre_gb_month": dict(self.fsx_lustre_gb_month),
        }
        if self.efs_standard_gb_month is not None:
            data["efs_standard_gb_month"] = self.efs_standard_gb_month
        return data


@dataclass(frozen=True)
class PriceCatalog:
    as_of: str  # ISO date the prices were read
    source: str
    regions: Mapping[str, RegionPrices]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "price catalog") -> PriceCatalog:
        as_of = str(data.get("as_of", ""))
        try:
            date.fromisoformat(as_of)
        except ValueError:
            raise ValueError(f"{origin}: as_of must be an ISO date (YYYY-MM-DD), got {as_of!r}") from None
        regions = {
            name: RegionPrices.from_dict(prices, where=f"{origin}: {name}")
            for name, prices in data.get("regions", {}).items()
        }
        return cls(as_of=as_of, source=str(data.get("source", "")), regions=MappingProxyType(regions))

    def to_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "source": self.source,
            "regions": {name: prices.to_dict() for name, prices in self.regions.items()},
        }

    def to_json(self) -> str:
        """The catalog file's text: sorted keys, two-space indent, so refreshes diff cleanly."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def instance_types(self, region: str | None = None) -> list[str]:
        """Instance types priced in `region`, or in any region."""
        if region is None:
            tables = list(self.regions.values())
        else:
            tables = [self.regions[region]] if region in self.regions else []
        return sorted({t for prices in tables for t in prices.ec2_hourly})

    def instance_hourly(self, region: str, instance_type: str) -> float:
        return self._lookup(region, "EC2 on-demand Linux hourly", instance_type, lambda p: p.ec2_hourly)

    def ebs_gb_month(self, region: str, volume_type: str) -> float:
        return self._lookup(region, "EBS GB-month", volume_type, lambda p: p.ebs_gb_month)

    def efs_gb_month(self, region: str) -> float:
        def standard(prices: RegionPrices) -> Mapping[str, float]:
            efs = prices.efs_standard_gb_month
            return {} if efs is None else {"standard": efs}

        return self._lookup(region, "EFS GB-month", "standard", standard)

    def fsx_lustre_gb_month(
        self, region: str, deployment_type: str = "SCRATCH_2", per_unit_storage_throughput: int | None = None
    ) -> float:
        """SSD storage price. Persistent deployments are priced per throughput tier (MB/s per
        TiB); without a tier this is the dearest one priced, since it feeds a budget guard."""
        what = "FSx for Lustre GB-month"
        tiers = FSX_LUSTRE_TIERS.get(deployment_type, ())
        if per_unit_storage_throughput is not None or not tiers:
            key = deployment_type
            if per_unit_storage_throughput is not None:
                key = f"{deployment_type}_{per_unit_storage_throughput}"
            return self._lookup(region, what, key, lambda p: p.fsx_lustre_gb_month)
        table = self.regions[region].fsx_lustre_gb_month if region in self.regions else {}
        priced = [table[f"{deployment_type}_{tier}"] for tier in tiers if f"{deployment_type}_{tier}" in table]
        if not priced:
            raise _unknown(self, region, what, deployment_type)
        return max(priced)

    def shared_storage_gb_month(self, region: str, storage_type: str) -> float:
        """The price of a cluster's shared storage as the config renderer makes it: EFS
        standard, FSx for Lustre SCRATCH_2, or gp3 EBS."""
        if storage_type == "efs":
            return self.efs_gb_month(region)
        if storage_type == "fsx_lustre":
            return self.fsx_lustre_gb_month(region, "SCRATCH_2")
        return self.ebs_gb_month(region, "gp3")

    def full_size_compute_hourly(self, region: str, queues: Iterable[tuple[int, Iterable[str]]]) -> float:
        """Compute burn if every queue (max_nodes, instance types) ran max_nodes of its dearest
        type; spot priced as on-demand: an upper bound."""
        return sum(max_nodes * max(self.instance_hourly(region, t) for t in types) for max_nodes, types in queues)

    def _lookup(self, region: str, what: str, item: str, table: Callable[[RegionPrices], Mapping[str, float]]) -> float:
        prices = self.regions.get(region)
        price = table(prices).get(item) if prices is not None else None
        if price is None:
            raise _unknown(self, region, what, item)
        return price


# Spot: EC2 reports a price per instance type and availability zone. What the control plane
# charges a spot node (in the guard's ledger and in the final record alike) is its zone's
# price, never below this fraction of on-demand (AWS's deepest spot discounts are about 90 %:
# a lower price is a wrong answer, such as the emulator's $0.00001, not a bargain) and never
# above on-demand (the default maximum price: above it, EC2 interrupts the node).
SPOT_FLOOR_FRACTION = 0.1
SpotBook = Mapping[tuple[str, str], float]  # (instance type, zone) -> USD per hour


def spot_hourly(book: SpotBook, instance_type: str, zone: str, on_demand: float) -> float | None:
    """The hourly price of a spot node of `instance_type` in `zone`: its zone's reported
    price (with no zone, the dearest zone's), bounded to [floor, on-demand]; None when EC2
    reports no plausible price (not a positive, finite number): the caller charges on-demand."""
    reported = book.get((instance_type, zone))
    if reported is None:
        reported = max((usd for (t, _), usd in book.items() if t == instance_type), default=None)
    if reported is None or not math.isfinite(reported) or reported <= 0:
        return None
    return min(max(reported, SPOT_FLOOR_FRACTION * on_demand), on_demand)


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: a price must be a positive number of USD, got {value!r}")
    return float(value)


def _prices(data: Mapping[str, Any], where: str) -> Mapping[str, float]:
    return MappingProxyType({key: _price(value, f"{where}.{key}") for key, value in data.items()})


def load_catalog(path: Path | None = None) -> PriceCatalog:
    """The catalog at `path` (default: the one shipped with the package), read once per path."""
    return _load(Path(path or DEFAULT_CATALOG_PATH).resolve())


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> PriceCatalog:
    return PriceCatalog.from_dict(json.loads(path.read_text()), origin=str(path))
