"""Emitters: shapes, bounds, where parents come from, reproducibility, ranking, restarts, errors."""

from __future__ import annotations

import pytest
import torch
from slime.memory import (
    EvolutionStrategyEmitter,
    GaussianEmitter,
    GridArchive,
    IsoLineEmitter,
)
from slime.memory.emitters import _sample_elite_rows
from slime.proto import ArchiveError, ConfigError

DIM = 4


def archive_with(*rows: list[float], cells: int = 10) -> GridArchive:
    """A 1-d grid over [0, cells) holding each row as an elite in its own cell."""
    archive = GridArchive((cells,), [(0.0, float(cells))], max_size=cells)
    if rows:
        solutions = torch.tensor(rows, dtype=torch.float64)
        n = solutions.shape[0]
        cells_at = torch.arange(n, dtype=torch.float64)[:, None] + 0.5
        archive.add({"solution": solutions}, torch.ones(n), cells_at)
    return archive


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_emitter_starts_from_x0_while_the_archive_is_empty() -> None:
    x0 = torch.tensor([1.0, -2.0, 3.0, 0.5])
    emitter = GaussianEmitter(archive_with(), sigma=1e-9, x0=x0, batch_size=7, generator=seeded())
    solutions = emitter.ask()
    assert solutions.shape == (7, DIM) and solutions.dtype == torch.float64
    torch.testing.assert_close(solutions, x0.double().expand(7, -1), atol=1e-7, rtol=0)


def test_gaussian_emitter_mutates_elites_not_x0_once_the_archive_has_some() -> None:
    elites = [[5.0] * DIM, [-5.0] * DIM]
    emitter = GaussianEmitter(
        archive_with(*elites), sigma=1e-6, x0=[0.0] * DIM, batch_size=64, generator=seeded()
    )
    solutions = emitter.ask()
    first = solutions[:, 0]
    assert torch.all(((first - 5.0).abs() < 1e-4) | ((first + 5.0).abs() < 1e-4))
    assert (first > 0).any() and (first < 0).any()  # both elites get drawn


def test_sigma_sets_the_spread_of_the_noise() -> None:
    emitter = GaussianEmitter(
        archive_with([0.0] * DIM), sigma=0.3, x0=[0.0] * DIM, batch_size=4000, generator=seeded()
    )
    spread = emitter.ask().std(dim=0)
    # 4000 draws: the sample sd is within ~1.1% (one standard error) of 0.3; 10% is ~9 errors.
    torch.testing.assert_close(
        spread, torch.full((DIM,), 0.3, dtype=torch.float64), rtol=0.1, atol=0
    )


def test_elites_are_drawn_uniformly() -> None:
    archive = archive_with([0.0], [1.0], [2.0], [3.0])
    draws = _sample_elite_rows(
        archive, "solution", 8000, torch.zeros(1, dtype=torch.float64), seeded()
    )
    shares = torch.bincount(draws[:, 0].long(), minlength=4) / 8000
    # Binomial sd of each share is sqrt(.25 * .75 / 8000) ~ 0.005; 0.03 is six of them.
    assert torch.all((shares - 0.25).abs() < 0.03), shares


@pytest.mark.parametrize(
    ("bounds", "low", "high"),
    [
        ((-1.0, 1.0), [-1.0] * DIM, [1.0] * DIM),
        (
            [(-1.0, 1.0), (None, 0.0), (0.0, None), None],
            [-1.0, -1e9, 0.0, -1e9],
            [1.0, 0.0, 1e9, 1e9],
        ),
    ],
)
def test_solutions_are_clipped_into_the_bounds(bounds, low, high) -> None:
    archive = archive_with([0.0] * DIM)
    low, high = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
    for emitter in (
        GaussianEmitter(archive, sigma=10.0, x0=[0.0] * DIM, bounds=bounds, generator=seeded()),
        IsoLineEmitter(archive, iso_sigma=10.0, x0=[0.0] * DIM, bounds=bounds, generator=seeded()),
        EvolutionStrategyEmitter(
            archive, x0=[0.0] * DIM, sigma0=10.0, instances=3, bounds=bounds, generator=seeded()
        ),
    ):
        solutions = emitter.ask()
        assert torch.all((solutions >= low) & (solutions <= high)), type(emitter).__name__
        # The noise is wide: clipping is what held them in.
        assert ((solutions == low) | (solutions == high)).any()


def test_iso_line_emitter_moves_along_the_line_between_two_elites() -> None:
    a, b = [1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]
    emitter = IsoLineEmitter(
        archive_with(a, b),
        iso_sigma=1e-9,
        line_sigma=0.5,
        x0=[0.0] * DIM,
        batch_size=200,
        generator=seeded(),
    )
    solutions = emitter.ask()
    # Every solution is a + t (b - a) or b + t (a - b): only coordinate 1 varies.
    torch.testing.assert_close(
        solutions[:, [0, 2, 3]],
        torch.tensor([[1.0, 0.0, 0.0]]).double().expand(200, -1),
        atol=1e-7,
        rtol=0,
    )
    assert solutions[:, 1].std() > 0.3  # line_sigma 0.5 times a distance of 2 when a != b


def test_iso_line_emitter_with_one_elite_only_adds_iso_noise() -> None:
    elite = [3.0, 1.0, -1.0, 2.0]
    emitter = IsoLineEmitter(
        archive_with(elite), iso_sigma=1e-9, line_sigma=5.0, x0=[0.0] * DIM, generator=seeded()
    )
    solutions = emitter.ask()
    torch.testing.assert_close(
        solutions, torch.tensor(elite).double().expand(64, -1), atol=1e-7, rtol=0
    )


def _search(make_emitter, rounds: int = 5) -> list[torch.Tensor]:
    """Ask/evaluate/tell ``rounds`` times on a fresh archive; the asked batches."""
    archive = GridArchive((8, 8), [(-4.0, 4.0), (-4.0, 4.0)], max_size=64)
    emitter = make_emitter(archive)
    asked = []
    for _ in range(rounds):
        solutions = emitter.ask()
        asked.append(solutions)
        objectives = -solutions.square().sum(dim=1)
        result = archive.add({"solution": solutions}, objectives, solutions[:, :2])
        emitter.tell(solutions, objectives, solutions[:, :2], result.status, result.value)
    return asked


@pytest.mark.parametrize(
    "make",
    [
        lambda archive, g: GaussianEmitter(archive, sigma=0.5, x0=[0.0] * DIM, generator=g),
        lambda archive, g: IsoLineEmitter(archive, iso_sigma=0.3, x0=[0.0] * DIM, generator=g),
        lambda archive, g: EvolutionStrategyEmitter(
            archive, x0=[0.0] * DIM, sigma0=0.5, instances=3, generator=g
        ),
    ],
    ids=["gaussian", "iso_line", "cma_es"],
)
def test_the_same_seed_gives_the_same_search_and_another_seed_another(make) -> None:
    first = _search(lambda archive: make(archive, seeded(7)))
    again = _search(lambda archive: make(archive, seeded(7)))
    other = _search(lambda archive: make(archive, seeded(8)))
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[-1], other[-1])


def test_cma_emitter_asks_instances_times_batch_rows() -> None:
    emitter = EvolutionStrategyEmitter(
        archive_with(), x0=[0.0] * DIM, sigma0=0.5, instances=5, batch_size=6, generator=seeded()
    )
    assert emitter.ask().shape == (30, DIM)
    default = EvolutionStrategyEmitter(archive_with(), x0=[0.0] * DIM, sigma0=0.5)
    assert default.batch_size == 4 + 4  # 4 + floor(3 ln 4)


def test_two_stage_ranking_puts_new_cells_before_improvements_before_the_rest() -> None:
    emitter = EvolutionStrategyEmitter(
        archive_with(), x0=[0.0] * DIM, sigma0=0.5, batch_size=6, generator=seeded()
    )
    status = torch.tensor([[0, 1, 2, 1, 2, 0]])
    value = torch.tensor([[9.0, 1.0, 0.5, 3.0, 2.0, -1.0]], dtype=torch.float64)
    order, ranked = emitter._rank(status, value)
    assert order.tolist() == [[4, 2, 3, 1, 0, 5]]
    assert ranked[0, :, 0].tolist() == [2, 2, 1, 1, 0, 0]
    emitter.ranker = "imp"
    order, _ = emitter._rank(status, value)
    assert order.tolist() == [[0, 3, 4, 1, 2, 5]]
    # Items the archive left out as non-finite (status -1, value NaN) rank last either way.
    status[0, 0], value[0, 0] = -1, float("nan")
    for ranker in ("imp", "2imp"):
        emitter.ranker = ranker
        order, _ = emitter._rank(status, value)
        assert order[0, -1] == 0, ranker


def test_a_search_with_nothing_added_restarts_from_an_elite() -> None:
    elite = [2.0, 2.0, 2.0, 2.0]
    archive = archive_with(elite)
    emitter = EvolutionStrategyEmitter(
        archive, x0=[0.0] * DIM, sigma0=0.5, instances=2, batch_size=4, generator=seeded()
    )
    solutions = emitter.ask()
    status = torch.tensor([0, 0, 0, 0, 2, 0, 0, 0], dtype=torch.int32)  # only search 1 added
    value = torch.arange(8, dtype=torch.float64)
    emitter.tell(solutions, value, solutions[:, :1], status, value)
    assert emitter.restarts.tolist() == [1, 0]
    torch.testing.assert_close(emitter.es.mean[0], torch.tensor(elite, dtype=torch.float64))
    assert emitter.es.sigma[0] == 0.5
    # Search 1 moved to its one parent (filter selection): the solution that landed.
    torch.testing.assert_close(emitter.es.mean[1], solutions[4])


def test_basic_restart_rule_keeps_a_search_that_added_nothing_in_place() -> None:
    emitter = EvolutionStrategyEmitter(
        archive_with([1.0] * DIM),
        x0=[0.5] * DIM,
        sigma0=0.5,
        batch_size=4,
        restart_rule="basic",
        generator=seeded(),
    )
    solutions = emitter.ask()
    nothing = torch.zeros(4, dtype=torch.int32)
    emitter.tell(solutions, torch.arange(4.0), solutions[:, :1], nothing, torch.arange(4.0))
    assert emitter.restarts.tolist() == [0]
    torch.testing.assert_close(emitter.es.mean[0], torch.full((DIM,), 0.5, dtype=torch.float64))


def test_mu_selection_moves_every_search_to_its_better_half() -> None:
    emitter = EvolutionStrategyEmitter(
        archive_with(),
        x0=[0.0] * DIM,
        sigma0=0.5,
        batch_size=4,
        selection_rule="mu",
        restart_rule="basic",
        generator=seeded(),
    )
    solutions = emitter.ask()
    value = torch.tensor([0.0, 3.0, 1.0, 2.0], dtype=torch.float64)
    emitter.tell(solutions, value, solutions[:, :1], torch.zeros(4, dtype=torch.int32), value)
    # Two parents, ranks 1 and 2 (rows 1 and 3), log-weights ln 2.5 - ln r normalised.
    w1, w2 = torch.log(torch.tensor(2.5)) - torch.log(torch.tensor([1.0, 2.0]))
    expected = (w1 * solutions[1] + w2 * solutions[3]) / (w1 + w2)
    torch.testing.assert_close(emitter.es.mean[0], expected.double())


def test_tell_checks_its_arguments() -> None:
    emitter = EvolutionStrategyEmitter(
        archive_with(), x0=[0.0] * DIM, sigma0=0.5, batch_size=4, generator=seeded()
    )
    status, value = torch.zeros(4, dtype=torch.int32), torch.zeros(4)
    with pytest.raises(ArchiveError, match="without a preceding ask"):
        emitter.tell(torch.zeros(4, DIM), value, torch.zeros(4, 1), status, value)
    solutions = emitter.ask()
    with pytest.raises(ArchiveError, match=r"status \(3,\).*expected \(4,\)"):
        emitter.tell(solutions, value, torch.zeros(4, 1), status[:3], value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda a: GaussianEmitter(a, sigma=0.0, x0=[0.0]), r"sigma must be .*> 0, got 0.0"),
        (lambda a: GaussianEmitter(a, sigma=[1.0, -1.0], x0=[0.0] * 2), r"sigma must be"),
        (lambda a: GaussianEmitter(a, sigma=1.0, x0=[[0.0]]), r"x0 must have shape \(d,\)"),
        (lambda a: GaussianEmitter(a, sigma=1.0, x0=[float("nan")]), r"x0 must be finite"),
        (lambda a: GaussianEmitter(a, sigma=1.0, x0=[0.0], batch_size=0), r"batch_size .* got 0"),
        (lambda a: GaussianEmitter(a, sigma=1.0, x0=[0.0], bounds=(1.0, -1.0)), r"bounds\[0\]"),
        (lambda a: GaussianEmitter(a, sigma=1.0, x0=[0.0, 0.0], bounds=[(0, 1)] * 3), r"3 pairs"),
        (lambda a: GaussianEmitter(a, sigma=1.0, x0=[0.0], generator=3), r"torch.Generator"),
        (lambda a: GaussianEmitter("archive", sigma=1.0, x0=[0.0]), r"Archive"),
        (lambda a: IsoLineEmitter(a, x0=[0.0], line_sigma=-1.0), r"line_sigma .* got -1.0"),
        (lambda a: EvolutionStrategyEmitter(a, x0=[0.0], sigma0=0.5, ranker="obj"), r"'obj'"),
        (lambda a: EvolutionStrategyEmitter(a, x0=[0.0], sigma0=0.5, restart_rule=0), r"got 0"),
        (
            lambda a: EvolutionStrategyEmitter(a, x0=[0.0], sigma0=0.5, selection_rule="x"),
            r"selection_rule .* got 'x'",
        ),
        (lambda a: EvolutionStrategyEmitter(a, x0=[0.0], sigma0=0.5, instances=0), r"instances"),
    ],
)
def test_bad_arguments_raise_config_errors_naming_the_value(make, message) -> None:
    with pytest.raises(ConfigError, match=message):
        make(archive_with())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"sigma": 1j}, r"GaussianEmitter.sigma: sigma must be .* got .*complex.* 1j"),
        ({"sigma": [1.0, 1j]}, r"GaussianEmitter.sigma: sigma must be .*complex"),
        ({"sigma": "1"}, r"GaussianEmitter.sigma: sigma must be .* got '1'"),
        ({"sigma": 10**400}, r"GaussianEmitter.sigma: sigma must be .* got 1000"),
        ({"bounds": 5}, r"GaussianEmitter.bounds: bounds must be None, .* got 5"),
        ({"bounds": (0, 10**400)}, r"GaussianEmitter.bounds: bounds\[0\] .* float64 range"),
        ({"x0": [1 + 2j, 0.0]}, r"GaussianEmitter.x0: x0 must be d numbers \(real\)"),
        ({"x0": torch.tensor([1 + 2j, 0.0])}, r"GaussianEmitter.x0: x0 must be .*complex"),
        ({"x0": [True, False]}, r"GaussianEmitter.x0: x0 must be .*torch.bool"),
        ({"x0": "ab"}, r"GaussianEmitter.x0: x0 must be d numbers, got 'ab'"),
    ],
    ids=[
        "sigma-complex",
        "sigma-complex-list",
        "sigma-str",
        "sigma-huge",
        "bounds-int",
        "bounds-huge",
        "x0-complex",
        "x0-complex-tensor",
        "x0-bool",
        "x0-str",
    ],
)
def test_mistyped_numbers_raise_config_errors_instead_of_converting(arguments, message) -> None:
    # sigma 1j or "1" raised TypeError, bounds=5 TypeError (len), 10**400 OverflowError; a
    # complex x0 lost its imaginary part and bools became 1.0 and 0.0.
    given = {"sigma": 1.0, "x0": [0.0, 0.0], **arguments}
    with pytest.raises(ConfigError, match=message):
        GaussianEmitter(archive_with(), **given)


def test_instances_above_the_limit_raise_config_error_before_allocating() -> None:
    from slime.memory.limits import MAX_EMITTER_INSTANCES

    with pytest.raises(ConfigError, match=f"instances {10**9} is above the limit"):
        EvolutionStrategyEmitter(archive_with(), x0=[0.0], sigma0=0.5, instances=10**9)
    assert MAX_EMITTER_INSTANCES >= 15  # pyribs' CMA-ME setup still fits


@pytest.mark.parametrize("make", [GaussianEmitter, IsoLineEmitter, EvolutionStrategyEmitter])
def test_a_batch_size_above_the_limit_raises_config_error_before_allocating(make) -> None:
    # batch_size had no upper bound: 10**12 was accepted and the first ask (or CMA-ES'
    # buffers) asked the allocator for terabytes.
    from slime.memory.limits import MAX_BATCH_SIZE

    kwargs = {GaussianEmitter: {"sigma": 0.5}, IsoLineEmitter: {}}.get(make, {"sigma0": 0.5})
    with pytest.raises(
        ConfigError,
        match=f"batch_size {10**12} is above the limit MAX_BATCH_SIZE = {MAX_BATCH_SIZE}",
    ):
        make(archive_with(), x0=[0.0], batch_size=10**12, **kwargs)
    if make is not EvolutionStrategyEmitter:  # builds nothing of that size
        assert make(archive_with(), x0=[0.0], batch_size=MAX_BATCH_SIZE, **kwargs).ask_size == (
            MAX_BATCH_SIZE
        )


def test_cma_es_searches_together_above_the_batch_limit_raise_config_error() -> None:
    from slime.memory.limits import MAX_BATCH_SIZE, MAX_EMITTER_INSTANCES

    batch = MAX_BATCH_SIZE // MAX_EMITTER_INSTANCES + 1
    with pytest.raises(
        ConfigError, match=rf"instances \* batch_size = {MAX_EMITTER_INSTANCES} \* {batch} "
    ):
        EvolutionStrategyEmitter(
            archive_with(), x0=[0.0], sigma0=0.5, instances=MAX_EMITTER_INSTANCES, batch_size=batch
        )
    emitter = EvolutionStrategyEmitter(archive_with(), x0=[0.0], sigma0=0.5, instances=3)
    assert emitter.ask_size == 3 * emitter.batch_size == emitter.ask().shape[0]


def test_an_archive_of_payloads_cannot_feed_an_emitter() -> None:
    archive = GridArchive((4,), [(0.0, 4.0)], max_size=4)
    archive.add([{"solution": torch.zeros(2)}], torch.ones(1), torch.ones(1, 1))
    emitter = GaussianEmitter(archive, sigma=1.0, x0=[0.0, 0.0])
    with pytest.raises(ArchiveError, match="tensor column; this archive stores payloads"):
        emitter.ask()


def test_a_missing_column_is_named() -> None:
    emitter = GaussianEmitter(archive_with([0.0] * DIM), sigma=1.0, x0=[0.0] * DIM, column="x")
    with pytest.raises(ArchiveError, match=r"no genome column 'x'; it has \['solution'\]"):
        emitter.ask()


@pytest.mark.parametrize(
    ("eigen_device", "says"),
    [
        ("gpu", "device 'gpu' is not a torch device"),
        (1.5, "device must be a torch.device"),
        ("cuda:1000", "device 'cuda:1000' is not usable here"),
    ],
    ids=["unknown", "float", "unusable"],
)
def test_a_bad_eigen_device_raises_config_error_naming_it(eigen_device, says) -> None:
    # torch.device(eigen_device) raised its own RuntimeError or TypeError, or (an unusable
    # device) nothing until the first eigendecomposition.
    with pytest.raises(ConfigError, match=f"EvolutionStrategyEmitter.eigen_device: {says}"):
        EvolutionStrategyEmitter(
            archive_with(), x0=torch.zeros(DIM), sigma0=0.5, eigen_device=eigen_device
        )


@pytest.mark.parametrize("make", [GaussianEmitter, IsoLineEmitter, EvolutionStrategyEmitter])
def test_an_archive_column_of_another_width_than_x0_raises_archive_error_naming_both(make) -> None:
    # The archive holds 5-wide solutions, the emitter's x0 is 4 wide: ask (or a CMA-ES restart
    # after tell) failed inside torch.where with "The size of tensor a (5) must match ...".
    archive = archive_with([0.0] * 5, [1.0] * 5)
    kwargs = {"sigma0": 0.5} if make is EvolutionStrategyEmitter else {}
    if make is GaussianEmitter:
        kwargs = {"sigma": 0.5}
    emitter = make(archive, x0=torch.zeros(DIM), generator=seeded(), **kwargs)
    says = r"genome column 'solution' holds rows of shape \(5,\).*solution dimension 4"
    with pytest.raises(ArchiveError, match=says):
        solutions = emitter.ask()
        n = solutions.shape[0]
        status = torch.zeros(n, dtype=torch.int32)
        emitter.tell(solutions, torch.zeros(n), torch.zeros(n, 1), status, torch.zeros(n))
    if make is EvolutionStrategyEmitter:  # the refused tell changed nothing: it can be retried
        assert emitter.itrs == 0
        with pytest.raises(ArchiveError, match=says):
            emitter.tell(solutions, torch.zeros(n), torch.zeros(n, 1), status, torch.zeros(n))


def test_cma_me_tell_with_a_status_or_value_that_is_no_tensor_raises_archive_error() -> None:
    # tell read status.shape: a list raised AttributeError ('list' object has no attribute ...).
    emitter = EvolutionStrategyEmitter(
        archive_with(), x0=torch.zeros(DIM), sigma0=0.5, batch_size=2, generator=seeded()
    )
    solutions = emitter.ask()
    args = (solutions, torch.zeros(2), torch.zeros(2, 1))
    with pytest.raises(ArchiveError, match="tell needs status as a tensor of 2 items"):
        emitter.tell(*args, [0, 0], torch.zeros(2))
    with pytest.raises(ArchiveError, match="tell needs value as a tensor of 2 items"):
        emitter.tell(*args, torch.zeros(2, dtype=torch.int32), [0.0, 0.0])
    emitter.tell(*args, torch.zeros(2, dtype=torch.int32), torch.zeros(2))  # still pending
    assert emitter.itrs == 1


@pytest.mark.parametrize("make", [GaussianEmitter, IsoLineEmitter, EvolutionStrategyEmitter])
def test_a_column_name_that_is_no_str_raises_config_error(make) -> None:
    # column=3 was accepted; ask then failed once the archive held columns ("the archive has
    # no genome column 3"), which an archive (str keys only) could never hold.
    kwargs = {"sigma0": 0.5} if make is EvolutionStrategyEmitter else {}
    if make is GaussianEmitter:
        kwargs = {"sigma": 0.5}
    with pytest.raises(ConfigError, match=f"{make.__name__}.column: column must be the str name"):
        make(archive_with(), x0=torch.zeros(DIM), column=3, **kwargs)


@pytest.mark.parametrize(
    "bounds",
    [
        {0: (0.0, 1.0), 1: (0.0, 1.0), 2: (0.0, 1.0), 3: (0.0, 1.0)},
        {0: 5.0, 1: 6.0},
        [{0.0, 1.0}] * DIM,
        [{0: 1.0, 1: 2.0}] * DIM,
        ["01"] * DIM,
    ],
    ids=["dict-of-pairs", "dict-pair", "set-pairs", "dict-pairs", "str-pairs"],
)
def test_bounds_given_as_a_dict_or_set_are_refused(bounds) -> None:
    # A dict iterates its keys: {0: 5.0, 1: 6.0} became the bounds (0, 1) on every coordinate
    # and a dict of DIM pairs raised only by luck of its keys; a set pair unpacked in
    # whatever order it iterates.
    with pytest.raises(ConfigError, match="GaussianEmitter.bounds: bound"):
        GaussianEmitter(archive_with(), sigma=0.1, x0=torch.zeros(DIM), bounds=bounds)


def test_an_x0_or_sigma_holding_an_int_past_int64_is_read_as_the_float_it_is() -> None:
    # torch.as_tensor([2**70, 0]) overflows int64, so x0 was refused as "x0 must be d
    # numbers" although 2**70 is an ordinary float64; 10**400 (beyond float64) still is refused.
    archive = archive_with()
    emitter = GaussianEmitter(archive, sigma=[2**70, 1, 1, 1], x0=[2**70, 0, 0, 0])
    assert emitter.x0.tolist() == [float(2**70), 0.0, 0.0, 0.0]
    assert emitter.sigma.tolist() == [float(2**70), 1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="GaussianEmitter.x0: x0 must be d numbers"):
        GaussianEmitter(archive, sigma=0.1, x0=[10**400, 0, 0, 0])


def test_cma_me_covariances_too_large_to_allocate_raise_config_error(monkeypatch) -> None:
    # x0 of 100,000 coordinates asks for (1, 1e5, 1e5) float64 covariances (80 GB): torch's
    # allocator raised RuntimeError ("DefaultCPUAllocator: can't allocate memory") from inside
    # the CMA-ES state. The failure is simulated so that the test allocates nothing.
    import slime.memory.emitters as emitters

    def refuse(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
        )

    monkeypatch.setattr(emitters, "BatchedCMAES", refuse)
    with pytest.raises(
        ConfigError,
        match=r"EvolutionStrategyEmitter.x0: the 2 CMA-ES searches of dimension 4 need \(2, 4, 4\) float64",
    ):
        EvolutionStrategyEmitter(archive_with(), x0=torch.zeros(DIM), sigma0=0.5, instances=2)
