"""Property tests of every decoder in ``protocol/``: hostile input is refused with a documented
error, never with another exception; honest input always passes and round-trips."""

from __future__ import annotations

import json
import math
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pluv_widget import protocol
from pluv_widget.protocol import (
    ErrorMessage,
    Event,
    Join,
    Joined,
    Left,
    Limits,
    MemberInfo,
    PresenceUpdate,
    ProtocolError,
    Welcome,
    decode_client_message,
    decode_server_message,
    decode_sync,
)
from pluv_widget.protocol.codec import MAX_JSON_DEPTH, decode_json, decode_object
from pluv_widget.protocol.yupdate import InvalidUpdate, check_update

LIMITS = Limits()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:\-]{0,20}", fullmatch=True)


def message_like() -> st.SearchStrategy[str]:
    """Text that is often JSON and often nearly a message: the shapes a fuzzer would try."""
    kinds = st.sampled_from(["join", "presence", "event", "welcome", "joined", "left", "error", "nope", 1, None])
    fields = st.dictionaries(
        st.sampled_from(["type", "patch", "event", "data", "connection_id", "user", "presence", "protocol",
                         "initial_storage", "others", "metadata", "code", "message"]),
        json_values | kinds,
        max_size=6,
    )
    structured = st.builds(lambda kind, rest: json.dumps({"type": kind, **rest}), kinds, fields)
    return structured | st.text(max_size=60) | st.builds(json.dumps, json_values)


@FAST
@given(message_like())
def test_client_messages_decode_or_refuse(frame: str) -> None:
    try:
        message = decode_client_message(frame, LIMITS)
    except ProtocolError as error:
        assert error.code in set(protocol.ErrorCode)
        return
    assert isinstance(message, (PresenceUpdate, Event))
    assert message.connection_id is None  # a client's own stamp is never kept


@FAST
@given(message_like())
def test_server_messages_decode_or_refuse(frame: str) -> None:
    try:
        decode_server_message(frame)
    except ProtocolError:
        pass


@FAST
@given(message_like() | st.binary(max_size=40))
def test_join_decodes_or_refuses(frame: str | bytes) -> None:
    try:
        join = Join.decode(frame, LIMITS)
    except ProtocolError as error:
        assert error.code == protocol.ErrorCode.INVALID_MESSAGE
        return
    assert isinstance(join.presence, dict)


@FAST
@given(st.binary(max_size=64))
def test_sync_frames_decode_or_refuse(frame: bytes) -> None:
    try:
        message = decode_sync(frame)
    except ValueError:
        return
    assert message.encode() == frame  # a frame we accept is exactly one message


@FAST
@given(objects, names, json_values)
def test_messages_round_trip(presence: dict[str, Any], event: str, data: Any) -> None:
    member = MemberInfo("c1", {"id": "u1", "name": "Ada"}, presence)
    for message in (
        Welcome("room", "c0", {"id": "u0"}, presence, (member,)),
        Joined(member),
        Left("c1"),
        PresenceUpdate(presence, "c1"),
        Event(event, data, "c1", {"id": "u1"}, stamped=True),
        ErrorMessage("invalid_message", "no"),
    ):
        assert decode_server_message(message.encode()) == message
    join = Join(presence, {"m": 1}, b"\x00\x00")
    if protocol.json_size(presence) <= LIMITS.max_presence_bytes:
        assert Join.decode(join.encode(), LIMITS) == join
    assert decode_client_message(PresenceUpdate(presence).encode(), LIMITS) == PresenceUpdate(presence)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"event","event":"e","data":NaN}',
        '{"type":"event","event":"e","data":-Infinity}',
        '{"type":"event","event":"e","data":1e400}',
        '{"type":"event","event":"e","data":"\\ud800"}',
        '{"type":"presence","patch":{"\\udfff":1}}',
        '{"type":"event","event":"e","data":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type":"event","event":"e","data":' + "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH + "}",
    ],
    ids=["nan", "infinity", "overflow", "lone-surrogate", "surrogate-key", "deep-100k", "one-too-deep"],
)
def test_odd_json_is_refused_as_invalid_message(frame: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_client_message(frame, LIMITS)
    assert refused.value.code == protocol.ErrorCode.INVALID_MESSAGE


def test_surrogate_pairs_and_allowed_depth_pass() -> None:
    assert decode_object('{"type":"x","a":"\\ud83d\\ude00"}')["a"] == "😀"
    deep = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    decode_object('{"type":"x","a":' + deep + "}")


def _meant(text: str) -> Any:
    """What the protocol means by valid JSON, spelled the slow, obvious way (``json.loads``,
    then walk): the reference ``decode_json`` is checked against. ``REFUSED`` when refused."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return REFUSED
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return REFUSED
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
            stack.extend((key, depth) for key in (item if isinstance(item, dict) else ()))
        elif isinstance(item, float) and not math.isfinite(item):
            return REFUSED
        elif isinstance(item, str) and any("\ud800" <= char <= "\udfff" for char in item):
            return REFUSED
    return value


REFUSED = object()
odd_leaves = st.sampled_from([float("nan"), float("inf"), -float("inf"), "\ud800", "\udfff", "a\udc00b",
                              "\ud83d\ude00", 1e308, 2**64, -(2**70)])
odd_values = st.recursive(
    json_values | odd_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4) | odd_leaves.filter(
        lambda leaf: isinstance(leaf, str)), children, max_size=3),
    max_leaves=12,
)
odd_texts = (st.builds(json.dumps, odd_values)
             | st.builds(lambda value, depth: "[" * depth + json.dumps(value) + "]" * depth, odd_values,
                         st.integers(25, 40))
             | st.sampled_from(["1e400", "[-1e309]", "1" + "0" * 400 + ".5", "1e-400", "[1E+308]", "[1e308]",
                                "1" * 5000, '{"a":1,"a":2}', "[1,]", "\ufeff{}", "NaN", "[Infinity]"])
             | st.text(max_size=30))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd_texts)
def test_decode_json_accepts_and_refuses_exactly_what_the_protocol_means(text: str) -> None:
    """The fast decoder (pydantic-core) against the obvious one: same values, same refusals."""
    meant = _meant(text)
    if meant is REFUSED:
        with pytest.raises(ProtocolError) as refused:
            decode_json(text)
        assert refused.value.code == protocol.ErrorCode.INVALID_MESSAGE
    else:
        assert decode_json(text) == meant


# -- Yjs updates -----------------------------------------------------------------------------

edits = st.lists(
    st.tuples(st.sampled_from(["append", "delete", "map", "text", "format", "nested", "xml"]), json_values),
    min_size=1,
    max_size=12,
)


def _honest_updates(script: list[tuple[str, Any]]) -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=4242)  # fixed: hypothesis replays must see the same bytes
    array, map_, text = doc.get("a", type=pycrdt.Array), doc.get("m", type=pycrdt.Map), doc.get("t", type=pycrdt.Text)
    xml = doc.get("x", type=pycrdt.XmlFragment)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for index, (kind, value) in enumerate(script):
        with doc.transaction():
            if kind == "append":
                array.append(value)
            elif kind == "delete" and len(array):
                del array[0]
            elif kind == "map":
                map_[str(index)] = value
            elif kind == "text":
                text.insert(len(text), str(value) + "😀")
            elif kind == "format" and len(text) > 1:
                text.format(0, 1, {"bold": True})
            elif kind == "nested":
                array.append(pycrdt.Map({"k": pycrdt.Array([value]), "t": pycrdt.Text("x")}))
            elif kind == "xml":
                xml.children.append(pycrdt.XmlElement("p", {"c": "d"}, [pycrdt.XmlText(str(value))]))
    return [*updates, doc.get_update()]


@FAST
@given(edits)
def test_honest_updates_pass_the_check(script: list[tuple[str, Any]]) -> None:
    for update in _honest_updates(script):
        check_update(update)


CLIENT_123456_INSERTS_X = bytes.fromhex("0101c0c407000801056974656d730177017800")


def test_the_clock_overflow_that_panics_pycrdt_is_refused() -> None:
    check_update(CLIENT_123456_INSERTS_X)
    for hostile in ("0101c0c407ffffffffffff010801056974656d730177017800",  # 7-byte clock
                    "0101c0c407ffffffff0f0801056974656d730177017800",  # u32::MAX
                    "0101c0c407ffffffffffffffffff010801056974656d730177017800"):  # 10-byte clock
        with pytest.raises(InvalidUpdate):
            check_update(bytes.fromhex(hostile))


def _apply_safely(doc: pycrdt.Doc[Any], update: bytes) -> None:
    try:
        doc.apply_update(update)
    except Exception:
        pass  # a refusal pycrdt reports cleanly is fine; a BaseException (panic) fails the test


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits, st.data())
def test_mutated_updates_are_refused_or_apply_without_a_panic(script: list[tuple[str, Any]], data: Any) -> None:
    updates = _honest_updates(script)
    base = data.draw(st.sampled_from(updates))
    mutated = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    try:
        check_update(bytes(mutated))
    except InvalidUpdate:
        return
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(updates[0])
    _apply_safely(doc, bytes(mutated))
    doc.get_update()  # the document is still usable


@FAST
@given(st.binary(max_size=80))
def test_random_bytes_are_refused_or_apply_without_a_panic(update: bytes) -> None:
    try:
        check_update(update)
    except InvalidUpdate:
        return
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    doc.apply_update(CLIENT_123456_INSERTS_X)
    _apply_safely(doc, update)
    doc.get_update()


@pytest.mark.parametrize("version", [1, 2])
def test_a_server_accepts_the_previous_protocol_version(version: int) -> None:
    frame = json.dumps({"type": "join", "protocol": version, "presence": {}})
    assert Join.decode(frame, LIMITS).presence == {}


@pytest.mark.parametrize("version", [0, 4, "2", [2], {"v": 2}, True, None])
def test_other_protocol_versions_are_refused(version: Any) -> None:
    with pytest.raises(ProtocolError):
        Join.decode(json.dumps({"type": "join", "protocol": version, "presence": {}}), LIMITS)
