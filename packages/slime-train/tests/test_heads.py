"""Head sharding in one process: the sharded forward computes what the organism's own does, the
placement rules, and the errors. Real multi-rank runs are in tests/distributed."""

from __future__ import annotations

import pytest
import torch
from slime.core import placement
from slime.proto import ConfigError
from slime.train import Trainer, build_dataset, load_config
from slime.train.distributed import Distributed
from slime.train.heads import HeadSharding, slot_ranks


@pytest.fixture
def trainer() -> Trainer:
    cfg = load_config("tiny").replace(train={"parallel": "heads"})
    return Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size))


def test_sharded_forward_of_one_rank_equals_the_organism(trainer) -> None:
    model = trainer.model
    idx, targets = trainer.dataset.batch("train", 4, torch.Generator().manual_seed(0))
    model.feed_tubes(False)
    logits, loss = model(idx, targets)
    loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    sharding = HeadSharding(model, Distributed(), "behaviour")  # one rank owns every slot
    assert sharding.owned() == [list(range(model.organisms[0].pod_capacity))]
    got_logits, got_loss = model(idx, targets)
    got_loss.backward()
    torch.testing.assert_close(got_logits, logits, rtol=1e-6, atol=1e-7)
    for got, want in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    sharding.remove()
    assert "forward" not in vars(model.organisms[0])


def test_behaviour_placement_is_the_cell_hash_and_empty_slots_go_round_robin(trainer) -> None:
    organism = trainer.model.organisms[0]
    with torch.no_grad():
        organism.descriptors[0, :2] = torch.tensor([0.9, 0.1])
        organism.descriptors[1, :2] = torch.tensor([0.2, 0.7])
    ranks = slot_ranks(organism, 3, "behaviour", seed=0, layer=0)
    cells = organism.archive.cell_index(organism.live_descriptors()).tolist()
    assert organism.live_slots() == [0, 1]
    assert ranks[:2] == [placement((cell,), 3) for cell in cells]
    assert ranks[2:] == [2 % 3, 3 % 3]
    assert slot_ranks(organism, 3, "behaviour", seed=5, layer=1) == ranks  # behaviour only


def test_random_placement_is_seeded_and_follows_the_pod_identity(trainer) -> None:
    organism = trainer.model.organisms[0]
    seeds = [slot_ranks(organism, 4, "random", seed=s, layer=0) for s in range(16)]
    assert seeds[3] == slot_ranks(organism, 4, "random", seed=3, layer=0)  # deterministic
    assert len({tuple(r[:2]) for r in seeds}) > 1  # and depends on the seed
    before = slot_ranks(organism, 4, "random", seed=1, layer=0)
    with torch.no_grad():
        organism.descriptors[:, :2] = 0.8  # behaviour does not move a randomly placed pod
    assert slot_ranks(organism, 4, "random", seed=1, layer=0) == before
    assert before[0] == placement((1, 0, 0, int(organism.born_step[0])), 4)


def test_bad_input_is_a_config_error_naming_it(trainer) -> None:
    with pytest.raises(ConfigError, match="train.placement.*'nearest'"):
        slot_ranks(trainer.model.organisms[0], 2, "nearest", seed=0, layer=0)
    with pytest.raises(ConfigError, match="world_size.*0"):
        slot_ranks(trainer.model.organisms[0], 0, "random", seed=0, layer=0)
    with pytest.raises(ConfigError, match="train.parallel"):
        HeadSharding(torch.nn.Linear(2, 2), Distributed())
    with pytest.raises(ConfigError, match="train.parallel"):
        load_config("tiny").replace(train={"parallel": "heads", "compile": True})
    with pytest.raises(ConfigError, match="train.parallel"):
        load_config("tiny").replace(train={"parallel": "pipeline"})
    cfg = load_config("tiny").replace(train={"parallel": "heads"}, model={"kind": "baseline"})
    data = build_dataset(cfg.data, cfg.model.block_size)
    with pytest.raises(ConfigError, match="train.parallel.*baseline"):
        Trainer(cfg, data, distributed=Distributed(rank=0, world_size=2))
