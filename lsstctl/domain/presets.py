"""Named cluster sizes for the LSST pipelines, shared by the HTTP API and chat.

Sized by memory per vCPU: `pipetask run -j N` runs one quantum per process, and most
pipeline tasks want about 4 GB each, so the `compute` queue uses m6i (4 GiB per vCPU);
large-memory steps (coaddition, some ISR configurations) want about 30 GB, so `highmem`
uses r6i (8 GiB per vCPU: an r6i.xlarge holds one such step, an r6i.2xlarge two). Queues
start at zero nodes (ParallelCluster's ScaledownIdletime returns idle nodes within 10
minutes), so a preset at rest costs its head node and storage only. Shared storage is EFS
(the stack and the data, elastic: no size to guess); FSx for Lustre scratch is an override
(`shared_storage: {type: fsx_lustre, size_gib: 1200}`). Spot variants put every compute
queue on spot; the head node always stays on-demand (a reclaimed head node is a lost
cluster).

A spec names a preset and overrides any top-level field: `{"preset": "medium", "name":
"rc2", "budget_usd": 200, "queues": [...]}` keeps the preset's head node and storage and
uses its own queues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsstctl.domain.pricing import PriceCatalog, gb_month_to_hourly

# What the guard prices EFS at: the pipelines' stack (about 20 GiB per tag) plus data.
EFS_ESTIMATE_GIB = 100


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    head_node_type: str
    queues: tuple[dict[str, Any], ...]
    shared_storage: dict[str, Any]

    def spec_fields(self) -> dict[str, Any]:
        """The ClusterSpec fields this preset supplies (a user's own fields win)."""
        return {
            "head_node_type": self.head_node_type,
            "queues": [dict(q) for q in self.queues],
            "shared_storage": dict(self.shared_storage),
        }


def _queue(name: str, instance_type: str, max_nodes: int, capacity: str) -> dict[str, Any]:
    return {
        "name": name,
        "instance_types": [instance_type],
        "min_nodes": 0,
        "max_nodes": max_nodes,
        "capacity_type": capacity,
    }


def _sizes() -> dict[str, Preset]:
    efs = {"type": "efs", "mount_dir": "/shared", "size_gib": EFS_ESTIMATE_GIB}
    base = {
        "small": (
            "t3.medium",
            [("compute", "m6i.xlarge", 4)],
            "try a pipeline: up to 16 vCPUs at 4 GiB each (pipelines_check, a few detectors)",
        ),
        "medium": (
            "m6i.large",
            [("compute", "m6i.2xlarge", 8), ("highmem", "r6i.xlarge", 2)],
            "a tract or a night: up to 64 vCPUs at 4 GiB, and 2 nodes for 30 GB steps",
        ),
        "large": (
            "m6i.xlarge",
            [("compute", "m6i.4xlarge", 32), ("highmem", "r6i.2xlarge", 8)],
            "a survey subset: up to 512 vCPUs at 4 GiB, and 8 nodes for 30 GB steps (two each)",
        ),
    }
    presets: dict[str, Preset] = {}
    for name, (head, queues, about) in base.items():
        for capacity, suffix, note in (("ondemand", "", ""), ("spot", "-spot", "; compute on spot")):
            presets[name + suffix] = Preset(
                name=name + suffix,
                description=about + note,
                head_node_type=head,
                queues=tuple(_queue(q, t, n, capacity) for q, t, n in queues),
                shared_storage=efs,
            )
    return presets


PRESETS: dict[str, Preset] = _sizes()


def preset(name: str) -> Preset:
    """The preset called `name`; a ValueError naming the valid ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def at_rest_hourly(
    catalog: PriceCatalog, region: str, head_node_type: str, storage_type: str, size_gib: float
) -> float:
    """USD per hour of what bills whatever runs: the head node and the shared storage."""
    return catalog.instance_hourly(region, head_node_type) + gb_month_to_hourly(
        catalog.shared_storage_gb_month(region, storage_type), size_gib
    )


def hourly_prices(
    catalog: PriceCatalog,
    region: str,
    head_node_type: str,
    queues: list[dict[str, Any]],
    shared_storage: dict[str, Any],
) -> dict[str, float]:
    """USD per hour at rest (head node and storage, no compute node) and at full size
    (every queue at max_nodes). Spot is priced as on-demand: what it can cost at most."""
    at_rest = at_rest_hourly(
        catalog, region, head_node_type, shared_storage.get("type", "ebs"), float(shared_storage.get("size_gib", 100))
    )
    compute = catalog.full_size_compute_hourly(region, [(q["max_nodes"], q["instance_types"]) for q in queues])
    return {"at_rest_usd_per_hour": round(at_rest, 4), "full_size_usd_per_hour": round(at_rest + compute, 4)}


def describe_presets(catalog: PriceCatalog, region: str) -> list[dict[str, Any]]:
    """Every preset with what it is made of and what it costs per hour (GET /presets)."""
    return [
        {
            "name": p.name,
            "description": p.description,
            **p.spec_fields(),
            **hourly_prices(catalog, region, p.head_node_type, list(p.queues), p.shared_storage),
            "prices_as_of": catalog.as_of,
        }
        for p in PRESETS.values()
    ]
