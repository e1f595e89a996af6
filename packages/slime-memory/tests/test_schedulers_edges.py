"""The scheduler's ask/tell protocol at its edges: a pending batch is never dropped silently,
only on purpose (discard), and a failed ask leaves nothing pending."""

from __future__ import annotations

import pytest
import torch
from slime.memory import EvolutionStrategyEmitter, GaussianEmitter, GridArchive, Scheduler
from slime.proto import ArchiveError


def setup() -> tuple[GridArchive, list, Scheduler]:
    archive = GridArchive((5, 5), [(-2.0, 2.0), (-2.0, 2.0)], max_size=25)
    emitters = [
        EvolutionStrategyEmitter(
            archive,
            x0=[0.0, 0.0],
            sigma0=0.5,
            batch_size=4,
            generator=torch.Generator().manual_seed(0),
        ),
        GaussianEmitter(
            archive,
            sigma=0.5,
            x0=[1.0, 1.0],
            batch_size=3,
            generator=torch.Generator().manual_seed(1),
        ),
    ]
    return archive, emitters, Scheduler(archive, emitters)


def evaluate(solutions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return -solutions.square().sum(dim=1), solutions[:, :2]


def test_a_second_ask_names_the_pending_batch_and_keeps_it() -> None:
    archive, _, scheduler = setup()
    solutions = scheduler.ask()
    with pytest.raises(ArchiveError, match=r"ask called twice.*\(7 solutions\).*discard\(\)"):
        scheduler.ask()
    assert scheduler.pending
    scheduler.tell(*evaluate(solutions))  # the first batch is still the one told
    assert not scheduler.pending and archive.stats.num_elites > 0


def test_discard_drops_the_pending_batch_and_the_next_ask_samples_anew() -> None:
    # Before, a batch whose evaluation failed could never be dropped: every later ask raised
    # "ask called twice", and the scheduler was stuck.
    archive, emitters, scheduler = setup()
    mean = emitters[0].es.mean.clone()
    scheduler.ask()
    scheduler.discard()
    assert not scheduler.pending and archive.stats.num_elites == 0
    assert torch.equal(emitters[0].es.mean, mean)
    solutions = scheduler.ask()
    result = scheduler.tell(*evaluate(solutions))
    assert result.status.shape == (7,) and emitters[0].itrs == 1


def test_discard_without_a_pending_ask_raises() -> None:
    _, _, scheduler = setup()
    with pytest.raises(ArchiveError, match="discard without a pending ask"):
        scheduler.discard()


def test_an_emitter_whose_ask_raises_leaves_nothing_pending(monkeypatch) -> None:
    # The CMA-ES emitter asked first kept its batch pending when a later emitter's ask
    # raised: with asks that refuse to drop a pending batch, the scheduler could never ask again.
    _, emitters, scheduler = setup()
    calls = []

    def broken() -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("evaluation backend down")

    monkeypatch.setattr(emitters[1], "ask", broken)
    with pytest.raises(RuntimeError, match="backend down"):
        scheduler.ask()
    assert not scheduler.pending
    monkeypatch.undo()
    solutions = scheduler.ask()
    assert solutions.shape == (7, 2) and calls == [1]
    scheduler.tell(*evaluate(solutions))


@pytest.mark.parametrize(
    ("objectives", "measures", "says"),
    [
        (torch.zeros(6), torch.zeros(7, 2), r"objectives has shape \(6,\); ask returned 7"),
        (torch.zeros(7), torch.zeros(9, 2), r"measures has shape \(9, 2\); ask returned 7"),
        (torch.zeros(()), torch.zeros(7, 2), r"objectives has shape \(\); ask returned 7"),
    ],
    ids=["objectives", "measures", "scalar"],
)
def test_tell_of_the_wrong_count_names_both_and_keeps_the_batch(objectives, measures, says):
    _, _, scheduler = setup()
    solutions = scheduler.ask()
    with pytest.raises(ArchiveError, match=says):
        scheduler.tell(objectives, measures)
    assert scheduler.pending
    scheduler.tell(*evaluate(solutions))
