"""The to_dict/from_dict contract helpers that later components reuse."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest
from slime.proto.testing import (
    FifoFeeder,
    assert_plain_payload,
    assert_roundtrip,
    payloads_equal,
)


class _Good:
    def __init__(self, weights: list[float], name: str) -> None:
        self.weights = weights
        self.name = name

    def to_dict(self) -> dict[str, Any]:
        return {"weights": list(self.weights), "meta": {"name": self.name}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Good:
        return cls(data["weights"], data["meta"]["name"])


class _Lossy(_Good):
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Lossy:
        return cls(data["weights"][:-1], data["meta"]["name"])


class _Leaky(_Good):
    def to_dict(self) -> dict[str, Any]:
        return {"self": self}


def test_roundtrip_accepts_exact_component() -> None:
    rebuilt = assert_roundtrip(_Good([1.0, 2.0], "a"))
    assert rebuilt.weights == [1.0, 2.0]


def test_roundtrip_rejects_lossy_component() -> None:
    with pytest.raises(AssertionError, match="round-trip"):
        assert_roundtrip(_Lossy([1.0, 2.0], "a"))


def test_plain_payload_rejects_object_references() -> None:
    with pytest.raises(AssertionError, match=r"payload\['self'\] is a _Leaky"):
        assert_plain_payload(_Leaky([1.0], "x").to_dict())


def test_payloads_equal_distinguishes_types_and_values() -> None:
    assert payloads_equal({"a": [1, 2.0, None]}, {"a": [1, 2.0, None]})
    assert not payloads_equal({"a": 1}, {"a": 1.0})
    assert not payloads_equal({"a": 1}, {"b": 1})
    assert payloads_equal(float("nan"), float("nan"))


def test_a_fifo_feeder_hands_its_data_to_each_reader_and_counts_them(tmp_path):
    path = tmp_path / "pipe"
    with FifoFeeder(path, b"junk") as feeder:
        assert stat.S_ISFIFO(os.stat(path).st_mode) and feeder.opened == 0
        with open(path, "rb") as handle:  # would block for ever without the feeder
            assert handle.read() == b"junk"
        assert feeder.opened == 1
    assert not feeder._thread.is_alive()
