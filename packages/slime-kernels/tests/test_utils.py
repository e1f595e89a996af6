"""Validation before launch: each bad argument raises KernelError naming it."""

from __future__ import annotations

import pytest
import torch
from slime.kernels import TorchKernel, pool_attention, utils
from slime.proto import KernelError


def _qkv(shape=(2, 3, 4, 16), dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype) for _ in range(3)]


def test_q_with_wrong_rank_is_named():
    q, k, v = _qkv()
    with pytest.raises(KernelError, match="q must have 4 dimensions"):
        pool_attention(q[0], k, v)


def test_non_tensor_is_named():
    _, k, v = _qkv()
    with pytest.raises(KernelError, match="q must be a torch.Tensor, got list"):
        pool_attention([1.0], k, v)


def test_mismatched_k_shape_is_named():
    q, k, v = _qkv()
    with pytest.raises(KernelError, match=r"k has shape \(2, 3, 5, 16\)"):
        pool_attention(q, torch.randn(2, 3, 5, 16), v)


def test_mismatched_v_dtype_is_named():
    q, k, _ = _qkv()
    with pytest.raises(KernelError, match="v has dtype torch.float16"):
        pool_attention(q, k, torch.randn(2, 3, 4, 16, dtype=torch.float16))


def test_integer_dtype_is_rejected():
    with pytest.raises(KernelError, match="q has dtype torch.int64"):
        TorchKernel().attention(*[torch.ones(1, 1, 2, 4, dtype=torch.long)] * 3)


def test_float64_is_rejected_by_the_custom_op():
    with pytest.raises(KernelError, match="q has dtype torch.float64"):
        pool_attention(*_qkv(dtype=torch.float64))


def test_last_dim_not_contiguous_is_named():
    q, k, v = _qkv()
    with pytest.raises(KernelError, match="q must be contiguous in its last dim"):
        pool_attention(q.transpose(2, 3).contiguous().transpose(2, 3), k, v)


def test_head_dim_outside_triton_limits_is_named():
    q, k, v = _qkv((1, 1, 4, 24))
    with pytest.raises(KernelError, match="head dim d=24 is not supported"):
        pool_attention(q, k, v, backend="triton")


def test_torch_backend_accepts_any_head_dim():
    q, k, v = _qkv((1, 1, 3, 24))
    assert pool_attention(q, k, v, backend="torch").shape == (1, 1, 3, 24)


def test_key_padding_mask_with_wrong_shape_is_named():
    q, k, v = _qkv()
    with pytest.raises(
        KernelError, match=r"key_padding_mask has shape \(2, 5\); expected \(2, 4\)"
    ):
        pool_attention(q, k, v, key_padding_mask=torch.ones(2, 5, dtype=torch.bool))


def test_key_padding_mask_must_be_bool():
    q, k, v = _qkv()
    with pytest.raises(KernelError, match="key_padding_mask has dtype torch.float32"):
        pool_attention(q, k, v, key_padding_mask=torch.ones(2, 4))


def test_alive_with_wrong_length_is_named():
    q, k, v = _qkv()
    with pytest.raises(KernelError, match=r"alive has shape \(2,\); expected \(3,\)"):
        pool_attention(q, k, v, alive=torch.ones(2, dtype=torch.bool))


def test_empty_pool_is_rejected():
    q, k, v = _qkv((2, 0, 4, 16))
    with pytest.raises(KernelError, match="empty dim"):
        pool_attention(q, k, v)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("inf"), float("nan"), "0.5"])
def test_bad_scale_is_named(scale):
    with pytest.raises(KernelError, match="scale must be a finite positive float"):
        pool_attention(*_qkv(), scale=scale)


def test_unknown_backend_is_named():
    with pytest.raises(KernelError, match="'cuda-magic'"):
        pool_attention(*_qkv(), backend="cuda-magic")


def test_free_memory_is_not_checked_on_cpu():
    utils.check_free_memory(2**60, torch.device("cpu"), "a huge launch")


@pytest.mark.gpu
def test_launch_larger_than_free_gpu_memory_is_refused():
    with pytest.raises(KernelError, match="needs .* MiB on cuda"):
        utils.check_free_memory(2**50, torch.device("cuda"), "a huge launch")
