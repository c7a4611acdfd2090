"""A seeded generator of a realistic platform graph at named scales.

``generate(scale, seed)`` returns a ``Platform``: registry manifest documents (the format
``lineagegraph ingest manifests`` reads: data sources, dataset versions, features, training
runs, model versions, prompt versions, tool sets, policy packs, bundle entries, and
``kind: StageMove`` documents giving each bundle a stage history with promotions and
rollbacks), and a stream of inference outcome records (the NDJSON format ``lineagegraph
ingest outcomes`` reads) spread over 90 days with Zipf fan-in: a few hot bundles take most
traffic. Each record names the bundle version that was live in its environment at its
timestamp. Same scale and seed, same graph (byte for byte).

    python bench/generate.py --scale small --out /tmp/platform   # writes manifests.yaml
                                                                # and outcomes.ndjson
"""

from __future__ import annotations

import argparse
import json
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Scale:
    name: str
    outcomes: int
    sources: int
    model_families: int
    bundles: int  # bundle names; each gets 3-8 versions
    prompts: int


SCALES = {
    s.name: s for s in (
        Scale("tiny", 1_000, 6, 2, 6, 4),
        Scale("small", 10_000, 20, 4, 24, 10),
        Scale("medium", 100_000, 40, 6, 48, 20),
        Scale("large", 1_000_000, 80, 8, 96, 40),
    )
}

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 90
ENVIRONMENTS = ("production", "canary", "staging")
ENV_WEIGHTS = (0.85, 0.10, 0.05)


@dataclass(slots=True)
class Platform:
    scale: Scale
    seed: int
    manifests: list[dict[str, Any]] = field(default_factory=list)
    # bundle name -> environment -> [(at, version)] in time order
    stages: dict[str, dict[str, list[tuple[datetime, str]]]] = field(default_factory=dict)
    bundle_model: dict[str, str] = field(default_factory=dict)  # "name@v" -> model id
    bundle_weights: list[tuple[str, float]] = field(default_factory=list)
    model_traffic: Counter[str] = field(default_factory=Counter)
    bundle_traffic: Counter[str] = field(default_factory=Counter)
    request_ids: list[str] = field(default_factory=list)  # a sample, for trace requests

    def outcomes(self) -> Iterator[dict[str, Any]]:
        """The outcome records, in time order; deterministic for the seed."""
        rng = random.Random(self.seed * 7919 + 1)
        names = [n for n, _ in self.bundle_weights]
        cum = []
        total = 0.0
        for _, w in self.bundle_weights:
            total += w
            cum.append(total)
        span = DAYS * 86400 - 86400
        n = self.scale.outcomes
        for i in range(n):
            ts = START + timedelta(days=1, seconds=span * i / n + rng.random())
            name = names[bisect_right(cum, rng.random() * total)]
            env = rng.choices(ENVIRONMENTS, ENV_WEIGHTS)[0]
            moves = self.stages[name].get(env) or self.stages[name]["production"]
            version = moves[bisect_right([at for at, _ in moves], ts) - 1][1]
            quality = max(0.0, min(1.0, rng.gauss(0.86, 0.06)))
            tokens_in = rng.randint(80, 2400)
            record = {
                "request_id": f"req-{i:07d}",
                "timestamp": ts.isoformat().replace("+00:00", "Z"),
                "environment": env if env in self.stages[name] else "production",
                "bundle": f"{name}@{version}",
                "latency_ms": round(rng.lognormvariate(5.5, 0.5), 1),
                "tokens_in": tokens_in,
                "tokens_out": rng.randint(20, 400),
                "cost_usd": round(tokens_in * 2.5e-6, 6),
                "status": "ok" if rng.random() > 0.02 else "error",
                "quality": round(quality, 3),
            }
            yield record

    def count_traffic(self) -> None:
        """Tally outcomes per bundle version and model version (one pass)."""
        self.model_traffic.clear()
        self.bundle_traffic.clear()
        for record in self.outcomes():
            self.bundle_traffic[record["bundle"]] += 1
            self.model_traffic[self.bundle_model[record["bundle"]]] += 1

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifests.json").write_text(json.dumps(self.manifests, indent=0, default=str))
        with (out / "outcomes.ndjson").open("w") as fh:
            for record in self.outcomes():
                fh.write(json.dumps(record, separators=(",", ":")) + "\n")


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def generate(scale: str | Scale, seed: int = 42) -> Platform:
    spec = SCALES[scale] if isinstance(scale, str) else scale
    rng = random.Random(seed)
    p = Platform(spec, seed)
    docs = p.manifests

    def at(day: float) -> str:
        return iso(START + timedelta(days=day))

    # Data: sources, their dated versions (weekly snapshots), features over them.
    regions = ["eu", "eu", "us", "us", "apac"]
    sources = [f"warehouse.{dom}_{i}" for i, dom in enumerate(
        rng.choice(["payments", "tickets", "users", "events", "docs", "chats"])
        for _ in range(spec.sources))]
    dataset_versions: dict[str, list[str]] = {}
    for src in sources:
        docs.append({"kind": "DataSource", "name": src, "owner": rng.choice(
            ["data-platform", "payments-eng", "support-eng"]),
            "uri": f"s3://lake/{src}", "residency": rng.choice(regions),
            "created_at": at(-60)})
        dataset_versions[src] = []
        for week in range(0, DAYS + 14, 7):
            day = week - 14 + rng.random()
            version = (START + timedelta(days=day)).strftime("%Y-%m-%d")
            if version in dataset_versions[src]:
                continue
            dataset_versions[src].append(version)
            docs.append({"kind": "DatasetVersion", "source": src, "version": version,
                         "schema_hash": f"{rng.getrandbits(48):012x}",
                         "row_count": rng.randint(10_000, 50_000_000), "created_at": at(day)})
    features: list[tuple[str, str, float]] = []  # (name, version, day)
    for i in range(spec.sources * 2):
        src = sources[i % len(sources)]
        for v in range(1, rng.randint(2, 4)):
            day = -10 + v * rng.uniform(5, 30)
            dv = [x for x in dataset_versions[src]
                  if datetime.strptime(x, "%Y-%m-%d").replace(tzinfo=UTC)
                  <= START + timedelta(days=day)] or dataset_versions[src][:1]
            name = f"feat_{i}"
            docs.append({"kind": "Feature", "name": name, "version": v,
                         "derived_from": [f"dataset:{src}@{dv[-1]}"], "created_at": at(day)})
            features.append((name, str(v), day))

    # Models: families with versions, each produced by a training run over features.
    model_versions: list[tuple[str, float]] = []  # (id, day)
    for f in range(spec.model_families):
        family = f"{rng.choice(['fraud', 'triage', 'ranker', 'summarizer'])}-{f}"
        for v in range(1, rng.randint(3, 6) + 1):
            day = -30 + v * rng.uniform(8, 18)
            run_id = f"r-{family}-{v}"
            eligible = [(n, ver) for n, ver, d in features if d <= day] or \
                [(n, ver) for n, ver, _ in features[:3]]
            consumed = [f"feature:{n}@{ver}" for n, ver in rng.sample(
                eligible, min(len(eligible), rng.randint(2, 5)))]
            docs.append({"kind": "TrainingRun", "run_id": run_id, "job": f"ml/train-{family}",
                         "consumed": consumed, "status": "COMPLETED",
                         "code_commit": f"{rng.getrandbits(40):010x}",
                         "metrics": {"auc": round(rng.uniform(0.8, 0.95), 3)},
                         "started_at": at(day - 0.5), "ended_at": at(day - 0.1),
                         "created_at": at(day - 0.5)})
            docs.append({"kind": "ModelVersion", "name": family, "version": v,
                         "produced_by": f"run:{run_id}", "provider": "in-house",
                         "region": rng.choice(["eu", "us"]),
                         "artifact_uri": f"s3://models/{family}/{v}", "created_at": at(day)})
            model_versions.append((f"model:{family}@{v}", day))

    # Prompts, tool sets, policy packs.
    prompt_versions: list[tuple[str, float]] = []
    for i in range(spec.prompts):
        for v in range(1, rng.randint(2, 5) + 1):
            day = -20 + v * rng.uniform(6, 20)
            designed = [m for m, d in model_versions if d <= day]
            doc = {"kind": "PromptVersion", "name": f"prompt-{i}", "version": v,
                   "template": f"You are assistant {i}. {{input}}", "system": "be terse",
                   "params": {"temperature": round(rng.uniform(0, 1), 2)},
                   "created_at": at(day)}
            if designed:
                doc["designed_for"] = [rng.choice(designed)]
            docs.append(doc)
            prompt_versions.append((f"prompt:prompt-{i}@{v}", day))
    toolsets = []
    for i in range(max(3, spec.bundles // 6)):
        docs.append({"kind": "Toolset", "name": f"tools-{i}", "version": 1,
                     "tools": [{"name": "search"}, {"name": f"lookup_{i}"}],
                     "created_at": at(-40)})
        toolsets.append(f"tools:tools-{i}@1")
    policies = []
    for i in range(max(2, spec.bundles // 8)):
        for v in (1, 2):
            docs.append({"kind": "PolicyPack", "name": f"policy-{i}", "version": v,
                         "risk_tier": rng.choice(["sandbox", "production", "regulated"]),
                         "residency": ["eu", "us"], "required_approvals": 1,
                         "created_at": at(-40 + v * 30)})
            policies.append((f"policy:policy-{i}@{v}", -40 + v * 30))

    # Bundles: 3-8 versions each; a stage history per environment (staging first, then
    # canary, then production; now and then a rollback to the previous version).
    # Hot bundles concentrate on few model versions (Zipf over bundle names).
    hot_models = [m for m, _ in model_versions]
    for b in range(spec.bundles):
        name = f"bundle-{b}"
        n_versions = rng.randint(3, 8)
        days = sorted(rng.uniform(-5, DAYS - 5) for _ in range(n_versions - 1))
        days = [-10.0, *days]
        stages: dict[str, list[tuple[datetime, str]]] = {e: [] for e in ENVIRONMENTS}
        for v, day in enumerate(days, 1):
            # the first versions of the two hottest bundles pin the same model version
            if b < 2 and v <= 2:
                model = hot_models[0]
            else:
                eligible = [m for m, d in model_versions if d <= day] or hot_models[:1]
                model = rng.choice(eligible[-8:])
            prompt = rng.choice([pid for pid, d in prompt_versions if d <= day]
                                or [prompt_versions[0][0]])
            policy = rng.choice([pid for pid, d in policies if d <= day] or [policies[0][0]])
            doc: dict[str, Any] = {
                "name": name, "version": v, "model": model,
                "prompt_ref": prompt, "tools_ref": rng.choice(toolsets),
                "policy_ref": policy, "params": {"max_tokens": rng.choice([300, 600, 1200])},
                "retrieves_from": [f"source:{s}" for s in rng.sample(sources, 2)],
                "eval": {"suite": f"eval-{b % 5}", "score": round(rng.uniform(0.85, 0.97), 3),
                         "threshold": 0.85, "run": f"{name}@{v}"},
                "approved_by": rng.choice(["zyql", "maren", "ode"]),
                "created_at": at(day),
            }
            docs.append(doc)
            p.bundle_model[f"{name}@{v}"] = model
            base = START + timedelta(days=day)
            for env, lag in (("staging", 0.1), ("canary", 1.0), ("production", 2.0)):
                when = base + timedelta(days=lag) if v > 1 else START - timedelta(days=9)
                stages[env].append((when, str(v)))
            if v > 2 and rng.random() < 0.25:  # a rollback in production a day later
                stages["production"].append(
                    (base + timedelta(days=3), str(v - 1)))
        for env, moves in stages.items():
            moves.sort()
            prev: str | None = None
            for when, version in moves:
                docs.append({"kind": "StageMove", "bundle": name, "version": version,
                             "environment": env, "at": iso(when), "actor": "release-bot",
                             "reason": "rollback" if prev and int(version) < int(prev)
                             else "promotion"})
                prev = version
        p.stages[name] = stages
        p.bundle_weights.append((name, 1.0 / (b + 1) ** 1.1))
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    platform = generate(args.scale, args.seed)
    platform.write(args.out)
    print(f"{len(platform.manifests)} manifest documents, {platform.scale.outcomes} outcomes "
          f"in {args.out}")


if __name__ == "__main__":
    main()
