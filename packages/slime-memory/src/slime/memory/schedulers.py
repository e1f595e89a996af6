"""The scheduler: one archive, several emitters, ask/tell (pyribs' ``Scheduler``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from slime.memory.archive import AddResult, Archive
from slime.memory.emitters import Emitter
from slime.memory.limits import MAX_BATCH_SIZE
from slime.proto import ArchiveError, ConfigError, shown

__all__ = ["Scheduler"]


class Scheduler:
    """Runs ``emitters`` against ``archive``: :meth:`ask` concatenates their solutions,
    :meth:`tell` adds every evaluated solution to the archive in one batch and hands each
    emitter its own slice with the archive's status and value.

    Calls alternate: ``ask``, evaluate, ``tell`` with objectives and measures in the order
    ``ask`` returned the solutions. A second ``ask`` while a batch is pending raises
    ArchiveError instead of dropping it (pyribs overwrites it without a word); a batch whose
    evaluation failed is dropped on purpose with :meth:`discard`.

    Args:
        archive: where solutions land, as the tensor column ``column`` (its first batch fixes
            the genome form to columns).
        emitters: distinct emitters built on ``archive`` with the same solution dimension.
        column: genome column name for the solutions.
        check: passed to ``archive.add``. True (the default): a NaN/Inf objective or measure
            raises ArchiveError (on an accelerator, one host sync per ``tell``). False: such
            items are left out with status -1 (emitters count them as not added) and ``tell``
            never waits for the device.

    Raises:
        ConfigError: no emitter, an emitter repeated or built on another archive, emitters
            of different solution dimensions, more solutions per ask than
            :data:`~slime.memory.limits.MAX_BATCH_SIZE` together, or an archive already
            holding genomes other than ``{column: (d,) float64}`` (payloads, another dtype or
            width, more columns), which would refuse every tell.
    """

    def __init__(
        self,
        archive: Archive,
        emitters: Sequence[Emitter],
        *,
        column: str = "solution",
        check: bool = True,
    ) -> None:
        if isinstance(emitters, str | bytes | torch.Tensor | np.ndarray) or not hasattr(
            emitters, "__iter__"
        ):
            raise ConfigError(
                f"emitters must be a sequence of Emitters, got {shown(emitters)}",
                "Scheduler.emitters",
            )
        if not isinstance(column, str):  # compared with each emitter's column below
            raise ConfigError(
                f"column must be the str name of a genome column, got {shown(column)}",
                "Scheduler.column",
            )
        emitters = list(emitters)
        if not emitters:
            raise ConfigError("the scheduler needs at least one emitter", "Scheduler.emitters")
        if len({id(e) for e in emitters}) != len(emitters):
            raise ConfigError(
                "an emitter appears more than once; build each with its own constructor call "
                "(not [Emitter(...)] * n)",
                "Scheduler.emitters",
            )
        for i, emitter in enumerate(emitters):
            if not isinstance(emitter, Emitter):
                raise ConfigError(
                    f"emitters[{i}] is a {type(emitter).__name__}, not an Emitter",
                    "Scheduler.emitters",
                )
            if emitter.archive is not archive:
                raise ConfigError(
                    f"emitters[{i}] draws from another archive than the scheduler's",
                    "Scheduler.emitters",
                )
            if emitter.solution_dim != emitters[0].solution_dim:
                raise ConfigError(
                    f"emitters[{i}] has solution dimension {emitter.solution_dim}, emitters[0] "
                    f"{emitters[0].solution_dim}",
                    "Scheduler.emitters",
                )
            if emitter.column != column:
                raise ConfigError(
                    f"emitters[{i}] reads genome column {emitter.column!r}, the scheduler "
                    f"writes {column!r}",
                    "Scheduler.emitters",
                )
        total = sum(emitter.ask_size for emitter in emitters)
        if total > MAX_BATCH_SIZE:
            raise ConfigError(
                f"the emitters ask for {total} solutions together, above the limit "
                f"MAX_BATCH_SIZE = {MAX_BATCH_SIZE} that one archive add takes",
                "Scheduler.emitters",
            )
        if not isinstance(check, bool):
            raise ConfigError(f"check must be True or False, got {check!r}", "Scheduler.check")
        _check_archive_takes(archive, column, emitters[0].solution_dim)
        self.archive = archive
        self.emitters = emitters
        self.column = column
        self.check = check
        self._solutions: torch.Tensor | None = None  # (n, d) from the last ask
        self._sizes: list[int] = []

    def ask(self) -> torch.Tensor:
        """Every emitter's solutions, concatenated in emitter order: ``(n, d)`` float64 on the
        archive's device.

        Raises:
            ArchiveError: the previous ``ask`` has been neither told nor discarded. When an
                emitter's ``ask`` raises, those asked before it drop their batches: nothing
                is pending, and the next ``ask`` starts afresh.
        """
        if self._solutions is not None:
            raise ArchiveError(
                f"ask called twice; tell the results of the last ask ({self._solutions.shape[0]} "
                "solutions) first, or discard() them"
            )
        batches: list[torch.Tensor] = []
        try:
            for emitter in self.emitters:
                batches.append(emitter.ask())
        except BaseException:
            for emitter in self.emitters[: len(batches)]:
                emitter.discard()
            raise
        self._sizes = [batch.shape[0] for batch in batches]
        self._solutions = torch.cat(batches)
        return self._solutions

    @property
    def pending(self) -> bool:
        """Whether an ``ask``'s batch waits for its ``tell`` (or :meth:`discard`)."""
        return self._solutions is not None

    def discard(self) -> None:
        """Drop the pending batch without adding it (its evaluation failed, say): the archive
        and the emitters' searches stay as they were, and the next ``ask`` samples anew.

        Raises:
            ArchiveError: no batch is pending.
        """
        if self._solutions is None:
            raise ArchiveError("discard without a pending ask")
        self._solutions = None
        for emitter in self.emitters:
            emitter.discard()

    def tell(self, objectives: torch.Tensor, measures: torch.Tensor) -> AddResult:
        """Add the last ``ask``'s solutions with their ``objectives`` ``(n,)`` and ``measures``
        ``(n, k)``, then tell each emitter its slice.

        Returns:
            The archive's per-item result for the whole batch.

        Raises:
            ArchiveError: no pending ``ask``, a length that differs from the asked batch, or
                what the archive's ``add`` raises, e.g. a NaN objective with ``check=True``
                (then no emitter is told and the batch stays pending).
        """
        solutions = self._solutions
        if solutions is None:
            raise ArchiveError("tell without a pending ask")
        n = solutions.shape[0]
        for name, values in (("objectives", objectives), ("measures", measures)):
            if not isinstance(values, torch.Tensor) or values.dim() < 1 or values.shape[0] != n:
                if isinstance(values, torch.Tensor):
                    raise ArchiveError(
                        f"{name} has shape {tuple(values.shape)}; ask returned {n} solutions"
                    )
                raise ArchiveError(
                    f"{name} must be a tensor of {n} rows (ask returned {n} solutions), got "
                    f"{type(values).__name__} {shown(values)}"
                )
        result = self.archive.add({self.column: solutions}, objectives, measures, check=self.check)
        self._solutions = None
        objectives = objectives.to(solutions.device)
        measures = measures.to(solutions.device)
        start = 0
        for emitter, size in zip(self.emitters, self._sizes, strict=True):
            part = slice(start, start + size)
            emitter.tell(
                solutions[part],
                objectives[part],
                measures[part],
                result.status[part],
                result.value[part],
            )
            start += size
        return result


def _check_archive_takes(archive: Archive, column: str, dim: int) -> None:
    """Raise ConfigError unless ``archive`` can take what :meth:`Scheduler.tell` adds, one
    column ``{column: (n, dim) float64}``: an archive already holding payloads or other
    columns would refuse every tell, after the solutions were evaluated, and the pending ask
    could never be told."""
    form = archive.genome_form
    if form is None:
        return
    writes = {column: ((dim,), torch.float64)}
    columns = getattr(archive._store, "columns", None)
    held = (
        None
        if columns is None
        else {name: (tuple(rows.shape[1:]), rows.dtype) for name, rows in columns.items()}
    )
    if held != writes:
        holds = f"stores {form}" if held is None else f"holds genome columns {held}"
        raise ConfigError(
            f"the archive {holds}; the scheduler adds {writes} (the emitters' float64 "
            "solutions), which it would refuse at every tell",
            "Scheduler.archive",
        )
