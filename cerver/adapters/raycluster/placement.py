"""Where a ``ray`` sandbox may run: the request's resources and node labels as Ray actor
options, and whether any node of the cluster could ever host it. Pure logic, no Ray calls.

Resources map to Ray's own: ``cpu`` -> ``CPU``, ``gpu`` -> ``GPU``, ``memory_mb`` ->
``memory`` (bytes), ``custom`` -> custom resources by name. A sandbox that asks for no CPU
reserves none (the host actor is ``num_cpus=0``, like every Cerver actor).

``options["node_labels"]`` is a Ray label selector (Ray >= 2.49): ``{"zone": "a"}``,
``{"zone": "!a"}``, ``{"zone": "in(a,b)"}``, ``{"zone": "!in(a,b)"}``. Nodes get labels
with ``ray start --labels='{"zone": "a"}'`` (or ``Cluster.add_node(labels=...)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cerver.adapters.base import SandboxSpec
from cerver.errors import BadRequest
from cerver.labels import selector_problem

MIB = 1024 * 1024


class Placement(BaseModel):
    """What the host actor reserves, and the labels its node must have."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_cpus: float = 0.0
    num_gpus: float = 0.0
    memory_bytes: int = 0
    custom: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    def demand(self) -> dict[str, float]:
        """The request in Ray's resource names (zero amounts left out)."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": float(self.memory_bytes)}
        wanted.update(self.custom)
        return {name: amount for name, amount in wanted.items() if amount > 0}

    def actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        if self.labels:
            options["label_selector"] = dict(self.labels)
        return options


# Custom resources a tenant may request: operator-defined names. Ray's own ("node:<ip>",
# "node:__internal_head__", "accelerator_type:...", "<res>_group_<pg>" bundles) carry a
# ':' or "_group_", and would let a tenant pick the head node or another's reservation.
TENANT_RESOURCE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


def placement_from(spec: SandboxSpec) -> Placement:
    """Validate the request's resources and ``options.node_labels`` into a ``Placement``."""
    res = spec.resources
    for name, value in (("cpu", res.cpu), ("gpu", res.gpu), ("memory_mb", res.memory_mb)):
        if value is not None and value < 0:
            raise BadRequest(
                f"resources.{name} must be >= 0", details={"field": f"resources.{name}"}
            )
    for name, amount in res.custom.items():
        if not TENANT_RESOURCE.fullmatch(name) or "_group_" in name:
            raise BadRequest(
                f"resources.custom[{name!r}] is not a resource a request may ask for: Ray's "
                "own resources (node:..., accelerator_type:..., placement-group bundles) are "
                "not requestable; use an operator-defined name of letters, digits, _ . -",
                details={"field": f"resources.custom.{name}"},
            )
        if amount < 0 or name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise BadRequest(
                f"resources.custom[{name!r}]: give a non-negative amount of a custom resource "
                "(CPU, GPU and memory have their own fields)",
                details={"field": f"resources.custom.{name}"},
            )
    return Placement(
        num_cpus=float(res.cpu or 0.0),
        num_gpus=float(res.gpu or 0),
        memory_bytes=int(res.memory_mb or 0) * MIB,
        custom={name: float(amount) for name, amount in res.custom.items() if amount > 0},
        labels=_labels(spec.options.get("node_labels")),
    )


def _labels(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    problem = selector_problem(raw)
    if problem:
        raise BadRequest(
            f'options.node_labels: {problem}; e.g. {{"zone": "a"}}',
            details={"field": "options.node_labels"},
        )
    return dict(raw)


# --------------------------------------------------------------------------- feasibility


@dataclass(frozen=True)
class NodeShape:
    """A node that exists (or that the autoscaler may start): total resources and labels.
    ``labels`` is None when they are unknown (an autoscaler node type)."""

    resources: Mapping[str, float]
    labels: Mapping[str, str] | None = field(default_factory=dict)


def label_matches(selector: str, value: str | None) -> bool:
    """One Ray label-selector condition against a node's value for that key (None: absent)."""
    negate = selector.startswith("!")
    body = selector[1:] if negate else selector
    if body.startswith("in(") and body.endswith(")"):
        hit = value is not None and value in {v.strip() for v in body[3:-1].split(",")}
    else:
        hit = value == body
    return hit != negate


def fits(placement: Placement, node: NodeShape) -> bool:
    if any(node.resources.get(name, 0.0) < amount for name, amount in placement.demand().items()):
        return False
    if node.labels is None:  # unknown labels: assume the node type may have them
        return True
    return all(label_matches(sel, node.labels.get(key)) for key, sel in placement.labels.items())


def shortfall(placement: Placement, nodes: Iterable[NodeShape]) -> list[str]:
    """Why no node can ever host ``placement`` (empty when one can)."""
    shapes = list(nodes)
    if any(fits(placement, node) for node in shapes):
        return []
    if not shapes:
        return ["the cluster has no alive node"]
    missing: list[str] = []
    for name, amount in placement.demand().items():
        largest = max(node.resources.get(name, 0.0) for node in shapes)
        if largest < amount:
            missing.append(
                f"{_show(name, amount)} requested, the largest node has {_show(name, largest)}"
            )
    for key, sel in placement.labels.items():
        known = [node.labels for node in shapes if node.labels is not None]
        if known and not any(label_matches(sel, labels.get(key)) for labels in known):
            seen = sorted({labels[key] for labels in known if key in labels})
            have = f"nodes have {key} in {seen}" if seen else f"no node has a {key!r} label"
            missing.append(f"node label {key}={sel} requested, {have}")
    if not missing:
        missing.append(
            "no single node has all of "
            + ", ".join(_show(n, a) for n, a in placement.demand().items())
            + (f" with labels {placement.labels}" if placement.labels else "")
        )
    return missing


def _show(name: str, amount: float) -> str:
    if name == "memory":
        return f"{amount / MIB:.0f} MiB memory"
    return f"{amount:g} {name}"
