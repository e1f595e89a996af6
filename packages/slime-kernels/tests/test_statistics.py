"""correlation, effective_rank and coherence (torch fallback and public functions) vs float64 numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from slime.kernels import coherence, correlation, effective_rank
from slime.kernels import torch_fallback as fallback
from slime.proto import KernelError

SETTINGS = settings(max_examples=25, deadline=None)


def _samples(pool, n, d, seed):
    return torch.randn(
        pool, n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


def _gram(pool, n, rank, seed):
    x = torch.randn(
        pool, rank, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return x.transpose(1, 2) @ x  # (P, n, n) PSD of rank min(rank, n)


def test_correlation_matches_numpy_corrcoef(reference_correlation):
    x = _samples(3, 40, 6, seed=0)
    got = correlation(x)
    assert got.dtype == torch.float32 and got.shape == (3, 6, 6)
    np.testing.assert_allclose(got.numpy(), reference_correlation(x.numpy()), atol=1e-6)


def test_correlation_of_float32_input_matches_numpy(reference_correlation):
    x = _samples(2, 50, 5, seed=1)
    got = correlation(x.float())
    np.testing.assert_allclose(got.numpy(), reference_correlation(x.numpy()), atol=1e-5)


def test_constant_feature_is_uncorrelated_with_unit_diagonal():
    x = _samples(2, 30, 4, seed=2)
    x[:, :, 1] = 3.7  # constant: zero variance up to rounding
    x[:, :, 3] = 0.0
    corr = correlation(x.float())
    for j in (1, 3):
        expected_row = torch.zeros(4)
        expected_row[j] = 1.0
        assert torch.equal(corr[:, j], expected_row.expand(2, 4))
        assert torch.equal(corr[:, :, j], expected_row.expand(2, 4))


def test_single_sample_gives_identity():
    corr = correlation(torch.randn(2, 1, 3))
    assert torch.equal(corr, torch.eye(3).expand(2, 3, 3))


@SETTINGS
@given(
    pool=st.integers(1, 3),
    n=st.integers(2, 12),
    d=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_correlation_is_symmetric_unit_diagonal_and_bounded(pool, n, d, seed):
    corr = correlation(_samples(pool, n, d, seed).float())
    assert torch.equal(corr, corr.transpose(1, 2))
    assert torch.equal(torch.diagonal(corr, dim1=1, dim2=2), torch.ones(pool, d))
    assert corr.abs().max() <= 1.0


def test_correlation_rejects_wrong_rank():
    with pytest.raises(KernelError, match="x must have 3 dimensions"):
        correlation(torch.randn(4, 5))


def test_correlation_rejects_empty_samples():
    with pytest.raises(KernelError, match="N >= 1"):
        correlation(torch.randn(2, 0, 3))


@pytest.mark.parametrize("rank", [1, 3, 8])
def test_effective_rank_matches_numpy_svd_in_float64(rank, reference_erank):
    m = _gram(4, 8, rank, seed=rank)
    got = effective_rank(m)
    assert got.dtype == torch.float32 and got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), reference_erank(m.numpy()), rtol=1e-4)


def test_effective_rank_of_identity_is_its_size():
    torch.testing.assert_close(effective_rank(torch.eye(5).expand(3, 5, 5)), torch.full((3,), 5.0))


def test_effective_rank_of_rank_one_matrix_is_one():
    v = torch.randn(2, 6, 1, dtype=torch.float64)
    torch.testing.assert_close(effective_rank(v @ v.transpose(1, 2)), torch.ones(2))


def test_effective_rank_of_zero_matrix_is_zero():
    assert torch.equal(effective_rank(torch.zeros(2, 4, 4)), torch.zeros(2))


def test_effective_rank_is_scale_invariant():
    m = _gram(2, 6, 6, seed=3)
    torch.testing.assert_close(effective_rank(m), effective_rank(m * 1e3))


@SETTINGS
@given(n=st.integers(1, 10), rank=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_effective_rank_lies_between_one_and_true_rank(n, rank, seed):
    erank = fallback.effective_rank(_gram(2, n, rank, seed))
    assert (erank >= 1 - 1e-5).all()
    assert (erank <= min(n, rank) + 1e-4).all()


def test_effective_rank_rejects_non_square():
    with pytest.raises(KernelError, match=r"m must be \(P, n, n\)"):
        effective_rank(torch.zeros(2, 3, 4))


def test_coherence_is_mean_absolute_off_diagonal_correlation():
    corr = torch.tensor([[[1.0, -0.5, 0.2], [-0.5, 1.0, 0.0], [0.2, 0.0, 1.0]]])
    torch.testing.assert_close(coherence(corr), torch.tensor([(0.5 + 0.2 + 0.0) * 2 / 6]))


def test_coherence_of_uncorrelated_features_is_zero():
    assert torch.equal(coherence(torch.eye(4).expand(2, 4, 4)), torch.zeros(2))


def test_coherence_of_one_feature_up_to_sign_is_one():
    base = torch.randn(1, 50, 1)
    x = torch.cat([base, -2 * base, 0.5 * base + 1], dim=2)
    torch.testing.assert_close(coherence(correlation(x)), torch.ones(1))


def test_coherence_of_a_single_feature_is_zero():
    assert torch.equal(coherence(torch.ones(3, 1, 1)), torch.zeros(3))


@SETTINGS
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_coherence_of_any_correlation_lies_in_unit_interval(n, d, seed):
    value = coherence(correlation(_samples(2, n, d, seed)))
    assert ((value >= 0) & (value <= 1)).all()
