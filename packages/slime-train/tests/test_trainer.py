"""The trainer: timescales, phases, optimizer/pool sync, stability policies, run directory, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from slime.core import SlimeModel
from slime.proto import ConfigError
from slime.train.baseline import GPT
from slime.train.build import build_dataset
from slime.train.checkpoint import capture_rng, save_checkpoint
from slime.train.config import RunConfig
from slime.train.loader import load_config
from slime.train.rundir import RunDir
from slime.train.trainer import Trainer


def _config(**sections: dict) -> RunConfig:
    return load_config("tiny").replace(**sections)


def _trainer(tmp_path: Path | None = None, **sections: dict) -> Trainer:
    cfg = _config(**sections)
    run = RunDir(tmp_path) if tmp_path is not None else None
    return Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size), run_dir=run)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact equality in which NaN equals NaN (empty tube entries hold NaN)."""
    if not a.is_floating_point():
        return torch.equal(a, b)
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def _records(tmp_path: Path, kind: str) -> list[dict]:
    return [r for r in RunDir(tmp_path).read_metrics() if r["kind"] == kind]


def test_slime_learns_the_recall_task() -> None:
    trainer = _trainer(train={"steps": 40, "lr": 1e-2})
    before = trainer.evaluate()["val_loss"]
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert summary["val_loss"] < before - 0.1


def test_the_same_loop_trains_the_baseline_without_a_lifecycle(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, model={"kind": "baseline"})
    assert isinstance(trainer.model, GPT) and trainer.lifecycle is None
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert not _records(tmp_path, "medium") and "pool_size" not in summary


def test_medium_and_slow_work_run_on_their_intervals(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    assert [r["step"] for r in _records(tmp_path, "medium")] == [3, 6, 9, 12]
    assert [r["step"] for r in _records(tmp_path, "slow")] == [6, 12]


def test_births_wait_for_the_gentle_phase_and_deaths_for_the_full_phase(tmp_path: Path) -> None:
    _trainer(tmp_path, lifecycle={"cull_fraction": 0.5}).fit()
    medium = {r["step"]: r for r in _records(tmp_path, "medium")}
    slow = {r["step"]: r for r in _records(tmp_path, "slow")}
    assert medium[3]["births"] == 1 and medium[3]["phase"] == "gentle"  # warmup_steps=3
    assert slow[6]["phase"] == "full" and slow[6]["deaths"] >= 1  # gentle_steps=6


def test_optimizer_groups_stay_those_of_construction_through_births_and_deaths() -> None:
    trainer = _trainer(lifecycle={"cull_fraction": 0.5})
    groups = [[id(p) for p in g["params"]] for g in trainer.optimizer.param_groups]
    trainer.fit()
    assert trainer.lifecycle.births > 0 and trainer.lifecycle.deaths > 0
    assert [[id(p) for p in g["params"]] for g in trainer.optimizer.param_groups] == groups
    assert {id(p) for p in trainer.optimizer.params()} == {
        id(p) for p in trainer.model.parameters()
    }


def _poison(trainer: Trainer, at_step: int) -> None:
    """Make the forward of step ``at_step`` return a NaN loss."""
    forward = trainer.model.forward

    def poisoned(idx, targets=None, **masks):
        logits, loss = forward(idx, targets, **masks)
        if targets is None or trainer.step + 1 != at_step:
            return logits, loss
        return logits, loss * math.nan

    trainer.model.forward = poisoned


def _optimizer_state(trainer: Trainer) -> list[torch.Tensor]:
    return [v.clone() for s in trainer.optimizer.optimizer.state.values() for v in s.values()]


def test_a_non_finite_step_changes_no_weight_moment_or_step_count() -> None:
    trainer = _trainer(train={"nonfinite": "skip"})
    trainer.fit(steps=2)
    _poison(trainer, at_step=3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    state = _optimizer_state(trainer)
    fitness = trainer.fitness.ema.clone()
    loss, grad_norm = trainer.train_step()
    assert loss.dim() == 0 and math.isnan(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(state, _optimizer_state(trainer)))
    assert torch.equal(trainer.fitness.ema, fitness)
    trainer.step += 1
    trainer.train_step()  # the next, finite step trains again
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_skip_policy_counts_logs_and_continues(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, train={"nonfinite": "skip"})
    _poison(trainer, at_step=5)
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert summary["nonfinite_steps"] == 1
    (record,) = _records(tmp_path, "nonfinite")
    assert record["step"] == 6 and record["steps"] == [5] and record["count"] == 1  # read at 6
    train = {r["step"]: r for r in _records(tmp_path, "train")}
    assert math.isfinite(train[6]["loss"])  # the window's mean leaves the bad step out
    assert math.isfinite(summary["last_train_loss"])


def test_too_many_skipped_steps_stop_the_run() -> None:
    trainer = _trainer(train={"nonfinite": "skip", "max_nonfinite": 1})
    forward = trainer.model.forward
    trainer.model.forward = lambda idx, targets=None: (lambda out: (out[0], out[1] * math.nan))(
        forward(idx, targets)
    )
    summary = trainer.fit()
    assert summary["status"].startswith("stopped: 3 non-finite steps, over train.max_nonfinite")
    assert summary["steps"] == 3  # the first read, at the first log interval
    assert summary["nonfinite_steps"] == 3


def test_stop_policy_ends_the_run_at_the_next_read_with_a_clear_status() -> None:
    trainer = _trainer(train={"nonfinite": "stop"})
    _poison(trainer, at_step=5)
    summary = trainer.fit()
    assert summary["status"] == "stopped: non-finite loss or gradient at step 5"
    assert summary["steps"] == 6  # log_interval 3: read at step 6
    assert summary["nonfinite_steps"] == 1


class _HostReads:
    """Records every device-to-host read made through a tensor method or ``torch.nonzero`` (on
    the CPU they cost nothing, on CUDA each one waits for the device): ``in_steps`` counts those
    made inside ``train_step``, ``steps`` the trainer's step at the others."""

    NAMES = ("tolist", "item", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, trainer: Trainer) -> None:
        self.steps: list[int] = []
        self.in_steps = 0
        self._stepping = False
        for name in self.NAMES:
            monkeypatch.setattr(
                torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), trainer)
            )
        monkeypatch.setattr(torch, "nonzero", self._wrap(torch.nonzero, trainer))
        train_step = trainer.train_step

        def stepping():
            self._stepping = True
            try:
                return train_step()
            finally:
                self._stepping = False

        monkeypatch.setattr(trainer, "train_step", stepping)

    def _wrap(self, original, trainer: Trainer):
        def read(*args, **kwargs):
            if self._stepping:
                self.in_steps += 1
            else:
                self.steps.append(trainer.step)
            return original(*args, **kwargs)

        return read


def test_steps_between_events_never_read_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(
        train={"steps": 20, "log_interval": 5, "eval_interval": 10},
        lifecycle={"medium_interval": 5, "slow_interval": 10, "cull_fraction": 0.5},
    )
    trainer.fit(steps=1)  # first-call work (lazy optimizer state) out of the way
    reads = _HostReads(monkeypatch, trainer)
    trainer.fit()
    assert trainer.lifecycle.births > 0 and trainer.lifecycle.deaths > 0
    assert reads.in_steps == 0
    assert reads.steps, "the reads at events must be seen"
    assert sorted({s for s in reads.steps if s % 5}) == []


def test_a_baseline_step_never_reads_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(model={"kind": "baseline"}, train={"steps": 8, "log_interval": 4})
    trainer.fit(steps=1)
    reads = _HostReads(monkeypatch, trainer)
    trainer.fit(steps=3)
    assert reads.in_steps == 0 and set(reads.steps) == {3}  # the final read and evaluation


def test_compiled_forward_trains_without_recompiling_across_births_and_deaths() -> None:
    """``train.compile``: the forward is one graph, and births and deaths do not recompile it
    (~20 s on 2 CPU cores with a cold inductor cache)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    trainer = _trainer(train={"compile": True, "steps": 12}, lifecycle={"cull_fraction": 0.5})
    before = trainer.evaluate()["val_loss"]
    trainer.fit(steps=2)  # compiles
    assert counters["stats"]["unique_graphs"] - graphs == 1
    with torch._dynamo.config.patch(error_on_recompile=True):
        summary = trainer.fit()
    assert counters["stats"]["unique_graphs"] - graphs == 1
    assert summary["status"] == "completed"
    assert trainer.lifecycle.births > 0 and trainer.lifecycle.deaths > 0
    assert summary["val_loss"] < before
    assert trainer.metrics.flush()["forwards"] >= 12  # timed from outside the compiled graph


def test_run_directory_holds_config_metrics_plots_summary_and_checkpoints(tmp_path: Path) -> None:
    _trainer(tmp_path).fit()
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "loss.png", "pool.png"} <= names
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000006",
        "step_00000012",
    ]


def test_time_budget_stops_the_run_with_a_final_eval_and_checkpoint(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, train={"steps": 10_000})
    summary = trainer.fit(max_seconds=0.0)
    assert summary["steps"] == 0 and summary["status"] == "completed"
    assert "val_loss" in summary
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000000"]


def test_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path: Path) -> None:
    sections = {"lifecycle": {"cull_fraction": 0.5}, "model": {"dropout": 0.1}}
    whole = _trainer(tmp_path / "whole", **sections)
    whole.fit()
    part = _trainer(tmp_path / "part", **sections)
    part.fit(steps=6)  # checkpoint at 6, then "crash"
    cfg = _config(**sections)
    resumed = Trainer.resume(
        RunDir(tmp_path / "part"), build_dataset(cfg.data, cfg.model.block_size), cfg
    )
    assert resumed.step == 6
    resumed.fit()
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(same(a[k], b[k]) for k in a), [k for k in a if not same(a[k], b[k])]


def test_slo_reports_use_core_slo_machinery() -> None:
    trainer = _trainer(slo={"max_forward_ms": 1e6, "max_peak_memory_mb": 1e-3})
    summary = trainer.fit()
    reports = {r["name"]: r for r in summary["slo"]}
    assert reports["forward_latency"]["met"] is True
    assert reports["peak_memory"]["met"] is False


def test_model_is_a_slime_model_by_default() -> None:
    assert isinstance(_trainer().model, SlimeModel)


def test_an_injected_lr_schedule_replaces_the_configured_one() -> None:
    cfg = _config(lifecycle={"enabled": False})
    seen: list[int] = []
    trainer = Trainer(
        cfg,
        build_dataset(cfg.data, cfg.model.block_size),
        lr_schedule=lambda step: seen.append(step) or 0.0,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit(steps=3)
    assert seen == [1, 2, 3]
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_a_loss_spike_freezes_the_lifecycle_until_the_loss_recovers(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    forward = trainer.model.forward

    def spiking(idx, targets=None, **masks):
        logits, loss = forward(idx, targets, **masks)
        return (logits, loss * 1000.0) if trainer.step + 1 == 9 else (logits, loss)

    trainer.model.forward = spiking
    trainer.fit()
    medium = {r["step"]: r for r in _records(tmp_path, "medium")}
    assert medium[9]["frozen"] and medium[9]["births"] == 0
    assert not medium[12]["frozen"] and medium[12]["births"] > 0


def test_a_slime_run_exports_its_final_model_for_slime_tools(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, lifecycle={"cull_fraction": 0.5})
    trainer.fit()
    loaded = SlimeModel.from_pretrained(tmp_path / "model")
    idx, _ = trainer.dataset.batch("val", 2, torch.Generator().manual_seed(0))
    trainer.model.eval()
    loaded.eval()
    with torch.no_grad():
        expected, _ = trainer.model(idx)
        got, _ = loaded(idx)
    assert torch.equal(got, expected)
    assert [o.live_slots() for o in loaded.organisms] == [
        o.live_slots() for o in trainer.model.organisms
    ]
    assert not (tmp_path / "model.partial").exists()


def test_a_baseline_run_has_no_slime_model_export(tmp_path: Path) -> None:
    _trainer(tmp_path, model={"kind": "baseline"}).fit()
    assert not (tmp_path / "model").exists()


def test_a_step_after_evaluation_or_a_probe_trains_every_module() -> None:
    trainer = _trainer()
    trainer.evaluate()
    trainer.model.measure_behaviour(trainer.probe[0])
    trainer.model.eval()  # as a caller's own probe might leave it
    trainer.train_step()
    assert all(m.training for m in trainer.model.modules())


def _per_pod_checkpoint(trainer: Trainer) -> dict:
    """``trainer``'s state as a checkpoint written before the slot table: per-pod model tensors,
    a ``pod_fitness`` list, per-pod optimizer tensors (later pods in groups of their own), the
    fitness averages by pod key and the lifecycle's ``born_at``."""
    model, opt = trainer.model, trainer.optimizer.optimizer
    (organism,) = model.organisms
    live, prefix = organism.live_slots(), "blocks.0.attn."
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("qkv_weight", "o_weight", "alive", "fitness", "descriptors", "n_measurements"):
        del tensors[prefix + name]
    for name in [k for k in tensors if k.startswith(prefix + "tube_")]:
        del tensors[name]  # the tubes were not part of a checkpoint then
    for name in ("correlation", "born_step"):
        del tensors[prefix + name]
    moments: dict[str, dict] = {}
    qkv, out = opt.state[organism.qkv_weight], opt.state[organism.o_weight]
    for slot in live:
        pod = f"{prefix}pods.{slot}."
        for i, p in enumerate("qkv"):
            tensors[pod + f"{p}_weight"] = organism.qkv_weight.detach()[i, slot].clone()
            moments[pod + f"{p}_weight"] = {
                "step": qkv["step"].clone(),
                "exp_avg": qkv["exp_avg"][i, slot].clone(),
                "exp_avg_sq": qkv["exp_avg_sq"][i, slot].clone(),
            }
        tensors[pod + "o_weight"] = organism.o_weight.detach()[:, slot].clone()
        moments[pod + "o_weight"] = {
            "step": out["step"].clone(),
            "exp_avg": out["exp_avg"][:, slot].clone(),
            "exp_avg_sq": out["exp_avg_sq"][:, slot].clone(),
        }
        tensors[pod + "descriptors"] = organism.descriptors[slot].clone()
        tensors[pod + "n_measurements"] = organism.n_measurements[slot].clone()
        tensors[pod + "_correlation"] = organism.correlation[slot].clone()
    stacked = {id(organism.qkv_weight), id(organism.o_weight)}
    shared = [(n, p) for n, p in model.named_parameters() if id(p) not in stacked]
    founders = [s for s in live if organism.born_step[s] == -1]
    pods = lambda slots: [n for n in moments if int(n.split(".")[4]) in slots]  # noqa: E731
    groups = [[n for n, p in shared if p.dim() >= 2] + pods(founders)]
    groups += [[n for n, p in shared if p.dim() < 2]]
    groups += [pods([s]) for s in live if s not in founders]
    by_name = {n: dict(opt.state[p]) for n, p in shared} | moments
    flat = [n for g in groups for n in g]
    hyper = {k: v for k, v in opt.param_groups[0].items() if k != "params"} | {"fused": None}
    ema = trainer.fitness.ema[:, 0, live]
    return {
        "model": tensors,
        "pod_fitness": [[0, s, organism.pod(s).fitness] for s in live],
        "optimizer": {
            "groups": groups,
            "adamw": {
                "state": {i: by_name[n] for i, n in enumerate(flat)},
                "param_groups": [{**hyper, "params": [flat.index(n) for n in g]} for g in groups],
            },
        },
        "rng": capture_rng(),
        "data_rng": trainer.data_gen.get_state(),
        "model_rng": trainer.model_gen.get_state(),
        "fitness": {"keys": [[0, s] for s in live], "ema": ema.clone()},
        "lifecycle": {
            "gate": trainer.lifecycle.gate.state_dict(),
            "births": trainer.lifecycle.births,
            "deaths": trainer.lifecycle.deaths,
            "born_at": [[0, s, int(organism.born_step[s])] for s in live if s not in founders],
        },
        "trainer": {"tokens_seen": trainer.tokens_seen, "nonfinite": 0, "last_loss": 1.5},
    }


def test_a_checkpoint_from_before_the_slot_table_resumes(tmp_path: Path) -> None:
    sections = {"lifecycle": {"cull_fraction": 0.5, "maturity_steps": 4}, "train": {"steps": 18}}
    source = _trainer(**sections)
    source.fit(steps=10)  # births at 3, 6 and 9; the founders die at 6
    organism = source.model.organisms[0]
    assert source.lifecycle.deaths > 0
    assert sum(int(organism.born_step[s]) > 0 for s in organism.live_slots()) >= 2
    with torch.no_grad():
        organism.fitness[organism.alive] = torch.linspace(0.1, 0.9, int(organism.alive.sum()))
    old = _per_pod_checkpoint(source)
    writers = {"archive_0": organism.archive.save}
    save_checkpoint(tmp_path, 10, old, writers=writers)

    cfg = _config(**sections)
    resumed = Trainer.resume(RunDir(tmp_path), build_dataset(cfg.data, cfg.model.block_size), cfg)
    (mine,) = resumed.model.organisms
    assert resumed.step == 10 and mine.live_slots() == organism.live_slots()
    for name, p in source.model.named_parameters():
        assert torch.equal(p, dict(resumed.model.named_parameters())[name]), name
    for name in ("fitness", "born_step", "descriptors", "n_measurements", "correlation"):
        assert torch.equal(getattr(mine, name), getattr(organism, name)), name
    for p, q in zip(source.optimizer.params(), resumed.optimizer.params()):
        a, b = source.optimizer.optimizer.state[p], resumed.optimizer.optimizer.state[q]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    live = [(0, s) for s in organism.live_slots()]
    assert resumed.fitness.averages(live) == source.fitness.averages(live)
    assert resumed.last_loss == 1.5
    assert resumed.fit()["status"] == "completed"


def test_only_the_steps_before_a_medium_event_feed_the_tubes_and_gradient_stats() -> None:
    trainer = _trainer(
        train={"steps": 10},
        lifecycle={"medium_interval": 5, "observe_steps": 2, "slow_interval": 10},
    )
    organism = trainer.model.organisms[0]
    fed, observed = [], []
    for _ in range(10):
        pos = int(organism.tube_pos)
        ema = None if trainer.fitness.ema is None else trainer.fitness.ema.clone()
        trainer.train_step()
        trainer.step += 1
        fed.append(int(organism.tube_pos) != pos)
        observed.append(ema is None or not same(ema, trainer.fitness.ema))
    expected = [step % 5 in (4, 0) for step in range(1, 11)]  # steps 4, 5, 9, 10
    assert fed == expected and observed == expected


def test_a_compiled_forward_keeps_one_graph_for_observed_and_one_for_other_steps() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    trainer = _trainer(
        train={"compile": True, "steps": 12},
        lifecycle={"medium_interval": 4, "observe_steps": 2, "slow_interval": 8},
    )
    trainer.fit(steps=4)  # steps 1-2 unobserved, 3-4 observed: both graphs compiled
    assert counters["stats"]["unique_graphs"] - graphs == 2
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert trainer.fit()["status"] == "completed"
    assert counters["stats"]["unique_graphs"] - graphs == 2
    torch._dynamo.reset()


def test_a_vocabulary_smaller_than_the_datas_is_refused_before_training() -> None:
    with pytest.raises(ConfigError, match=r"model\.vocab_size: expected at least the data's"):
        _trainer(model={"vocab_size": 2})


def test_a_model_too_large_for_the_machine_is_refused_before_allocating() -> None:
    huge = {"n_embd": 16384, "n_layer": 64, "n_pods": 64, "pod_capacity": 64, "head_dim": 256}
    with pytest.raises(ConfigError, match=r"model: a training step needs at least ~\d+"):
        _trainer(model=huge, train={"device": "cpu"})


def test_the_memory_estimate_counts_the_parameters_exactly() -> None:
    from slime.train.build import build_model, training_bytes

    cfg = _config()
    for kind in ("slime", "baseline"):
        model_cfg = type(cfg.model)(**{**cfg.model.to_dict(), "kind": kind})
        model = build_model(model_cfg, 16, device=torch.device("cpu"), generator=torch.Generator())
        params = sum(p.numel() for p in model.parameters())
        tokens = cfg.train.batch_size * model_cfg.block_size
        width, layers = model_cfg.n_embd, model_cfg.n_layer
        activations = 34 * tokens * width * layers + 8 * tokens * 16
        assert training_bytes(model_cfg, 16, cfg.train.batch_size) == 16 * params + activations


def test_steps_take_the_data_generators_batches_in_order_with_one_drawn_ahead() -> None:
    """Each step draws the next batch after queueing its own work; the batches are still exactly
    the generator's sequence, and the saved data state re-draws the batch drawn ahead."""
    trainer = _trainer()
    cfg = trainer.cfg
    taken: list[torch.Tensor] = []
    forward = trainer._forward
    trainer._forward = lambda idx, targets: (taken.append(idx.clone()), forward(idx, targets))[1]
    for _ in range(3):
        trainer.train_step()
    gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    expected = [trainer.dataset.batch("train", cfg.train.batch_size, gen)[0] for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(taken, expected[:3], strict=True))
    ahead = torch.Generator()
    ahead.set_state(trainer._data_state())
    assert torch.equal(trainer.dataset.batch("train", cfg.train.batch_size, ahead)[0], expected[3])


@pytest.mark.parametrize("kind", ["slime", "baseline"])
def test_best_holds_the_model_of_the_lowest_held_out_loss_across_a_resume(
    tmp_path: Path, kind: str
) -> None:
    from slime.train.checkpoint import load_checkpoint

    sections = {"model": {"kind": kind}, "train": {"eval_interval": 2, "steps": 8}}
    part = _trainer(tmp_path, **sections)
    part.fit(steps=4)
    cfg = _config(**sections)
    resumed = Trainer.resume(RunDir(tmp_path), build_dataset(cfg.data, cfg.model.block_size), cfg)
    assert part.best is not None and resumed.best == part.best  # carried by the checkpoint
    summary = resumed.fit()
    evals = {r["step"]: r["val_loss"] for r in _records(tmp_path, "eval")}
    best_step = min(evals, key=evals.get)
    assert (summary["best_step"], summary["best_val"]) == (best_step, evals[best_step])
    best = tmp_path / "best"
    if kind == "slime":
        assert json.loads((best / "run.json").read_text()) == {
            "step": best_step,
            "val_loss": evals[best_step],
        }
        weights = SlimeModel.from_pretrained(best).state_dict()
    else:
        state = load_checkpoint(best)
        assert (state["step"], state["val_loss"]) == (best_step, evals[best_step])
        weights = state["model"]
    if best_step == 8:  # the best is the final model: the same weights
        final = resumed.model.state_dict()
        assert all(same(weights[k].cpu(), final[k].cpu()) for k in weights if k in final)
    assert not any(p.name.endswith((".tmp", ".old", ".partial")) for p in tmp_path.iterdir())


def test_the_target_loss_is_timed_when_first_reached_and_reported_when_never(
    tmp_path: Path,
) -> None:
    easy = _trainer(tmp_path / "easy", train={"eval_interval": 2, "target_loss": 1e6})
    summary = easy.fit()
    assert summary["target_reached"] and summary["target_step"] == 2
    assert (
        0 < summary["target_time_s"] <= summary["best_time_s"] + 1e-9 or summary["best_step"] == 2
    )
    assert [r["step"] for r in _records(tmp_path / "easy", "target")] == [2]
    hard = _trainer(tmp_path / "hard", train={"eval_interval": 2, "target_loss": 1e-9})
    summary = hard.fit()
    assert summary["target_reached"] is False and summary["target_step"] is None
    assert _records(tmp_path / "hard", "target") == []
    evals = _records(tmp_path / "hard", "eval")
    assert all(
        r["best_val"] == min(e["val_loss"] for e in evals[: i + 1]) for i, r in enumerate(evals)
    )
    assert [r["time_s"] for r in evals] == sorted(r["time_s"] for r in evals)


def test_patience_stops_a_run_whose_held_out_loss_stopped_improving(tmp_path: Path) -> None:
    from slime.train import cli

    train = {"eval_interval": 1, "steps": 40, "patience": 1}
    trainer = _trainer(tmp_path, train=train, lifecycle={"enabled": False})
    trainer.lr_schedule = lambda step: 0.0  # the weights never move: no evaluation beats the first
    summary = trainer.fit()
    assert summary["status"] == "early_stopped" and summary["steps"] == 2
    assert summary["stopped_after_evals_without_improvement"] == 1
    assert (tmp_path / "checkpoints" / "step_00000002").is_dir()  # the stop is checkpointed
    argv = ["train", "--config", "tiny", "--out", str(tmp_path / "cli"), "--quiet"]
    argv += ["train.eval_interval=1", "train.patience=1", "train.lr=1e-30", "train.min_lr=0"]
    argv += ["lifecycle.enabled=false"]
    assert cli.main(argv) == 0  # an early stop is a success
    (run,) = (tmp_path / "cli").iterdir()
    assert json.loads((run / "summary.json").read_text())["status"] == "early_stopped"


def test_a_patience_running_out_at_the_last_step_leaves_the_run_completed(tmp_path: Path) -> None:
    train = {"eval_interval": 2, "steps": 4, "patience": 1}
    trainer = _trainer(tmp_path, train=train, lifecycle={"enabled": False})
    trainer.lr_schedule = lambda step: 0.0  # the evaluation at step 4 cannot beat step 2's
    summary = trainer.fit()
    assert summary["steps"] == 4 and summary["status"] == "completed"
    assert "stopped_after_evals_without_improvement" not in summary


def test_run_time_and_the_stale_count_carry_across_a_resume(tmp_path: Path) -> None:
    sections = {"train": {"eval_interval": 2, "steps": 8, "target_loss": 1e6}}
    part = _trainer(tmp_path, **sections)
    part.fit(steps=4)
    cfg = _config(**sections)
    resumed = Trainer.resume(RunDir(tmp_path), build_dataset(cfg.data, cfg.model.block_size), cfg)
    assert resumed.target == part.target and 0 < resumed._seconds <= part._clock()
    assert resumed._stale_evals == part._stale_evals
    summary = resumed.fit()
    times = [r["time_s"] for r in _records(tmp_path, "eval")]
    assert times == sorted(times) and summary["target_step"] == 2
