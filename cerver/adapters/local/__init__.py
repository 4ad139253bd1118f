"""The ``local`` compute provider: sandboxes as confined processes on this node.

Importing this package registers ``LocalAdapter`` under the name ``local``.
"""

from cerver.adapters.local.adapter import LocalAdapter
from cerver.adapters.local.layout import LocalSandboxData
from cerver.adapters.registry import register

register(LocalAdapter)

__all__ = ["LocalAdapter", "LocalSandboxData"]
