"""frozen_builder: what it builds must be indistinguishable from the dataclass's own constructor."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from tlsproxy.fastbuild import frozen_builder
from tlsproxy.wire import events as ev
from tlsproxy.wire.extensions import Extension


def test_built_object_is_the_dataclass_itself():
    build = frozen_builder(ev.Record)
    args = (ev.Direction.S2C, 7, 1.5, 22, 0x0303, 3, True, "handshake", False, None, b"abc")
    built = build(*args)
    made = ev.Record(direction=ev.Direction.S2C, offset=7, at=1.5, content_type=22, version=0x0303, length=3,
                     encrypted=True, phase="handshake", payload=b"abc")
    assert type(built) is ev.Record
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    assert dataclasses.astuple(built) == args
    assert pickle.loads(pickle.dumps(built)) == made
    assert copy.copy(built) == made
    assert dataclasses.replace(built, offset=8) == dataclasses.replace(made, offset=8)


def test_built_object_stays_frozen():
    built = frozen_builder(Extension)(43, b"\x03\x04", 0x0304, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.value = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del built.value  # type: ignore[misc]
    assert built == Extension(type=43, data=b"\x03\x04", value=0x0304)


def test_every_field_is_required_and_positional():
    build = frozen_builder(ev.EndOfStream)
    with pytest.raises(TypeError):
        build(ev.Direction.C2S, 0, 0.0)  # ``buffered`` has a default in the class, not here
    assert build(ev.Direction.C2S, 0, 0.0, 5) == ev.EndOfStream(direction=ev.Direction.C2S, offset=0, at=0.0,
                                                                buffered=5)
