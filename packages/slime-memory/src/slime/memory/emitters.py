"""Emitters: where a quality-diversity search's next solutions come from (pyribs' ask/tell shape).

An emitter proposes a batch of solutions with :meth:`Emitter.ask` and learns from how they fared
with :meth:`Emitter.tell`; a :class:`~slime.memory.schedulers.Scheduler` runs several of them
against one archive. Everything happens on the archive's device in batches: parents are drawn
from the archive's tensor column without a host synchronisation (an empty archive falls back to
``x0`` inside the same tensor expression), and the CMA-ES emitter advances all of its
independent searches with stacked tensors.

- :class:`GaussianEmitter`: an elite plus isotropic Gaussian noise (MAP-Elites).
- :class:`IsoLineEmitter`: an elite plus isotropic noise plus a Gaussian step along the line to
  a second elite (Iso+LineDD, Vassiliades & Mouret 2018).
- :class:`EvolutionStrategyEmitter`: improvement-ranked CMA-ES searches (CMA-ME, Fontaine et
  al. 2020), restarted from a random elite when they stop finding anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from slime.memory._cma import BatchedCMAES, default_batch_size, state_bytes
from slime.memory._devices import as_device
from slime.memory._emitter_checks import (
    Bounds,
    check_ask_elements,
    check_bounds,
    check_generator,
    check_scale,
    check_x0,
    positive_float,
    positive_int,
)
from slime.memory.archive import Archive
from slime.memory.limits import MAX_BATCH_SIZE, MAX_CMA_STATE_BYTES, MAX_EMITTER_INSTANCES
from slime.proto import ArchiveError, ConfigError, shown

__all__ = ["Emitter", "EvolutionStrategyEmitter", "GaussianEmitter", "IsoLineEmitter"]


def _elite_rows(archive: Archive, column: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Which cells hold an elite, ``(C,)`` bool, and the genome column ``(C, ...)`` (None while
    the archive has never stored a batch), both on the archive's device, without a host sync.

    The one place that reads the archive's internals; it can become a public Archive method.
    """
    occupied = archive._state[:, 2] > 0
    store = archive._store
    if store is None:
        return occupied, None
    columns = getattr(store, "columns", None)
    if columns is None:
        raise ArchiveError(
            f"emitters read genomes from a tensor column; this archive stores {store.kind}"
        )
    if column not in columns:
        raise ArchiveError(f"the archive has no genome column {column!r}; it has {list(columns)}")
    return occupied, columns[column]


def _checked_elite_rows(
    archive: Archive, column: str, dim: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_elite_rows`, or ArchiveError when the column's rows do not flatten to ``dim``
    numbers (an emitter whose ``x0`` is not as wide as the archive's solutions). Shapes only:
    no host synchronisation."""
    occupied, rows = _elite_rows(archive, column)
    if rows is not None and math.prod(rows.shape[1:]) != dim:
        raise ArchiveError(
            f"the archive's genome column {column!r} holds rows of shape "
            f"{tuple(rows.shape[1:])}, which do not flatten to the emitter's solution "
            f"dimension {dim} (the length of x0)"
        )
    return occupied, rows


def _sample_elite_rows(
    archive: Archive, column: str, n: int, fallback: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """``n`` genome rows drawn uniformly with replacement from the archive's elites: ``(n, d)``.

    Rows are ``fallback`` ``(d,)`` while the archive is empty. No host synchronisation: the
    draw is an inverse-CDF lookup in the running count of occupied cells.
    """
    occupied, rows = _checked_elite_rows(archive, column, fallback.shape[0])
    if rows is None:
        return fallback.expand(n, -1).clone()
    counts = occupied.cumsum(0)  # (C,)
    total = counts[-1]
    u = torch.rand(n, generator=generator, device=archive.device, dtype=torch.float64)
    k = (u * total).floor().long()  # uniform in [0, total) when total > 0
    cells = torch.searchsorted(counts, k, right=True).clamp_(max=archive.cells - 1)
    picked = rows.index_select(0, cells).to(fallback.dtype).reshape(n, -1)
    return torch.where(total > 0, picked, fallback)


class Emitter:
    """Base of the emitters: the archive, the solution space and the random generator.

    Args:
        archive: where parents come from; its genomes must be tensor columns. An archive on
            the meta device (shapes only) is refused: an emitter draws random numbers and
            reads elites, values the meta device does not hold.
        x0: ``(d,)`` starting point, used while the archive is empty.
        batch_size: solutions per :meth:`ask`, at most
            :data:`~slime.memory.limits.MAX_BATCH_SIZE` (16,777,216), and at most
            :data:`~slime.memory.limits.MAX_ASK_ELEMENTS` numbers per ask together
            (``ask_size * d``).
        bounds: None (unbounded), one ``(low, high)`` pair for every coordinate, or ``d``
            pairs; ``None`` inside a pair leaves that side open. Solutions are clipped into it.
        column: the archive's genome column holding solutions.
        generator: a ``torch.Generator`` on the archive's device; the same seed gives the same
            solutions. None draws a fresh seed.

    Raises:
        ConfigError: a bad ``x0``, ``batch_size``, bound or generator, or an archive on the
            meta device, naming it.
    """

    def __init__(
        self,
        archive: Archive,
        *,
        x0: torch.Tensor | Sequence[float],
        batch_size: int,
        bounds: Bounds = None,
        column: str = "solution",
        generator: torch.Generator | None = None,
    ) -> None:
        name = type(self).__name__
        if not isinstance(archive, Archive):
            raise ConfigError(f"archive must be a slime.memory Archive, got {archive!r}", name)
        if archive.device.type == "meta":
            # torch.Generator(device="meta") and every elite read would raise from inside torch.
            raise ConfigError(
                "the archive is on the meta device, which holds shapes but no values; an "
                "emitter draws random numbers and reads elites: build the archive on 'cpu' or "
                "'cuda'",
                f"{name}.archive",
            )
        self.archive = archive
        self.device = archive.device
        self.x0 = check_x0(x0, self.device, name)
        self.solution_dim = self.x0.shape[0]
        self.batch_size = positive_int(batch_size, f"{name}.batch_size")
        if self.batch_size > MAX_BATCH_SIZE:
            raise ConfigError(
                f"batch_size {self.batch_size} is above the limit MAX_BATCH_SIZE = "
                f"{MAX_BATCH_SIZE}",
                f"{name}.batch_size",
            )
        check_ask_elements(self.batch_size, self.solution_dim, "batch_size", f"{name}.batch_size")
        self.lower, self.upper = check_bounds(bounds, self.solution_dim, self.device, name)
        self.bounded = bool(torch.isfinite(torch.cat([self.lower, self.upper])).any())
        if not isinstance(column, str):  # archives name their genome columns with str keys
            raise ConfigError(
                f"column must be the str name of a genome column, got {shown(column)}",
                f"{name}.column",
            )
        self.column = column
        self.generator = check_generator(generator, self.device, name)

    @property
    def ask_size(self) -> int:
        """How many solutions one :meth:`ask` returns."""
        return self.batch_size

    def ask(self) -> torch.Tensor:
        """A batch of new solutions ``(ask_size, d)`` float64 on the archive's device."""
        raise NotImplementedError

    def tell(
        self,
        solutions: torch.Tensor,
        objectives: torch.Tensor,
        measures: torch.Tensor,
        status: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        """Results for this emitter's last :meth:`ask`: its ``solutions`` ``(n, d)``,
        objectives ``(n,)``, measures ``(n, k)`` and the archive's per-item ``status``/``value``
        ``(n,)`` (see ``AddResult``), with ``n`` = :attr:`ask_size`.

        Emitters that do not adapt learn nothing from it, but still check the shapes.

        Raises:
            ArchiveError: an argument that is not a tensor, or of another shape, naming the
                count it has and the count one ask returns (shapes only: no host sync).
        """
        self._check_told(solutions, objectives, measures, status, value)

    def discard(self) -> None:
        """Forget the last :meth:`ask` without telling its results (an evaluation that
        failed). Emitters that keep no state between ask and tell have nothing to forget."""

    def _check_told(self, *told: torch.Tensor) -> None:
        """Raise ArchiveError unless ``solutions, objectives, measures, status, value`` are
        tensors of the shapes :meth:`tell` takes for an ask of :attr:`ask_size` rows."""
        n, d, k = self.ask_size, self.solution_dim, self.archive.descriptor_dim
        expected = {
            "solutions": (n, d),
            "objectives": (n,),
            "measures": (n, k),
            "status": (n,),
            "value": (n,),
        }
        for (name, shape), given in zip(expected.items(), told, strict=True):
            if not isinstance(given, torch.Tensor):
                raise ArchiveError(
                    f"tell needs {name} as a tensor of {n} items (one per solution of the last "
                    f"ask), got {type(given).__name__} {shown(given)}"
                )
            if tuple(given.shape) != shape:
                count = given.shape[0] if given.dim() else "no"
                raise ArchiveError(
                    f"tell got {name} {tuple(given.shape)}; expected {shape}: {count} items "
                    f"for the {n} solutions one ask returns"
                )

    def clip(self, solutions: torch.Tensor) -> torch.Tensor:
        """``solutions`` ``(n, d)`` clipped into the bounds."""
        if not self.bounded:
            return solutions
        return torch.clamp(solutions, min=self.lower, max=self.upper)

    def _parents(self, n: int) -> torch.Tensor:
        return _sample_elite_rows(self.archive, self.column, n, self.x0, self.generator)

    def _normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float64)


class GaussianEmitter(Emitter):
    """MAP-Elites' mutation: a uniformly drawn elite plus ``N(0, sigma^2 I)`` noise, clipped.

    While the archive is empty the parent is ``x0``. See :class:`Emitter` for the shared args.

    Args:
        sigma: noise standard deviation, a positive number or ``(d,)`` per-coordinate values.
    """

    def __init__(
        self,
        archive: Archive,
        *,
        sigma: float | Sequence[float] | torch.Tensor,
        x0: torch.Tensor | Sequence[float],
        batch_size: int = 64,
        bounds: Bounds = None,
        column: str = "solution",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            archive, x0=x0, batch_size=batch_size, bounds=bounds, column=column, generator=generator
        )
        self.sigma = check_scale(sigma, self.solution_dim, self.device, "GaussianEmitter.sigma")

    def ask(self) -> torch.Tensor:
        parents = self._parents(self.batch_size)
        noise = self._normal(self.batch_size, self.solution_dim) * self.sigma
        return self.clip(parents + noise)


class IsoLineEmitter(Emitter):
    """Iso+LineDD: ``x_i + iso_sigma * N(0, I) + line_sigma * N(0, 1) * (x_j - x_i)`` for two
    uniformly drawn elites ``x_i``, ``x_j``, clipped. While the archive is empty both are ``x0``
    (so the line term vanishes). See :class:`Emitter` for the shared args.
    """

    def __init__(
        self,
        archive: Archive,
        *,
        x0: torch.Tensor | Sequence[float],
        iso_sigma: float = 0.01,
        line_sigma: float = 0.2,
        batch_size: int = 64,
        bounds: Bounds = None,
        column: str = "solution",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(
            archive, x0=x0, batch_size=batch_size, bounds=bounds, column=column, generator=generator
        )
        self.iso_sigma = positive_float(iso_sigma, "IsoLineEmitter.iso_sigma")
        self.line_sigma = positive_float(line_sigma, "IsoLineEmitter.line_sigma")

    def ask(self) -> torch.Tensor:
        b, d = self.batch_size, self.solution_dim
        first, second = self._parents(2 * b).view(2, b, d)
        iso = self._normal(b, d) * self.iso_sigma
        line = self._normal(b, 1) * self.line_sigma
        return self.clip(first + iso + line * (second - first))


class EvolutionStrategyEmitter(Emitter):
    """CMA-ME: ``instances`` independent CMA-ES searches ranked by archive improvement.

    One emitter runs all of its searches as stacked tensors (``(instances, d, d)`` covariances),
    so 15 searches of 36 solutions cost about what one costs in kernel launches; pyribs' setup
    of 15 emitters is ``instances=15`` here. :meth:`ask` returns ``instances * batch_size`` rows,
    each search's rows contiguous.

    After each :meth:`tell` the searches are ranked and updated:

    - ranker ``"2imp"`` (CMA-ME's improvement ranking): new cells first, then improved cells,
      then the rest, each group by the archive's improvement ``value``; ``"imp"``: by ``value``.
    - selection ``"filter"``: the solutions that entered the archive are the parents (a search
      with none does not move); ``"mu"``: the better half.
    - restart ``"no_improvement"``: a search none of whose solutions entered the archive
      restarts; ``"basic"``: only CMA-ES' own stop rules (ill-conditioned covariance, collapsed
      step size, flat ranking values) restart it; an int ``k``: every ``k`` tells as well. A
      restart starts from a uniformly drawn elite with ``sigma0``.

    See :class:`Emitter` for the shared args (``batch_size`` is per search; None uses CMA-ES'
    default ``4 + floor(3 ln d)``). ``instances`` is at most
    :data:`~slime.memory.limits.MAX_EMITTER_INSTANCES` (4,096), and ``instances * batch_size``
    at most :data:`~slime.memory.limits.MAX_BATCH_SIZE`. Out-of-bounds samples are redrawn a
    few times, then clipped.
    ``eigen_device`` (default: the archive's) is where the covariances' eigendecomposition runs
    every few generations: small batched ``eigh`` calls can be faster on the CPU than on a GPU;
    not the meta device. The searches hold ``3 * instances * d * d`` float64 (covariances and
    their factors), at most :data:`~slime.memory.limits.MAX_CMA_STATE_BYTES` (16 GiB): a
    larger ``x0`` or ``instances`` is refused, naming the bytes, before anything is allocated.

    Calls alternate: :meth:`ask`, then :meth:`tell` with that batch's results (the searches
    update from the solutions they last sampled, whatever ``solutions`` ``tell`` is given).
    A second :meth:`ask` before it raises ArchiveError rather than drop the pending batch;
    :meth:`discard` drops it on purpose.
    """

    def __init__(
        self,
        archive: Archive,
        *,
        x0: torch.Tensor | Sequence[float],
        sigma0: float,
        instances: int = 1,
        batch_size: int | None = None,
        ranker: str = "2imp",
        selection_rule: str = "filter",
        restart_rule: str | int = "no_improvement",
        bounds: Bounds = None,
        column: str = "solution",
        generator: torch.Generator | None = None,
        eigen_device: torch.device | str | None = None,
    ) -> None:
        name = "EvolutionStrategyEmitter"
        dim = check_x0(x0, torch.device("cpu"), name).shape[0]
        if batch_size is None:
            batch_size = default_batch_size(dim)
        super().__init__(
            archive, x0=x0, batch_size=batch_size, bounds=bounds, column=column, generator=generator
        )
        self.sigma0 = positive_float(sigma0, f"{name}.sigma0")
        self.instances = positive_int(instances, f"{name}.instances")
        if self.instances > MAX_EMITTER_INSTANCES:
            raise ConfigError(
                f"instances {self.instances} is above the limit MAX_EMITTER_INSTANCES = "
                f"{MAX_EMITTER_INSTANCES}",
                f"{name}.instances",
            )
        if self.instances * self.batch_size > MAX_BATCH_SIZE:
            raise ConfigError(
                f"instances * batch_size = {self.instances} * {self.batch_size} solutions per "
                f"ask, above the limit MAX_BATCH_SIZE = {MAX_BATCH_SIZE}",
                f"{name}.batch_size",
            )
        # isinstance first: `array in (...)` compares elementwise and raises ValueError.
        if not isinstance(ranker, str) or ranker not in ("2imp", "imp"):
            raise ConfigError(
                f"ranker must be '2imp' or 'imp', got {shown(ranker)}", f"{name}.ranker"
            )
        if not isinstance(selection_rule, str) or selection_rule not in ("filter", "mu"):
            raise ConfigError(
                f"selection_rule must be 'filter' or 'mu', got {shown(selection_rule)}",
                f"{name}.selection_rule",
            )
        if isinstance(restart_rule, bool) or not (
            (isinstance(restart_rule, str) and restart_rule in ("no_improvement", "basic"))
            or (isinstance(restart_rule, int) and restart_rule >= 1)
        ):
            raise ConfigError(
                "restart_rule must be 'no_improvement', 'basic' or an int >= 1, got "
                f"{shown(restart_rule)}",
                f"{name}.restart_rule",
            )
        self.ranker = ranker
        self.selection_rule = selection_rule
        self.restart_rule = restart_rule
        self.itrs = 0
        self.restarts = torch.zeros(self.instances, dtype=torch.int64, device=self.device)
        check_ask_elements(
            self.instances * self.batch_size,
            self.solution_dim,
            "instances * batch_size",
            f"{name}.batch_size",
        )
        eigen_device = as_device(eigen_device, f"{name}.eigen_device")
        if eigen_device is not None and eigen_device.type == "meta":
            raise ConfigError(
                "eigen_device is the meta device, which holds shapes but no values; the "
                "eigendecomposition needs values: use 'cpu' or the archive's device",
                f"{name}.eigen_device",
            )
        needed = state_bytes(self.instances, self.solution_dim)
        if needed > MAX_CMA_STATE_BYTES:
            d = self.solution_dim
            raise ConfigError(
                f"the {self.instances} CMA-ES searches of dimension {d} (the length of x0) need "
                f"3 ({self.instances}, {d}, {d}) float64 matrices, {needed:,} bytes, above the "
                f"limit MAX_CMA_STATE_BYTES = {MAX_CMA_STATE_BYTES:,}; use fewer instances or "
                "a shorter x0",
                f"{name}.x0",
            )
        try:
            self._es = BatchedCMAES(
                self.instances,
                self.solution_dim,
                self.batch_size,
                self.sigma0,
                self.x0,
                lower=self.lower if self.bounded else None,
                upper=self.upper if self.bounded else None,
                generator=self.generator,
                eigen_device=eigen_device,
            )
        except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
            if not isinstance(e, MemoryError | torch.OutOfMemoryError) and "alloc" not in str(e):
                raise
            d = self.solution_dim
            raise ConfigError(
                f"the {self.instances} CMA-ES searches of dimension {d} need "
                f"({self.instances}, {d}, {d}) float64 covariances "
                f"({8 * self.instances * d * d:,} bytes each copy), which {self.device} could "
                f"not allocate: {str(e).splitlines()[0][:200]}",
                f"{name}.x0",
            ) from e
        self._asked = False

    @property
    def ask_size(self) -> int:
        return self.instances * self.batch_size

    @property
    def es(self) -> BatchedCMAES:
        """The stacked CMA-ES state (means, step sizes, covariances), read-only by convention."""
        return self._es

    def ask(self) -> torch.Tensor:
        """Every search's ``batch_size`` samples, ``(instances * batch_size, d)``.

        Raises:
            ArchiveError: the last batch has been neither told nor discarded.
        """
        if self._asked:
            raise ArchiveError(
                "EvolutionStrategyEmitter.ask called twice without tell: the searches learn "
                "from the batch they sampled last, so a second ask would drop the pending one; "
                "tell its results first, or discard() it"
            )
        solutions = self.clip(self._es.ask().reshape(-1, self.solution_dim))
        self._asked = True
        return solutions

    def discard(self) -> None:
        """Drop the pending batch: the searches stay as they were before its :meth:`ask`
        (their random generator has moved on), and the next :meth:`ask` samples anew."""
        self._asked = False

    def tell(
        self,
        solutions: torch.Tensor,
        objectives: torch.Tensor,
        measures: torch.Tensor,
        status: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        if not self._asked:
            raise ArchiveError("EvolutionStrategyEmitter.tell without a preceding ask")
        self._check_told(solutions, objectives, measures, status, value)
        # A restart draws parents from the archive: check that it can before changing anything.
        _checked_elite_rows(self.archive, self.column, self.solution_dim)
        self._asked = False
        self.itrs += 1
        e, lam = self.instances, self.batch_size
        status = status.to(self.device).reshape(e, lam)
        value = value.to(self.device, torch.float64).reshape(e, lam)
        added = (status > 0).sum(dim=1)  # (E,)
        order, ranked = self._rank(status, value)
        if self.selection_rule == "filter":
            parents = added
        else:
            parents = torch.full_like(added, lam // 2)
        self._es.tell(order, parents)
        restart = self._es.should_stop(ranked)
        if self.restart_rule == "no_improvement":
            restart = restart | (added == 0)
        elif isinstance(self.restart_rule, int) and self.itrs % self.restart_rule == 0:
            restart = torch.ones_like(restart)
        starts = self._parents(e)  # (E, d): drawn every tell, used where a search restarts
        self._es.reset(starts, restart)
        self.restarts += restart.long()

    def _rank(self, status: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Best-first order ``(E, lam)`` and the ranking values in that order ``(E, lam, v)``.

        Items the archive left out as non-finite (status -1, value NaN) rank last.
        """
        value = torch.nan_to_num(value, nan=-math.inf)  # a descending sort puts NaN first
        order = torch.sort(value, dim=1, descending=True, stable=True).indices
        if self.ranker == "2imp":
            by_status = torch.sort(status.gather(1, order), dim=1, descending=True, stable=True)
            order = order.gather(1, by_status.indices)
            keys = torch.stack([status.to(torch.float64), value], dim=2)
        else:
            keys = value[..., None]
        ranked = keys.gather(1, order[..., None].expand(-1, -1, keys.shape[2]))
        return order, ranked
