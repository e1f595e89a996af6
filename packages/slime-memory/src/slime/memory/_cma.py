"""CMA-ES for many independent searches at once, as stacked tensors on any torch device.

The update follows Hansen's tutorial (arXiv:1604.00772) as pyribs 0.12's CMA-ES does (weights
over however many parents a search selected, the ``hsig`` stall guard, the step size's
``exp(min(1, ...))`` form and its stop rules), with two deliberate differences:

- the rank-one covariance term is ``c1 * pc pc^T`` with ``pc`` accumulating steps divided by
  ``sigma``, as in the tutorial; pyribs 0.12 accumulates undivided steps and multiplies the term
  by ``c1`` twice, which at d = 100 (c1 ~ 2e-4) all but switches it off.
- the eigendecomposition that sampling needs is refreshed, as in pyribs, for each search that
  has spent more than ``0.5 d lam / ((c1 + cmu) d^2)`` evaluations since its last one or its
  restart, but all due searches go through one batched ``eigh``. On the CPU that is checked at
  every ``ask``; on an accelerator, where looking costs a host synchronisation, only once per
  that many evaluations of any search, so a search may wait up to twice as long as in pyribs.

Everything except the periodic eigendecomposition runs without a host synchronisation.
"""

from __future__ import annotations

import math

import torch

__all__ = ["BatchedCMAES"]

# Samples outside the bounds are redrawn this many times, then clipped (pyribs redraws until
# every sample fits, which needs a host round trip per draw).
_REDRAWS = 8
_TINY = 1e-300


class BatchedCMAES:
    """``instances`` independent CMA-ES searches in ``R^d``, advanced together.

    State (E = instances): ``mean`` (E, d), ``sigma`` (E,), evolution paths ``pc``/``ps``
    (E, d), covariance ``cov`` (E, d, d), and from its last eigendecomposition ``B D B^T`` the
    eigenvalues ``eigvals`` (E, d), ``transform = B sqrt(D)`` and ``invsqrt = C^(-1/2)``.

    Args:
        instances: number of searches E.
        dim: solution dimension d.
        batch_size: samples per search per generation (lambda).
        sigma0: initial step size, also used at every restart.
        x0: ``(d,)`` float64 start of every search; fixes the device.
        lower, upper: ``(d,)`` bounds or None.
        generator: random generator on ``x0``'s device.
        eigen_device: where the periodic eigendecomposition runs (default: ``x0``'s device).
            Small batched ``eigh`` calls can be faster on the CPU than on a GPU.
    """

    def __init__(
        self,
        instances: int,
        dim: int,
        batch_size: int,
        sigma0: float,
        x0: torch.Tensor,
        *,
        lower: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
        generator: torch.Generator,
        eigen_device: torch.device | None = None,
    ) -> None:
        self.instances, self.dim, self.batch_size = instances, dim, batch_size
        self.sigma0 = float(sigma0)
        self.device = x0.device
        self._host = self.device.type == "cpu"  # may branch on tensor values without a sync
        self.lower, self.upper = lower, upper
        self.generator = generator
        self.eigen_device = self.device if eigen_device is None else torch.device(eigen_device)
        # Weights and rates depend only on a search's parent count: tabulate them for
        # 0..lam parents (row 0 as for 1; such searches do not move) so that a generation
        # looks them up with two gathers instead of some forty small operations.
        counts = torch.arange(batch_size + 1, device=self.device).clamp(min=1)
        w, *rates = self._strategy(counts)
        self._weights, self._rates = w, torch.stack(rates, dim=1)  # (lam + 1, lam), (lam + 1, 6)
        c1, cmu = rates[3][batch_size // 2], rates[4][batch_size // 2]
        self.eigen_gap = 0.5 * dim * batch_size / float(c1 + cmu) / dim**2  # evaluations
        self._since_check = 0  # generations since due decompositions were last looked for
        e, d = instances, dim
        f64 = {"dtype": torch.float64, "device": self.device}
        self.mean = x0.to(**f64).expand(e, d).clone()
        self.sigma = torch.full((e,), self.sigma0, **f64)
        self.pc = torch.zeros(e, d, **f64)
        self.ps = torch.zeros(e, d, **f64)
        self.evals = torch.zeros(e, **f64)  # evaluations since each search's (re)start
        self.unfactored = torch.zeros(e, **f64)  # ... since its last decomposition or restart
        self.cov = torch.eye(d, **f64).expand(e, d, d).clone()
        self.eigvals = torch.ones(e, d, **f64)
        self.transform = self.cov.clone()  # B diag(sqrt(D)): N(0, I) -> N(0, C)
        self.invsqrt = self.cov.clone()  # C^(-1/2)
        self.condition = torch.ones(e, **f64)
        self._solutions: torch.Tensor | None = None  # (E, lam, d) of the last ask

    def ask(self) -> torch.Tensor:
        """``(E, lam, d)`` samples ``mean + sigma * B sqrt(D) z``, inside the bounds."""
        if self._host or self._since_check * self.batch_size > self.eigen_gap:
            self._since_check = 0
            due = torch.nonzero(self.unfactored > self.eigen_gap).squeeze(1)  # a sync off the CPU
            if due.numel():
                self._decompose(due)
        x = self._sample()
        if self.lower is not None and self.upper is not None:
            for _ in range(_REDRAWS):
                outside = ((x < self.lower) | (x > self.upper)).any(dim=2, keepdim=True)
                x = torch.where(outside, self._sample(), x)
            x = torch.clamp(x, min=self.lower, max=self.upper)
        self._solutions = x
        return x

    def _sample(self) -> torch.Tensor:
        e, lam, d = self.instances, self.batch_size, self.dim
        z = torch.randn(
            (e, lam, d), generator=self.generator, device=self.device, dtype=torch.float64
        )
        return self.mean[:, None, :] + self.sigma[:, None, None] * (z @ self.transform.mT)

    def tell(self, order: torch.Tensor, parents: torch.Tensor) -> None:
        """Update from the last :meth:`ask`: ``order`` ``(E, lam)`` ranks each search's samples
        best first; the first ``parents`` ``(E,)`` of them are recombined. A search with no
        parent keeps its distribution (its evaluation count still grows)."""
        assert self._solutions is not None, "tell needs a preceding ask"
        n, lam = self.dim, self.batch_size
        self.evals += lam
        self.unfactored += lam
        self._since_check += 1
        moving = parents > 0
        w = self._weights.index_select(0, parents)  # (E, lam)
        mueff, cc, cs, c1, cmu, damps = self._rates.index_select(0, parents).unbind(1)
        ranked = self._solutions.gather(1, order[..., None].expand(-1, -1, n))  # (E, lam, d)
        old = self.mean
        mean = (w[..., None] * ranked).sum(dim=1)
        step = mean - old  # (E, d)
        whitened = (self.invsqrt @ step[..., None]).squeeze(-1)
        ps = (1 - cs)[:, None] * self.ps + (torch.sqrt(cs * (2 - cs) * mueff) / self.sigma)[
            :, None
        ] * whitened
        ps_norm2 = ps.square().sum(dim=1)
        fade = 1 - (1 - cs) ** (2 * self.evals / lam)
        hsig = (ps_norm2 / n / fade < 2 + 4 / (n + 1)).to(torch.float64)
        pc = (1 - cc)[:, None] * self.pc + (hsig * torch.sqrt(cc * (2 - cc) * mueff) / self.sigma)[
            :, None
        ] * step
        # C <- keep C + c1 pc pc^T + (cmu / sigma^2) sum_i w_i y_i y_i^T, as one scale and one
        # batched product A A^T, with A = [sqrt(c1) pc, sqrt(cmu w_i) y_i / sigma]: two passes
        # over the (E, d, d) covariances. A search that does not move gets keep = 1, A = 0.
        c1a = c1 * (1 - (1 - hsig) * cc * (2 - cc))
        keep = torch.where(moving, 1 - c1a - cmu * w.sum(dim=1), 1.0)
        gate = moving.to(torch.float64)
        deviations = (ranked - old[:, None, :]) * (
            torch.sqrt(cmu[:, None] * w) / self.sigma[:, None] * gate[:, None]
        )[..., None]
        factor = torch.cat([(torch.sqrt(c1) * gate)[:, None, None] * pc[:, None, :], deviations], 1)
        if self._host:
            # Looking at values is free here: update only the searches that move, and only
            # with the ranks some search selected (the rest of `factor` is zero).
            rows = moving.nonzero().squeeze(1)
            if rows.numel():
                width = int(parents.max()) + 1
                part = factor.index_select(0, rows)[:, :width]
                cov = self.cov.index_select(0, rows)
                cov.mul_(keep.index_select(0, rows)[:, None, None]).baddbmm_(part.mT, part)
                self.cov.index_copy_(0, rows, cov)
        else:
            self.cov.mul_(keep[:, None, None]).baddbmm_(factor.mT, factor)
        sigma = self.sigma * torch.exp(torch.clamp(cs / damps * (ps_norm2 / n - 1) / 2, max=1))
        self.mean = torch.where(moving[:, None], mean, self.mean)
        self.ps = torch.where(moving[:, None], ps, self.ps)
        self.pc = torch.where(moving[:, None], pc, self.pc)
        self.sigma = torch.where(moving, sigma, self.sigma)

    def should_stop(self, ranked_values: torch.Tensor) -> torch.Tensor:
        """``(E,)`` bool: pyribs' (pycma's) stop rules, given each search's ranking values in
        rank order ``(E, lam, v)``; also any search whose state is no longer finite."""
        stop = self.condition > 1e14
        stop |= self.sigma * self.eigvals.max(dim=1).values.sqrt() < 1e-11
        if self.batch_size >= 2:
            spread = torch.linalg.vector_norm(ranked_values[:, 0] - ranked_values[:, -1], dim=1)
            stop |= spread < 1e-12
        # A non-finite covariance shows in the next decomposition's condition number.
        stop |= ~torch.isfinite(self.condition) | ~torch.isfinite(self.sigma)
        stop |= ~torch.isfinite(self.mean).all(dim=1) | ~torch.isfinite(self.pc).all(dim=1)
        return stop

    def reset(self, starts: torch.Tensor, mask: torch.Tensor) -> None:
        """Restart the searches where ``mask`` ``(E,)``: mean ``starts`` ``(E, d)``, step size
        ``sigma0``, zero paths, identity covariance."""
        if self._host:
            # Free to look at on the host (on an accelerator it would cost a sync): reset only
            # the searches that restart rather than pass over every (d, d) matrix.
            rows = mask.nonzero().squeeze(1)
            if rows.numel() == 0:
                return
            eye = torch.eye(self.dim, dtype=torch.float64)
            for matrix in (self.cov, self.transform, self.invsqrt):
                matrix[rows] = eye
        else:
            square = mask[:, None, None]
            for matrix in (self.cov, self.transform, self.invsqrt):
                matrix.masked_fill_(square, 0.0).diagonal(dim1=1, dim2=2).add_(mask[:, None])
        column = mask[:, None]
        self.mean = torch.where(column, starts.to(torch.float64), self.mean)
        self.sigma = torch.where(mask, self.sigma0, self.sigma)
        self.pc = torch.where(column, 0.0, self.pc)
        self.ps = torch.where(column, 0.0, self.ps)
        self.evals = torch.where(mask, 0.0, self.evals)
        self.unfactored = torch.where(mask, 0.0, self.unfactored)
        self.eigvals = torch.where(column, 1.0, self.eigvals)
        self.condition = torch.where(mask, 1.0, self.condition)

    def _decompose(self, rows: torch.Tensor | None = None) -> None:
        """Refresh the eigenvalues, ``B sqrt(D)``, ``C^(-1/2)`` and condition number of the
        searches ``rows`` (int64 indices; None: all) from their covariances.

        ``torch.linalg.eigh`` synchronises with the host; it runs once every few generations.
        """
        if rows is None:
            rows = torch.arange(self.instances, device=self.device)
        cov = self.cov.index_select(0, rows)
        eigvals, basis = torch.linalg.eigh(((cov + cov.mT) / 2).to(self.eigen_device))
        eigvals, basis = eigvals.to(self.device), basis.to(self.device)
        eigvals = eigvals.abs().clamp(min=_TINY)
        root = eigvals.sqrt()[:, None, :]
        self.eigvals.index_copy_(0, rows, eigvals)
        self.transform.index_copy_(0, rows, basis * root)
        self.invsqrt.index_copy_(0, rows, (basis / root) @ basis.mT)
        condition = eigvals.max(dim=1).values / eigvals.min(dim=1).values
        self.condition.index_copy_(0, rows, condition)
        self.unfactored.index_fill_(0, rows, 0.0)

    def _strategy(self, parents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Recombination weights ``(E, lam)`` (zero past each search's ``parents``) and the
        per-search rates ``mueff, cc, cs, c1, cmu, damps`` ``(E,)`` for ``parents`` >= 1."""
        n, lam = self.dim, self.batch_size
        p = parents.to(torch.float64)[:, None]
        rank = torch.arange(1, lam + 1, dtype=torch.float64, device=parents.device)
        w = torch.where(rank <= p, torch.log(p + 0.5) - torch.log(rank), 0.0)
        w = w / w.sum(dim=1, keepdim=True)
        mueff = 1 / w.square().sum(dim=1)
        cc = (4 + mueff / n) / (n + 4 + 2 * mueff / n)
        cs = (mueff + 2) / (n + mueff + 5)
        c1 = 2 / ((n + 1.3) ** 2 + mueff)
        cmu = torch.minimum(1 - c1, 2 * (mueff - 2 + 1 / mueff) / ((n + 2) ** 2 + mueff))
        damps = 1 + 2 * torch.clamp(torch.sqrt((mueff - 1) / (n + 1)) - 1, min=0) + cs
        return w, mueff, cc, cs, c1, cmu, damps


def state_bytes(instances: int, dim: int) -> int:
    """Bytes of the ``(E, d, d)`` float64 matrices a :class:`BatchedCMAES` of ``instances``
    searches in ``R^dim`` holds: ``cov``, ``transform`` and ``invsqrt``."""
    return 3 * 8 * instances * dim * dim


def default_batch_size(dim: int) -> int:
    """CMA-ES' default population size ``4 + floor(3 ln d)``."""
    return 4 + int(3 * math.log(dim))
