"""What one GraphQL operation may ask for, checked before it runs: its depth, its aliases,
and how many graph walks it asks for (graphql-core's parser bounds the tokens).

All three are counted through fragments, each fragment once: what a fragment adds is the
same wherever it is spread, so it is remembered, and nested spreads cannot make the
counting itself explode. (strawberry's depth and alias limiters, which this replaces,
follow every spread: a chain of eighteen fragments, each spreading the next twice, took
them 0.3 s to validate, and each link doubles that, well within the token limit.)

Walks: each is bounded (depth, node cap, time), but fifty aliased walks are fifty of them
(ten `lineage` fields of a hub took 2 s and 5.9 MB)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)
from strawberry.extensions import SchemaExtension

from .graphql_types import UserError

# Fields that walk the graph (the analyses), and the lists whose pages may be large
# (nodes and audit entries hold up to 1 MiB of properties each: fifty aliased auditLog
# pages made a 462 MB answer); the others are single reads or small pages.
WALK_FIELDS = frozenset({"lineage", "trace", "blastRadius", "driftSources",
                         "promotionImpact", "promote", "rollback", "auditLog", "search",
                         "history"})
# What a refusal by these limits says it is, apart from a mistake in the document: a
# client can tell a cost limit from a schema error.
TOO_COMPLEX = {"code": "QUERY_TOO_COMPLEX"}
# Selection sets inside one another (fields and inline fragments) past which a document
# is refused without counting on: the counting recurses.
MAX_NESTING = 200


@dataclass(frozen=True, slots=True)
class Shape:
    depth: int  # fields nested below this point, introspection fields not counted
    walks: int  # walk fields, a fragment's counted each time it is spread
    aliases: int  # aliased fields, counted the same way


class _TooNested(Exception):
    pass


def operation_limits_rule(max_depth: int, max_walks: int,
                          max_aliases: int) -> type[ValidationRule]:
    """A validation rule refusing an operation deeper than ``max_depth`` fields (as
    strawberry's ``QueryDepthLimiter`` counts them), with more than ``max_aliases``
    aliases, or asking for more than ``max_walks`` graph walks (counts that err high
    where the executor merges repeated fields)."""

    class OperationLimits(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self._fragments: dict[str, Shape] = {}

        def enter_operation_definition(self, node: OperationDefinitionNode,
                                       *_: Any) -> None:
            name = node.name.value if node.name else "anonymous"
            try:
                shape = self._shape(node.selection_set, frozenset(), 0)
            except _TooNested:
                self.report_error(GraphQLError(
                    f"'{name}' nests selections more than {MAX_NESTING} deep", node,
                    extensions=TOO_COMPLEX))
                return
            if shape.depth > max_depth:
                self.report_error(GraphQLError(
                    f"'{name}' exceeds maximum operation depth of {max_depth}", node,
                    extensions=TOO_COMPLEX))
            if shape.aliases > max_aliases:
                self.report_error(GraphQLError(
                    f"{shape.aliases} aliases found. Allowed: {max_aliases}", node,
                    extensions=TOO_COMPLEX))
            if shape.walks > max_walks:
                fields = ", ".join(sorted(WALK_FIELDS))
                self.report_error(GraphQLError(
                    f"the operation asks for {shape.walks} graph walks or large reads "
                    f"({fields}); at most {max_walks} (LINEAGEGRAPH_GRAPHQL_MAX_WALKS)", node,
                    extensions=TOO_COMPLEX))

        def _shape(self, selections: SelectionSetNode | None, open_: frozenset[str],
                   nesting: int) -> Shape:
            if nesting > MAX_NESTING:
                raise _TooNested
            depth = walks = aliases = 0
            for selection in selections.selections if selections else ():
                if isinstance(selection, FieldNode):
                    inner = self._shape(selection.selection_set, open_, nesting + 1)
                    walks += (selection.name.value in WALK_FIELDS) + inner.walks
                    aliases += (selection.alias is not None) + inner.aliases
                    if selection.selection_set and not selection.name.value.startswith("__"):
                        depth = max(depth, 1 + inner.depth)
                    continue
                if isinstance(selection, InlineFragmentNode):
                    inner = self._shape(selection.selection_set, open_, nesting + 1)
                elif isinstance(selection, FragmentSpreadNode):
                    inner = self._fragment(selection.name.value, open_, nesting)
                else:
                    continue
                depth = max(depth, inner.depth)
                walks, aliases = walks + inner.walks, aliases + inner.aliases
            return Shape(depth, walks, aliases)

        def _fragment(self, name: str, open_: frozenset[str], nesting: int) -> Shape:
            if name in open_:  # a cycle: NoFragmentCyclesRule reports it
                return Shape(0, 0, 0)
            if name not in self._fragments:
                fragment = self.context.get_fragment(name)  # unknown: KnownFragmentNames
                self._fragments[name] = Shape(0, 0, 0) if fragment is None else self._shape(
                    fragment.selection_set, open_ | {name}, nesting + 1)
            return self._fragments[name]

    return OperationLimits


class OperationNamed(SchemaExtension):
    """A document holding several operations runs the one ``operationName`` names, and
    none without it (the GraphQL spec's GetOperation; strawberry ran the first): a client
    that forgot the name must not get an answer to a question it did not pick."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        operations = 0 if document is None else sum(
            isinstance(d, OperationDefinitionNode) for d in document.definitions)
        # `operation_name` falls back to the first operation's: the name as sent is kept
        # apart (a test pins this to strawberry's behaviour).
        if operations > 1 and not getattr(context, "_provided_operation_name", None):
            context.result = ExecutionResult(data=None, errors=[GraphQLError(
                "operationName: the document holds several operations; name the one to run",
                extensions=UserError.extensions)])
        yield
