"""The cluster's nodes as Ray sees them, for the feasibility check (blocking: call in a
thread).

Alive nodes give their total resources and labels. When an autoscaler publishes its node
types (``ray up`` clusters), each type with room to grow also counts as a node that may
appear: its resources are known, its labels are not (Ray does not publish them), so a label
request against such a cluster is treated as possibly satisfiable and waits for capacity.
"""

from __future__ import annotations

from typing import Any

import ray

from cerver.adapters.raycluster.placement import NodeShape, Placement, fits


def node_shapes() -> list[NodeShape]:
    shapes = [
        NodeShape(resources=dict(node["Resources"]), labels=dict(node.get("Labels") or {}))
        for node in ray.nodes()
        if node.get("Alive")
    ]
    return shapes + _autoscaler_node_types()


def _autoscaler_node_types() -> list[NodeShape]:
    config: Any = ray._private.state.state.get_cluster_config()
    if config is None:
        return []
    return [
        NodeShape(resources=dict(group.resources), labels=None)
        for group in config.node_group_configs
        if group.max_count != 0
    ]


def free_now(placement: Placement) -> bool:
    """Whether some alive node has the request's resources free (and its labels) right now:
    then a host still pending is starting up, not waiting for capacity."""
    free: dict[str, dict[str, float]] = ray._private.state.state.available_resources_per_node()
    labels = {n["NodeID"]: dict(n.get("Labels") or {}) for n in ray.nodes() if n.get("Alive")}
    return any(
        fits(placement, NodeShape(resources=free.get(node_id, {}), labels=node_labels))
        for node_id, node_labels in labels.items()
    )
