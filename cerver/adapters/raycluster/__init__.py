"""The ``ray`` compute provider: the ``local`` sandbox hosted in its own Ray actor, placed
anywhere in the cluster by resource request (CPUs, memory, GPUs, custom resources, node
labels).

Importing this package registers ``RayAdapter`` under the name ``ray``.
"""

from cerver.adapters.raycluster.adapter import PLACEMENT_WAIT_S, RayAdapter, RaySandboxData
from cerver.adapters.raycluster.placement import Placement
from cerver.adapters.registry import register

register(RayAdapter)

__all__ = ["PLACEMENT_WAIT_S", "Placement", "RayAdapter", "RaySandboxData"]
