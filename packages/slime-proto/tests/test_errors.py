"""Every slime error is a SlimeError and keeps the context it was given."""

from __future__ import annotations

import pytest
from slime.proto import (
    ArchiveError,
    CheckpointError,
    ConfigError,
    DataError,
    KernelError,
    MemoryBudgetError,
    PoolError,
    SlimeError,
)


@pytest.mark.parametrize(
    "error",
    [
        ArchiveError,
        CheckpointError,
        ConfigError,
        DataError,
        KernelError,
        MemoryBudgetError,
        PoolError,
    ],
)
def test_every_error_is_a_slime_error(error: type[Exception]) -> None:
    assert issubclass(error, SlimeError)


def test_config_error_names_the_key_path() -> None:
    err = ConfigError("expected a positive int, got -1", path="model.n_layer")
    assert err.path == "model.n_layer"
    assert str(err) == "model.n_layer: expected a positive int, got -1"


def test_value_errors_stay_catchable_as_value_error() -> None:
    with pytest.raises(ValueError):
        raise KernelError("q: expected 4 dims, got 3")
