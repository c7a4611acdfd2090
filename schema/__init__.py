"""The graph vocabulary: kinds, IDs, records, constraints. Imports nothing of the project."""

from .ids import (
    InvalidId,
    NodeId,
    approval_name,
    bundle_id,
    canonical_id,
    format_id,
    normalize_version,
    parse_id,
)
from .kinds import (
    EDGE_KINDS,
    EDGE_KINDS_BY_TYPE,
    LINEAGE_EDGE_TYPES,
    NODE_KINDS,
    NODE_KINDS_BY_LABEL,
    EdgeKind,
    NodeKind,
)
from .models import (
    AuditEntry,
    Edge,
    Node,
    Record,
    SchemaError,
    StageMove,
    check_edge_endpoints,
)

__all__ = [
    "EDGE_KINDS",
    "EDGE_KINDS_BY_TYPE",
    "LINEAGE_EDGE_TYPES",
    "NODE_KINDS",
    "NODE_KINDS_BY_LABEL",
    "AuditEntry",
    "Edge",
    "EdgeKind",
    "InvalidId",
    "Node",
    "NodeId",
    "NodeKind",
    "Record",
    "SchemaError",
    "StageMove",
    "approval_name",
    "bundle_id",
    "canonical_id",
    "check_edge_endpoints",
    "format_id",
    "normalize_version",
    "parse_id",
]
