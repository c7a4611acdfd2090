"""The order of a response's errors and warnings: where their fields are written in the
document, not when the fields' work finished.

Fields run at once (store work in threads), so graphql-core lists errors, and
``Context.warn`` collects warnings, in the order the work finished: the same query got its
errors and warnings in another order from run to run, and from store to store."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

# A path's place: a list item by its index, a field by where it is written (offsets in the
# document: of the fragment spreads that reach it, then its own), then its response key;
# what has no path (a document's error) comes first.
Place = tuple[tuple[int, tuple[int, ...], str], ...]
Path = Sequence[str | int]


def document_order(document: DocumentNode | None,
                   operation_name: str | None) -> Callable[[Path | None], Place]:
    """A sort key for response paths of ``operation_name`` in ``document``."""
    fragments: dict[str, FragmentDefinitionNode] = {}
    operation: OperationDefinitionNode | None = None
    for definition in document.definitions if document is not None else ():
        if isinstance(definition, FragmentDefinitionNode):
            fragments[definition.name.value] = definition
        elif isinstance(definition, OperationDefinitionNode) and (
                operation is None or operation_name is not None
                and definition.name is not None and definition.name.value == operation_name):
            operation = definition

    def place(path: Path | None) -> Place:
        if not path:
            return ()
        selections = operation.selection_set if operation is not None else None
        key: list[tuple[int, tuple[int, ...], str]] = []
        for part in path:
            if isinstance(part, int):
                key.append((0, (part,), ""))
                continue
            field, offsets = _field(selections, part, fragments, set())
            key.append((1, offsets, part))
            selections = field.selection_set if field is not None else None
        return tuple(key)

    return place


def _field(selections: SelectionSetNode | None, key: str,
           fragments: dict[str, FragmentDefinitionNode], seen: set[str],
           ) -> tuple[FieldNode | None, tuple[int, ...]]:
    """The first field answering to response key ``key``, through fragments, and where it
    is written: a fragment's field where the fragment is spread, then where in the
    fragment. (-1,) if none does."""
    for selection in selections.selections if selections is not None else ():
        if isinstance(selection, FieldNode):
            if (selection.alias or selection.name).value == key:
                return selection, (_offset(selection),)
            continue
        if isinstance(selection, InlineFragmentNode):
            inner = selection.selection_set
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen or name not in fragments:
                continue
            seen.add(name)  # validation refuses cycles; a walk must not trust that
            inner = fragments[name].selection_set
        else:
            continue
        found, offsets = _field(inner, key, fragments, seen)
        if found is not None:
            return found, (_offset(selection), *offsets)
    return None, (-1,)


def _offset(node: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> int:
    return node.loc.start if node.loc is not None else -1


def in_document_order(items: Iterable[Any], path: Callable[[Any], Path | None],
                      place: Callable[[Path | None], Place]) -> list[Any]:
    """``items`` sorted by where their paths are written (stable for equal places)."""
    return sorted(items, key=lambda item: place(path(item)))
