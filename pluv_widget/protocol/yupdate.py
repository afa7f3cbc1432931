"""A structural check of Yjs updates (v1 encoding), before pycrdt ever sees them.

pycrdt (yrs 0.28) panics — a ``BaseException`` that leaves the document unsafe to use, and has
crashed the process — on some well-formed but hostile updates: a struct whose clock range passes
``u32::MAX`` (yrs keeps clocks as ``u32`` and truncates larger ones). No honest client comes near
that: a clock counts one client's insertions. So every update from a client is read here first,
struct by struct, and refused unless it is well formed *and* inside the bounds below. The format
is y-protocols' (lib0 encoding): struct groups per client, then the delete set.

:func:`check_update` raises :class:`InvalidUpdate` with a reason, or returns the update's shape
(how many structs and deletions), having read every byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Clock ranges stay below this (yrs uses u32 clocks; 2^31 leaves room for every honest doc).
MAX_CLOCK = 2**31
#: Client ids are JavaScript-safe integers (Yjs draws them from 32 bits; yrs from 53).
MAX_CLIENT = 2**53 - 1
#: ``ContentAny`` values nest at most this deep (lib0's any encoding is recursive).
MAX_ANY_DEPTH = 64
#: Type refs: array, map, text, xml element, xml fragment, xml hook, xml text.
MAX_TYPE_REF = 6


class InvalidUpdate(ValueError):
    """The bytes are not a Yjs v1 update this server will apply."""


@dataclass(slots=True)  # not frozen: one is made per client update, and frozen __init__ costs 4x
class UpdateShape:
    structs: int
    deletions: int
    #: Per client id, the clock just past the update's last struct: once the update is applied,
    #: a document whose state vector is below this for some client holds part of it as pending
    #: (it depends on structs the document does not have).
    ends: dict[int, int] = field(default_factory=dict, compare=False)
    #: Per client id, the clock of the update's first struct; every id its structs refer to
    #: (origins, parents); whether it carries a skip (structs it leaves out).
    starts: dict[int, int] = field(default_factory=dict, compare=False)
    refs: list[tuple[int, int]] = field(default_factory=list, compare=False)
    skips: bool = field(default=False, compare=False)

    def pending_in(self, state: dict[int, int]) -> bool:
        """True when a document with state vector ``state``, after applying this update, holds
        part of it as pending (it depends on structs the document does not have)."""
        return any(state.get(client, 0) < end for client, end in self.ends.items())

    def integrates_into(self, state: dict[int, int]) -> bool:
        """True when a document whose state vector is ``state`` surely integrates the whole update:
        each client's structs continue what it has, and every id they refer to is known (in
        ``state``, or earlier in this update). False means "cannot tell", not "it will not"."""
        if self.skips:
            return False
        for client, start in self.starts.items():
            if start > state.get(client, 0):
                return False
        for client, clock in self.refs:
            if clock >= state.get(client, 0) and not (
                client in self.starts and self.starts[client] <= clock < self.ends.get(client, 0)
            ):
                return False
        return True


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        try:
            value = self.data[self.pos]
        except IndexError:
            raise InvalidUpdate("truncated update") from None
        self.pos += 1
        return value

    def varuint(self) -> int:
        # Hot: every update is read here before it counts. Most varuints are one byte.
        data, pos = self.data, self.pos
        try:
            byte = data[pos]
            if byte < 0x80:
                self.pos = pos + 1
                return byte
            value, shift = byte & 0x7F, 7
            while True:
                pos += 1
                byte = data[pos]
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    self.pos = pos + 1
                    return value
                shift += 7
                if shift > 63:
                    raise InvalidUpdate("a variable-length integer is longer than 64 bits")
        except IndexError:
            raise InvalidUpdate("truncated update") from None

    def count(self, what: str) -> int:
        """A length that announces that many more items, each at least one byte."""
        value = self.varuint()
        if value > len(self.data) - self.pos:
            raise InvalidUpdate(f"{what} announces {value} items but the update is shorter")
        return value

    def varint(self) -> None:
        byte = self.byte()
        shift = 6
        while byte & 0x80:
            byte = self.byte()
            shift += 7
            if shift > 70:
                raise InvalidUpdate("a signed integer is longer than 64 bits")

    def buffer(self) -> bytes:
        length = self.varuint()
        if length > len(self.data) - self.pos:
            raise InvalidUpdate("a buffer runs past the end of the update")
        start = self.pos
        self.pos += length
        return self.data[start : self.pos]

    def string(self) -> str:
        try:
            return self.buffer().decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidUpdate("a string is not valid UTF-8") from None

    def skip(self, length: int) -> None:
        if length > len(self.data) - self.pos:
            raise InvalidUpdate("truncated update")
        self.pos += length

    def any(self, depth: int = 0) -> None:
        if depth > MAX_ANY_DEPTH:
            raise InvalidUpdate(f"a value nests deeper than {MAX_ANY_DEPTH}")
        kind = self.byte()
        if kind in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if kind == 125:
            self.varint()
        elif kind == 124:
            self.skip(4)
        elif kind in (123, 122):
            self.skip(8)
        elif kind == 119:
            self.string()
        elif kind == 118:
            for _ in range(self.count("an object")):
                self.string()
                self.any(depth + 1)
        elif kind == 117:
            for _ in range(self.count("an array")):
                self.any(depth + 1)
        elif kind == 116:
            self.buffer()
        else:
            raise InvalidUpdate(f"unknown value type {kind}")


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """A lib0 variable-length unsigned integer at ``pos``: (value, position after it)."""
    value = shift = 0
    try:
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7
            if shift > 63:
                raise InvalidUpdate("a variable-length integer is longer than 64 bits")
    except IndexError:
        raise InvalidUpdate("truncated update") from None


def _id(data: bytes, pos: int, refs: list[tuple[int, int]], known: tuple[bytes, int]) -> int:
    """Read the id a struct refers to into ``refs``; return the position after it.

    ``known``: the encoding of the struct group's client id and its value. Most ids refer to
    that client, and a matching prefix is one C call where decoding a 53-bit client id is eight
    loop turns (a varuint ends at its only byte below 0x80, so a match is the whole varuint)."""
    raw, value = known
    if data.startswith(raw, pos):
        client, pos = value, pos + len(raw)
    else:
        client, pos = read_varuint(data, pos)
    clock, pos = read_varuint(data, pos)
    if client > MAX_CLIENT or clock >= MAX_CLOCK:
        raise InvalidUpdate("a struct refers to an out-of-range id")
    refs.append((client, clock))
    return pos


def _content_length(reader: _Reader, ref: int) -> int:
    """Read one item's content; return how many clock ticks it spans."""
    if ref == 1:  # deleted
        return reader.varuint()
    if ref == 2:  # JSON strings
        length = reader.count("JSON content")
        for _ in range(length):
            reader.string()
        return length
    if ref == 3:  # binary
        reader.buffer()
        return 1
    if ref == 4:  # string: its length in UTF-16 code units
        return len(reader.string().encode("utf-16-le")) // 2
    if ref == 5:  # embed
        reader.string()
        return 1
    if ref == 6:  # format
        reader.string()
        reader.string()
        return 1
    if ref == 7:  # a nested shared type
        type_ref = reader.varuint()
        if type_ref > MAX_TYPE_REF:
            raise InvalidUpdate(f"unknown shared type {type_ref}")
        if type_ref in (3, 5):  # xml element / hook name
            reader.string()
        return 1
    if ref == 8:  # any values
        length = reader.count("any content")
        for _ in range(length):
            reader.any()
        return length
    if ref == 9:  # a subdocument
        reader.string()
        reader.any()
        return 1
    raise InvalidUpdate(f"unknown content type {ref}")


def read_state_vector(state: bytes) -> dict[int, int]:
    """A Yjs state vector (``Doc.get_state()``) as ``{client id: clock}``."""
    reader = _Reader(state)
    clocks: dict[int, int] = {}
    for _ in range(reader.count("the state vector")):
        client = reader.varuint()
        clocks[client] = reader.varuint()
    return clocks


def check_update(update: bytes) -> UpdateShape:
    """Read a v1 update whole; raise :class:`InvalidUpdate` unless it is well formed and in bounds."""
    # Hot: every client update is read here before it counts, so the struct loop reads varuints
    # inline (most are one byte) instead of through _Reader; contents go through _Reader.
    data, size = update, len(update)
    reader = _Reader(data)
    structs = deletions = 0
    ends: dict[int, int] = {}
    starts: dict[int, int] = {}
    refs: list[tuple[int, int]] = []
    skips = False
    groups = reader.count("the struct groups")
    pos = reader.pos
    for _ in range(groups):
        count, pos = read_varuint(data, pos)
        client, after = read_varuint(data, pos)
        known = (data[pos:after], client)
        clock, pos = read_varuint(data, after)
        if count > size - pos:
            raise InvalidUpdate(f"a struct group announces {count} items but the update is shorter")
        if client > MAX_CLIENT:
            raise InvalidUpdate("a client id is out of range")
        if count == 0:  # no encoder writes one; yrs 0.28 panics on it (update.rs:85) past the client's clock
            raise InvalidUpdate("an empty struct group")
        starts[client] = min(starts.get(client, clock), clock)
        end = 0
        for _ in range(count):
            if pos >= size:
                raise InvalidUpdate("truncated update")
            info = data[pos]
            pos += 1
            ref = info & 0b11111
            if ref in (0, 10):  # GC or skip: a bare length
                length, pos = read_varuint(data, pos)
            else:
                if info & 0x80:  # origin
                    pos = _id(data, pos, refs, known)
                if info & 0x40:  # right origin
                    pos = _id(data, pos, refs, known)
                reader.pos = pos
                if not info & 0xC0:
                    if reader.varuint() == 1:  # parent is a root type, by name
                        reader.string()
                    else:  # parent is a nested type, by id
                        reader.pos = _id(data, reader.pos, refs, known)
                    if info & 0x20:  # parent sub (a map key)
                        reader.string()
                length = _content_length(reader, ref)
                pos = reader.pos
            # yrs 0.28 panics on a deleted item of length 0. yrs itself writes an empty *string*
            # item when text is formatted inside a surrogate pair (and applies it): that one passes.
            if length < 1 and ref != 4:
                raise InvalidUpdate("a struct of length 0")
            clock += length
            if clock >= MAX_CLOCK:
                raise InvalidUpdate(f"a clock passes {MAX_CLOCK}")
            if ref == 10:  # a skip stands for structs the update does not carry
                skips = True
            else:
                end = clock
        if end:
            ends[client] = max(ends.get(client, 0), end)
        structs += count
    reader.pos = pos
    for _ in range(reader.count("the delete set")):
        if reader.varuint() > MAX_CLIENT:
            raise InvalidUpdate("a client id is out of range")
        for _ in range(reader.count("a delete range list")):
            start, length = reader.varuint(), reader.varuint()
            if start + length >= MAX_CLOCK:
                raise InvalidUpdate(f"a deleted range passes clock {MAX_CLOCK}")
            deletions += 1
    if reader.pos != size:
        raise InvalidUpdate(f"{size - reader.pos} bytes after the end of the update")
    return UpdateShape(structs, deletions, ends, starts, refs, skips)
