"""A seeded generator of GraphQL operations over the service's own schema, and the checks
every answer must pass (``test_graphql_fuzz.py`` runs them on both stores).

Operations come from the schema object: each query and mutation field, its arguments
built from pools of valid, unknown and malformed values (through variables, so that wrong
types, nulls and invalid enum strings reach the server, or as literals), and a random
subset of its result fields within the depth limit, with aliases and fragments."""

from __future__ import annotations

import base64
import json
import random
import re
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLType,
    Undefined,
    get_named_type,
)

# The codes an answered error may carry (api/: UserError and its kinds, the limits rule,
# the schema's caller codes, the transport's); INTERNAL is never one.
KNOWN_CODES = frozenset({
    "BAD_USER_INPUT", "FORBIDDEN", "QUERY_TIMEOUT", "QUERY_TOO_COMPLEX", "STORE_UNAVAILABLE",
    "GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "BAD_REQUEST", "WRITE_CONFLICT",
    "PAYLOAD_TOO_LARGE"})
# What an error message must not show: Python's traceback or exception classes, Cypher, SQL.
LEAKS = re.compile(
    r"Traceback|File \"|\b(Key|Type|Attribute|Index|Value|Overflow|Runtime|Assertion|Name|"
    r"Recursion|ZeroDivision|Unicode(De|En)code)Error\b|\bneo4j\.|\bsqlite3\b|"
    r"\b(MATCH|UNWIND|MERGE|RETURN)\b \(?[a-z$]|\bSELECT\b .* \bFROM\b|unexpected error")

T0 = datetime(2026, 11, 1, tzinfo=UTC)
KINDS = ["DataSource", "DatasetVersion", "Feature", "Job", "TrainingRun", "Model",
         "ModelVersion", "Prompt", "PromptVersion", "Toolset", "PolicyPack", "Bundle",
         "Evaluation", "Approval", "InferenceOutcome"]
EDGE_TYPES = ["VERSION_OF", "SUPERSEDES", "DERIVED_FROM", "CONSUMED", "PRODUCED_BY", "RUN_OF",
              "FINE_TUNED_FROM", "DESIGNED_FOR", "USES_MODEL", "USES_PROMPT", "USES_TOOLS",
              "GOVERNED_BY", "RETRIEVES_FROM", "SERVED_BY", "EVALUATES", "APPROVES"]


@dataclass
class Pools:
    """What the loaded graph holds, and cursors seen in answers so far."""

    ids: list[str]
    request_ids: list[str]
    bundle_names: list[str]
    cursors: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    made: int = 0  # nodes the fuzz named for upserts

    def harvest(self, data: Any) -> None:
        """Cursors and audit seqs in an answer, to pass to other queries later."""
        if isinstance(data, dict):
            for key, value in data.items():
                if key in ("endCursor", "versionsCursor") and isinstance(value, str):
                    if value not in self.cursors and len(self.cursors) < 200:
                        self.cursors.append(value)
                elif key == "seq" and isinstance(value, int) and len(self.seqs) < 200:
                    self.seqs.append(value)
                else:
                    self.harvest(value)
        elif isinstance(data, list):
            for item in data:
                self.harvest(item)


@dataclass
class Case:
    number: int
    query: str
    variables: dict[str, Any]
    root: str  # "query" | "mutation"
    fields: list[tuple[str, str, dict[str, Any]]]  # (response key, field name, arguments)

    def describe(self, seed: int) -> str:
        return (f"seed={seed} case={self.number}\nquery: {self.query}\nvariables: "
                f"{json.dumps(self.variables, default=str)[:2000]}")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


class Generator:
    def __init__(self, schema: GraphQLSchema, pools: Pools, rng: random.Random, *,
                 max_depth: int, mutations: bool = True) -> None:
        self.schema, self.pools, self.rng = schema, pools, rng
        self.max_depth = max_depth
        self.mutations = mutations
        self._vars: dict[str, Any] = {}
        self._decls: list[str] = []
        self._fragments: list[str] = []
        self.hostile = True

    def _odd(self, chance: float) -> bool:
        """Whether to send something wrong here: never in a well-formed case (so that
        those reach the analyses and mutations), with ``chance`` in a hostile one."""
        return self.hostile and self.rng.random() < chance

    # -- operations -------------------------------------------------------------------

    def case(self, number: int) -> Case:
        rng = self.rng
        self._vars, self._decls, self._fragments = {}, [], []
        self.hostile = rng.random() < 0.6
        mutation = self.mutations and rng.random() < 0.3
        root_type = self.schema.mutation_type if mutation else self.schema.query_type
        assert root_type is not None
        names = sorted(root_type.fields)
        picked = [rng.choice(names)]
        if rng.random() < 0.15:  # a second root field, aliased apart
            picked.append(rng.choice(names))
        parts, fields = [], []
        for i, name in enumerate(picked):
            key = name if i == 0 else f"f{i}"
            arguments = self._arguments(root_type.fields[name], f"{key}_")
            selection = self._selection(root_type.fields[name].type, 2)
            alias = f"{key}: " if i else ""
            parts.append(f"{alias}{name}{arguments[0]}{selection}")
            fields.append((key, name, arguments[1]))
            if self._odd(0.03):  # the same field under many aliases
                for j in range(rng.choice([3, 12, 60])):
                    parts.append(f"a{j}: {name}{arguments[0]}{selection}")
        decls = f"({', '.join(self._decls)})" if self._decls else ""
        keyword = "mutation" if mutation else "query"
        query = f"{keyword} Fuzz{decls} {{ {' '.join(parts)} }}"
        if self._fragments:
            query += " " + " ".join(self._fragments)
        return Case(number, query, dict(self._vars), keyword, fields)

    def _arguments(self, gfield: GraphQLField, prefix: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        given: list[str] = []
        values: dict[str, Any] = {}
        for name, arg in gfield.args.items():
            required = isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined
            if not required and rng.random() < 0.4:
                continue
            if required and self._odd(0.02):
                continue  # a required argument left out: a validation error
            value = self.value(name, arg.type)
            values[name] = value
            literal = self._literal(value, arg.type) if rng.random() < 0.25 else None
            if literal is not None:
                given.append(f"{name}: {literal}")
                continue
            var = f"{prefix}{name}"
            declared = str(arg.type)
            if self._odd(0.04):  # a variable declared with the wrong type
                declared = rng.choice(["String", "Int", "Boolean!", "[String!]", "ID", "JSON"])
            self._decls.append(f"${var}: {declared}")
            if not self._odd(0.03):
                self._vars[var] = value
            given.append(f"{name}: ${var}")
        return (f"({', '.join(given)})" if given else ""), values

    def _literal(self, value: Any, gtype: GraphQLType) -> str | None:
        named = get_named_type(gtype)
        if value is None:
            return "null"
        if isinstance(named, GraphQLEnumType) and isinstance(value, str):
            return value if re.fullmatch(r"[A-Za-z_]\w*", value) else None
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str) and named.name in ("String", "ID", "DateTime"):
            return json.dumps(value)
        return None

    # -- selections -------------------------------------------------------------------

    def _selection(self, gtype: GraphQLType, depth: int) -> str:
        named = get_named_type(gtype)
        if not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            return ""
        rng = self.rng
        leaves = [n for n, f in named.fields.items()
                  if not isinstance(get_named_type(f.type),
                                    GraphQLObjectType | GraphQLInterfaceType)]
        inner = [n for n in named.fields if n not in leaves]
        room = depth < self.max_depth + self._odd(0.03)
        chosen = rng.sample(leaves, rng.randint(1, len(leaves))) if leaves else []
        if inner and room:
            chosen += rng.sample(inner, rng.randint(0 if chosen else 1,
                                                    min(len(inner), 3)))
        parts = []
        for name in chosen:
            sub = named.fields[name]
            args = self._arguments(sub, f"d{depth}{name}_{len(self._decls)}_")[0] \
                if sub.args else ""
            alias = f"x{len(parts)}: " if rng.random() < 0.05 else ""
            parts.append(f"{alias}{name}{args}{self._selection(sub.type, depth + 1)}")
        if isinstance(named, GraphQLInterfaceType) and rng.random() < 0.3:
            parts.append(self._on_kind(depth))
        if isinstance(named, GraphQLInterfaceType) and rng.random() < 0.1:
            fragment = f"N{len(self._fragments)}"
            self._fragments.append(f"fragment {fragment} on Node {{ id kind version }}")
            parts.append(f"...{fragment}")
        if not parts:
            parts = ["__typename"]
        return " { " + " ".join(parts) + " }"

    def _on_kind(self, depth: int) -> str:
        bundle = self.schema.type_map["Bundle"]
        assert isinstance(bundle, GraphQLObjectType)
        if depth < self.max_depth:
            extra = self.rng.choice(["modelVersion", "promptVersion", "toolset", "policyPack",
                                     "retrievesFrom"])
            return f"... on Bundle {{ {extra} {{ id kind }} }}"
        return "... on ModelVersion { properties }"

    # -- values -----------------------------------------------------------------------

    def value(self, name: str, gtype: GraphQLType) -> Any:
        rng = self.rng
        if self._odd(0.03):
            return self._wrong_type()
        if isinstance(gtype, GraphQLNonNull):
            if self._odd(0.03):
                return None  # null for non-null
            return self.value(name, gtype.of_type)
        if isinstance(gtype, GraphQLList):
            if self._odd(0.05):
                return self.value(name, gtype.of_type)  # one item where a list is asked
            count = rng.choice([0, 1, 1, 2, 3])
            return [self.value(name, gtype.of_type) for _ in range(count)]
        if isinstance(gtype, GraphQLInputObjectType):
            return self._input_object(gtype)
        if isinstance(gtype, GraphQLEnumType):
            names = list(gtype.values)
            return rng.choice(names) if not self._odd(0.15) else rng.choice(
                ["upstream", "SIDEWAYS", "", "ROLLBACK ", "1"])
        assert isinstance(gtype, GraphQLScalarType)
        if gtype.name == "Int" and name == "after":  # auditLog's: an entry's seq
            return self._seq()
        by_name = getattr(self, f"_arg_{name}", None)
        if by_name is not None:
            return by_name()
        return getattr(self, f"_scalar_{gtype.name}")(name)

    def _wrong_type(self) -> Any:
        return self.rng.choice([1.5, True, {"a": 1}, ["x"], "text", 2**31, -(2**31) - 1])

    def _input_object(self, gtype: GraphQLInputObjectType) -> dict[str, Any]:
        if gtype.name == "NodeInput":
            return self._node_input()
        if gtype.name == "EdgeInput":
            return self._edge_input()
        return {n: self.value(n, f.type) for n, f in gtype.fields.items()}

    def _node_input(self) -> dict[str, Any]:
        rng = self.rng
        node: dict[str, Any] = {"id": self._new_or_known_id()}
        if self._odd(0.2):
            node["kind"] = rng.choice(KINDS + ["Nope", "", "bundle"])
        if rng.random() < 0.4:
            node["createdAt"] = self._scalar_DateTime("createdAt")
        if rng.random() < 0.6:
            node["properties"] = self._scalar_JSON("properties")
        if self._odd(0.03):
            node["extra"] = 1  # a field the input type does not have
        return node

    def _edge_input(self) -> dict[str, Any]:
        rng = self.rng
        edge: dict[str, Any] = {
            "source": self._new_or_known_id(), "target": self._new_or_known_id(),
            "type": rng.choice(EDGE_TYPES) if not self._odd(0.15) else rng.choice(
                ["NOPE", "", "uses_model", "DERIVED_FROM`) DETACH DELETE (n"])}
        if rng.random() < 0.3:
            edge["properties"] = self._scalar_JSON("properties")
        return edge

    def _new_or_known_id(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            return rng.choice(self.pools.ids)
        if roll < 0.8 or not self.hostile:
            self.pools.made += 1
            prefix = rng.choice(["source", "dataset", "feature", "job", "run", "model",
                                 "prompt", "tools", "policy", "bundle", "eval", "outcome"])
            name = f"fuzz-{rng.randrange(40)}"
            if prefix in ("dataset", "feature", "model", "prompt", "tools", "policy",
                          "bundle") and rng.random() < 0.8:
                name += f"@{rng.randrange(1, 5)}"
            if prefix == "dataset" and "@" not in name:
                name += "@1"
            return f"{prefix}:{name}"
        return self._bad_id()

    def _bad_id(self) -> str:
        rng = self.rng
        return rng.choice([
            "", " ", "nonsense", "@@", "model:@@", "model:x@@1", "model:", ":", "nokind:foo",
            "Bundle:support-triage@14", "model:x@", "bundle:support-triage@v", "x" * 5000,
            "model:" + "y" * 3000 + "@1", "model:a\x00b@1", "model:a\nb@1", "model:\u202eab@1",
            "bundle:support-triage@14\t", "model:fraud-detector@-1", "model:fraud@" + "9" * 40,
            "source:../../etc/passwd", "model:x@1@2", "prompt:'; DROP TABLE nodes;--@1",
            "model:é@1", "model:x\ud800@1", "bundle:support-triage@" + "1" * 300])

    def _scalar_ID(self, name: str) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6 or not self.hostile:
            known = rng.choice(self.pools.ids)
            if rng.random() < 0.1:  # as people paste them
                known = re.sub(r"@(\d+)$", r"@v\1", known)
            return known
        if roll < 0.75:
            return rng.choice(["model:nope@1", "bundle:support-triage@99", "source:nope",
                               "outcome:req-none", "approval:none", "job:x/y"])
        return self._bad_id()

    def _scalar_String(self, name: str) -> str:
        return self._text()

    def _text(self) -> str:
        rng = self.rng
        roll = rng.random() if self.hostile else 0.0
        if roll < 0.3:
            return rng.choice(["support", "triage", "@v14", "fraud", "2026", "model:",
                               "%", "_", "'", "\\", "[a-z]", "*", ".*", "\"", "req-"])
        if roll < 0.5:
            return "".join(rng.choice(string.printable) for _ in range(rng.randrange(12)))
        if roll < 0.6:
            return rng.choice(["", " ", "\x00", "\x07bell", "x" * 70_000, "ü" * 300,
                               "\ud83d\ude00", "\u0000\u0001", "line\nbreak"])
        return rng.choice(self.pools.ids + self.pools.bundle_names)

    def _scalar_Int(self, name: str) -> int:
        return self.rng.choice([-(2**31), -1, 0, 1, 2, 3, 5, 20, 1000, 1001, 5000, 5001,
                                2**31 - 1])

    def _scalar_Boolean(self, name: str) -> bool:
        return self.rng.random() < 0.5

    def _scalar_DateTime(self, name: str) -> Any:
        rng = self.rng
        if not self._odd(0.45):
            at = T0 + timedelta(hours=rng.randrange(-24 * 30, 24 * 20))
            return at.isoformat() if rng.random() < 0.7 else at.strftime("%Y-%m-%dT%H:%MZ")
        return rng.choice([
            "2026-11-08T00:00:00", "2026-11-08", "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-12:00",
            "not a date", "2026-13-01T00:00:00Z", "2026-11-31T00:00:00Z", "", "T", 1234567890,
            "2026-11-08T25:00:00Z", "+002026-11-08T00:00:00Z", "2026-11-08T00:00:00.1234567Z",
            "2026-W45-1", "2999-01-01T00:00:00Z", "2026-11-08T00:00:00+24:00"])

    def _scalar_JSON(self, name: str) -> Any:
        rng = self.rng
        roll = rng.random() if self.hostile else 0.0
        if roll < 0.5:
            return {"owner": rng.choice(["a", "b"]), "n": rng.randrange(5),
                    "tags": ["x", rng.choice(["y", "z"])]}
        if roll < 0.65:
            deep: Any = "leaf"
            for _ in range(rng.choice([10, 64, 199, 201, 600])):
                deep = {"d": deep} if rng.random() < 0.5 else [deep]
            return {"deep": deep}
        return rng.choice([None, 1, "text", [1, 2], {}, {"": 1}, {"x" * 300: 1},
                           {"big": "z" * 200_000}, {"n": 10**30}, {"f": 1e308},
                           {"registered": False}, {"risk_tier": "regulated"}])

    # Arguments whose names say what they are.

    def _arg_requestId(self) -> str:
        rng = self.rng
        if not self._odd(0.3):
            return rng.choice(self.pools.request_ids)
        return rng.choice(["req-none", "", " ", "outcome:req-2002", "req\x00x", "r" * 600,
                           " " + rng.choice(self.pools.request_ids)])

    def _name(self) -> str:
        rng = self.rng
        if not self._odd(0.3):
            return rng.choice(self.pools.bundle_names)
        return rng.choice(["nope", "", " ", "support-triage@14", "bundle:support-triage",
                           "x" * 400, "a\x00b", "fuzz-1", "SUPPORT-TRIAGE"])

    _arg_bundle = _arg_name = _name

    def _arg_version(self) -> str:
        if not self._odd(0.4):
            return self.rng.choice(["14", "15", "16", "2", "3", "4", "v14", "v3"])
        return self.rng.choice(["0", "-1", "", "1" * 60, "14 ", "latest", "@14", "9" * 20,
                                "V15", "99"])

    def _arg_environment(self) -> str:
        rng = self.rng
        if not self._odd(0.3):
            return rng.choice(["production", "staging", "canary", "shadow", "retired",
                               "draft"])
        return rng.choice(["", " ", "PRODUCTION", "prod uction", "a\x00b", "e" * 300,
                           "production\n", "../x", "ü"])

    def _arg_first(self) -> int:
        if not self.hostile:
            return self.rng.choice([0, 1, 2, 3, 5, 17, 50, 1000])
        return self.rng.choice([-1, 0, 1, 2, 3, 5, 17, 50, 1000, 1001, 5000, 5001, 2**31 - 1])

    def _arg_depth(self) -> int:
        if not self.hostile:
            return self.rng.choice([0, 1, 2, 3, 4, 6, 7, 20])
        return self.rng.choice([-1, 0, 1, 2, 3, 4, 6, 7, 20, 21, 10**5, 2**31 - 1])

    def _seq(self) -> int:
        rng = self.rng
        if self.pools.seqs and rng.random() < 0.6:
            return rng.choice(self.pools.seqs)
        return rng.choice([-1, 0, 1, 2**31 - 1])

    def _cursor(self) -> str:
        rng = self.rng
        roll = rng.random() if self.hostile else 0.0
        if roll < 0.5 and self.pools.cursors:
            cursor = rng.choice(self.pools.cursors)
            if self._odd(0.2):  # cut short
                cursor = cursor[: rng.randrange(len(cursor))]
            return cursor
        return rng.choice([
            "", "!!!!", "abc", _b64("x"), _b64("00000001|model:fraud-detector@7"),
            _b64("model:fraud-detector@7"), _b64("99999999|zzz"), _b64("|"), _b64("-1|x"),
            _b64("\x00"), base64.b64encode(bytes(rng.randrange(256) for _ in range(9))).decode(),
            _b64("1" * 25), _b64("v:" + "9" * 30), _b64("00000001|" + "x" * 4000), "YQ", "YQ=",
            _b64("²")])

    _arg_after = _arg_versionsBefore = _cursor

    def _arg_lookback(self) -> str:
        if not self.hostile:
            return self.rng.choice(["P7D", "P1D", "PT12H", "P14D", "P30D"])
        return self.rng.choice(["P7D", "P1D", "PT1H", "P1W", "P-1D", "P99999999D", "PT",
                                "P", "", "7 days", "P0D", "PT0S", "P1Y", "P1M", "-P1D",
                                "P1DT", "PT1.5H", "P7d", "P" + "9" * 30 + "D"])

    def _arg_text(self) -> str:
        return self._text()

    def _arg_actor(self) -> str:
        return self.rng.choice(["demo", "test", "fuzz-admin", "anonymous", "", "x" * 300])

    def _arg_target(self) -> str:
        rng = self.rng
        if not self._odd(0.5):
            return rng.choice(self.pools.ids)
        return rng.choice(["demo", "api", "token:fuzz-admin", " demo ", "", "model:x@v7",
                           "nokind:x", "\x00"])

    def _arg_kinds_item(self) -> str:
        return self.rng.choice(KINDS) if not self._odd(0.15) else self.rng.choice(
            ["Nope", "", "bundle", "Node"])

    def _arg_kinds(self) -> Any:  # only reached for a list item (``value`` unwraps lists)
        return self._arg_kinds_item()

    def _arg_overrideReason(self) -> str | None:
        return self.rng.choice([None, "fuzz says so", "", " ", "r" * 20_000, "a\x00b"])

    _arg_reason = _arg_comment = _arg_overrideReason

    def _arg_gate(self) -> str | None:
        return self.rng.choice([None, "security", "", "g" * 500, "a\x00b"])
