"""``slime inspect``: a run's live pods and archive elites inside a behaviour box.

A condition reads ``name<x``, ``name<=x``, ``name>x`` or ``name>=x``; several are joined with
commas and must all hold. Names are :data:`slime.core.DESCRIPTOR_NAMES`. Live pods carry every
descriptor; an archive indexes only the first ``k`` (its descriptor dimension). A condition on a
descriptor the archives do not index therefore filters the live pods only: the report then lists
no archive elites and says why (:attr:`InspectReport.archive_note`).

The archive side runs :meth:`slime.memory.Archive.where` (an inclusive box): a strict bound
``x`` becomes the next float64 below or above ``x``, which is exact because descriptors are
stored in float64.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from slime.core import DESCRIPTOR_NAMES
from slime.proto import ConfigError
from slime.tools.run import load_run_model

__all__ = [
    "Condition",
    "EliteMatch",
    "InspectReport",
    "PodMatch",
    "format_report",
    "inspect_run",
    "parse_conditions",
]

_OPERATORS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>)\s*(\S+)\s*$")
# A bound is a plain decimal number: ASCII digits with an optional sign, decimal point and
# exponent. float() alone also takes '1_0' (10), 'nan', 'inf' and non-ASCII digits.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_FIELD = "--where"


@dataclass(frozen=True)
class Condition:
    """``name op value``: one bound on one descriptor."""

    name: str
    op: str  # "<", "<=", ">" or ">="
    value: float

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value:g}"

    def mask(self, values: torch.Tensor) -> torch.Tensor:
        """Which of ``values`` satisfy the condition (elementwise, float64)."""
        return _OPERATORS[self.op](values, self.value)


@dataclass(frozen=True)
class PodMatch:
    """A live pod satisfying every condition; ``descriptors`` holds all DESCRIPTOR_NAMES.

    ``measured`` is False for a pod never measured (its descriptors are placeholders, zero): such
    a pod is listed only when there are no conditions, and matches none."""

    layer: int
    slot: int
    descriptors: tuple[float, ...]
    fitness: float
    measured: bool = True


@dataclass(frozen=True)
class EliteMatch:
    """An archive elite satisfying every condition; ``descriptors`` holds the indexed ``k``."""

    layer: int
    cell: int
    descriptors: tuple[float, ...]
    objective: float


@dataclass(frozen=True)
class InspectReport:
    """What :func:`inspect_run` found. ``archive_note`` is set when the archives were not
    searched (a condition names a descriptor they do not index), saying so."""

    conditions: tuple[Condition, ...]
    pods: tuple[PodMatch, ...]
    live_pods: int
    elites: tuple[EliteMatch, ...]
    archived: int
    archive_names: tuple[str, ...]
    archive_note: str | None
    unmeasured: int = 0  # live pods never measured: no descriptors yet, matching no condition


def parse_conditions(text: str) -> tuple[Condition, ...]:
    """Parse ``"attention_distance<0.3,activation_sparsity>=0.1"``.

    Raises:
        ConfigError: an empty expression, a part that is not ``name op number``, an unknown
            descriptor name, a bound that is not a plain decimal number (``1_0``, ``nan``,
            ``inf``) or is beyond the float64 range (``1e400``), each naming the offending part.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(
            f"expected conditions like 'attention_distance<0.3', got {text!r}", _FIELD
        )
    conditions = []
    for part in text.split(","):
        found = _CONDITION.match(part)
        if found is None:
            raise ConfigError(
                f"cannot read {part.strip()!r}: expected name<x, name<=x, name>x or name>=x",
                _FIELD,
            )
        name, op, number = found.groups()
        if name not in DESCRIPTOR_NAMES:
            raise ConfigError(
                f"unknown descriptor {name!r} in {part.strip()!r}; expected one of "
                f"{', '.join(DESCRIPTOR_NAMES)}",
                _FIELD,
            )
        if _NUMBER.fullmatch(number) is None:
            raise ConfigError(
                f"{number!r} in {part.strip()!r} is not a number: expected plain decimal digits "
                "with an optional sign, decimal point and exponent, like 0.3, -2 or 1e-2",
                _FIELD,
            )
        value = float(number)
        if not math.isfinite(value):
            raise ConfigError(f"{number!r} in {part.strip()!r} is beyond the float64 range", _FIELD)
        conditions.append(Condition(name, op, value))
    return tuple(conditions)


def _box(
    conditions: Sequence[Condition], names: Sequence[str]
) -> tuple[list[float], list[float]] | None:
    """The inclusive float64 box over ``names`` that the conditions describe; None when empty."""
    low, high = [-math.inf] * len(names), [math.inf] * len(names)
    for c in conditions:
        i = names.index(c.name)
        if c.op == "<":
            high[i] = min(high[i], math.nextafter(c.value, -math.inf))
        elif c.op == "<=":
            high[i] = min(high[i], c.value)
        elif c.op == ">":
            low[i] = max(low[i], math.nextafter(c.value, math.inf))
        else:
            low[i] = max(low[i], c.value)
    if any(a > b for a, b in zip(low, high)):
        return None
    return low, high


def inspect_run(
    run_dir: str | os.PathLike[str], where: str | Sequence[Condition] | None = None
) -> InspectReport:
    """The live pods and archive elites of ``RUN_DIR/model`` satisfying ``where`` (all of them
    when None).

    Raises:
        ConfigError: ``where`` cannot be parsed (see :func:`parse_conditions`).
        CheckpointError: the run holds no saved model, or it cannot be read.
    """
    conditions = parse_conditions(where) if isinstance(where, str) else tuple(where or ())
    model = load_run_model(run_dir)
    pods, live, unmeasured = [], 0, 0
    for layer, organism in enumerate(model.organisms):
        slots = organism.live_slots()
        live += len(slots)
        descriptors = organism.live_descriptors(full=True).double().cpu()
        fitness = organism.fitness[organism.alive].double().cpu()
        # A pod never measured holds zeros, not its behaviour: it can satisfy no condition.
        measured = (organism.n_measurements[organism.alive] > 0).cpu()
        unmeasured += int((~measured).sum())
        keep = measured.clone() if conditions else torch.ones(len(slots), dtype=torch.bool)
        for c in conditions:
            keep &= c.mask(descriptors[:, DESCRIPTOR_NAMES.index(c.name)])
        rows = torch.nonzero(keep).squeeze(1).tolist()
        chosen, values = descriptors[rows].tolist(), fitness[rows].tolist()
        for row, d, f in zip(rows, chosen, values):
            pods.append(PodMatch(layer, slots[row], tuple(d), f, bool(measured[row])))
    archives = [organism.archive for organism in model.organisms]
    k = min((a.descriptor_dim for a in archives), default=0)
    names = tuple(DESCRIPTOR_NAMES[:k])
    elites, archived, note = [], 0, None
    outside = sorted({c.name for c in conditions} - set(names), key=DESCRIPTOR_NAMES.index)
    if outside:
        note = (
            f"not searched: the archives index only {', '.join(names)}, not "
            f"{', '.join(outside)} (those conditions apply to the live pods only)"
        )
    else:
        box = _box(conditions, names)
        for layer, archive in enumerate(archives):
            archived += len(archive)
            if box is None:
                continue
            pad = [None] * (archive.descriptor_dim - k)
            found = archive.where(box[0] + pad, box[1] + pad)
            for elite in found:
                elites.append(
                    EliteMatch(layer, elite.cell, tuple(elite.descriptor.tolist()), elite.objective)
                )
    return InspectReport(
        conditions=conditions,
        pods=tuple(pods),
        live_pods=live,
        elites=tuple(elites),
        archived=archived,
        archive_names=names,
        archive_note=note,
        unmeasured=unmeasured,
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    return [
        "  " + "  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in [header, *rows]
    ]


def format_report(report: InspectReport) -> str:
    """The report as text: a header line, then one table for pods and one for elites."""
    where = ", ".join(str(c) for c in report.conditions) or "(no conditions: everything)"
    count = f"live pods: {len(report.pods)} of {report.live_pods}"
    if report.unmeasured:
        count += f" ({report.unmeasured} never measured: no descriptors yet, shown as '-'" + (
            ", so they match no condition)" if report.conditions else ")"
        )
    lines = [f"where {where}", count]
    if report.pods:
        header = ["layer", "slot", *DESCRIPTOR_NAMES, "fitness"]
        rows = [
            [
                str(p.layer),
                str(p.slot),
                *(f"{d:.6g}" if p.measured else "-" for d in p.descriptors),
                f"{p.fitness:.6g}",
            ]
            for p in report.pods
        ]
        lines += _table(header, rows)
    if report.archive_note is not None:
        lines.append(f"archive elites: {report.archive_note}")
    else:
        lines.append(f"archive elites: {len(report.elites)} of {report.archived}")
        if report.elites:
            header = ["layer", "cell", *report.archive_names, "objective"]
            rows = [
                [
                    str(e.layer),
                    str(e.cell),
                    *(f"{d:.6g}" for d in e.descriptors),
                    f"{e.objective:.6g}",
                ]
                for e in report.elites
            ]
            lines += _table(header, rows)
    return "\n".join(lines)
