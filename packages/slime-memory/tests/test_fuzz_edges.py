"""What a fuzzing pass over the constructors found: arguments of the wrong kind or size that
leaked a bare TypeError/ValueError/RuntimeError from torch or numpy (or tried to allocate
terabytes) instead of one typed slime error naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slime.memory import (
    CVTArchive,
    EvolutionStrategyEmitter,
    GaussianEmitter,
    GridArchive,
    IsoLineEmitter,
    Scheduler,
)
from slime.proto import ConfigError, SlimeError

HUGE = torch.zeros(1, dtype=torch.float64).expand(10**12)  # no memory behind its 10**12 rows


def archive() -> GridArchive:
    return GridArchive([4, 4], [(0.0, 1.0), (0.0, 1.0)])


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda: GridArchive(torch.tensor(1.0), [(0.0, 1.0)]), "GridArchive.dims"),
        (lambda: GridArchive(HUGE, [(0.0, 1.0)]), "GridArchive.dims"),
        (lambda: GridArchive({1: 2}, [(0.0, 1.0)]), "GridArchive.dims"),
        (lambda: GridArchive([2], torch.tensor(1.0)), "GridArchive.ranges"),
        (lambda: GridArchive([2], torch.tensor([math.nan])), "GridArchive.ranges"),
        (lambda: CVTArchive(2, torch.tensor(1.0)), "CVTArchive.ranges"),
        (lambda: CVTArchive(2, np.array([0.0, 1.0])), "CVTArchive.ranges"),
        (lambda: CVTArchive(2, [(0.0, 1.0)], nearest=np.array([1.0, 2.0])), "CVTArchive.nearest"),
    ],
    ids=[
        "grid-dims-0d-tensor",  # TypeError: iteration over a 0-d tensor
        "grid-dims-10**12",  # RuntimeError: std::bad_alloc
        "grid-dims-dict",  # accepted: its keys became the dims
        "grid-ranges-0d-tensor",  # TypeError: len() of a 0-d tensor
        "grid-ranges-1d-tensor",  # TypeError: len() of a 0-d tensor
        "cvt-ranges-0d-tensor",  # TypeError: iteration over a 0-d tensor
        "cvt-ranges-1d-array",  # TypeError: len() of unsized object
        "cvt-nearest-array",  # ValueError: truth value of an array is ambiguous
    ],
)
def test_archive_arguments_found_by_fuzzing_raise_config_error(make, path) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        make()


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (
            lambda a: EvolutionStrategyEmitter(
                a, x0=[0.0, 0.0], sigma0=0.1, bounds=torch.tensor(1.0)
            ),
            "EvolutionStrategyEmitter.bounds",
        ),
        (
            lambda a: GaussianEmitter(
                a, x0=[0.0, 0.0], sigma=0.1, bounds=HUGE[:, None].expand(-1, 2)
            ),
            "GaussianEmitter.bounds",
        ),
        (lambda a: IsoLineEmitter(a, x0=HUGE), "IsoLineEmitter.x0"),
        (
            lambda a: EvolutionStrategyEmitter(a, x0=torch.zeros(1).expand(10**12), sigma0=0.1),
            "EvolutionStrategyEmitter.x0",
        ),
        (lambda a: GaussianEmitter(a, x0=[0.0, 0.0], sigma=HUGE), "GaussianEmitter.sigma"),
        (
            lambda a: GaussianEmitter(a, x0=[0.0, 0.0], sigma=torch.ones(2, device="meta")),
            "GaussianEmitter.sigma",
        ),
        (
            lambda a: EvolutionStrategyEmitter(a, x0=torch.zeros(2, device="meta"), sigma0=0.1),
            "EvolutionStrategyEmitter.x0",
        ),
        (
            lambda a: EvolutionStrategyEmitter(a, x0=[0.0], sigma0=0.1, ranker=np.array([1, 2])),
            "EvolutionStrategyEmitter.ranker",
        ),
        (
            lambda a: EvolutionStrategyEmitter(
                a, x0=[0.0], sigma0=0.1, selection_rule=np.array([1, 2])
            ),
            "EvolutionStrategyEmitter.selection_rule",
        ),
        (
            lambda a: EvolutionStrategyEmitter(
                a, x0=[0.0], sigma0=0.1, restart_rule=np.array([1, 2])
            ),
            "EvolutionStrategyEmitter.restart_rule",
        ),
        (lambda a: Scheduler(a, torch.tensor(1.0)), "Scheduler.emitters"),
        (lambda a: Scheduler(a, HUGE), "Scheduler.emitters"),
        (
            lambda a: Scheduler(
                a, [GaussianEmitter(a, sigma=0.1, x0=[0.0])], column=np.array([1.0, 2.0])
            ),
            "Scheduler.column",
        ),
    ],
    ids=[
        "es-bounds-0d-tensor",  # TypeError: len() of a 0-d tensor
        "gauss-bounds-10**12",  # RuntimeError: can't allocate memory
        "iso-x0-10**12",  # RuntimeError: tried to allocate 8,000,000,000,000 bytes
        "es-x0-10**12-float32",  # the cast copied all 10**12 numbers
        "gauss-sigma-10**12",
        "gauss-sigma-meta",  # NotImplementedError: Cannot copy out of meta tensor
        "es-x0-meta",
        "es-ranker-array",  # ValueError: truth value of an array is ambiguous
        "es-selection-array",
        "es-restart-array",
        "scheduler-emitters-0d-tensor",  # TypeError: iteration over a 0-d tensor
        "scheduler-emitters-10**12",  # RuntimeError: std::bad_alloc
        "scheduler-column-array",  # ValueError: truth value of an array is ambiguous
    ],
)
def test_emitter_arguments_found_by_fuzzing_raise_config_error(make, path) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        make(archive())


WEIRD = st.sampled_from(
    [
        None, True, 0, 1, -1, 3, 10**400, 2**63, 1.5, -0.0, math.nan, math.inf, -math.inf,
        1e308, 5e-324, "1", b"x", [], [1], [0.0, 1.0], (0.0, 1.0), [(0.0, 1.0)],
        [(0.0, 1.0), (0.0, 1.0)], {1: 2}, {1}, object(), np.float64(1.0), np.int64(2),
        np.array([1.0, 2.0]), torch.tensor(1.0), torch.tensor([0.0, 1.0]), torch.zeros(2, 2),
        torch.zeros(0), torch.zeros(3, dtype=torch.complex64), torch.tensor([math.nan]),
        torch.zeros(2, device="meta"), HUGE, "cpu", "meta", torch.device("meta"),
        (None, None), (1.0, 0.0), [(None, 1.0)], np.array([[0.0, 1.0]]),
    ]
)  # fmt: skip
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def only_slime_errors(make) -> None:
    try:
        make()
    except SlimeError:
        pass


@FUZZ
@given(WEIRD, WEIRD, st.sampled_from(["epsilon", "device", "max_size", "qd_offset"]), WEIRD)
def test_grid_archive_raises_only_slime_errors(dims, ranges, key, value) -> None:
    only_slime_errors(lambda: GridArchive(dims, ranges, **{key: value}))


@FUZZ
@given(WEIRD, WEIRD, st.sampled_from(["centroids", "seed", "nearest", "device"]), WEIRD)
def test_cvt_archive_raises_only_slime_errors(cells, ranges, key, value) -> None:
    if isinstance(cells, int) and cells > 64 and key != "centroids":
        return  # k-means over that many cells is slow, not wrong
    only_slime_errors(lambda: CVTArchive(cells, ranges, samples=64, **{key: value}))


@FUZZ
@given(
    st.sampled_from([GaussianEmitter, IsoLineEmitter, EvolutionStrategyEmitter]),
    st.dictionaries(
        st.sampled_from(["x0", "batch_size", "bounds", "column", "generator", "instances"]),
        WEIRD,
        max_size=3,
    ),
)
def test_emitters_raise_only_slime_errors(make, kwargs) -> None:
    kwargs.setdefault("x0", [0.0, 0.0])
    if make is GaussianEmitter:
        kwargs.setdefault("sigma", 0.1)
    if make is EvolutionStrategyEmitter:
        kwargs.setdefault("sigma0", 0.1)
    else:
        kwargs.pop("instances", None)
    only_slime_errors(lambda: make(archive(), **kwargs).ask())


@FUZZ
@given(WEIRD, WEIRD)
def test_scheduler_tell_raises_only_slime_errors(objectives, measures) -> None:
    a = archive()
    emitters = [
        GaussianEmitter(a, sigma=0.1, x0=[0.0, 0.0], batch_size=2),
        EvolutionStrategyEmitter(a, sigma0=0.1, x0=[0.0, 0.0], batch_size=2),
    ]
    scheduler = Scheduler(a, emitters)
    scheduler.ask()
    only_slime_errors(lambda: scheduler.tell(objectives, measures))
