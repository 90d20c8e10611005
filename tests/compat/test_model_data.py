"""Objects with ``model_dump_json()`` (pydantic v2 models) as event data: JSON on the wire.

The encoder duck-types them (a callable ``model_dump_json`` found on the
object's type), so sse_sm imports no pydantic.  These tests use a real
pydantic model and a plain class with the same method, and the attack cases:
a method that raises, returns a non-str, is not callable, and a ``str``
subclass that carries one (it stays text).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, field_serializer

from sse_sm import JSONServerSentEvent, ServerSentEvent
from sse_sm._events import encode_item

SEP = "\r\n"


class Item(BaseModel):
    name: str
    tags: list[str] = []


class Stamped(BaseModel):
    """A model whose JSON differs from a naive dump: the serializer must be honoured."""

    when: int

    @field_serializer("when")
    def _iso(self, value: int) -> str:
        return f"t+{value}"


class Duck:
    """Not pydantic: only the method the encoder looks for."""

    def __init__(self, text: str) -> None:
        self.text = text

    def model_dump_json(self) -> str:
        return self.text


class Raising:
    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def model_dump_json(self) -> str:
        raise self.exc

    def __str__(self) -> str:
        return "raising-str"


class ReturnsBytes:
    def model_dump_json(self) -> Any:
        return b'{"a":1}'


class NotCallable:
    model_dump_json = "not a method"

    def __str__(self) -> str:
        return "plain-str"


class StrWithModel(str):
    def model_dump_json(self) -> str:
        return '{"never":"used"}'


def test_a_yielded_model_is_sent_as_its_json() -> None:
    assert encode_item(Item(name="a"), SEP) == b'data: {"name":"a","tags":[]}\r\n\r\n'


def test_a_models_own_serializers_decide_its_json() -> None:
    assert encode_item(Stamped(when=3), SEP) == b'data: {"when":"t+3"}\r\n\r\n'


def test_any_object_with_a_callable_model_dump_json_is_json_no_pydantic_needed() -> None:
    assert encode_item(Duck('{"x":1}'), "\n") == b'data: {"x":1}\n\n'


def test_a_list_of_models_is_one_json_array() -> None:
    frame = encode_item([Item(name="a"), Item(name="b", tags=["t"])], SEP)
    assert frame == b'data: [{"name":"a","tags":[]},{"name":"b","tags":["t"]}]\r\n\r\n'


def test_models_nested_in_a_dict_data_are_json() -> None:
    event = ServerSentEvent({"items": [Item(name="a")], "n": 1})
    assert event.data == '{"items":[{"name":"a","tags":[]}],"n":1}'


def test_a_server_sent_event_carries_a_model_as_json_data() -> None:
    event = ServerSentEvent(Item(name="é"), event="item", id="7")
    assert event.data == '{"name":"é","tags":[]}'
    assert event.encode() == 'id: 7\r\nevent: item\r\ndata: {"name":"é","tags":[]}\r\n\r\n'.encode()


def test_assigning_a_model_to_data_converts_it_too() -> None:
    event = ServerSentEvent("x")
    event.data = Item(name="b")
    assert event.data == '{"name":"b","tags":[]}'


def test_a_dict_item_may_carry_a_model_as_data() -> None:
    frame = encode_item({"data": Item(name="a"), "event": "e"}, SEP)
    assert frame == b'event: e\r\ndata: {"name":"a","tags":[]}\r\n\r\n'


def test_json_server_sent_event_writes_a_model_as_its_json() -> None:
    assert JSONServerSentEvent(Item(name="a")).data == '{"name":"a","tags":[]}'


def test_multi_line_json_from_a_duck_is_split_into_data_lines() -> None:
    assert encode_item(Duck('{\n"a": 1\n}'), "\n") == b'data: {\ndata: "a": 1\ndata: }\n\n'


# ----------------------------------------------------------------- attacks


@pytest.mark.parametrize("exc", [ValueError("bad value"), TypeError("bad type")])
def test_a_model_dump_json_that_raises_is_refused_naming_data(exc: Exception) -> None:
    with pytest.raises(type(exc), match=r"^data: model_dump_json\(\) of a Raising failed: bad"):
        ServerSentEvent(Raising(exc))
    with pytest.raises(type(exc), match=r"^data: "):
        encode_item(Raising(exc), SEP)


def test_a_pydantic_serialization_error_is_refused_naming_data() -> None:
    class Broken(BaseModel):
        value: int

        @field_serializer("value")
        def _boom(self, value: int) -> int:
            raise ValueError("cannot serialise")

    with pytest.raises(ValueError, match=r"^data: model_dump_json\(\) of a Broken failed"):
        encode_item(Broken(value=1), SEP)


def test_any_other_exception_from_model_dump_json_propagates_with_a_note() -> None:
    with pytest.raises(RuntimeError, match="boom") as caught:
        ServerSentEvent(Raising(RuntimeError("boom")))
    notes = getattr(caught.value, "__notes__", None)
    if notes is not None:  # Python 3.11 and newer
        assert any("'data'" in note and "model_dump_json" in note for note in notes)


def test_a_model_dump_json_returning_a_non_str_is_refused_naming_data() -> None:
    with pytest.raises(TypeError, match=r"^data: model_dump_json\(\) of a ReturnsBytes returned"):
        ServerSentEvent(ReturnsBytes())


def test_a_model_nested_in_a_list_that_fails_is_refused_naming_data() -> None:
    with pytest.raises(ValueError, match=r"^data "):
        encode_item([Raising(ValueError("nested"))], SEP)


def test_a_non_callable_model_dump_json_is_an_ordinary_object() -> None:
    assert encode_item(NotCallable(), SEP) == b"data: plain-str\r\n\r\n"


def test_a_str_subclass_with_model_dump_json_stays_text() -> None:
    assert encode_item(StrWithModel("hello"), SEP) == b"data: hello\r\n\r\n"
    assert ServerSentEvent(StrWithModel("hi")).data == "hi"
    assert json.loads(ServerSentEvent([StrWithModel("hi")]).data or "") == ["hi"]


def test_the_method_is_looked_up_on_the_type_not_the_instance() -> None:
    """An instance attribute named model_dump_json (a proxy that answers any
    name, a stray attribute) does not turn an object into a model."""
    duck = NotCallable()
    duck.__dict__["model_dump_json"] = lambda: '{"from":"instance"}'
    assert encode_item(duck, SEP) == b"data: plain-str\r\n\r\n"


def test_the_per_type_answer_is_bounded_and_still_right_after_it_is_cleared() -> None:
    from sse_sm import _events

    kinds = [type(f"Scalar{n}", (), {"__str__": lambda self: "s"}) for n in range(600)]
    for kind in kinds:
        assert encode_item(kind(), SEP) == b"data: s\r\n\r\n"
    assert len(_events._MODEL_TYPES) <= _events._MODEL_TYPES_MAX
    assert encode_item(Duck('{"after":1}'), SEP) == b'data: {"after":1}\r\n\r\n'
