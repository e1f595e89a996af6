"""Lifecycle: phases, the loss gate, births on the medium timescale, deaths on the slow one."""

from __future__ import annotations

import math

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel
from slime.train.config import FitnessConfig, LifecycleConfig
from slime.train.fitness import FitnessTracker
from slime.train.lifecycle import Lifecycle, LossGate, lifecycle_phase

LC = LifecycleConfig(warmup_steps=10, gentle_steps=20, medium_interval=5, slow_interval=10)


def _lifecycle(cfg: LifecycleConfig = LC, n_pods: int = 2, capacity: int = 4) -> Lifecycle:
    c = SlimeConfig(
        vocab_size=8,
        block_size=8,
        n_layer=2,
        n_embd=16,
        n_pods=n_pods,
        pod_capacity=capacity,
        head_dim=8,
        kernel_backend="torch",
    )
    model = SlimeModel(c, generator=torch.Generator().manual_seed(0))
    return Lifecycle(model, cfg, FitnessTracker(FitnessConfig()))


def _q_weight(genome: dict) -> torch.Tensor:
    """A stored genome's query projection, in either genome form (a pod dict or columns)."""
    return genome["params"]["q_weight"] if "params" in genome else genome["qkv_weight"][0]


def _probe() -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randint(0, 8, (4, 8), generator=torch.Generator().manual_seed(3))
    return idx, idx


@pytest.mark.parametrize(
    ("step", "phase"),
    [(0, "warmup"), (9, "warmup"), (10, "gentle"), (19, "gentle"), (20, "full"), (10**6, "full")],
)
def test_phase_follows_the_step(step: int, phase: str) -> None:
    assert lifecycle_phase(step, LC) == phase


def test_gate_closes_on_a_loss_spike_and_reopens_on_recovery() -> None:
    gate = LossGate(ratio=10.0, decay=0.9)
    for _ in range(20):
        gate.observe(1.0)
    assert not gate.check(9.9)
    assert gate.check(10.5)
    assert not gate.check(1.2)


def test_gate_closes_on_a_non_finite_loss() -> None:
    gate = LossGate(ratio=10.0, decay=0.9)
    gate.observe(1.0)
    assert gate.check(math.nan)


def test_gate_ema_ignores_non_finite_losses() -> None:
    gate = LossGate(ratio=10.0, decay=0.5)
    gate.observe(2.0)
    gate.observe(math.inf)
    assert gate.ema == 2.0


def test_no_births_during_warmup() -> None:
    life = _lifecycle()
    record = life.medium(5, 1.0, _probe())
    assert record["phase"] == "warmup" and record["births"] == 0
    assert life.pool_size() == 4


def test_gentle_phase_grows_each_layer_by_births_per_event() -> None:
    life = _lifecycle()
    record = life.medium(10, 1.0, _probe())
    assert record["births"] == 2
    assert [len(o.live_slots()) for o in life.model.organisms] == [3, 3]


def test_births_stop_at_the_pool_size_limit() -> None:
    life = _lifecycle(
        LifecycleConfig(warmup_steps=0, gentle_steps=20, max_pool_size=3, births_per_event=5)
    )
    life.medium(5, 1.0, _probe())
    assert [len(o.live_slots()) for o in life.model.organisms] == [3, 3]


def test_closed_gate_freezes_births() -> None:
    life = _lifecycle()
    for _ in range(10):
        life.gate.observe(1.0)
    record = life.medium(10, 50.0, _probe())
    assert record["frozen"] and record["births"] == 0


def test_medium_sets_every_pod_fitness_and_fills_the_archive() -> None:
    life = _lifecycle()
    life.medium(5, 1.0, _probe())
    for organism in life.model.organisms:
        assert len(organism.archive) >= 1
        assert {organism.pod(s).fitness for s in organism.live_slots()} != {0.0}
        assert max(e.objective for e in organism.archive) == organism.fitness.max().item()


def test_fitness_probes_run_in_the_given_autocast() -> None:
    """The trainer passes its training autocast: the masked probe forwards run in bf16 there."""
    life = _lifecycle()
    dtypes: list[torch.dtype] = []
    life.model.lm_head.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    life.autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    life.medium(5, 1.0, _probe())
    assert dtypes == [torch.bfloat16]  # one batched forward of the masked copies
    assert {o.pod(s).fitness for o in life.model.organisms for s in o.live_slots()} != {0.0}


def test_no_deaths_before_the_full_phase() -> None:
    life = _lifecycle(n_pods=4)
    life.medium(10, 1.0, _probe())
    assert life.slow(10)["deaths"] == 0


def test_full_phase_culls_the_least_fit_fraction() -> None:
    life = _lifecycle(LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=0.5), n_pods=4)
    life.medium(20, 1.0, _probe())
    organism = life.model.organisms[0]
    ranked = sorted(organism.live_slots(), key=lambda s: organism.pod(s).fitness)
    record = life.slow(20)
    assert record["deaths"] == 4
    assert organism.live_slots() == sorted(ranked[2:])


def test_refill_culled_fills_each_culled_slot_in_the_same_slow_event() -> None:
    cfg = LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=0.5, refill_culled=True)
    life = _lifecycle(cfg, n_pods=4)
    life.medium(20, 1.0, _probe())
    organism = life.model.organisms[0]
    ranked = sorted(organism.live_slots(), key=lambda s: organism.pod(s).fitness)
    record = life.slow(20)
    assert record["deaths"] == 4 and record["births"] == 4 and life.births == 4
    assert [len(o.live_slots()) for o in life.model.organisms] == [4, 4]
    newborn = [s for s in organism.live_slots() if int(organism.born_step[s]) == 20]
    assert sorted(newborn) == sorted(ranked[:2])  # the culled slots, born at the event
    off = _lifecycle(LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=0.5), n_pods=4)
    off.medium(20, 1.0, _probe())
    assert off.slow(20)["births"] == 0  # the default waits for the medium events' births
    assert [len(o.live_slots()) for o in off.model.organisms] == [2, 2]


def test_culling_keeps_min_pods() -> None:
    cfg = LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=1.0, min_pods=3)
    life = _lifecycle(cfg, n_pods=4)
    life.medium(20, 1.0, _probe())
    life.slow(20)
    assert [len(o.live_slots()) for o in life.model.organisms] == [3, 3]


def test_a_dying_elite_is_kept_in_the_archive() -> None:
    life = _lifecycle(LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=0.25), n_pods=4)
    life.medium(20, 1.0, _probe())
    organism = life.model.organisms[0]
    organism.archive.clear()  # only the death itself may now add elites
    victim = min(organism.live_slots(), key=lambda s: (organism.pod(s).fitness, s))
    weights = organism.pod(victim).q_weight.clone()
    life.slow(20)
    assert victim not in organism.live_slots()
    stored = [e.genome for e in organism.archive]
    assert len(stored) == 1
    assert torch.equal(_q_weight(stored[0]), weights)


def test_slow_reports_behavioural_analysis() -> None:
    life = _lifecycle(n_pods=4)
    life.medium(5, 1.0, _probe())
    record = life.slow(5)
    assert "kmo" in record or record["analysis"].startswith("undefined: ")
    head_dim = life.model.config.head_dim
    assert len(record["effective_rank"]) == len(life.model.organisms)
    assert all(1.0 <= rank <= head_dim + 1e-4 for rank in record["effective_rank"])


def test_newborns_younger_than_maturity_are_not_culled() -> None:
    cfg = LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=1.0, maturity_steps=50)
    life = _lifecycle(cfg, n_pods=2)
    life.medium(100, 1.0, _probe())  # one birth per layer at step 100
    newborns = {
        (layer, s)
        for layer, o in enumerate(life.model.organisms)
        for s in o.live_slots()
        if o.born_step[s] == 100
    }
    assert len(newborns) == 2
    assert all(o.born_step[s] == -1 for o in life.model.organisms for s in (0, 1))  # founders
    life.slow(120)  # the newborns are 20 steps old: only the founders may die
    live = {(layer, s) for layer, o in enumerate(life.model.organisms) for s in o.live_slots()}
    assert newborns <= live
    life.slow(150)  # now 50 steps old: mature
    live = {(layer, s) for layer, o in enumerate(life.model.organisms) for s in o.live_slots()}
    assert len(live) == 2  # min_pods per layer


def test_the_pool_limit_culls_the_least_fit_and_offers_them_to_the_archive() -> None:
    life = _lifecycle(LifecycleConfig(warmup_steps=0, gentle_steps=100, max_pool_size=2), n_pods=4)
    organism = life.model.organisms[0]
    with torch.no_grad():
        organism.fitness[:4] = torch.tensor([0.5, 0.1, 0.9, 0.3])
    organism.archive.clear()
    record = life.slow(5)  # gentle phase: no fitness cull, but the hard limit holds
    assert organism.live_slots() == [0, 2]
    assert record["deaths"] == 4 and life.deaths == 4  # both layers down to 2
    assert len(organism.archive) >= 1


def test_births_and_deaths_are_counted() -> None:
    life = _lifecycle(LifecycleConfig(warmup_steps=0, gentle_steps=0, cull_fraction=0.5), n_pods=2)
    life.medium(1, 1.0, _probe())
    assert life.births == 2
    life.slow(2)
    assert life.deaths == 2  # one of three per layer
    assert life.pool_size() == 4


def test_gate_ema_is_fed_on_the_device_and_read_at_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = LossGate(ratio=2.0, decay=0.5)
    gate.observe(torch.tensor(1.0))
    reads = []
    for name in ("tolist", "item", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _o=original, **k: reads.append(1) or _o(self, *a)
        )
    for loss in (3.0, math.nan, 1.0):
        gate.observe(torch.tensor(loss))
    assert reads == []
    monkeypatch.undo()
    assert gate.ema == pytest.approx(1.5)  # 1 -> 2 -> (NaN skipped) -> 1.5
    assert gate.check(torch.tensor(3.5)) and not gate.check(2.9)


def test_gate_state_round_trips() -> None:
    gate = LossGate(ratio=10.0, decay=0.9)
    assert gate.state_dict() == {"ema": None, "frozen": False}
    for loss in (1.0, 2.0, 0.7):
        gate.observe(loss)
    gate.check(100.0)
    other = LossGate(ratio=10.0, decay=0.9)
    other.load_state_dict(gate.state_dict())
    assert other.state_dict() == gate.state_dict() and other.frozen
    gate.observe(3.0)
    other.observe(3.0)
    assert other.ema == gate.ema


def test_counts_and_gate_survive_a_state_round_trip() -> None:
    life = _lifecycle(LifecycleConfig(warmup_steps=0, gentle_steps=20))
    life.gate.observe(torch.tensor(2.0))
    life.medium(7, 1.0, _probe())
    other = _lifecycle()
    other.load_state_dict(life.state_dict())
    assert (other.births, other.deaths, other.gate.ema) == (2, 0, 2.0)


def test_a_state_with_born_at_from_before_the_slot_table_sets_born_step() -> None:
    life = _lifecycle(n_pods=3)
    old = {
        "gate": {"ema": 1.5, "frozen": False},
        "births": 2,
        "deaths": 0,
        "born_at": [[0, 2, 7], [1, 2, 9]],
    }
    life.load_state_dict(old)
    assert [o.born_step.tolist() for o in life.model.organisms] == [
        [-1, -1, 7, -1],
        [-1, -1, 9, -1],
    ]
    assert life.births == 2 and life.gate.ema == 1.5


def test_a_medium_event_runs_its_probe_forward_through_the_given_compiler() -> None:
    import functools

    from torch._dynamo.testing import CompileCounterWithBackend

    plain = _lifecycle()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = _lifecycle()
    compiled.compiler = functools.partial(
        torch.compile, backend=counter, fullgraph=True, dynamic=False
    )
    torch._dynamo.reset()
    try:
        for step in (20, 25):  # full phase: births between the events
            a = plain.medium(step, 1.0, _probe())
            b = compiled.medium(step, 1.0, _probe())
            numbers = [k for k, v in a.items() if isinstance(v, float)]
            assert {k: v for k, v in a.items() if k not in numbers} == {
                k: v for k, v in b.items() if k not in numbers
            }
            assert [a[k] for k in numbers] == pytest.approx([b[k] for k in numbers], abs=1e-5)
    finally:
        torch._dynamo.reset()
    assert counter.frame_count == 2  # the probe and the measurement, each kept across births
    assert compiled.births == plain.births > 0


@pytest.mark.parametrize(
    ("compile", "device", "sharded", "compiles"),
    [
        (True, "cuda", False, True),
        (False, "cuda", False, False),
        (True, "cpu", False, False),
        (True, "cuda", True, False),
    ],
)
def test_the_probe_is_compiled_only_with_a_compiled_step_on_a_gpu(
    compile, device, sharded, compiles
):
    from slime.train.config import TrainConfig
    from slime.train.lifecycle import probe_compiler

    train = TrainConfig(compile=compile)
    assert (probe_compiler(train, torch.device(device), sharded=sharded) is not None) == compiles


def test_a_probe_compiler_that_fails_is_dropped_with_a_warning_and_the_event_runs_eagerly() -> None:
    def failing(fn):
        def run(*args, **kwargs):
            raise torch._dynamo.exc.InternalTorchDynamoError("boom")

        return run

    plain, broken = _lifecycle(), _lifecycle()
    broken.compiler = failing
    with pytest.warns(RuntimeWarning, match="compiled fitness probe failed"):
        record = broken.medium(20, 1.0, _probe())
    assert broken.compiler is None
    assert record["births"] == plain.medium(20, 1.0, _probe())["births"]
