"""One story with timestamps, shared by the scenario tests. Every expected answer in
``test_queries_scenario.py`` is worked out by hand from this page.

T = 2026-11-01T00:00Z. Two products:

support-triage (an LLM bundle)
  T-60d  model:gpt-5-mini-2026-08 (pinned snapshot)     T+3d  model:gpt-5-mini-2026-11
  T-20d  prompt:triage-prompt@9 (DESIGNED_FOR -2026-08)
  T+4d  prompt:triage-prompt@10 (DESIGNED_FOR -2026-11)
  T-20d  tools:triage-tools@3, policy:support-safety@6  T+4d  policy:support-safety@7
  T-50d  source:kb.articles (retrieved at inference)    T+7d  dataset:kb.articles@2026-11-08
  T-10d  bundle:support-triage@14 = 2026-08 + @9 + tools@3 + safety@6 + kb.articles
  T+5d   bundle:support-triage@15 = 2026-11 + @10 + tools@3 + safety@7 + kb.articles
  T-9d   eval r14 and approval a14 of @14;  T+12d approval a14-late of @14
  T+5d   eval r15 and approval a15 of @15
  stage moves: staging→14 T-9d, production→14 T-8d, staging→15 T+5d1h,
               production 14→15 T+6d, production 15→14 T+9d (rollback)

fraud-scoring (a tabular model)
  source:warehouse.payments ← dataset @2026-09-01 (T-61d) and @2026-10-25 (T-7d)
  run:r-fraud-6 CONSUMED @2026-09-01;  model:fraud-detector@6 PRODUCED_BY r-fraud-6
  feature:txn_amount_7d@2 DERIVED_FROM @2026-10-25; run:r-fraud-7 CONSUMED the feature
  model:fraud-detector@7 PRODUCED_BY r-fraud-7, SUPERSEDES @6
  bundle:fraud-scoring@2 USES_MODEL fraud-detector@7; production→2 at T-5d

requests
  req-2001 T+1d production @14 · req-2002 T+7d production @15 · req-2003 T+7d staging @15
  req-2004 T+10d production @15 (served off-stage: @14 was back) · req-3001 T+2d production
  fraud-scoring@2 · req-9001 T+3d and req-9002 T+8d production model shadow-llm-x
  (unregistered) · req-9003 T+8d staging model other-shadow (unregistered)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Edge, Node, StageMove

T = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def at(days: float, hours: float = 0) -> datetime:
    return T + timedelta(days=days, hours=hours)


def _n(node_id: str, when: datetime, kind: str | None = None, **props: object) -> Node:
    return Node.from_id(node_id, kind=kind, created_at=when, properties=props)


def _e(source: str, edge_type: str, target: str) -> Edge:
    return Edge(source=source, type=edge_type, target=target)


def load_story(store: GraphStore) -> None:
    b14, b15, fraud = ("bundle:support-triage@14", "bundle:support-triage@15",
                       "bundle:fraud-scoring@2")
    m08, m11 = "model:gpt-5-mini-2026-08", "model:gpt-5-mini-2026-11"
    nodes = [
        _n(m08, at(-60), "ModelVersion", provider="openai", region="eu"),
        _n(m11, at(3), "ModelVersion", provider="openai", region="eu"),
        _n("prompt:triage-prompt@9", at(-20)),
        _n("prompt:triage-prompt@10", at(4)),
        _n("tools:triage-tools@3", at(-20)),
        _n("policy:support-safety@6", at(-20), risk_tier="production", residency=["eu"]),
        _n("policy:support-safety@7", at(4), risk_tier="production", residency=["eu"]),
        _n("source:kb.articles", at(-50), residency="eu"),
        _n("dataset:kb.articles@2026-11-08", at(7)),
        _n(b14, at(-10), model=m08, params={"max_tokens": 300}),
        _n(b15, at(5), model=m11, params={"max_tokens": 400}),
        _n("eval:triage-eval-v4/r14", at(-9), suite="triage-eval-v4", run="r14", score=0.94,
           threshold=0.9),
        _n("eval:triage-eval-v4/r15", at(5), suite="triage-eval-v4", run="r15", score=0.91,
           threshold=0.9),
        _n("approval:a14", at(-9), approved_by="zyql"),
        _n("approval:a14-late", at(12), approved_by="late-reviewer"),
        _n("approval:a15", at(5), approved_by="zyql"),
        _n("source:warehouse.payments", at(-90), residency="eu"),
        _n("dataset:warehouse.payments@2026-09-01", at(-61)),
        _n("dataset:warehouse.payments@2026-10-25", at(-7)),
        _n("feature:txn_amount_7d@2", at(-7)),
        _n("run:r-fraud-6", at(-60), status="COMPLETE"),
        _n("run:r-fraud-7", at(-6), status="COMPLETE"),
        _n("model:fraud-detector@6", at(-60)),
        _n("model:fraud-detector@7", at(-6)),
        _n(fraud, at(-5), model="model:fraud-detector@7"),
        _n("outcome:req-2001", at(1), environment="production", quality=0.9),
        _n("outcome:req-2002", at(7), environment="production", quality=0.4),
        _n("outcome:req-2003", at(7), environment="staging", quality=0.5),
        _n("outcome:req-2004", at(10), environment="production", quality=0.8),
        _n("outcome:req-3001", at(2), environment="production"),
        _n("outcome:req-9001", at(3), environment="production"),
        _n("outcome:req-9002", at(8), environment="production"),
        _n("outcome:req-9003", at(8), environment="staging"),
        _n("model:shadow-llm-x", at(3), "ModelVersion", registered=False),
        _n("model:other-shadow", at(8), "ModelVersion", registered=False),
    ]
    edges = [
        _e("prompt:triage-prompt@9", "DESIGNED_FOR", m08),
        _e("prompt:triage-prompt@10", "DESIGNED_FOR", m11),
        _e("prompt:triage-prompt@10", "SUPERSEDES", "prompt:triage-prompt@9"),
        _e("policy:support-safety@7", "SUPERSEDES", "policy:support-safety@6"),
        _e("dataset:kb.articles@2026-11-08", "VERSION_OF", "source:kb.articles"),
        *[_e(bundle, edge_type, target) for bundle, pins in (
            (b14, (("USES_MODEL", m08), ("USES_PROMPT", "prompt:triage-prompt@9"),
                   ("USES_TOOLS", "tools:triage-tools@3"),
                   ("GOVERNED_BY", "policy:support-safety@6"),
                   ("RETRIEVES_FROM", "source:kb.articles"))),
            (b15, (("USES_MODEL", m11), ("USES_PROMPT", "prompt:triage-prompt@10"),
                   ("USES_TOOLS", "tools:triage-tools@3"),
                   ("GOVERNED_BY", "policy:support-safety@7"),
                   ("RETRIEVES_FROM", "source:kb.articles"))),
        ) for edge_type, target in pins],
        _e(b15, "SUPERSEDES", b14),
        _e("eval:triage-eval-v4/r14", "EVALUATES", b14),
        _e("eval:triage-eval-v4/r15", "EVALUATES", b15),
        _e("approval:a14", "APPROVES", b14),
        _e("approval:a14-late", "APPROVES", b14),
        _e("approval:a15", "APPROVES", b15),
        _e("dataset:warehouse.payments@2026-09-01", "VERSION_OF", "source:warehouse.payments"),
        _e("dataset:warehouse.payments@2026-10-25", "VERSION_OF", "source:warehouse.payments"),
        _e("run:r-fraud-6", "CONSUMED", "dataset:warehouse.payments@2026-09-01"),
        _e("model:fraud-detector@6", "PRODUCED_BY", "run:r-fraud-6"),
        _e("feature:txn_amount_7d@2", "DERIVED_FROM", "dataset:warehouse.payments@2026-10-25"),
        _e("run:r-fraud-7", "CONSUMED", "feature:txn_amount_7d@2"),
        _e("model:fraud-detector@7", "PRODUCED_BY", "run:r-fraud-7"),
        _e("model:fraud-detector@7", "SUPERSEDES", "model:fraud-detector@6"),
        _e(fraud, "USES_MODEL", "model:fraud-detector@7"),
        _e("outcome:req-2001", "SERVED_BY", b14),
        _e("outcome:req-2002", "SERVED_BY", b15),
        _e("outcome:req-2003", "SERVED_BY", b15),
        _e("outcome:req-2004", "SERVED_BY", b15),
        _e("outcome:req-3001", "SERVED_BY", fraud),
        _e("outcome:req-9001", "USED_MODEL", "model:shadow-llm-x"),
        _e("outcome:req-9002", "USED_MODEL", "model:shadow-llm-x"),
        _e("outcome:req-9003", "USED_MODEL", "model:other-shadow"),
    ]
    moves = [
        StageMove(name="support-triage", environment="staging", to_version="14", at=at(-9)),
        StageMove(name="support-triage", environment="production", to_version="14",
                  at=at(-8)),
        StageMove(name="support-triage", environment="staging", from_version="14",
                  to_version="15", at=at(5, 1)),
        StageMove(name="support-triage", environment="production", from_version="14",
                  to_version="15", at=at(6)),
        StageMove(name="support-triage", environment="production", from_version="15",
                  to_version="14", at=at(9), reason="quality drop"),
        StageMove(name="fraud-scoring", environment="production", to_version="2", at=at(-5)),
    ]
    store.upsert(nodes, edges, stage_moves=moves)


def story_db(folder: Path) -> str:
    """An embedded store's file in ``folder`` holding the story, closed: for CLI runs."""
    path = folder / "story.db"
    store = EmbeddedStore(path)
    load_story(store)
    store.close()
    return str(path)
