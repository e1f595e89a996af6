"""Runs the arms through the task streams, with the fresh-model references, seed by seed.

Each run is one :class:`~slime.train.trainer.Trainer` (the shipped training loop, lifecycle
included) trained through the whole stream: :class:`StreamData` is the dataset it samples from,
switched to the next task every ``steps_per_task`` steps, without telling the model. ``fit`` runs in
chunks of ``event_interval`` steps; between chunks the GPT arms' reset rules act (and slime's
lifecycle acts inside ``fit``, at the same cadence). Each task is evaluated on fixed held-out batches
before its first step and after its last.

A run's record keeps its per-task numbers; plasticity and forgetting are computed from them and
the references by :mod:`slime.train.continual.analysis`, so parts run apart can be merged.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch
from slime.proto import ConfigError, DataError
from slime.train.ablations.one_run import HELDOUT_SEED, SEED_BASE
from slime.train.ablations.probes import heldout_batches, heldout_eval
from slime.train.ablations.runner import default_data_dir
from slime.train.ablations.variants import Starved
from slime.train.build import build_model, resolve_device
from slime.train.continual.arms import DEFAULT_ARMS, ContinualArm, arm
from slime.train.continual.metrics import head_health
from slime.train.continual.profiles import ContinualProfile
from slime.train.continual.resets import (
    ContinualBackprop,
    head_stats,
    random_heads,
    redo_dormant,
    reset_heads,
    shrink_perturb,
)
from slime.train.continual.streams import Stream, build_stream
from slime.train.profile import live_parameter_count
from slime.train.trainer import Trainer

__all__ = [
    "ContinualTrainer",
    "StreamData",
    "check_equal_params",
    "expected_schedule",
    "run_arm",
    "run_continual",
    "run_reference",
]


class StreamData:
    """The :class:`~slime.train.datasets.Dataset` a continual run samples from: the stream's task
    number ``current`` (set by the runner; the model is never told)."""

    def __init__(self, stream: Stream, current: int = 0) -> None:
        self.stream, self.current = stream, current
        self.vocab_size, self.block_size = stream.vocab_size, stream.block_size

    def batch(self, split: str, batch_size: int, generator: torch.Generator):
        return self.stream.tasks[self.current].batch(split, batch_size, generator)


class ContinualTrainer(Trainer):
    """A Trainer whose own periodic evaluation is off: the runner evaluates each task itself on
    fixed held-out batches, at the task's start and end."""

    def evaluate(self) -> dict[str, float]:
        return {}


def _config(profile: ContinualProfile, arm_: ContinualArm, seed: int, steps: int | None = None):
    decay = profile.static_weight_decay if arm_.static_decay else profile.weight_decay
    return profile.run_config(
        kind=arm_.kind, seed=seed, weight_decay=decay, lifecycle=arm_.kind == "slime", steps=steps
    )


def check_equal_params(
    profile: ContinualProfile, arms: list[str], vocab_size: int, device: torch.device
) -> dict[str, int]:
    """Live parameter counts of every arm's model at initialisation.

    Raises:
        ConfigError: two arms differ (the comparison would not be parameter-matched).
    """
    counts = {}
    for name in arms:
        cfg = _config(profile, arm(name), SEED_BASE)
        model = build_model(cfg.model, vocab_size, device=device, generator=torch.Generator())
        counts[name] = live_parameter_count(model)
    if len(set(counts.values())) > 1:
        raise ConfigError(f"arms differ in parameters at initialisation: {counts}", "model")
    return counts


def expected_schedule(profile: ContinualProfile) -> list[list[int]]:
    """``[[step, layer, n], ...]``: the deaths slime's config implies when every cull happens (each
    slow event after the first task, ``floor(cull_fraction * n_pods)`` per layer). Used by the
    random-reset arm only when no slime run of the same stream and seed is at hand."""
    n = int(profile.cull_fraction * profile.model["n_pods"])
    n = min(n, profile.model["n_pods"] - 1)
    slow = profile.slow_tasks * profile.steps_per_task
    # culls happen at slow events from the end of the first task (the warmup) on
    steps = range(slow, profile.total_steps + 1, slow)
    return [[s, layer, n] for s in steps for layer in range(profile.model["n_layer"]) if n > 0]


def _probe(task, batch_size: int, seed: int, device: torch.device):
    gen = torch.Generator().manual_seed(seed)
    return tuple(t.to(device) for t in task.batch("train", batch_size, gen))


def run_reference(
    profile: ContinualProfile,
    stream: Stream,
    task_index: int,
    seed: int,
    heldout,
    device: torch.device,
) -> float:
    """Held-out loss of a freshly initialised GPT (``gpt_nowd``'s recipe, same seed) after
    ``steps_per_task`` steps on task ``task_index`` alone."""
    gc.collect()
    data = StreamData(stream, task_index)
    cfg = _config(profile, arm("gpt_nowd"), seed)
    trainer = ContinualTrainer(cfg, data, device=device)
    trainer.fit(steps=profile.steps_per_task)
    return heldout_eval(trainer.model, heldout[task_index])["loss"]


class _Hooks:
    """The GPT arms' reset rules between chunks, and slime's death bookkeeping."""

    def __init__(self, profile, arm_, trainer, seed, schedule) -> None:
        self.profile, self.arm, self.trainer = profile, arm_, trainer
        self.gen = torch.Generator().manual_seed(seed + 7)
        self.resets = 0
        self.seconds = 0.0
        cfg = profile.model
        self.cbp = (
            ContinualBackprop(
                cfg["n_layer"],
                cfg["n_pods"],
                replacement_rate=profile.cbp_rate,
                maturity=profile.cbp_maturity,
            )
            if arm_.hook == "cbp"
            else None
        )
        self.schedule: dict[int, list[tuple[int, int]]] = {}
        for step, layer, n in schedule or []:
            self.schedule.setdefault(int(step), []).append((int(layer), int(n)))
        self.deaths: list[list[int]] = []
        self._seen = [o.deaths for o in trainer.model.organisms] if trainer.is_slime else []

    def _reset(self, layer: int, heads: list[int]) -> None:
        done = reset_heads(
            self.trainer.model,
            layer,
            heads,
            optimizer=self.trainer.optimizer.optimizer,
            generator=self.gen,
        )
        self.resets += len(done)

    def at_switch(self, task_index: int) -> None:
        if self.arm.hook != "snp" or task_index == 0:
            return
        t0 = time.perf_counter()
        tr = self.trainer
        fresh = build_model(
            tr.cfg.model, tr.dataset.vocab_size, device=tr.device, generator=self.gen
        )
        shrink_perturb(
            tr.model, fresh, shrink=self.profile.snp_shrink, noise=self.profile.snp_noise
        )
        self.resets += 1
        self.seconds += time.perf_counter() - t0

    def after_chunk(self, probe_idx: torch.Tensor) -> None:
        tr, step = self.trainer, self.trainer.step
        t0 = time.perf_counter()
        if tr.is_slime:
            for layer, organism in enumerate(tr.model.organisms):
                if organism.deaths > self._seen[layer]:
                    self.deaths.append([step, layer, organism.deaths - self._seen[layer]])
                self._seen[layer] = organism.deaths
        elif self.arm.hook == "cbp":
            stats = head_stats(tr.model, probe_idx)
            self.cbp.observe(stats.contribution, self.profile.event_interval)
            for layer, heads in self.cbp.select(self.profile.event_interval).items():
                self._reset(layer, heads)
                self.cbp.replaced(layer, heads)
        elif self.arm.hook == "redo":
            stats = head_stats(tr.model, probe_idx)
            for layer, activity in enumerate(stats.activity):
                self._reset(layer, redo_dormant(activity, self.profile.redo_tau))
        elif self.arm.hook == "random":
            n_head = self.profile.model["n_pods"]
            for layer, n in self.schedule.get(step, []):
                self._reset(layer, random_heads(n_head, n, self.gen))
        self.seconds += time.perf_counter() - t0


def run_arm(
    profile: ContinualProfile,
    stream: Stream,
    arm_: ContinualArm,
    seed: int,
    heldout,
    device: torch.device,
    *,
    schedule: list[list[int]] | None = None,
) -> dict[str, Any]:
    """Train ``arm_`` through ``stream`` with ``seed``; returns its plain-data record.

    ``schedule`` (random-reset arm): ``[[step, layer, n], ...]`` heads to reset after ``step``.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    data = StreamData(stream)
    cfg = _config(profile, arm_, seed)
    trainer = ContinualTrainer(cfg, data, device=device)
    if trainer.is_slime and not arm_.archive:
        for organism in trainer.model.organisms:
            organism.chemotaxis = Starved(organism.archive)
    params_init = live_parameter_count(trainer.model)
    hooks = _Hooks(profile, arm_, trainer, seed, schedule)
    n, every = profile.steps_per_task, profile.event_interval
    start_loss, end_loss, health = [], [], []
    train_s, status = 0.0, "completed"
    for t, task in enumerate(stream.tasks):
        data.current = t
        trainer.probe = _probe(task, profile.probe_batch_size, seed + 2 + 1000 * t, device)
        start_loss.append(heldout_eval(trainer.model, heldout[t])["loss"])
        hooks.at_switch(t)
        probe_idx = heldout[t][0][0][: profile.health_batch]
        for _ in range(n // every):
            t0 = time.perf_counter()
            trainer.fit(steps=trainer.step + every)
            train_s += time.perf_counter() - t0
            if trainer.status.startswith("stopped"):
                status = trainer.status
                break
            hooks.after_chunk(probe_idx)
        if status != "completed":
            break
        end_loss.append(heldout_eval(trainer.model, heldout[t])["loss"])
        health.append(head_health(head_stats(trainer.model, probe_idx)))
    wall = train_s + hooks.seconds
    record: dict[str, Any] = {
        "stream": stream.name,
        "arm": arm_.name,
        "seed": seed,
        "status": status,
        "steps": trainer.step,
        "tasks_done": len(end_loss),
        "keys": [task.key for task in stream.tasks],
        "params_init": params_init,
        "params_final": live_parameter_count(trainer.model),
        "start_loss": start_loss,
        "end_loss": end_loss,
        "dormant": [h["dormant"] for h in health],
        "duplicate": [h["duplicate"] for h in health],
        "erank": [h["erank"] for h in health],
        "tokens_per_s": trainer.tokens_seen / wall if wall > 0 else None,
        "train_s": train_s,
        "hook_s": hooks.seconds,
        "resets": hooks.resets,
        "nonfinite_steps": trainer.nonfinite,
    }
    if trainer.is_slime:
        record["births"] = (
            sum(o.births for o in trainer.model.organisms)
            - sum(profile.model["n_pods"] for _ in trainer.model.organisms) * 0
        )
        record["births"] = trainer.lifecycle.births if trainer.lifecycle is not None else 0
        record["deaths"] = trainer.lifecycle.deaths if trainer.lifecycle is not None else 0
        record["deaths_schedule"] = hooks.deaths
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} torch thread(s)"


def _order(arms: list[str]) -> list[str]:
    """slime first: the random-reset arm replays its deaths."""
    return sorted(arms, key=lambda a: (a != "slime", arms.index(a)))


def run_continual(
    profile: ContinualProfile,
    *,
    streams: tuple[str, ...] | None = None,
    arms: tuple[str, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``arms`` through ``streams`` for the seed indices ``seeds`` (seed ``SEED_BASE + i``).

    A stream whose data is missing is skipped with its reason in ``skipped_streams``. Returns the
    raw results (``results.json``); ``on_run`` gets them after every run.
    """
    streams = tuple(profile.streams if streams is None else streams)
    arms_list = _order(list(dict.fromkeys(arms if arms is not None else DEFAULT_ARMS)))
    for name in arms_list:
        arm(name)  # validates
    indices = tuple(range(profile.seeds) if seeds is None else seeds)
    if any(i < 0 for i in indices):
        raise ConfigError(f"expected seed indices >= 0, got {indices}", "--seeds")
    data_dir = default_data_dir(data_dir)
    device = resolve_device(profile.device)
    t_suite = time.perf_counter()
    runs: list[dict[str, Any]] = []
    references: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    params: dict[str, dict[str, int]] = {}
    vocab: dict[str, int] = {}
    not_started: list[str] = []
    cache: dict[str, Stream] = {}

    def stream_for(name: str, seed: int) -> Stream:
        key = f"{name}:{seed}" if name == "permuted" else name
        if key not in cache:
            cache[key] = build_stream(
                name,
                profile.n_tasks,
                profile.model["block_size"],
                seed=seed,
                data_dir=data_dir,
                task_vocab=profile.task_vocab,
                shakespeare=profile.shakespeare_permuted and data_dir is not None,
            )
        return cache[key]

    def snapshot() -> dict[str, Any]:
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": profile.to_dict(),
            "streams": [s for s in streams if s not in skipped],
            "arms": arms_list,
            "seeds": [SEED_BASE + i for i in indices],
            "device": _device_name(device),
            "torch": torch.__version__,
            "params": params,
            "vocab": vocab,
            "runs": runs,
            "references": references,
            "skipped_streams": skipped,
            "not_started": not_started,
            "suite_wall_s": time.perf_counter() - t_suite,
        }

    longest = 0.0
    units = [(i, s) for i in indices for s in streams]
    for n_unit, (i, name) in enumerate(units):
        seed = SEED_BASE + i
        if name in skipped:
            continue
        elapsed = time.perf_counter() - t_suite
        if profile.deadline_s is not None and elapsed + longest > profile.deadline_s:
            not_started.extend(
                f"{s}:{SEED_BASE + j}" for j, s in units[n_unit:] if s not in skipped
            )
            log(f"deadline: {elapsed:.0f} s spent; not started: {', '.join(not_started)}")
            break
        try:
            stream = stream_for(name, seed)
        except DataError as exc:
            skipped[name] = str(exc)
            log(f"skipping stream {name}: {exc}")
            continue
        t_unit = time.perf_counter()
        if name not in params:
            params[name] = check_equal_params(profile, arms_list, stream.vocab_size, device)
            vocab[name] = stream.vocab_size
            log(
                f"{name}: {len(stream)} tasks, vocab {stream.vocab_size}, parameters {params[name]}"
            )
        heldout = [
            heldout_batches(
                task.dataset, profile.eval_batches, profile.batch_size, HELDOUT_SEED + t, device
            )
            for t, task in enumerate(stream.tasks)
        ]
        t0 = time.perf_counter()
        for t in stream.first_visits():
            loss = run_reference(profile, stream, t, seed, heldout, device)
            references.append(
                {"stream": name, "seed": seed, "key": stream.tasks[t].key, "task": t, "loss": loss}
            )
        log(
            f"{name} seed {seed}: {len(stream.first_visits())} fresh references, {time.perf_counter() - t0:.1f} s"
        )
        slime_deaths: list[list[int]] | None = None
        for arm_name in arms_list:
            arm_ = arm(arm_name)
            schedule = None
            source = None
            if arm_.hook == "random":
                source = (
                    "slime run, same stream and seed"
                    if slime_deaths is not None
                    else "expected from slime's config"
                )
                schedule = slime_deaths if slime_deaths is not None else expected_schedule(profile)
            t0 = time.perf_counter()
            record = run_arm(profile, stream, arm_, seed, heldout, device, schedule=schedule)
            record["run_s"] = time.perf_counter() - t0
            if source is not None:
                record["schedule_source"] = source
            if arm_name == "slime":
                slime_deaths = record["deaths_schedule"]
            runs.append(record)
            if on_run is not None:
                on_run(snapshot())
            last = record["end_loss"][-1] if record["end_loss"] else math.nan
            log(
                f"{name} {arm_name} seed {seed}: last-task loss {last:.4f}, resets {record['resets']}, "
                f"{record['tokens_per_s'] or 0:,.0f} tok/s, {record['run_s']:.1f} s"
            )
        longest = max(longest, time.perf_counter() - t_unit)
    return snapshot()
