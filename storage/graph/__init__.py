"""Graph stores: `SqlGraphStore` (record database + in-process CSR cache, the default) and
`FalkorGraphStore` (a FalkorDB server)."""

from storage.graph.falkor import FalkorGraphStore
from storage.graph.sql import SqlGraphStore

__all__ = ["FalkorGraphStore", "SqlGraphStore"]
