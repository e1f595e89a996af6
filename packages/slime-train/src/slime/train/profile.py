"""Profiling: step latency, tokens/s, peak memory, FLOPs per token and MFU, for any model.

FLOPs per token follow the PaLM appendix B estimate used by nanoGPT: ``6 N + 12 * sum_l(A_l) * T``
for ``N`` parameters (position embeddings left out, the tied output head counted once), attention
width ``A_l = heads_l * head_dim`` in layer ``l`` and context ``T``. The attention term counts the full
``T x T`` score matrix (no causal halving), as nanoGPT does, so MFU figures are comparable with its.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = [
    "StepProfile",
    "flops_per_token",
    "live_parameter_count",
    "peak_flops",
    "profile_steps",
]

# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity).
_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def peak_flops(device: torch.device | str) -> float | None:
    """Dense bf16 peak FLOP/s of a known GPU, or None (CPU, unknown card: MFU is not reported)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in _PEAK_BF16.items():
        if key in name:
            return value
    return None


def live_parameter_count(model: torch.nn.Module) -> int:
    """Parameters in use, each counted once (a tied head is the embedding): a SlimeModel's slot
    tables are allocated for ``pod_capacity`` pods, and the empty slots (zeros) are left out, so
    a slime model and the baseline with as many heads as live pods count the same.

    Reads which slots are live (host sync: slow timescale)."""
    total = sum(p.numel() for p in model.parameters())
    for organism in getattr(model, "organisms", []):
        capacity = organism.pod_capacity
        per_slot = sum(p.numel() // capacity for p, _ in organism.slot_parameters())
        total -= (capacity - len(organism.live_slots())) * per_slot
    return total


def flops_per_token(n_params: int, attention_widths: Sequence[int], context: int) -> float:
    """Training FLOPs per token (forward + backward): ``6 N + 12 * sum(A_l) * T``."""
    return 6.0 * n_params + 12.0 * float(sum(attention_widths)) * context


@dataclass(frozen=True)
class StepProfile:
    """Measured numbers of one model's training step."""

    step_ms: float  # median wall time of a step
    step_ms_p90: float
    tokens_per_s: float
    peak_memory_mb: float | None  # CUDA allocator peak; None on the CPU
    flops_per_token: float
    mfu: float | None  # achieved / peak FLOP/s; None without a known peak

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def profile_steps(
    step: Callable[[], object],
    *,
    tokens_per_step: int,
    flops_per_token: float,
    device: torch.device | str,
    iters: int = 10,
    warmup: int = 2,
) -> StepProfile:
    """Time ``iters`` calls of ``step`` (one full training step) after ``warmup`` untimed ones.

    The device is synchronised around each timed step, so this measures latency, not overlap.
    """
    device = torch.device(device)
    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    p90 = sorted(times)[min(len(times) - 1, int(0.9 * len(times)))]
    tokens_per_s = tokens_per_step / median
    peak = peak_flops(device)
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return StepProfile(
        step_ms=median * 1e3,
        step_ms_p90=p90 * 1e3,
        tokens_per_s=tokens_per_s,
        peak_memory_mb=memory,
        flops_per_token=flops_per_token,
        mfu=tokens_per_s * flops_per_token / peak if peak else None,
    )
