"""Pool behaviour: capacity, culling order, lifecycle accounting, memory budget, OOM guard."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from slime.memory import MAX_POOL_SIZE, Pool
from slime.proto import Component, ConfigError, MemoryBudgetError, PoolError


class Unit:
    """A minimal Component with a settable fitness and a payload of ``size`` float32 values."""

    def __init__(self, fitness: float, size: int = 4) -> None:
        self._fitness = fitness
        self.weight = torch.zeros(size)

    @property
    def fitness(self) -> float:
        return self._fitness

    def reset(self) -> None:
        self._fitness = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"fitness": self._fitness, "weight": self.weight.clone()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unit:
        unit = cls(data["fitness"], data["weight"].numel())
        unit.weight.copy_(data["weight"])
        return unit


def filled(*fitness: float, **kwargs: Any) -> Pool:
    pool = Pool(**kwargs)
    for f in fitness:
        pool.spawn(Unit(f))
    return pool


def test_unit_is_a_component() -> None:
    assert isinstance(Unit(1.0), Component)


def test_max_pool_size_is_the_blueprint_limit() -> None:
    assert MAX_POOL_SIZE == 64 and Pool().capacity == 64


def test_capacity_above_the_hard_limit_is_rejected() -> None:
    with pytest.raises(ConfigError, match="1..64"):
        Pool(capacity=65)


def test_spawn_returns_distinct_never_reused_ids() -> None:
    pool = Pool(capacity=2)
    first = pool.spawn(Unit(1.0))
    pool.remove(first)
    second = pool.spawn(Unit(1.0))
    assert second != first


def test_spawn_over_capacity_raises() -> None:
    pool = filled(1.0, 2.0, capacity=2)
    with pytest.raises(PoolError, match="full"):
        pool.spawn(Unit(3.0))
    assert len(pool) == 2


def test_spawn_rejects_non_components() -> None:
    with pytest.raises(PoolError, match="Component"):
        Pool().spawn(object())  # type: ignore[arg-type]


def test_remove_unknown_member_raises() -> None:
    with pytest.raises(PoolError, match="no member with id 7"):
        Pool().remove(7)


def test_remove_returns_the_component_and_counts_a_death() -> None:
    pool = Pool()
    unit = Unit(1.0)
    member = pool.spawn(unit)
    assert pool.remove(member) is unit
    assert (pool.births, pool.deaths, len(pool)) == (1, 1, 0)


def test_by_fitness_orders_descending_with_ties_in_spawn_order() -> None:
    pool = filled(1.0, 3.0, 2.0, 3.0)
    assert [member for member, _ in pool.by_fitness()] == [1, 3, 2, 0]
    assert [member for member, _ in pool.by_fitness(descending=False)] == [0, 2, 1, 3]


def test_cull_worst_removes_the_lowest_fitness() -> None:
    pool = filled(5.0, 1.0, 4.0, 2.0, 3.0)
    culled = pool.cull_worst(0.4)
    assert [c.fitness for c in culled] == [1.0, 2.0]
    assert sorted(c.fitness for c in pool) == [3.0, 4.0, 5.0]


def test_cull_worst_rounds_up_so_a_small_fraction_culls_one() -> None:
    pool = filled(1.0, 2.0, 3.0)
    assert len(pool.cull_worst(0.01)) == 1


def test_cull_worst_does_not_round_float_noise_up() -> None:
    pool = filled(*range(30))
    assert len(pool.cull_worst(0.1)) == 3


def test_cull_worst_on_empty_pool_culls_nothing() -> None:
    assert Pool().cull_worst(0.5) == []


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_cull_worst_rejects_fraction_outside_unit_interval(fraction: float) -> None:
    with pytest.raises(PoolError, match="fraction"):
        filled(1.0).cull_worst(fraction)


def test_nan_fitness_raises_naming_the_member() -> None:
    pool = filled(1.0, float("nan"))
    with pytest.raises(PoolError, match="member 1 has NaN fitness"):
        pool.cull_worst(0.5)


def test_on_cull_receives_ids_and_components() -> None:
    seen: list[list[tuple[int, Any]]] = []
    pool = filled(2.0, 1.0, on_cull=seen.append)
    pool.cull_worst(0.5)
    assert [[member for member, _ in batch] for batch in seen] == [[1]]


def test_age_counts_ticks_since_spawn() -> None:
    pool = Pool()
    old = pool.spawn(Unit(1.0))
    pool.tick(3)
    young = pool.spawn(Unit(1.0))
    pool.tick()
    assert (pool.age(old), pool.age(young)) == (4, 1)


def test_births_minus_deaths_is_the_size() -> None:
    pool = filled(1.0, 2.0, 3.0, 4.0)
    pool.cull_worst(0.5)
    pool.remove(next(member for member, _ in pool.items()))
    assert pool.births - pool.deaths == len(pool) == 1


def test_iteration_is_a_snapshot() -> None:
    pool = filled(1.0, 2.0)
    seen = []
    for component in pool:
        seen.append(component)
        pool.spawn(Unit(9.0))
    assert len(seen) == 2 and len(pool) == 4


def test_within_budget_nothing_is_culled() -> None:
    pool = filled(1.0, 2.0, memory_budget_bytes=1000)
    assert pool.enforce_budget(used_bytes=1000) == []


def test_over_budget_culls_a_fifth_of_the_pool() -> None:
    pool = filled(*range(10), memory_budget_bytes=100)
    culled = pool.enforce_budget(used_bytes=101)
    assert [c.fitness for c in culled] == [0, 1]


def test_budget_measured_from_members_by_default() -> None:
    # Each Unit holds 4 float32 values = 16 bytes; 5 units = 80 bytes > 64.
    pool = filled(1.0, 2.0, 3.0, 4.0, 5.0, memory_budget_bytes=64)
    assert pool.used_bytes() == 80
    assert [c.fitness for c in pool.enforce_budget()] == [1.0]


def test_custom_size_of_is_used() -> None:
    pool = filled(1.0, 2.0, memory_budget_bytes=10, size_of=lambda c: 10)
    assert pool.used_bytes() == 20


def test_pool_without_budget_never_culls_for_budget() -> None:
    assert filled(1.0).enforce_budget(used_bytes=10**12) == []


def test_invalid_budget_raises_memory_budget_error() -> None:
    with pytest.raises(MemoryBudgetError, match="memory_budget_bytes"):
        Pool(memory_budget_bytes=0)


def test_guard_returns_the_result_when_memory_suffices() -> None:
    assert filled(1.0).guard(lambda a, b: a + b, 2, 3) == 5


def test_guard_culls_and_retries_after_out_of_memory() -> None:
    pool = filled(*range(10))
    calls = []

    def step() -> int:
        calls.append(len(pool))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return len(pool)

    assert pool.guard(step) == 8
    assert calls == [10, 8]


def test_guard_raises_memory_budget_error_when_the_retry_fails() -> None:
    pool = filled(1.0, 2.0)

    def step() -> None:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(MemoryBudgetError, match="out of memory again"):
        pool.guard(step)
    assert len(pool) == 1


def test_guard_does_not_swallow_other_errors() -> None:
    pool = filled(1.0)

    def step() -> None:
        raise RuntimeError("not memory")

    with pytest.raises(RuntimeError, match="not memory"):
        pool.guard(step)
    assert len(pool) == 1
