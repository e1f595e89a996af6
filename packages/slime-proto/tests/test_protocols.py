"""The protocols accept conforming classes and reject incomplete ones."""

from __future__ import annotations

from typing import Any

import pytest
from slime.proto import Chemotaxis, Component, Kernel, Memory, Organism, Pseudopod
from slime.proto.testing import assert_conforms


class _Comp:
    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    @property
    def fitness(self) -> float:
        return self.value

    def reset(self) -> None:
        self.value = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Comp:
        return cls(data["value"])


class _Mem:
    def store(self, data, weight):  # noqa: ANN001
        pass

    def recall(self):
        return None

    def clear(self) -> None:
        pass


class _Kernel:
    name = "dummy"

    def attention(self, q, k, v, **kw):  # noqa: ANN001, ANN003
        return v

    def correlation(self, x):  # noqa: ANN001
        return x

    def effective_rank(self, m):  # noqa: ANN001
        return m

    def coherence(self, c):  # noqa: ANN001
        return c


class _Pod:
    def forward(self, latent, stimulus=None):  # noqa: ANN001
        return latent

    correlation = None

    def effective_rank(self):
        return 1.0

    def coherence(self):
        return 1.0


class _Chemo:
    def add_source(self, location, concentration):  # noqa: ANN001
        pass

    def sample(self, behavior, metabolic_rate, hunger):  # noqa: ANN001
        return None

    def clear(self) -> None:
        pass


class _Org:
    def forward(self, stimulus):  # noqa: ANN001
        return stimulus

    def reset_state(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


@pytest.mark.parametrize(
    ("obj", "protocol"),
    [
        (_Comp(), Component),
        (_Mem(), Memory),
        (_Kernel(), Kernel),
        (_Pod(), Pseudopod),
        (_Chemo(), Chemotaxis),
        (_Org(), Organism),
    ],
)
def test_conforming_class_passes_isinstance(obj: object, protocol: type) -> None:
    assert isinstance(obj, protocol)
    assert_conforms(obj, protocol)


class _Empty:
    pass


@pytest.mark.parametrize("protocol", [Component, Memory, Kernel, Pseudopod, Chemotaxis, Organism])
def test_nonconforming_class_fails_isinstance(protocol: type) -> None:
    assert not isinstance(_Empty(), protocol)
    with pytest.raises(AssertionError, match="does not implement"):
        assert_conforms(_Empty(), protocol)


def test_component_missing_one_member_fails() -> None:
    class Partial:
        fitness = 1.0

        def to_dict(self) -> dict[str, Any]:
            return {}

    assert not isinstance(Partial(), Component)
