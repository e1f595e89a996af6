"""Benchmark: training-step cost of SlimeModel per kernel and pool padding. Prints a table.

``python -m slime.core.bench [--device cuda] [--steps 20]``. Rows: the Triton and torch kernels,
and a reference kernel that calls ``F.scaled_dot_product_attention`` (flash on CUDA) so the pool's
own overhead (weight stacking, padding) can be told apart from the attention kernel's. Columns:
milliseconds per step (forward, backward, AdamW), tokens per second and peak memory. Timing syncs
the device after each measured block, which is the point of a benchmark and never done in training.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from slime.core.api import SlimeConfig, SlimeModel
from slime.kernels import TorchKernel, TritonKernel
from torch import Tensor

__all__ = ["SDPAKernel", "main", "time_steps"]


class SDPAKernel(TorchKernel):
    """Reference Kernel: attention by torch SDPA (no key padding); dead slots zeroed afterwards."""

    name = "sdpa"

    def attention(self, q, k, v, *, causal=False, scale=None, key_padding_mask=None, alive=None):
        if key_padding_mask is not None:
            raise NotImplementedError("the SDPA reference kernel takes no key padding mask")
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
        return out if alive is None else out * alive.view(1, -1, 1, 1).to(out.dtype)


def time_steps(model: SlimeModel, batch: Tensor, steps: int) -> tuple[float, int]:
    """Mean milliseconds per training step after two warm-up steps, and peak bytes (CUDA)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = batch.device

    def step() -> None:
        _, loss = model(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = (time.perf_counter() - began) / steps * 1e3
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return elapsed, peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":  # nanoGPT's shakespeare_char shape
        shape = dict(vocab_size=65, block_size=256, n_layer=6, n_embd=384, n_pods=6)
        batch_size = 64
    else:
        shape = dict(vocab_size=65, block_size=64, n_layer=2, n_embd=64, n_pods=4)
        batch_size = 8
    kernels = {"torch": TorchKernel(), "sdpa": SDPAKernel()}
    if device.type == "cuda":
        kernels["triton"] = TritonKernel()
    g = torch.Generator(device=device).manual_seed(0)
    batch = torch.randint(0, 65, (batch_size, shape["block_size"] + 1), generator=g, device=device)
    tokens = batch_size * shape["block_size"]
    print(f"device {device}, {shape}, batch {batch_size}, {args.steps} steps")
    print(
        f"{'kernel':>8} {'capacity':>8} {'live':>5} {'ms/step':>9} {'tokens/s':>11} {'peak MiB':>9}"
    )
    for name, kernel in kernels.items():
        for capacity in (shape["n_pods"], 2 * shape["n_pods"]):
            cfg = SlimeConfig(**shape, pod_capacity=capacity)
            model = SlimeModel(cfg, kernel=kernel, device=device)
            ms, peak = time_steps(model, batch, args.steps)
            print(
                f"{name:>8} {capacity:>8} {shape['n_pods']:>5} {ms:>9.2f} "
                f"{tokens / ms * 1e3:>11.0f} {peak / 2**20:>9.0f}"
            )


if __name__ == "__main__":
    main()
