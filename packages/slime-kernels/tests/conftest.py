"""Float64 references written as plain math, independent of the code under test.

They are fixtures (``reference_attention``, ``reference_correlation``, ``reference_erank``) so test
modules share them without importing each other.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _reference_attention(q, k, v, *, causal=False, scale=None, key_padding_mask=None, alive=None):
    """softmax(q k^T * scale over visible keys) v in float64; rows with no visible key are 0."""
    q, k, v = q.double(), k.double(), v.double()
    batch, pool, seq, d = q.shape
    scale = d**-0.5 if scale is None else scale
    logits = torch.einsum("bpid,bpjd->bpij", q, k) * scale
    allowed = torch.ones(batch, pool, seq, seq, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(seq, seq, dtype=torch.bool).tril()
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.cpu()[:, None, None, :]
    if alive is not None:
        allowed = allowed & alive.cpu()[None, :, None, None]
    allowed = allowed.to(q.device)
    logits = logits.masked_fill(~allowed, float("-inf"))
    row_max = logits.amax(dim=-1, keepdim=True)
    row_max = torch.where(allowed.any(dim=-1, keepdim=True), row_max, 0.0).detach()
    weights = torch.exp(logits - row_max)
    total = weights.sum(dim=-1, keepdim=True)
    return torch.einsum("bpij,bpjd->bpid", weights, v) / torch.where(total > 0, total, 1.0)


def _reference_correlation(x: np.ndarray) -> np.ndarray:
    """np.corrcoef per pseudopod over samples (rows), for features with nonzero variance."""
    return np.stack([np.corrcoef(xp, rowvar=False) for xp in x])


def _reference_erank(m: np.ndarray) -> np.ndarray:
    """exp(entropy) of the normalised singular values, in float64 numpy."""
    out = []
    for mp in m:
        s = np.linalg.svd(mp, compute_uv=False)
        p = s / s.sum()
        p = p[p > 0]
        out.append(np.exp(-(p * np.log(p)).sum()))
    return np.array(out)


@pytest.fixture
def reference_attention():
    return _reference_attention


@pytest.fixture
def reference_correlation():
    return _reference_correlation


@pytest.fixture
def reference_erank():
    return _reference_erank
