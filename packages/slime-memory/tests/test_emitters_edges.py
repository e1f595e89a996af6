"""Emitters at their edges: the meta device, CMA-ES state too large to hold, asks too large to
return, a second ask before tell, and tells of the wrong size."""

from __future__ import annotations

import pytest
import torch
from slime.memory import EvolutionStrategyEmitter, GaussianEmitter, GridArchive, IsoLineEmitter
from slime.memory.limits import MAX_ASK_ELEMENTS, MAX_CMA_STATE_BYTES
from slime.proto import ArchiveError, ConfigError

DIM = 3


def archive(device: str = "cpu") -> GridArchive:
    return GridArchive((4,), [(0.0, 4.0)], max_size=4, device=device)


def make(kind: str, target: GridArchive, **kwargs):
    if kind == "gaussian":
        return GaussianEmitter(target, sigma=0.5, x0=torch.zeros(DIM), **kwargs)
    if kind == "iso_line":
        return IsoLineEmitter(target, x0=torch.zeros(DIM), **kwargs)
    return EvolutionStrategyEmitter(target, x0=torch.zeros(DIM), sigma0=0.5, **kwargs)


KINDS = ["gaussian", "iso_line", "cma_es"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_emitter_on_a_meta_archive_raises_config_error(kind) -> None:
    # A meta archive (shapes only) is valid; an emitter on it raised a bare RuntimeError
    # ("Tensor.item() cannot be called on meta tensors") from inside its constructor.
    name = {"gaussian": "GaussianEmitter", "iso_line": "IsoLineEmitter"}.get(
        kind, "EvolutionStrategyEmitter"
    )
    with pytest.raises(ConfigError, match=rf"{name}\.archive: the archive is on the meta device"):
        make(kind, archive("meta"))


def test_a_meta_eigen_device_raises_config_error() -> None:
    # Accepted before; the first due eigendecomposition failed deep inside torch.
    with pytest.raises(ConfigError, match=r"EvolutionStrategyEmitter\.eigen_device: .*meta"):
        make("cma_es", archive(), eigen_device="meta")


def test_cma_state_above_the_cap_names_the_bytes_before_allocating(monkeypatch) -> None:
    # 50,000 coordinates ask for 3 x 20 GB of covariance state: it was allocated (or tried)
    # before anything said no.
    import slime.memory.emitters as emitters

    def never(*args, **kwargs):
        raise AssertionError("the CMA-ES state was built")

    monkeypatch.setattr(emitters, "BatchedCMAES", never)
    with pytest.raises(
        ConfigError,
        match=r"EvolutionStrategyEmitter\.x0: .*dimension 50000 .*60,000,000,000 bytes, above "
        rf"the limit MAX_CMA_STATE_BYTES = {MAX_CMA_STATE_BYTES:,}",
    ):
        EvolutionStrategyEmitter(archive(), x0=torch.zeros(50_000), sigma0=0.5, batch_size=2)
    with pytest.raises(ConfigError, match=r"the 100 CMA-ES searches .*60,000,000,000 bytes"):
        EvolutionStrategyEmitter(
            archive(), x0=torch.zeros(5_000), sigma0=0.5, instances=100, batch_size=2
        )


def test_cma_state_at_the_cap_is_built() -> None:
    emitter = EvolutionStrategyEmitter(archive(), x0=torch.zeros(30), sigma0=0.5, instances=2)
    assert emitter.es.cov.shape == (2, 30, 30)


@pytest.mark.parametrize("kind", KINDS)
def test_an_ask_above_the_element_cap_raises_config_error(kind) -> None:
    # 2**20 rows of 2,048 coordinates is 16 GiB per ask: the constructor accepted it.
    dim = 2048
    kwargs = {"batch_size": 2**20}
    if kind == "cma_es":
        kwargs = {"batch_size": 2**10, "instances": 2**10}
    x0 = torch.zeros(dim)
    with pytest.raises(
        ConfigError, match=rf"above the limit MAX_ASK_ELEMENTS = {MAX_ASK_ELEMENTS:,}"
    ):
        if kind == "gaussian":
            GaussianEmitter(archive(), sigma=0.5, x0=x0, **kwargs)
        elif kind == "iso_line":
            IsoLineEmitter(archive(), x0=x0, **kwargs)
        else:
            EvolutionStrategyEmitter(archive(), x0=x0[:1100], sigma0=0.5, **kwargs)


def test_cma_es_ask_twice_raises_instead_of_dropping_the_pending_batch() -> None:
    # The second ask silently replaced the first batch: a tell with the first batch's results
    # then updated the searches from the second batch's samples.
    emitter = make("cma_es", archive(), batch_size=4, generator=torch.Generator().manual_seed(0))
    first = emitter.ask()
    with pytest.raises(ArchiveError, match="ask called twice without tell"):
        emitter.ask()
    n = first.shape[0]
    status = torch.full((n,), 2, dtype=torch.int32)
    emitter.tell(first, torch.zeros(n), torch.zeros(n, 1), status, torch.arange(n * 1.0))
    torch.testing.assert_close(emitter.es.mean[0], first.mean(dim=0), atol=0.5, rtol=0)
    emitter.ask()  # told: the next ask is fine


def test_cma_es_discard_drops_the_pending_batch_on_purpose() -> None:
    emitter = make("cma_es", archive(), batch_size=4, generator=torch.Generator().manual_seed(0))
    mean = emitter.es.mean.clone()
    emitter.ask()
    emitter.discard()
    with pytest.raises(ArchiveError, match="tell without a preceding ask"):
        emitter.tell(
            torch.zeros(4, DIM),
            torch.zeros(4),
            torch.zeros(4, 1),
            torch.zeros(4, dtype=torch.int32),
            torch.zeros(4),
        )
    assert torch.equal(emitter.es.mean, mean) and emitter.itrs == 0
    assert emitter.ask().shape == (4, DIM)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("position", "name", "wrong"),
    [
        (0, "solutions", torch.zeros(3, DIM)),
        (1, "objectives", torch.zeros(3)),
        (2, "measures", torch.zeros(3, 1)),
        (3, "status", torch.zeros(3, dtype=torch.int32)),
        (4, "value", torch.zeros(3)),
        (2, "measures", torch.zeros(4, 2)),
        (1, "objectives", torch.zeros(())),
    ],
    ids=["solutions", "objectives", "measures", "status", "value", "measure-width", "scalar"],
)
def test_tell_of_the_wrong_size_names_both_counts(kind, position, name, wrong) -> None:
    # GaussianEmitter and IsoLineEmitter took any tell without a word; CMA-ES checked status
    # and value only.
    emitter = make(kind, archive(), batch_size=4)
    solutions = emitter.ask()
    told = [
        solutions,
        torch.zeros(4),
        torch.zeros(4, 1),
        torch.zeros(4, dtype=torch.int32),
        torch.zeros(4),
    ]
    told[position] = wrong
    with pytest.raises(ArchiveError, match=rf"tell got {name} .* for the 4 solutions one ask"):
        emitter.tell(*told)


@pytest.mark.parametrize("kind", KINDS)
def test_tell_of_a_list_names_the_argument(kind) -> None:
    emitter = make(kind, archive(), batch_size=2)
    solutions = emitter.ask()
    with pytest.raises(ArchiveError, match="tell needs objectives as a tensor of 2 items"):
        emitter.tell(
            solutions,
            [0.0, 0.0],
            torch.zeros(2, 1),
            torch.zeros(2, dtype=torch.int32),
            torch.zeros(2),
        )
