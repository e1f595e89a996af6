"""The frozen pool and its torch.export on a CUDA device, where attention runs the Triton kernel.

Run on the GPU machine with ``nox -s gpu`` or ``pytest packages/slime-tools/tests -m gpu``.
"""

import pytest
import torch
from slime.core import SlimeConfig, SlimeModel
from slime.kernels import TorchKernel
from slime.tools import export_torch, freeze, verify_torch

pytestmark = pytest.mark.gpu

# Triton's fp32 attention against the torch fallback, through a 2-layer model's logits.
TOL = {"atol": 1e-4, "rtol": 1e-3}


def model_on(device, kernel=None):
    config = SlimeConfig(vocab_size=17, block_size=32, n_layer=2, n_embd=64, n_pods=4, head_dim=16)
    model = SlimeModel(
        config, kernel=kernel, device=device, generator=torch.Generator().manual_seed(0)
    )
    model.organisms[0].cull([2])
    return model.eval()


def test_frozen_pool_on_cuda_runs_triton_and_matches_the_live_model_and_cpu():
    live = model_on("cuda")
    assert live.kernel.name == "sdpa" and live.kernel.masked.name == "triton"
    frozen = freeze(live)
    assert {b.backend for b in frozen.blocks} == {"auto"}  # resolves to Triton on CUDA
    idx = torch.randint(0, 17, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = frozen(idx.cuda())
        torch.testing.assert_close(got, live(idx.cuda())[0], **TOL)
        cpu = freeze(model_on("cpu", TorchKernel()))(idx)
    torch.testing.assert_close(got.cpu(), cpu, **TOL)


def test_torch_export_of_a_cuda_frozen_pool_round_trips(tmp_path):
    frozen = freeze(model_on("cuda"))
    check = verify_torch(frozen, export_torch(frozen, tmp_path / "model.pt2"))
    assert check.max_abs_diff <= 1e-5
