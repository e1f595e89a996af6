"""Profiling arithmetic: FLOPs per token, and a measured step on the CPU."""

from __future__ import annotations

import torch
from slime.train.baseline import GPT
from slime.train.config import ModelConfig
from slime.train.profile import flops_per_token, peak_flops, profile_steps


def test_flops_per_token_matches_nanogpt_for_the_baby_gpt() -> None:
    # nanoGPT estimate_mfu: 6N + 12 L H Q T with N = 10.65M, L=6, H*Q=384, T=256.
    n = 10_650_000
    assert flops_per_token(n, [384] * 6, 256) == 6 * n + 12 * 6 * 384 * 256


def test_flops_grow_with_live_attention_width() -> None:
    assert flops_per_token(100, [64, 32], 8) > flops_per_token(100, [32, 32], 8)


def test_cpu_has_no_peak_and_no_mfu() -> None:
    assert peak_flops("cpu") is None
    cfg = ModelConfig(vocab_size=8, block_size=8, n_layer=1, n_embd=16, n_pods=2, head_dim=8)
    model = GPT(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    idx = torch.zeros(2, 8, dtype=torch.long)

    def step() -> None:
        opt.zero_grad()
        model(idx, idx)[1].backward()
        opt.step()

    prof = profile_steps(step, tokens_per_step=16, flops_per_token=1.0, device="cpu", iters=3)
    assert prof.mfu is None and prof.peak_memory_mb is None
    assert prof.step_ms > 0 and prof.tokens_per_s > 0
    assert prof.step_ms_p90 >= prof.step_ms
