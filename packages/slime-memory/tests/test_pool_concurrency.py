"""Pool invariants under concurrent threads and under arbitrary operation sequences."""

from __future__ import annotations

import sys
import threading
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from slime.memory import Pool
from slime.proto import PoolError


class Unit:
    def __init__(self, fitness: float) -> None:
        self._fitness = fitness

    @property
    def fitness(self) -> float:
        return self._fitness

    def reset(self) -> None:
        self._fitness = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"fitness": self._fitness}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Unit:
        return cls(data["fitness"])


def test_concurrent_spawn_cull_and_iterate_keep_invariants() -> None:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke races
    try:
        _run_threads()
    finally:
        sys.setswitchinterval(interval)


def _run_threads() -> None:
    pool = Pool(capacity=16)
    errors: list[BaseException] = []
    violations: list[str] = []
    start = threading.Barrier(6)

    def spawner(seed: int) -> None:
        start.wait()
        for i in range(300):
            try:
                pool.spawn(Unit(float((seed * 7919 + i * 104729) % 1000)))
            except PoolError:
                pass  # full: expected under contention
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    def culler() -> None:
        start.wait()
        for _ in range(200):
            try:
                culled = pool.cull_worst(0.25)
                if any(not isinstance(c, Unit) for c in culled):
                    violations.append("culled a non-Unit")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

    def reader() -> None:
        start.wait()
        for _ in range(300):
            try:
                ranked = pool.by_fitness()
                fitness = [c.fitness for _, c in ranked]
                if fitness != sorted(fitness, reverse=True):
                    violations.append("by_fitness out of order")
                if len(list(pool)) > pool.capacity:
                    violations.append("snapshot over capacity")
                if pool.births - pool.deaths > pool.capacity:
                    violations.append("births - deaths over capacity")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

    threads = [threading.Thread(target=spawner, args=(s,)) for s in range(3)]
    threads += [threading.Thread(target=culler), threading.Thread(target=reader)]
    threads += [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert violations == []
    assert pool.births - pool.deaths == len(pool) <= pool.capacity
    assert len({id(c) for c in pool}) == len(pool)


class PoolMachine(RuleBasedStateMachine):
    """Model-based test: the pool against a plain dict of member id -> fitness."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = Pool(capacity=8)
        self.model: dict[int, float] = {}
        self.ages: dict[int, int] = {}

    @rule(fitness=st.floats(-10, 10, allow_nan=False))
    def spawn(self, fitness: float) -> None:
        if len(self.model) >= 8:
            try:
                self.pool.spawn(Unit(fitness))
            except PoolError:
                return
            raise AssertionError("spawn into a full pool succeeded")
        member = self.pool.spawn(Unit(fitness))
        assert member not in self.model
        self.model[member] = fitness
        self.ages[member] = 0

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        member = data.draw(st.sampled_from(sorted(self.model)))
        assert self.pool.remove(member).fitness == self.model.pop(member)
        del self.ages[member]

    @rule(fraction=st.floats(0.01, 1.0))
    def cull(self, fraction: float) -> None:
        before = len(self.model)
        culled = self.pool.cull_worst(fraction)
        worst = sorted(self.model.items(), key=lambda kv: (kv[1], kv[0]))[: len(culled)]
        assert [c.fitness for c in culled] == [f for _, f in worst]
        for member, _ in worst:
            del self.model[member]
            del self.ages[member]
        assert (len(culled) >= 1) == (before >= 1)

    @rule(steps=st.integers(0, 3))
    def tick(self, steps: int) -> None:
        self.pool.tick(steps)
        for member in self.ages:
            self.ages[member] += steps

    @invariant()
    def size_within_capacity(self) -> None:
        assert len(self.pool) <= self.pool.capacity

    @invariant()
    def births_minus_deaths_is_size(self) -> None:
        assert self.pool.births - self.pool.deaths == len(self.pool) == len(self.model)

    @invariant()
    def ages_match(self) -> None:
        assert {m: self.pool.age(m) for m in self.model} == self.ages


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
