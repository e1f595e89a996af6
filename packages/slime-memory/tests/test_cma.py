"""The batched CMA-ES: it optimises, its searches stay independent, its stop rules fire."""

from __future__ import annotations

import math

import pytest
import torch
from slime.memory._cma import BatchedCMAES


def minimise(es: BatchedCMAES, f, generations: int) -> None:
    """Rank each search's samples by ``f`` (lower first) and recombine the better half."""
    parents = torch.full((es.instances,), es.batch_size // 2)
    for _ in range(generations):
        x = es.ask()  # (E, lam, d)
        order = torch.argsort(f(x), dim=1)
        es.tell(order, parents)


def make(instances: int, dim: int, lam: int, seed: int = 0, x0: float = 0.0) -> BatchedCMAES:
    start = torch.full((dim,), x0, dtype=torch.float64)
    return BatchedCMAES(
        instances, dim, lam, 0.5, start, generator=torch.Generator().manual_seed(seed)
    )


def test_every_search_converges_on_a_shifted_sphere() -> None:
    dim = 8
    target = torch.randn(3, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    es = make(3, dim, 12)
    minimise(es, lambda x: (x - target[:, None, :]).square().sum(dim=2), 250)
    # Started ~sqrt(8) away with sigma 0.5; CMA-ES converges linearly, so 250 generations
    # take it many orders of magnitude closer (a broken update stalls at ~1e-1 or diverges).
    assert (es.mean - target).norm(dim=1).max() < 1e-6
    assert es.sigma.max() < 1e-5


def test_the_covariance_learns_an_ill_conditioned_ellipsoid() -> None:
    dim = 6
    scales = 10.0 ** (3 * torch.arange(dim, dtype=torch.float64) / (dim - 1))  # 1 .. 1000
    es = make(2, dim, 10, x0=1.0)
    minimise(es, lambda x: (scales * x).square().sum(dim=2), 600)
    assert es.mean.abs().max() < 1e-6
    # The learned covariance is ~ the inverse Hessian: its axes scale like 1 / scales.
    es._decompose()
    ratio = es.eigvals.max(dim=1).values / es.eigvals.min(dim=1).values
    assert torch.all(ratio > 1e4), ratio  # the true ratio is 1e6; isotropic would be 1


def test_searches_do_not_influence_each_other() -> None:
    a, b = make(2, 5, 8, seed=3), make(2, 5, 8, seed=3)
    for es in (a, b):
        es.ask()
    order = torch.arange(8).expand(2, -1)
    a.tell(order, torch.tensor([4, 4]))
    b.tell(order, torch.tensor([4, 0]))  # search 1 selects nothing and stays put
    torch.testing.assert_close(a.mean[0], b.mean[0])
    torch.testing.assert_close(a.cov[0], b.cov[0])
    torch.testing.assert_close(a.sigma[0], b.sigma[0])
    assert torch.equal(b.mean[1], torch.zeros(5, dtype=torch.float64))
    assert torch.equal(b.cov[1], torch.eye(5, dtype=torch.float64))
    assert not torch.equal(a.mean[1], b.mean[1])


@pytest.mark.parametrize("host", [True, False], ids=["host path", "accelerator path"])
def test_reset_touches_only_the_masked_searches(host: bool) -> None:
    es = make(3, 4, 6)
    es._host = host  # False: the sync-free masked update accelerators run
    minimise(es, lambda x: x.square().sum(dim=2), 5)
    before = es.mean.clone(), es.sigma.clone(), es.cov.clone()
    starts = torch.full((3, 4), 7.0, dtype=torch.float64)
    es.reset(starts, torch.tensor([False, True, False]))
    assert torch.equal(es.mean[1], starts[1]) and es.sigma[1] == 0.5
    assert torch.equal(es.cov[1], torch.eye(4, dtype=torch.float64))
    assert torch.equal(es.transform[1], torch.eye(4, dtype=torch.float64))
    for i in (0, 2):
        assert torch.equal(es.mean[i], before[0][i]) and es.sigma[i] == before[1][i]
        assert torch.equal(es.cov[i], before[2][i])


def test_stop_rules() -> None:
    es = make(4, 3, 5)
    es.ask()
    ranked = torch.randn(4, 5, 2, generator=torch.Generator().manual_seed(0))
    ranked[1] = 1.0  # flat ranking values
    es.condition[2] = 1e15  # ill-conditioned
    es.sigma[3] = 1e-12  # collapsed
    assert es.should_stop(ranked).tolist() == [False, True, True, True]
    es.mean[0, 0] = math.nan
    assert es.should_stop(ranked)[0]


def test_rates_and_eigendecomposition_gap_agree_with_pyribs() -> None:
    opt = pytest.importorskip("ribs.emitters.opt")
    dim, lam = 100, 36
    theirs = opt.CMAEvolutionStrategy(sigma0=0.5, solution_dim=dim, batch_size=lam)
    es = make(3, dim, lam)
    assert math.isclose(es.eigen_gap, theirs.lazy_gap_evals, rel_tol=1e-12)
    parents = [1, 5, 18]
    ours = es._strategy(torch.tensor(parents))
    for i, p in enumerate(parents):
        weights, mueff, cc, cs, c1, cmu = theirs._calc_strat_params(p)
        torch.testing.assert_close(ours[0][i, :p], torch.from_numpy(weights))
        assert torch.all(ours[0][i, p:] == 0)
        for mine, reference in zip(ours[1:6], (mueff, cc, cs, c1, cmu), strict=True):
            assert math.isclose(float(mine[i]), float(reference), rel_tol=1e-12)


def test_the_host_and_accelerator_updates_agree() -> None:
    host, device = make(4, 6, 8, seed=2), make(4, 6, 8, seed=2)
    device._host = False
    for es in (host, device):
        # Both paths then decompose every search at every generation after its first (the
        # accelerator path looks for due searches less often in general).
        es.eigen_gap = 0.0
    g = torch.Generator().manual_seed(5)
    for generation in range(12):
        for es in (host, device):
            es.ask()
        order = torch.argsort(torch.rand(4, 8, generator=g), dim=1)
        parents = torch.randint(0, 5, (4,), generator=g)  # some searches select nothing
        mask = torch.rand(4, generator=g) < 0.2
        for es in (host, device):
            es.tell(order, parents)
            es.reset(torch.full((4, 6), float(generation)), mask)
    for name in ("mean", "sigma", "cov", "pc", "ps", "transform", "invsqrt"):
        torch.testing.assert_close(getattr(host, name), getattr(device, name), msg=name)


def test_a_search_is_decomposed_once_it_spent_the_gap_since_its_last_one_or_restart() -> None:
    es = make(2, 4, 6)
    eye = torch.eye(4, dtype=torch.float64)
    parents = torch.tensor([3, 3])
    due_after = math.floor(es.eigen_gap / 6) + 1  # tells until unfactored > gap
    for generation in range(due_after):
        es.ask()
        assert torch.equal(es.transform[0], eye), generation  # not yet due
        es.tell(torch.arange(6).expand(2, -1), parents)
        if generation == due_after - 2:  # search 1 restarts one tell before search 0 is due
            es.reset(torch.zeros(2, 4, dtype=torch.float64), torch.tensor([False, True]))
    es.ask()
    assert not torch.equal(es.transform[0], eye)  # search 0 was decomposed
    assert torch.equal(es.transform[1], eye)  # search 1 has spent one generation since
    assert es.unfactored.tolist() == [0.0, 6.0]
