"""The benchmark's SDPA reference kernel computes the same pool attention as the torch kernel."""

import pytest
import torch
from slime.core.bench import SDPAKernel


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_reference_matches_the_torch_kernel(kernel, gen, causal):
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen) for _ in "qkv")
    alive = torch.tensor([True, False, True])
    ours = SDPAKernel().attention(q, k, v, causal=causal, alive=alive)
    torch.testing.assert_close(ours, kernel.attention(q, k, v, causal=causal, alive=alive))
