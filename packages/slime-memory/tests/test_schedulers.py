"""The scheduler: one batch into the archive, each emitter told its own slice, calls in order."""

from __future__ import annotations

import pytest
import torch
from slime.memory import EvolutionStrategyEmitter, GaussianEmitter, GridArchive, Scheduler
from slime.proto import ArchiveError, ConfigError


class Recording(GaussianEmitter):
    """A Gaussian emitter that keeps what it was told."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[tuple[torch.Tensor, ...]] = []

    def tell(self, solutions, objectives, measures, status, value) -> None:
        self.told.append((solutions, objectives, measures, status, value))


def setup(sizes=(3, 5), dim: int = 2) -> tuple[GridArchive, list[Recording], Scheduler]:
    archive = GridArchive((5, 5), [(-2.0, 2.0), (-2.0, 2.0)], max_size=25)
    emitters = [
        Recording(
            archive,
            sigma=0.5,
            x0=[float(i)] * dim,
            batch_size=n,
            generator=torch.Generator().manual_seed(i),
        )
        for i, n in enumerate(sizes)
    ]
    return archive, emitters, Scheduler(archive, emitters)


def evaluate(solutions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return -solutions.square().sum(dim=1), solutions[:, :2]


def test_ask_concatenates_the_emitters_batches_in_order() -> None:
    _, _, scheduler = setup()
    solutions = scheduler.ask()
    assert solutions.shape == (8, 2)
    # While the archive is empty each emitter mutates its own x0 (0 and 1).
    assert (solutions[:3] - 0.0).abs().max() < 3 and (solutions[3:] - 1.0).abs().max() < 3
    assert solutions[:3].mean() < solutions[3:].mean()


def test_tell_adds_one_batch_and_hands_each_emitter_its_slice() -> None:
    archive, emitters, scheduler = setup()
    solutions = scheduler.ask()
    objectives, measures = evaluate(solutions)
    result = scheduler.tell(objectives, measures)
    assert result.status.shape == (8,) and archive.stats.num_elites > 0
    for emitter, part in zip(emitters, (slice(0, 3), slice(3, 8)), strict=True):
        (told,) = emitter.told
        for got, expected in zip(
            told,
            (
                solutions[part],
                objectives[part],
                measures[part],
                result.status[part],
                result.value[part],
            ),
            strict=True,
        ):
            assert torch.equal(got, expected)
    # The archive stores the solutions as the "solution" column.
    elite = max(archive, key=lambda e: e.objective)
    assert any(torch.equal(elite.genome["solution"], row) for row in solutions)


def test_calls_must_alternate() -> None:
    _, _, scheduler = setup()
    with pytest.raises(ArchiveError, match="tell without a pending ask"):
        scheduler.tell(torch.zeros(8), torch.zeros(8, 2))
    scheduler.ask()
    with pytest.raises(ArchiveError, match="ask called twice"):
        scheduler.ask()


def test_tell_checks_lengths_against_the_asked_batch() -> None:
    _, _, scheduler = setup()
    scheduler.ask()
    with pytest.raises(ArchiveError, match=r"objectives has shape \(7,\); ask returned 8"):
        scheduler.tell(torch.zeros(7), torch.zeros(8, 2))
    with pytest.raises(ArchiveError, match=r"descriptors \(8, 3\)"):
        scheduler.tell(torch.zeros(8), torch.zeros(8, 3))


def test_a_rejected_batch_tells_no_emitter_and_stays_pending() -> None:
    archive, emitters, scheduler = setup()
    solutions = scheduler.ask()
    objectives, measures = evaluate(solutions)
    broken = objectives.clone()
    broken[4] = float("nan")
    with pytest.raises(ArchiveError, match="4"):
        scheduler.tell(broken, measures)
    assert all(not e.told for e in emitters) and archive.stats.num_elites == 0
    scheduler.tell(objectives, measures)  # the same batch, fixed
    assert all(len(e.told) == 1 for e in emitters)


def test_constructor_errors_name_the_problem() -> None:
    archive, emitters, _ = setup()
    with pytest.raises(ConfigError, match="at least one emitter"):
        Scheduler(archive, [])
    with pytest.raises(ConfigError, match="more than once"):
        Scheduler(archive, [emitters[0], emitters[0]])
    other = GridArchive((2,), [(0.0, 1.0)], max_size=2)
    with pytest.raises(ConfigError, match=r"emitters\[0\] draws from another archive"):
        Scheduler(other, emitters)
    wide = GaussianEmitter(archive, sigma=1.0, x0=[0.0] * 3)
    with pytest.raises(ConfigError, match=r"emitters\[1\] has solution dimension 3"):
        Scheduler(archive, [emitters[0], wide])
    with pytest.raises(ConfigError, match=r"emitters\[0\] reads genome column 'solution'"):
        Scheduler(archive, emitters, column="x")
    with pytest.raises(ConfigError, match=r"emitters\[0\] is a str"):
        Scheduler(archive, ["gaussian"])


def test_unchecked_tell_leaves_non_finite_items_out_and_tells_everyone() -> None:
    archive = GridArchive((5, 5), [(-2.0, 2.0), (-2.0, 2.0)], max_size=25)
    emitter = EvolutionStrategyEmitter(
        archive,
        x0=[0.0, 0.0],
        sigma0=0.5,
        instances=2,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    scheduler = Scheduler(archive, [emitter], check=False)
    solutions = scheduler.ask()
    objectives, measures = evaluate(solutions)
    objectives[[0, 1, 2, 3]] = float("nan")  # all of search 0
    result = scheduler.tell(objectives, measures)
    assert result.status[:4].tolist() == [-1] * 4 and (result.status[4:] > 0).any()
    # Search 0 added nothing: it restarts; search 1 moved.
    assert emitter.restarts.tolist() == [1, 0] and emitter.itrs == 1
    assert torch.isfinite(emitter.es.mean).all()


def test_check_must_be_a_bool() -> None:
    archive, emitters, _ = setup()
    with pytest.raises(ConfigError, match="check must be True or False, got 'no'"):
        Scheduler(archive, emitters, check="no")


def test_emitters_that_are_no_sequence_raise_config_error() -> None:
    # list(None) raised TypeError.
    with pytest.raises(ConfigError, match="Scheduler.emitters: emitters must be a sequence .*None"):
        Scheduler(GridArchive((4,), [(0.0, 1.0)]), None)


def test_tell_with_a_long_list_shows_a_short_message() -> None:
    # The message held the whole list (10**5 numbers).
    archive = GridArchive((4, 4), [(0.0, 1.0)] * 2, max_size=16)
    scheduler = Scheduler(archive, [GaussianEmitter(archive, sigma=0.1, x0=[0.0, 0.0])])
    scheduler.ask()
    with pytest.raises(ArchiveError, match=r"objectives must be a tensor of 64 rows") as raised:
        scheduler.tell([0.5] * 100_000, torch.zeros(64, 2))
    assert len(str(raised.value)) < 300


def test_emitters_asking_for_more_than_one_add_takes_raise_config_error() -> None:
    # Each emitter was under its own limits, but tell's one add of them all was not: the
    # error came only after the whole batch had been evaluated.
    from slime.memory.limits import MAX_BATCH_SIZE

    archive = GridArchive((5,), [(-2.0, 2.0)])
    half = MAX_BATCH_SIZE // 2 + 1
    emitters = [GaussianEmitter(archive, sigma=0.5, x0=[0.0], batch_size=half) for _ in "ab"]
    with pytest.raises(
        ConfigError, match=f"ask for {2 * half} solutions together, above the limit MAX_BATCH_SIZE"
    ):
        Scheduler(archive, emitters)


@pytest.mark.parametrize(
    ("first", "says"),
    [
        ({"solution": torch.zeros(1, 2, dtype=torch.float32)}, r"torch\.float32"),
        ({"solution": torch.zeros(1, 3, dtype=torch.float64)}, r"\(3,\)"),
        ({"solution": torch.zeros(1, 2, dtype=torch.float64), "age": torch.zeros(1)}, "'age'"),
        ([{"solution": torch.zeros(2)}], "stores payloads"),
    ],
    ids=["float32", "wider", "extra-column", "payloads"],
)
def test_an_archive_whose_genomes_the_scheduler_cannot_add_is_refused_at_construction(
    first, says
) -> None:
    # The scheduler was built, asked, and every tell raised ArchiveError from the archive's
    # add (after the user had evaluated the batch); the ask stayed pending for ever, so the
    # scheduler could neither ask nor tell again.
    archive = GridArchive((5, 5), [(-2.0, 2.0), (-2.0, 2.0)], max_size=25)
    archive.add(first, torch.zeros(1), torch.zeros(1, 2))
    emitter = GaussianEmitter(
        archive, sigma=0.5, x0=[0.0, 0.0], batch_size=2, generator=torch.Generator()
    )
    with pytest.raises(ConfigError, match=f"Scheduler.archive: the archive .*{says}"):
        Scheduler(archive, [emitter])


def test_an_archive_filled_with_the_schedulers_own_column_is_accepted() -> None:
    archive = GridArchive((5, 5), [(-2.0, 2.0), (-2.0, 2.0)], max_size=25)
    archive.add(
        {"solution": torch.zeros(1, 2, dtype=torch.float64)}, torch.zeros(1), torch.zeros(1, 2)
    )
    emitter = GaussianEmitter(
        archive, sigma=0.5, x0=[0.0, 0.0], batch_size=2, generator=torch.Generator()
    )
    scheduler = Scheduler(archive, [emitter])
    solutions = scheduler.ask()
    scheduler.tell(*evaluate(solutions))
