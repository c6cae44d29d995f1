"""Sync unit tests of the broker's pure pieces: filters, codec, error records, public surface."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

import broker
from broker import (
    BroadcastFilter,
    CodecError,
    ErrorInfo,
    JsonCodec,
    RemoteError,
    UnknownSubscriberError,
)


def _calls(flt: BroadcastFilter, sender: Any, subject: Any) -> list[Any]:
    seen: list[Any] = []
    flt._subscriber = lambda *args: seen.append(args)
    result = flt("comm", "body", sender, subject, "cid")
    if not seen:
        assert result is None
    return seen


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("alice", "alice", True),
        ("alice", "alice.jones", False),  # kiwipy let this through (prefix match)
        ("alice", "alicex", False),
        ("*.jones", "alice.jones", True),
        ("*.jones", "alice.jonesy", False),
        ("purchase.*", "purchase.car", True),
        ("purchase.*", "purchase.", True),
        ("purchase.*", "purchase.a.b.c", True),  # '*' spans dots
        ("purchase.*", "purchasex", False),  # '.' is literal
        ("state_changed.*.finished", "state_changed.running.finished", True),
        ("state_changed.*.finished", "state_changed.running.finishedXYZ", False),
        ("a+b", "a+b", True),  # regex metacharacters are literal
        ("a+b", "aab", False),
        ("*", "", True),
        (re.compile(r"sale\.\d+"), "sale.42", True),
        (re.compile(r"sale\.\d+"), "sale.42x", False),  # compiled patterns must match fully
        (re.compile(r"x"), 5, False),
        ("5", 5, False),  # a string never matches a non-string
        (5, 5, True),  # non-strings compare by equality
        (5, "5", False),
    ],
)
def test_filter_patterns(pattern: Any, value: Any, expected: bool) -> None:
    by_subject = BroadcastFilter(lambda *a: None, subject=pattern)
    by_sender = BroadcastFilter(lambda *a: None, sender=pattern)
    assert by_subject.matches(None, value) is expected
    assert by_sender.matches(value, None) is expected
    assert by_subject.is_filtered(None, value) is not expected


def test_filter_none_passes_and_kinds_combine() -> None:
    flt = BroadcastFilter(lambda *a: None, subject="a.*", sender="bob")
    assert flt.matches(None, None)
    assert flt.matches("bob", None)
    assert flt.matches(None, "a.x")
    assert flt.matches("bob", "a.x")
    assert not flt.matches("eve", "a.x")  # subject and sender are AND-ed
    assert not flt.matches("bob", "b.x")
    flt.add_sender_filter("eve")  # filters of one kind are OR-ed
    assert flt.matches("eve", "a.x")
    assert BroadcastFilter(lambda *a: None).matches("anyone", "anything")


def test_filter_call_is_positional_and_returns_none_when_filtered() -> None:
    flt = BroadcastFilter(lambda *a: None, subject="go")
    assert _calls(flt, "s", "go") == [("comm", "body", "s", "go", "cid")]
    assert _calls(flt, "s", "stop") == []
    assert flt.__name__ == "BroadcastFilter"
    assert repr(flt).startswith("BroadcastFilter(")


# -- codec -------------------------------------------------------------------------------------


def test_json_codec_round_trip_and_wire_conversions() -> None:
    codec = JsonCodec()
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    assert codec.decode(codec.encode(value)) == value
    assert codec.decode(codec.encode((1, 2))) == [1, 2]  # tuples travel as lists
    assert codec.decode(codec.encode({1: "x"})) == {"1": "x"}  # scalar keys become strings
    assert repr(codec) == "JsonCodec()"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), r"^can't encode msg: object of type object is not JSON-serializable$"),
        (
            {"items": [1, 2, {3}]},
            r"^can't encode msg\['items'\]\[2\]: object of type set is not JSON-serializable$",
        ),
        ({"x": math.nan}, r"^can't encode msg\['x'\]: nan is not allowed in JSON$"),
        ([math.inf], r"^can't encode msg\[0\]: inf is not allowed in JSON$"),
        (
            {("a", "b"): 1},
            r"^can't encode msg: key \('a', 'b'\) of type tuple can't be a JSON key",
        ),
    ],
)
def test_json_codec_names_the_offending_value(value: Any, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        JsonCodec().encode(value)


def test_json_codec_decode_error() -> None:
    with pytest.raises(CodecError, match=r"^can't decode b'\{not json': "):
        JsonCodec().decode(b"{not json")


def test_codec_error_is_a_type_error() -> None:
    assert issubclass(CodecError, TypeError)


def test_strict_broker_rejects_unencodable_payload_at_send() -> None:
    strict = broker.MemoryBroker(strict=True)
    assert isinstance(strict.codec, JsonCodec)
    with pytest.raises(CodecError, match=r"^can't encode task\['when'\]: object of type"):
        strict.encode({"when": object()}, "task")
    assert broker.MemoryBroker().codec is None


def test_broker_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"^max_redeliveries must be >= 0, got -1$"):
        broker.MemoryBroker(max_redeliveries=-1)


# -- errors ------------------------------------------------------------------------------------


def test_error_info_captures_type_message_and_traceback() -> None:
    class Custom(Exception):
        pass

    try:
        raise Custom("went wrong")
    except Custom as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.type_name.endswith(".<locals>.Custom")
    assert info.type_name.startswith("tests.broker.test_filters_codec_errors.")
    assert info.message == "went wrong"
    assert 'raise Custom("went wrong")' in info.traceback
    assert ErrorInfo.from_dict(info.to_dict()) == info
    with pytest.raises(CodecError, match=r"^malformed error info \{\}"):
        ErrorInfo.from_dict({})
    error = RemoteError(ErrorInfo("ValueError", "bad", "tb"))
    assert str(error) == "ValueError: bad"
    assert (error.type_name, error.message, error.remote_traceback) == ("ValueError", "bad", "tb")


def test_unknown_subscriber_error_is_key_and_value_error_with_plain_message() -> None:
    error = UnknownSubscriberError("no rpc subscriber 'x' on this communicator")
    assert isinstance(error, KeyError)
    assert isinstance(error, ValueError)
    assert str(error) == "no rpc subscriber 'x' on this communicator"


def test_every_error_derives_from_broker_error() -> None:
    for name in broker.__all__:
        obj = getattr(broker, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, broker.BrokerError), name


def test_public_surface_is_exported() -> None:
    for name in broker.__all__:
        assert hasattr(broker, name), name
    assert set(broker.__all__) >= {
        "Communicator",
        "MemoryBroker",
        "LoopCommunicator",
        "BlockingCommunicator",
        "BroadcastFilter",
        "wait_future",
    }


def test_communicator_is_an_enforced_abstract_base_class() -> None:
    with pytest.raises(TypeError, match=r"abstract"):
        broker.Communicator()  # type: ignore[abstract]


def test_reprs() -> None:
    b = broker.MemoryBroker(strict=True)
    assert repr(b) == "<MemoryBroker endpoints=0, codec=JsonCodec()>"
    comm = broker.LoopCommunicator(b, name="x")
    assert repr(comm) == "<LoopCommunicator 'x' new>"
    assert comm.is_closed
    stats = b.statistics()
    assert stats.pending == stats.in_flight == stats.dead_letters == 0
    assert "BrokerStatistics(" in repr(stats)
