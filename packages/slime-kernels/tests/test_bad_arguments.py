"""Bad arguments found by fuzzing the kernels' public functions: one KernelError naming the
value, never a silent reading of it or an error from inside torch."""

from __future__ import annotations

import math

import pytest
import torch
from slime.kernels import TorchKernel, coherence, effective_rank, pool_attention
from slime.proto import KernelError


@pytest.mark.parametrize("backend", ["auto", "sdpa", "torch"])
@pytest.mark.parametrize("causal", ["yes", None, 1, torch.tensor(True)], ids=repr)
def test_a_causal_flag_that_is_not_a_bool_raises(backend, causal) -> None:
    # "sdpa"/"auto" raised a TypeError from inside SDPA; "torch" took any truthy object for True.
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(KernelError, match="causal must be True or False"):
        pool_attention(q, q, q, causal=causal, backend=backend)


def test_the_torch_kernel_checks_its_causal_flag_too() -> None:
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(KernelError, match="causal must be True or False"):
        TorchKernel().attention(q, q, q, causal="no")


@pytest.mark.parametrize("scale", [True, 10**400], ids=["bool", "huge-int"])
def test_a_scale_that_is_a_bool_or_overflows_raises(scale) -> None:
    # True was read as scale 1.0; 10**400 raised OverflowError from float().
    q = torch.randn(1, 1, 2, 4)
    with pytest.raises(KernelError, match="scale must be a finite positive float"):
        pool_attention(q, q, q, scale=scale, backend="torch")


def test_coherence_of_empty_matrices_is_zero_not_nan() -> None:
    assert torch.equal(coherence(torch.zeros(2, 0, 0)), torch.zeros(2))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_effective_rank_of_a_non_finite_matrix_raises_a_kernel_error(bad) -> None:
    m = torch.eye(3)[None].clone()
    m[0, 1, 1] = bad
    with pytest.raises(KernelError, match="eigvalsh failed"):
        effective_rank(m)
