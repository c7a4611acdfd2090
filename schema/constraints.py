"""Cypher uniqueness constraints, derived from the declared kinds."""

from __future__ import annotations

from .kinds import (
    COUNTER_LABEL,
    FAMILY,
    LOG_LABELS,
    NODE_KINDS,
    NODE_LABEL,
    STAGE_SLOT_LABEL,
    TRAFFIC_LABEL,
)


def constraint_name(label: str) -> str:
    return f"lineagegraph_{label.lower()}_id"


def uniqueness_constraints() -> list[str]:
    labels = [NODE_LABEL, *(k.label for k in NODE_KINDS), *LOG_LABELS, TRAFFIC_LABEL]
    return [
        f"CREATE CONSTRAINT {constraint_name(label)} IF NOT EXISTS "
        f"FOR (n:{label}) REQUIRE n.id IS UNIQUE"
        for label in labels
    ] + [
        # Without it, two writers' first MERGE of a counter could each create one, and
        # every later MERGE would match both.
        f"CREATE CONSTRAINT lineagegraph_counter_name IF NOT EXISTS "
        f"FOR (n:{COUNTER_LABEL}) REQUIRE n.name IS UNIQUE",
        # One slot a (name, environment); its index finds a name's slots too.
        f"CREATE CONSTRAINT lineagegraph_stageslot_key IF NOT EXISTS "
        f"FOR (s:{STAGE_SLOT_LABEL}) REQUIRE (s.name, s.environment) IS UNIQUE",
    ]


def indexes() -> list[str]:
    """Range indexes for the time and grouping filters walks use."""
    statements = [
        f"CREATE INDEX lineagegraph_node_created IF NOT EXISTS FOR (n:{NODE_LABEL}) "
        "ON (n.created_at)",
        f"CREATE INDEX lineagegraph_node_name IF NOT EXISTS FOR (n:{NODE_LABEL}) ON (n.name)",
        # A name's versions in ``version_key`` order (GraphStore.read_versions): read from
        # the newest end and cut there, not sorted whole on every read.
        f"CREATE INDEX lineagegraph_node_version IF NOT EXISTS FOR (n:{NODE_LABEL}) "
        "ON (n.name, n.version_key)",
        # A family's versions by the family ID each keeps: in time order, ties by ID
        # (GraphStore.family_versions), and in version order (a family's history); read
        # from either end and cut there, not by expanding every VERSION_OF edge.
        f"CREATE INDEX lineagegraph_node_family_created IF NOT EXISTS FOR (n:{NODE_LABEL}) "
        f"ON (n.{FAMILY}, n.created_at, n.id)",
        f"CREATE INDEX lineagegraph_node_family_version IF NOT EXISTS FOR (n:{NODE_LABEL}) "
        f"ON (n.{FAMILY}, n.version_key)",
        # Single-property indexes: lookups filter by name, by environment, or by both, and
        # a composite index only serves predicates on all of its properties.
        "CREATE INDEX lineagegraph_stagemove_name IF NOT EXISTS FOR (m:StageMove) ON (m.name)",
        "CREATE INDEX lineagegraph_stagemove_environment IF NOT EXISTS FOR (m:StageMove) "
        "ON (m.environment)",
        # A name's last moves (in an environment), in order: read from the index's end
        # (Neo4jStore.stage_history), not sorted whole.
        "CREATE INDEX lineagegraph_stagemove_order IF NOT EXISTS FOR (m:StageMove) "
        "ON (m.name, m.at, m.seq)",
        "CREATE INDEX lineagegraph_stagemove_key IF NOT EXISTS FOR (m:StageMove) "
        "ON (m.name, m.environment, m.at, m.seq)",
        # A slot's last moves to a version (Neo4jStore.stage_latest with ``versions``):
        # where a version went, never every move of its name. No entry for a move to no
        # version: a composite index holds only nodes with each of its properties.
        "CREATE INDEX lineagegraph_stagemove_version IF NOT EXISTS FOR (m:StageMove) "
        "ON (m.name, m.environment, m.to_version, m.at, m.seq)",
        "CREATE INDEX lineagegraph_record_collection IF NOT EXISTS FOR (r:Record) "
        "ON (r.collection)",
        # auditLog(target:) and the evidence pack: one target's entries among every
        # batch's, which the log gains with each load.
        "CREATE INDEX lineagegraph_audit_target IF NOT EXISTS FOR (a:AuditEntry) "
        "ON (a.target)",
    ]
    for kind in NODE_KINDS:
        for prop in kind.indexed:
            statements.append(
                f"CREATE INDEX lineagegraph_{kind.label.lower()}_{prop} IF NOT EXISTS "
                f"FOR (n:{kind.label}) ON (n.{prop})"
            )
    return statements
