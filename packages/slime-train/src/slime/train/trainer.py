"""The training loop: one loop for slime and the baseline, with the lifecycle's three timescales.

Every step (fast): forward, backward, gradient norms (one fused norm over all gradients serves
clipping; per-slot norms feed the pods' gradient fitness), the optimizer step and the loss gate's
moving average. Nothing in a step synchronises the host with the device: whether the step is finite
is decided on the device and handed to the fused AdamW kernel as ``found_inf`` (a non-finite step
changes neither parameters, moments nor step counts), and each step's loss and gradient norm are
written into a small device buffer. The host reads that buffer (one ``tolist``) only when something
needs the values: every ``log_interval`` steps, and at lifecycle events, evaluations, checkpoints and
the end. Each read applies the non-finite policy to the steps since the previous one (``stop``, or
``skip`` up to ``max_nonfinite``) and logs a ``nonfinite`` record; so a ``stop`` takes effect at the
next read, and the steps in between train normally from the unchanged weights.

Every ``medium_interval`` and ``slow_interval`` steps the :class:`~slime.train.lifecycle.Lifecycle`
runs (slime models with the lifecycle enabled). Evaluation, logging and checkpoints follow their own
intervals. With ``train.compile`` the forward runs through ``torch.compile``; births and deaths only
write slots of fixed tensors, so they never recompile it.

Runs are reproducible: every random stream (global torch/Python/numpy RNGs, the data sampler, the
model's initialisation/birth generator) is seeded from ``train.seed`` and checkpointed, and the model's
state dict carries the organisms' buffers (fitness, birth steps, the tubes' ring), so a resumed run
replays the uninterrupted one exactly on the CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from slime.core import MetricsCollector, SlimeModel
from slime.memory import GridArchive
from slime.proto import CheckpointError, ConfigError, PoolError
from slime.train.build import build_model, check_fits, resolve_device
from slime.train.checkpoint import (
    capture_rng,
    commit_folder,
    latest_checkpoint,
    load_checkpoint,
    remove_debris,
    restore_rng,
    save_checkpoint,
    save_sharded_checkpoint,
    save_state,
)
from slime.train.config import RunConfig
from slime.train.datasets import Dataset
from slime.train.distributed import (
    Distributed,
    Lockstep,
    data_parallel,
    data_seed,
    resumed_data_seed,
)
from slime.train.fitness import FitnessTracker
from slime.train.heads import HeadLockstep, HeadSharding
from slime.train.lifecycle import Lifecycle, probe_compiler
from slime.train.loader import load_config, save_config
from slime.train.optim import PoolOptimizer, learning_rate
from slime.train.profile import live_parameter_count
from slime.train.rundir import ProgressBar, RunDir
from slime.train.slo import slo_reports
from slime.train.stability import GradientMonitor
from torch import Tensor

__all__ = ["Trainer"]


def _refuse_restart_over_results(run_dir: RunDir, cfg: RunConfig) -> None:
    """Raise CheckpointError when ``run_dir`` has no committed checkpoint but must have had one:
    it finished (``summary.json``), or logged metrics after its first checkpoint's step
    (``min(checkpoint_interval, steps)``, by ``cfg`` and by the run's own ``config.yaml``,
    whichever is later). Restarting such a run from step 0 would erase its metrics, summary and
    models."""
    firsts = [min(cfg.train.checkpoint_interval, cfg.train.steps)]
    with contextlib.suppress(ConfigError):
        own = load_config(run_dir.config_path).train
        firsts.append(min(own.checkpoint_interval, own.steps))
    if run_dir.summary_path.is_file():
        evidence = f"it finished ({run_dir.summary_path.name} is there)"
    else:
        last = max((r["step"] for r in run_dir.read_metrics()), default=0)
        if last <= max(firsts):
            return  # killed before its first checkpoint: restarting loses nothing
        evidence = f"{run_dir.metrics_path.name} logs step {last}, after its first checkpoint"
    raise CheckpointError(
        f"{str(run_dir.path)!r} has no committed checkpoint in checkpoints/, yet {evidence}: "
        "were its checkpoints deleted or moved? Not restarting it from step 0 over its results; "
        "start a new run instead"
    )


def _first_mismatch(model: torch.nn.Module, tensors: dict[str, Any]) -> str:
    """Where a state dict and a model first disagree, for an error message (or ``""``)."""
    own = model.state_dict()
    for name, value in tensors.items():
        if name in own and hasattr(value, "shape") and tuple(value.shape) != tuple(own[name].shape):
            return (
                f" ({name} is {tuple(value.shape)} in the checkpoint, "
                f"{tuple(own[name].shape)} in the model)"
            )
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        return f" (the checkpoint lacks {missing[:3]} and has extra {extra[:3]})"
    return ""


class Trainer:
    """Trains ``cfg.model`` on ``dataset``; writes metrics, plots and checkpoints to ``run_dir``.

    Args:
        cfg: the resolved run configuration.
        dataset: what to sample batches from (its ``vocab_size`` sets the model's when unset).
        run_dir: where results go; None keeps everything in memory (tests, benchmarks).
        device: overrides ``cfg.train.device``.
        progress: stream for the progress bar (None: no bar).
        lr_schedule: ``fn(step) -> lr`` replacing :func:`~slime.train.optim.learning_rate`
            (e.g. a schedule over a wall-time budget, as ``slime.train.compare`` uses).
        sync_timing: synchronise the device around each timed phase, so ``timings`` attributes
            GPU time to phases (profiling; costs throughput).
        distributed: this process's rank in a data-parallel run (default: the initialised
            default process group, else one process); see :mod:`slime.train.distributed`.
            ``train.batch_size`` is the global batch, split evenly over the ranks; with
            ``train.parallel: heads`` every rank takes the whole batch and computes its own pods
            (:mod:`slime.train.heads`).
    """

    def __init__(
        self,
        cfg: RunConfig,
        dataset: Dataset,
        *,
        run_dir: RunDir | None = None,
        device: torch.device | str | None = None,
        progress: TextIO | None = None,
        sync_timing: bool = False,
        lr_schedule: Callable[[int], float] | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        self.cfg, self.dataset, self.run_dir, self.progress = cfg, dataset, run_dir, progress
        self.dist = distributed if distributed is not None else Distributed.current()
        self.heads = self.dist.active and cfg.train.parallel == "heads"
        if self.heads and cfg.model.kind != "slime":
            raise ConfigError(
                f"expected parallel: data for a {cfg.model.kind} model (parallel: heads shards "
                "slime's pods)",
                "train.parallel",
            )
        # data parallel splits the global batch (checking it divides); heads gives each rank all
        self.rank_batch_size = (
            cfg.train.batch_size if self.heads else self.dist.rank_batch(cfg.train.batch_size)
        )
        self.device = (
            torch.device(device) if device is not None else resolve_device(cfg.train.device)
        )
        self.sync_timing = sync_timing
        self.lr_schedule = lr_schedule or (lambda step: learning_rate(step, cfg.train))
        seed = cfg.train.seed
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self.model_gen = torch.Generator().manual_seed(seed)
        self.data_rank = 0 if self.heads else self.dist.rank  # heads: every rank reads rank 0's
        self.data_gen = torch.Generator().manual_seed(data_seed(seed, self.data_rank))
        self._prefetched: tuple[Tensor, Tensor, Tensor] | None = None  # see train_step
        self.metrics = MetricsCollector(device=self.device)
        if cfg.model.vocab_size is not None and cfg.model.vocab_size < dataset.vocab_size:
            raise ConfigError(
                f"expected at least the data's {dataset.vocab_size} token ids, got "
                f"{cfg.model.vocab_size}",
                "model.vocab_size",
            )
        check_fits(cfg.model, dataset.vocab_size, self.rank_batch_size, self.device)
        self.model = build_model(
            cfg.model,
            dataset.vocab_size,
            device=self.device,
            generator=self.model_gen,
            metrics=self.metrics,
            max_archive_size=cfg.lifecycle.max_archive_size,
        )
        self.is_slime = isinstance(self.model, SlimeModel)
        self.optimizer = PoolOptimizer(self.model, cfg.train)
        self.gradients = GradientMonitor(self.model, cfg.train.grad_clip)
        self.fitness = FitnessTracker(cfg.fitness)
        # Pods computed where they are placed (see slime.train.heads).
        self.sharding = (
            HeadSharding(self.model, self.dist, cfg.train.placement, seed) if self.heads else None
        )
        # Keeps the ranks' lifecycles identical (see slime.train.distributed).
        self.lockstep = (
            Lockstep(self.model, self.dist) if self.dist.active and self.is_slime else None
        )
        if self.sharding is not None:
            self.lockstep = HeadLockstep(self.model, self.dist, self.sharding)
        self.lifecycle = (
            Lifecycle(
                self.model,
                cfg.lifecycle,
                self.fitness,
                timer=lambda name: self._timed(f"lifecycle/{name}"),
                autocast=self._autocast,
                agree=self.lockstep,
                compiler=probe_compiler(cfg.train, self.device, sharded=self.heads),
            )
            if self.is_slime and cfg.lifecycle.enabled
            else None
        )
        if self.is_slime:
            self.fitness.attach(self.model)  # sizes its tables; follows births and deaths
        # The forward the steps call. Compiled, the model's own forward timer (CUDA events, host
        # clock) would break the graph: the trainer times the call from outside instead.
        self._forward: Callable[..., Any] = self.model
        if self.dist.active and not self.heads:  # the backward averages gradients over the ranks
            self._forward = data_parallel(self.model, self.device, self.dist)
        self._time_forward = not self.is_slime
        if cfg.train.compile:
            if self.is_slime:
                self.model.metrics = None
                self._time_forward = True
            mode = "reduce-overhead" if cfg.train.cuda_graphs else None
            self._forward = torch.compile(self._forward, dynamic=False, mode=mode)  # fixed shapes
        probe_gen = torch.Generator().manual_seed(seed + 2)
        probe = dataset.batch("train", cfg.lifecycle.probe_batch_size, probe_gen)
        self.probe = tuple(t.to(self.device) for t in probe)
        self.step = 0
        self.tokens_seen = 0
        self.nonfinite = 0
        self.last_loss = math.nan  # the latest finite training loss, as of the latest read
        self.latest = (math.nan, math.nan)  # the latest step's (loss, grad norm), as read
        self.status = "running"
        self.timings: dict[str, float] = defaultdict(float)
        # (loss, grad norm) of each step since the latest read, on the device; reads happen at
        # least every log_interval steps.
        self._history = torch.zeros(cfg.train.log_interval, 2, device=self.device)
        self._unread = 0
        self._window = [0.0, 0.0, 0]  # loss sum, grad norm sum, finite steps since the latest log
        self._last_eval: tuple[int, dict[str, float]] = (-1, {})
        # Held-out tracking: (step, val loss, run seconds) of the best evaluation (run_dir/best),
        # (step, run seconds) when train.target_loss was first reached, evaluations since a best.
        self.best: tuple[int, float, float] | None = None
        self.target: tuple[int, float] | None = None
        self._stale_evals = 0
        self._seconds = 0.0  # run time before the current fit call (carried by checkpoints)
        self._fit_t0: float | None = None
        self._last_checkpoint = -1
        self._finished: dict[str, Any] | None = None  # the summary of a finished run resumed
        self.restarted = False  # resume found no checkpoint and started over (see resume)
        if run_dir is not None and self.dist.is_main and not run_dir.config_path.exists():
            save_config(cfg, run_dir.config_path)

    # -- fast timescale -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        if self.sync_timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.sync_timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] += time.perf_counter() - t0

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.train.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> tuple[Tensor, Tensor]:
        """One optimisation step, with no host synchronisation.

        Returns:
            The step's loss and gradient norm (before clipping), 0-d device tensors. Where either
            is not finite the optimizer step changed nothing.
        """
        self.optimizer.set_lr(self.lr_schedule(self.step + 1))
        idx, targets = self._next_batch()
        if not self.model.training:  # every eval() here restores the whole tree at its root
            self.model.train()
        observing = self._observing(self.step + 1)
        # Replayed as CUDA graphs, the tubes cost no host time and nearly no device time, and a
        # second forward variant would capture a second graph with its own memory pool: feed
        # them every step (the ring then holds the same last steps at a medium event).
        feeding = observing or self.cfg.train.cuda_graphs
        if self.is_slime and feeding != self.model.organisms[0].feeding_tubes:
            self.model.feed_tubes(feeding)
        if self.cfg.train.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are read
        with self._timed("forward"), self._autocast():
            if self._time_forward:
                with self.metrics.time_forward(idx.numel()):
                    _, loss = self._forward(idx, targets)
            else:
                _, loss = self._forward(idx, targets)
        with self._timed("backward"):
            loss.backward()
            if self.sharding is not None:  # each slot's gradient from its owner, on every rank
                self.sharding.sync_gradients()
        with self._timed("grad_norms"):
            grads = self.gradients.clip_and_measure(per_slot=observing)
        loss = loss.detach()
        if not self.heads:  # heads: every rank's loss is already the global batch's
            loss = self.dist.average(loss)  # the global batch's loss, on every rank
        finite = torch.isfinite(loss) & torch.isfinite(grads.total)
        with self._timed("optimizer"):
            self.optimizer.step(skip=~finite)
        if observing:
            with self._timed("fitness"):
                self.fitness.observe_gradients(grads.slot_norms, grads.slot_taylor, finite)
        self.optimizer.zero_grad()
        self.tokens_seen += idx.numel() * (1 if self.heads else self.dist.world_size)
        # The device runs this step's kernels now; draw the next batch meanwhile, so loading it
        # never holds up a device that is ahead of the host.
        self._prefetched = self._draw_batch()
        return loss, grads.total

    def _draw_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """The next training batch, already sent to the device, and the data generator's state
        before it was drawn (what a checkpoint saves: a resume draws the same batch again)."""
        state = self.data_gen.get_state()
        idx, targets = self.dataset.batch("train", self.rank_batch_size, self.data_gen)
        return (
            idx.to(self.device, non_blocking=True),
            targets.to(self.device, non_blocking=True),
            state,
        )

    def _next_batch(self) -> tuple[Tensor, Tensor]:
        idx, targets, _ = self._prefetched or self._draw_batch()
        self._prefetched = None
        return idx, targets

    def _data_state(self) -> Tensor:
        """The data generator's state as of the next batch the steps will take."""
        return self._prefetched[2] if self._prefetched else self.data_gen.get_state()

    def _observing(self, step: int) -> bool:
        """Whether ``step`` is one of the ``lifecycle.observe_steps`` steps before (and including)
        a medium event, which feed the tubes and the per-slot gradient statistics."""
        if self.lifecycle is None:
            return False
        lc = self.cfg.lifecycle
        return (-step) % lc.medium_interval < lc.observe_steps

    def _record(self, loss: Tensor, grad_norm: Tensor) -> None:
        """Keep the step's loss and gradient norm on the device until the next read; feed the loss
        gate (device-side, non-finite losses skipped)."""
        self._history[self._unread].copy_(torch.stack([loss, grad_norm]))
        self._unread += 1
        if self.lifecycle is not None:
            self.lifecycle.gate.observe(loss)

    def _read(self) -> bool:
        """The host read: the steps since the previous read, in one transfer. Updates the window
        sums, ``last_loss`` and ``latest``, and applies the non-finite policy to those steps
        (logging a ``nonfinite`` record). Returns True when training must stop."""
        if self._unread == 0:
            return False
        rows = self._history[: self._unread].tolist()  # the only host sync between events
        first_step = self.step - self._unread + 1
        self._unread = 0
        bad = []
        for offset, (loss, grad_norm) in enumerate(rows):
            if math.isfinite(loss) and math.isfinite(grad_norm):
                self._window[0] += loss
                self._window[1] += grad_norm
                self._window[2] += 1
                self.last_loss = loss
            else:
                bad.append(first_step + offset)
        self.latest = (rows[-1][0], rows[-1][1])
        if not bad:
            return False
        self.nonfinite += len(bad)
        self._log(kind="nonfinite", count=len(bad), steps=bad, total=self.nonfinite)
        if self.cfg.train.nonfinite == "stop":
            self.status = f"stopped: non-finite loss or gradient at step {bad[0]}"
            return True
        if self.nonfinite > self.cfg.train.max_nonfinite:
            self.status = (
                f"stopped: {self.nonfinite} non-finite steps, over train.max_nonfinite "
                f"({self.cfg.train.max_nonfinite})"
            )
            return True
        return False

    # -- the loop -------------------------------------------------------------------------------

    def _reads_at(self, step: int, total: int) -> bool:
        """Whether anything at ``step`` needs the host to read the device's training values."""
        tc, lc = self.cfg.train, self.cfg.lifecycle
        due = step % tc.log_interval == 0 or step == total or step % tc.eval_interval == 0
        if self.run_dir is not None and step % tc.checkpoint_interval == 0:
            due = True
        if self.lifecycle is not None and (
            step % lc.medium_interval == 0 or step % lc.slow_interval == 0
        ):
            due = True
        return due

    def fit(self, steps: int | None = None, *, max_seconds: float | None = None) -> dict[str, Any]:
        """Train until ``steps`` (default ``train.steps``) or ``max_seconds`` of wall time.

        Returns:
            The run summary (also logged and written to ``summary.json`` in the run directory).
        """
        total = steps if steps is not None else self.cfg.train.steps
        if self._finished is not None and self.step >= total:
            return self._finished  # a finished run resumed with nothing to add: leave it as is
        self._finished = None
        tc = self.cfg.train
        shown = self.progress is not None and self.dist.is_main  # one bar: rank 0's
        bar = ProgressBar(total, start=self.step, stream=self.progress) if shown else None
        t_start = time.perf_counter()
        self._fit_t0 = t_start
        window_t, window_tokens = t_start, self.tokens_seen
        while self.step < total:
            if max_seconds is not None and self._out_of_time(t_start, max_seconds, total):
                break  # every rank stops at the same step
            loss, grad_norm = self.train_step()
            self.step += 1
            self._record(loss, grad_norm)
            if not self._reads_at(self.step, total):
                continue
            if self._read():
                break
            if self.lifecycle is not None:
                self._lifecycle_work()
            if self.step % tc.log_interval == 0 or self.step == total:
                now = time.perf_counter()
                rate = (self.tokens_seen - window_tokens) / max(now - window_t, 1e-9)
                window_t, window_tokens = now, self.tokens_seen
                loss_sum, grad_sum, n = self._window
                self._window = [0.0, 0.0, 0]
                self._log(
                    kind="train",
                    loss=loss_sum / n if n else math.nan,  # mean over the window's finite steps
                    grad_norm=grad_sum / n if n else math.nan,
                    lr=self.optimizer.param_groups[0]["lr"],
                    tokens_per_s=rate,
                    **self._pool_record(),
                )
                if bar is not None:
                    bar.update(self.step, self.latest[0], rate)
            if self.step % tc.eval_interval == 0 or self.step == total:
                # A patience running out at the last step stops nothing: the run completed.
                if self._evaluate_and_track() and self.step < total:
                    self.status = "early_stopped"
            if self.run_dir is not None and (
                self.step % tc.checkpoint_interval == 0
                or self.step == total
                or self.status == "early_stopped"
            ):
                self.save_checkpoint()
            if self.status == "early_stopped":
                break
        if self._unread:  # stopped by max_seconds between reads
            self._read()
        if bar is not None:
            bar.close()
        elapsed = time.perf_counter() - t_start
        if self.status == "running" and self._last_eval[0] != self.step:
            self._evaluate_and_track()  # stopped by max_seconds between evals
        if self.run_dir is not None and self._last_checkpoint != self.step:
            self.save_checkpoint()
        self._seconds, self._fit_t0 = self._clock(), None
        return self._finish(elapsed)

    def _out_of_time(self, t_start: float, max_seconds: float, total: int) -> bool:
        """Whether ``max_seconds`` have passed since ``t_start``. Several ranks agree on it with a
        collective, which waits for the device: only at steps that read the device anyway (a
        run may then overrun its budget by up to ``log_interval`` steps), never in between."""
        late = time.perf_counter() - t_start >= max_seconds
        if not self.dist.active:
            return late
        return self._reads_at(self.step, total) and self.dist.any(late, self.device)

    def _clock(self) -> float:
        """Seconds this run has spent in ``fit``, across resumes (evaluation and events included)."""
        running = time.perf_counter() - self._fit_t0 if self._fit_t0 is not None else 0.0
        return self._seconds + running

    def _evaluate_and_track(self) -> bool:
        """Evaluate, log the record (with the best so far), keep ``best/`` on a new best, note when
        ``train.target_loss`` is first reached. Returns whether ``train.patience`` evaluations
        have passed without a new best."""
        losses = self.evaluate()
        seconds = self._clock()
        val = losses.get("val_loss", math.nan)
        improved = math.isfinite(val) and (self.best is None or val < self.best[1])
        if improved:
            self.best = (self.step, val, seconds)
            self._stale_evals = 0
        else:
            self._stale_evals += 1
        tc = self.cfg.train
        if tc.target_loss is not None and self.target is None and val <= tc.target_loss:
            self.target = (self.step, seconds)
            self._log(kind="target", target_loss=tc.target_loss, time_s=seconds)
        record: dict[str, Any] = {**losses, "time_s": seconds}
        if self.best is not None:
            record.update(best_step=self.best[0], best_val=self.best[1], best_time_s=self.best[2])
        self._log(kind="eval", **record)
        if improved:
            self._keep_best()
        return tc.patience is not None and self._stale_evals >= tc.patience

    def _lifecycle_work(self) -> None:
        lc = self.cfg.lifecycle
        if self.step % lc.medium_interval == 0:
            with self._timed("lifecycle_medium"):
                record = self.lifecycle.medium(self.step, self.latest[0], self.probe)
                self._log(kind="medium", **record)
        if self.step % lc.slow_interval == 0:
            with self._timed("lifecycle_slow"):
                self._log(kind="slow", **self.lifecycle.slow(self.step))
        events = self.step % lc.medium_interval == 0 or self.step % lc.slow_interval == 0
        if self.sharding is not None and events:  # births, deaths, new cells: place pods again
            self.sharding.place()

    def _pool_record(self) -> dict[str, Any]:
        if not self.is_slime:
            return {}
        return {"pool_size": sum(len(o.live_slots()) for o in self.model.organisms)}

    def _log(self, **record: Any) -> None:
        if self.run_dir is not None and self.dist.is_main:
            self.run_dir.log({"step": self.step, **record})

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_iters`` fixed batches of each split (the same batches every time)."""
        with self._timed("eval"):
            self.model.eval()
            out = {}
            for offset, split in enumerate(("train", "val")):
                gen = torch.Generator().manual_seed(self.cfg.train.seed + 3 + offset)
                losses = []
                for _ in range(self.cfg.train.eval_iters):
                    idx, targets = self.dataset.batch(split, self.cfg.train.batch_size, gen)
                    with self._autocast():
                        losses.append(self.model(idx.to(self.device), targets.to(self.device))[1])
                out[f"{split}_loss"] = torch.stack(losses).mean().item()
            self.model.train()
        self._last_eval = (self.step, out)
        return out

    def _finish(self, elapsed: float) -> dict[str, Any]:
        if self.status == "running":
            self.status = "completed"
        final = self._last_eval[1] if self._last_eval[0] == self.step else {}
        summary = {
            "status": self.status,
            "model": self.cfg.model.kind,
            "steps": self.step,
            "params": live_parameter_count(self.model),  # empty slots left out
            "allocated_params": sum(p.numel() for p in self.model.parameters()),
            "last_train_loss": self.last_loss,
            **final,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": elapsed,
            "tokens_per_s": self.tokens_seen / elapsed if elapsed > 0 else None,
            "nonfinite_steps": self.nonfinite,
            "timings_s": dict(self.timings),
            **self._pool_record(),
            "slo": [vars(r) for r in slo_reports(self.cfg.slo, self.metrics)],
        }
        if self.best is not None:
            summary.update(best_step=self.best[0], best_val=self.best[1], best_time_s=self.best[2])
        if self.cfg.train.target_loss is not None:
            reached = self.target is not None
            summary.update(
                target_loss=self.cfg.train.target_loss,
                target_reached=reached,
                target_step=self.target[0] if reached else None,
                target_time_s=self.target[1] if reached else None,
            )
        if self.status == "early_stopped":
            summary["stopped_after_evals_without_improvement"] = self._stale_evals
        if self.lifecycle is not None:
            summary.update(births=self.lifecycle.births, deaths=self.lifecycle.deaths)
        if self.run_dir is not None and self.dist.is_main:
            self._log(kind="summary", **summary)
            self.run_dir.write_summary(summary)
            self.run_dir.plot()
            if self.is_slime:
                self._export_model()
        return summary

    def _export_model(self, name: str = "model", note: dict[str, Any] | None = None) -> None:
        """Write the model to ``run_dir/NAME`` with ``save_pretrained`` (slime-tools reads it),
        with ``note`` as ``NAME/run.json``.

        Written beside and renamed into place, so a crash leaves the previous export intact.
        """
        final = self.run_dir.path / name
        staging = final.with_name(f"{name}.partial")
        if staging.exists():
            shutil.rmtree(staging)
        self.model.save_pretrained(staging)
        if note is not None:
            (staging / "run.json").write_text(json.dumps(note) + "\n", encoding="utf-8")
        commit_folder(staging, final)  # a crash between its renames: see remove_debris

    def _keep_best(self) -> None:
        """After a new best evaluation: keep this model in ``run_dir/best`` (slime: a
        ``save_pretrained`` directory; the baseline: a checkpoint folder of its weights).
        Comparing runs by their best checkpoint is fair to a model that improves later and
        overfits later; sample and eval read ``best/`` first."""
        if self.run_dir is None or self.best is None or not self.dist.is_main:
            return
        step, val, _ = self.best
        with self._timed("checkpoint"):
            if self.is_slime:
                self._export_model("best", {"step": step, "val_loss": val})
            else:
                state = {"model": self.model.state_dict(), "val_loss": val}
                save_state(self.run_dir.path / "best", step, state)

    # -- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Checkpoint everything a bit-exact resume needs into ``run_dir/checkpoints``."""
        self._read()  # the window sums and counters below must include every step
        with self._timed("checkpoint"):
            organisms = self.model.organisms if self.is_slime else []
            state = {
                "model": self.model.state_dict(),  # with the organisms' buffers
                "optimizer": self.optimizer.state_dict(),
                "rng": capture_rng(),
                "data_rng": self._data_state(),
                "model_rng": self.model_gen.get_state(),
                "fitness": self.fitness.state_dict(),
                "lifecycle": self.lifecycle.state_dict() if self.lifecycle else None,
                "trainer": {
                    "tokens_seen": self.tokens_seen,
                    "nonfinite": self.nonfinite,
                    "last_loss": self.last_loss,
                    "latest": list(self.latest),
                    "window": list(self._window),
                    "best": list(self.best) if self.best is not None else None,
                    "target": list(self.target) if self.target is not None else None,
                    "stale_evals": self._stale_evals,
                    "seconds": self._clock(),
                },
            }
            writers = {f"archive_{i}": o.archive.save for i, o in enumerate(organisms)}
            if self.dist.active:  # collective: every rank takes part
                if self.lockstep is not None:
                    self.lockstep.share_tubes()  # what is saved is what every rank holds
                path = save_sharded_checkpoint(
                    self.run_dir.path,
                    self.step,
                    state,
                    per_rank=("rng", "data_rng"),
                    writers=writers,
                    group=self.dist.group,
                )
            else:
                path = save_checkpoint(self.run_dir.path, self.step, state, writers=writers)
            self._last_checkpoint = self.step
        return path

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`save_checkpoint` state (from ``load_checkpoint``) into this trainer.

        Checkpoints written before the slot table (per-pod tensors, a ``pod_fitness`` list, birth
        steps in the lifecycle state, per-pod optimizer groups) are converted as they load.
        """
        try:
            self.model.load_state_dict(state["model"])  # the organisms convert per-pod tensors
        except (RuntimeError, PoolError) as e:
            raise CheckpointError(
                f"the checkpoint does not fit the model built from the run's config"
                f"{_first_mismatch(self.model, state['model'])}: was config.yaml's model section "
                "edited after the run started?"
            ) from e
        if self.is_slime:
            for layer, slot, fitness in state.get("pod_fitness", []):  # before the slot table
                self.model.organisms[layer].pod(slot).fitness = fitness
            for i, organism in enumerate(self.model.organisms):
                archive = GridArchive.load(
                    state["folder"] / f"archive_{i}", device=self.model.archive_device(self.device)
                )
                organism.replace_archive(archive)
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        if self.data_rank < state.get("world_size", 1):
            self.data_gen.set_state(state["data_rng"])  # this rank's own stream
        else:  # written by a run with fewer ranks: a fresh stream of this rank's own
            self.data_gen.manual_seed(
                resumed_data_seed(self.cfg.train.seed, self.data_rank, state["step"])
            )
        self._prefetched = None
        self.model_gen.set_state(state["model_rng"])
        self.fitness.load_state_dict(state["fitness"])
        if self.lifecycle is not None:
            self.lifecycle.load_state_dict(state["lifecycle"])
        t = state["trainer"]
        self.tokens_seen, self.nonfinite, self.last_loss = (
            t["tokens_seen"],
            t["nonfinite"],
            t["last_loss"],
        )
        self.latest = tuple(t.get("latest", (self.last_loss, math.nan)))
        window = t.get("window", [0.0, 0.0, 0])
        self._window = [float(window[0]), float(window[1]), int(window[2])]
        best = t.get("best")
        # Checkpoints from before run time was tracked hold (step, val): its time is unknown.
        self.best = (
            (int(best[0]), float(best[1]), float(best[2] if len(best) > 2 else math.nan))
            if best
            else None
        )
        target = t.get("target")
        self.target = (int(target[0]), float(target[1])) if target else None
        self._stale_evals = int(t.get("stale_evals", 0))
        self._seconds = float(t.get("seconds", 0.0))
        self._unread = 0
        self.step = state["step"]
        self._last_checkpoint = self.step
        if self.sharding is not None:  # the loaded pods, placed by the same hash
            self.sharding.place()
        if self.run_dir is not None:
            if self.dist.is_main:
                self.run_dir.truncate_metrics(self.step)
            at_step = [r for r in self.run_dir.read_metrics() if r["step"] == self.step]
            for record in at_step:
                if record.get("kind") == "eval":
                    losses = {k: v for k, v in record.items() if k.endswith("_loss")}
                    self._last_eval = (self.step, losses)
            summary = self.run_dir.summary_path
            if any(r.get("kind") == "summary" for r in at_step) and summary.is_file():
                try:
                    self._finished = json.loads(summary.read_text("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise CheckpointError(f"{str(summary)!r} is damaged: {exc}") from None
                if not isinstance(self._finished, dict):
                    raise CheckpointError(f"{str(summary)!r} is damaged: not a JSON object")

    @classmethod
    def resume(cls, run_dir: RunDir, dataset: Dataset, cfg: RunConfig, **kwargs: Any) -> Trainer:
        """A trainer continuing ``run_dir`` from its latest checkpoint.

        Debris of a crash mid-write is removed first. A run killed before its first checkpoint was
        committed restarts from step 0 with its own config: its metrics are cleared and
        :attr:`restarted` is True (the caller says so).

        Raises:
            CheckpointError: no committed checkpoint, yet the run got past one (a ``summary.json``,
                or metrics logged after its first checkpoint step): its checkpoints were deleted
                or moved, and restarting would overwrite its results.
        """
        trainer = cls(cfg, dataset, run_dir=run_dir, **kwargs)
        if trainer.dist.is_main:
            remove_debris(run_dir.path)
        trainer.dist.barrier()
        if latest_checkpoint(run_dir.path) is None:
            _refuse_restart_over_results(run_dir, cfg)
            if trainer.dist.is_main:
                run_dir.truncate_metrics(0)
            trainer.restarted = True
            return trainer
        trainer.load_state(load_checkpoint(run_dir.path, rank=trainer.data_rank))
        return trainer
