"""Chemotaxis: sources from archive elites; hunger follows concentration, metabolic rate sets reach."""

import pytest
import torch
from slime.core import Chemotaxis
from slime.memory import GridArchive
from slime.proto import ArchiveError, ConfigError
from slime.proto import Chemotaxis as ChemotaxisProtocol
from slime.proto.testing import assert_conforms


def make(seed=0):
    archive = GridArchive((4, 4), [(0.0, 1.0), (0.0, 1.0)])
    return Chemotaxis(archive, generator=torch.Generator().manual_seed(seed))


def test_chemotaxis_implements_the_protocol():
    assert_conforms(make(), ChemotaxisProtocol)


def test_sample_without_sources_is_none():
    assert make().sample(torch.tensor([0.5, 0.5]), 0.5, 0.5) is None


def test_a_source_within_reach_is_reached_exactly():
    chem = make()
    chem.add_source(torch.tensor([0.6, 0.5]), 1.0)
    loc = chem.sample(torch.tensor([0.5, 0.5]), metabolic_rate=0.5, hunger=0.5)
    torch.testing.assert_close(loc, torch.tensor([0.6, 0.5]))


def test_metabolic_rate_limits_the_step_length():
    chem = make()
    chem.add_source(torch.tensor([1.0, 0.0]), 1.0)
    loc = chem.sample(torch.tensor([0.0, 0.0]), metabolic_rate=0.25, hunger=0.0)
    torch.testing.assert_close(loc, torch.tensor([0.25, 0.0]))


def _choices(hunger, n=200):
    chem = make()
    chem.add_source(torch.tensor([0.1, 0.1]), 0.0)  # near, poor
    chem.add_source(torch.tensor([0.9, 0.9]), 10.0)  # far, rich
    here = torch.tensor([0.1, 0.1])
    far = [chem.sample(here, 2.0, hunger)[0].item() > 0.5 for _ in range(n)]
    return sum(far) / n


def test_hungry_organisms_follow_concentration():
    assert _choices(hunger=1.0) > 0.9


def test_sated_organisms_stay_near():
    assert _choices(hunger=0.0) < 0.4


def test_same_generator_seed_gives_same_samples():
    def run():
        chem = make(seed=7)
        for i in range(4):
            chem.add_source(torch.rand(2, generator=torch.Generator().manual_seed(i)), float(i))
        return torch.stack([chem.sample(torch.tensor([0.5, 0.5]), 1.0, 0.5) for _ in range(10)])

    assert torch.equal(run(), run())


def test_samples_stay_inside_the_archive_ranges():
    chem = make()
    chem.add_source(torch.tensor([1.5, -0.5]), 1.0)
    loc = chem.sample(torch.tensor([0.5, 0.5]), 5.0, 1.0)
    torch.testing.assert_close(loc, torch.tensor([1.0, 0.0]))


def test_sense_turns_archive_elites_into_sources():
    chem = make()
    genome = {"w": torch.zeros(2)}
    chem.archive.add(
        [genome, genome], torch.tensor([1.0, 2.0]), torch.tensor([[0.1, 0.1], [0.9, 0.9]])
    )
    assert chem.sense() == 2
    chem.archive.clear()
    assert chem.sense() == 0


def test_clear_removes_every_source():
    chem = make()
    chem.add_source(torch.tensor([0.5, 0.5]), 1.0)
    chem.clear()
    assert len(chem) == 0 and chem.sample(torch.tensor([0.5, 0.5]), 1.0, 1.0) is None


@pytest.mark.parametrize(
    ("rate", "hunger", "name"), [(0.0, 0.5, "metabolic_rate"), (1.0, 1.5, "hunger")]
)
def test_bad_rates_raise_config_error(rate, hunger, name):
    chem = make()
    chem.add_source(torch.tensor([0.5, 0.5]), 1.0)
    with pytest.raises(ConfigError) as info:
        chem.sample(torch.tensor([0.5, 0.5]), rate, hunger)
    assert info.value.path == name


def test_sources_of_another_dimension_are_rejected():
    chem = make()
    chem.add_source(torch.tensor([0.5, 0.5]), 1.0)
    with pytest.raises(ArchiveError, match="shape"):
        chem.add_source(torch.tensor([0.5, 0.5, 0.5]), 1.0)


def test_sense_reads_locations_and_objectives_without_touching_a_genome():
    chem = make()
    genomes = [{"w": torch.full((3,), float(i))} for i in range(3)]
    descriptors = torch.tensor([[0.9, 0.9], [0.1, 0.1], [0.6, 0.1]], dtype=torch.float64)
    chem.archive.add(genomes, torch.tensor([1.0, 2.0, 3.0]), descriptors)
    elites = list(chem.archive)
    chem.archive._genomes = None  # any genome read would now fail
    assert chem.sense() == 3
    by_hand = make(seed=5)
    for elite in elites:  # what sensing means: every elite a source, ascending cell order
        by_hand.add_source(elite.descriptor.float(), elite.objective)
    chem.generator.manual_seed(5)
    here = torch.tensor([0.5, 0.5])
    for _ in range(20):
        assert torch.equal(chem.sample(here, 0.3, 0.7), by_hand.sample(here, 0.3, 0.7))


def test_a_source_must_have_one_concentration():
    chem = make()
    with pytest.raises(ArchiveError, match="concentration"):
        chem.add_source(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(
    ("location", "concentration", "message"),
    [
        (torch.tensor([float("nan"), 0.5]), 1.0, "location must be finite"),
        (torch.tensor([0.1, 0.5]), float("inf"), "concentration must be finite"),
        (torch.tensor([0.1, 0.5]), float("nan"), "concentration must be finite"),
        ("ab", 1.0, "location must be real numbers, got 'ab'"),  # TypeError before
        (torch.tensor([0.1, 0.5]), "x", "concentration must be real numbers"),
        (torch.tensor([0.1 + 1j, 0.5]), 1.0, "location must be real"),  # imaginary part dropped
        (torch.tensor([0.1]), 1.0, r"k = 2 .* got shape \(1,\)"),  # sampled a 2-d location
    ],
    ids=["nan location", "inf concentration", "nan concentration", "string location",
         "string concentration", "complex location", "too few descriptors"],
)  # fmt: skip
def test_a_source_that_would_break_sampling_is_refused(location, concentration, message):
    # the non-finite ones were taken, and every later sample raised multinomial's RuntimeError
    chem = make()
    with pytest.raises(ArchiveError, match=message):
        chem.add_source(location, concentration)
    assert len(chem) == 0
    chem.add_source(torch.tensor([0.6, 0.5]), 1.0)
    assert chem.sample(torch.tensor([0.5, 0.5]), 0.5, 0.5) is not None


def test_sampling_from_a_non_finite_or_non_numeric_behaviour_or_rate_is_named():
    chem = make()
    chem.add_source(torch.tensor([0.6, 0.5]), 1.0)
    with pytest.raises(ArchiveError, match="behavior must be finite"):  # RuntimeError before
        chem.sample(torch.tensor([float("nan"), 0.5]), 0.5, 0.5)
    with pytest.raises(ConfigError, match="metabolic_rate: expected a number"):  # TypeError
        chem.sample(torch.tensor([0.5, 0.5]), "fast", 0.5)
    with pytest.raises(ConfigError, match="hunger: expected a number"):  # TypeError
        chem.sample(torch.tensor([0.5, 0.5]), 0.5, "very")


def test_concentrations_whose_span_overflows_float32_still_sample():
    chem = make()
    chem.add_source(torch.tensor([0.1, 0.2]), 3e38)
    chem.add_source(torch.tensor([0.3, 0.2]), -3e38)  # the span 6e38 is inf in float32: NaN
    location = chem.sample(torch.tensor([0.5, 0.5]), 0.25, 1.0)
    assert bool(torch.isfinite(location).all())


def test_a_generator_that_is_no_torch_generator_is_named():
    with pytest.raises(ConfigError, match="generator"):  # AttributeError at the first sample
        Chemotaxis(GridArchive((4, 4), [(0.0, 1.0), (0.0, 1.0)]), generator=5)


@pytest.mark.parametrize("archive", [None, "archive_0", 5])
def test_an_archive_that_is_none_is_named_at_construction(archive):
    with pytest.raises(ConfigError, match=r"archive: expected an archive .*got "):
        Chemotaxis(archive)  # built, then AttributeError at the first sense() or add_source()
