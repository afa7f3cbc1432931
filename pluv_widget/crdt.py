"""Storage declarations in the spirit of pluv's ``yjs.doc(() => ({ messages: yjs.array([]) }))``.

>>> from pluv_widget import crdt
>>> storage = crdt.doc(lambda: {"messages": crdt.array(["hello"]), "title": crdt.text("Notes")})
>>> storage.build()["messages"].to_py()
['hello']

The factory is a function because a pycrdt shared type can join one document only: every
``build()`` calls it again for fresh values. Only the server ever applies initial storage;
a client uses the factory for the *shape* of its document (which root is an array, which a
map), never to write its contents locally — that would duplicate items after a merge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pycrdt

SharedType = pycrdt.Array[Any] | pycrdt.Map[Any] | pycrdt.Text
RootTypes = dict[str, type[pycrdt.Array[Any]] | type[pycrdt.Map[Any]] | type[pycrdt.Text]]


def array(items: Iterable[Any] = ()) -> pycrdt.Array[Any]:
    """A shared list; items may be JSON values or nested ``array``/``map``/``text``."""
    return pycrdt.Array(list(items))


def map(items: Mapping[str, Any] | None = None) -> pycrdt.Map[Any]:  # noqa: A001 - pluv's name
    """A shared dict with string keys; values may be JSON values or nested shared types."""
    return pycrdt.Map(dict(items or {}))


def text(value: str = "") -> pycrdt.Text:
    """A shared string for collaborative text editing."""
    return pycrdt.Text(value)


class StorageFactory:
    """A room's initial storage: a function returning ``{root name: shared type}``."""

    def __init__(self, factory: Callable[[], Mapping[str, SharedType]]) -> None:
        self._factory = factory
        roots = factory()
        for key, value in roots.items():
            if not isinstance(value, (pycrdt.Array, pycrdt.Map, pycrdt.Text)):
                raise TypeError(f"storage root {key!r} must be crdt.array, crdt.map or crdt.text")
        self.root_types: RootTypes = {key: type(value) for key, value in roots.items()}

    def build(self) -> pycrdt.Doc[Any]:
        """A new document holding the initial contents."""
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        with doc.transaction():
            for key, value in self._factory().items():
                if isinstance(value, pycrdt.Array):
                    _fill_array(doc.get(key, type=pycrdt.Array), list(value._prelim or ()))
                else:
                    doc[key] = value
        return doc

    def encode(self) -> bytes:
        """The initial contents as one Yjs update (what a client offers the server)."""
        return self.build().get_update()

    def __repr__(self) -> str:
        roots = ", ".join(f"{key}: {kind.__name__}" for key, kind in self.root_types.items())
        return f"crdt.doc({{{roots}}})"


def _fill_array(array: pycrdt.Array[Any], items: list[Any]) -> None:
    # pycrdt appends item by item, and each append walks the array: quadratic (50,000 strings
    # take minutes). Inserting in reverse at the front is linear and gives the same order.
    for item in reversed(items):
        array.insert(0, item)


def doc(factory: Callable[[], Mapping[str, SharedType]]) -> StorageFactory:
    """Declare a room's storage: ``crdt.doc(lambda: {"messages": crdt.array([])})``."""
    return StorageFactory(factory)


def to_json(value: Any) -> Any:
    """A shared type or value as plain JSON, with pycrdt's float-for-int coerced back."""
    if isinstance(value, pycrdt.Text):
        return str(value)
    if isinstance(value, (pycrdt.Array, pycrdt.Map)):
        if value._integrated is None:  # not in a document yet
            return _coerce(value.to_py())
        # Yrs serialises the whole tree at once; pycrdt's to_py() indexes item by item, which
        # is quadratic for arrays (minutes for 50,000 items).
        with value.doc.transaction() as txn:
            return _coerce(json.loads(value.integrated.to_json(txn._txn)))
    return _coerce(value)


def _coerce(value: Any) -> Any:
    # pycrdt hands back integers as floats (1 -> 1.0) and bytes as bytearray.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, list):
        return [_coerce(item) for item in value]
    if isinstance(value, dict):
        return {key: _coerce(item) for key, item in value.items()}
    return value


def untyped_to_json(update: bytes, keys: Iterable[str]) -> dict[str, Any]:
    """Storage JSON of a document whose root types are unknown (the server's view: types are
    declared by clients). A root with map entries is a map, one with text a text, else an array;
    each guess is made on a fresh copy because viewing a root fixes its type."""
    result: dict[str, Any] = {}
    for key in keys:
        for kind in (pycrdt.Map, pycrdt.Text, pycrdt.Array):
            copy: pycrdt.Doc[Any] = pycrdt.Doc()
            copy.apply_update(update)
            value = to_json(copy.get(key, type=kind))
            if value or kind is pycrdt.Array:
                result[key] = value
                break
    return result
