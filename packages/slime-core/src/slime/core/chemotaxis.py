"""Chemotaxis: choosing where in behaviour space the next pseudopod grows from.

Sources are archive elites: a location ``(k,)`` in descriptor space with a concentration (the
elite's objective). Sampling picks one source with probability

    softmax_i( hunger * c_i / CONCENTRATION_TEMPERATURE  -  |l_i - b| / metabolic_rate )

where ``c_i`` is the concentration rescaled to [0, 1] over the current sources and ``b`` the
organism's current behaviour, then steps from ``b`` toward the chosen source by at most
``metabolic_rate``. A sated organism (hunger 0) grows toward nearby food; a hungry one (hunger 1)
follows concentration; a high metabolic rate ranges far.
"""

from __future__ import annotations

from typing import Any

import torch
from slime.proto import ArchiveError, ConfigError, shown
from torch import Tensor

__all__ = ["CONCENTRATION_TEMPERATURE", "Chemotaxis"]

CONCENTRATION_TEMPERATURE = 0.1


def _finite_reals(value: Any, name: str) -> Tensor:
    """``value`` as a float32 tensor, or ArchiveError naming it: no numbers (a string), complex
    (casting drops the imaginary part), or NaN or Inf (the softmax over sources turns NaN)."""
    if (isinstance(value, Tensor) and value.is_complex()) or isinstance(value, complex):
        raise ArchiveError(f"{name} must be real, got {shown(value)}")
    try:
        tensor = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise ArchiveError(f"{name} must be real numbers, got {shown(value)}") from None
    if not bool(torch.isfinite(tensor).all()):  # slow timescale: a host read is fine
        raise ArchiveError(f"{name} must be finite, got {shown(tensor.tolist())}")
    return tensor


class Chemotaxis:
    """Implements slime.proto.Chemotaxis over an archive's behaviour space.

    Args:
        archive: the archive whose elites are the food; :meth:`sense` adds them as sources and
            its descriptor ranges bound every sampled location.
        generator: randomness for :meth:`sample`.

    Raises:
        ConfigError: ``archive`` has no ``elite_scores()`` or ``ranges`` (None, a path), or
            ``generator`` is no torch.Generator.
    """

    def __init__(self, archive: Any, *, generator: torch.Generator | None = None):
        if not callable(getattr(archive, "elite_scores", None)) or not hasattr(archive, "ranges"):
            raise ConfigError(
                f"expected an archive (elite_scores() and ranges), got {shown(archive)}", "archive"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ConfigError(
                f"expected a torch.Generator or None, got {shown(generator)}", "generator"
            )
        self.archive = archive
        self.generator = generator
        self._locations: Tensor | None = None  # (n, k) float32
        self._concentrations: Tensor | None = None  # (n,) float32

    def __len__(self) -> int:
        return 0 if self._locations is None else self._locations.shape[0]

    def add_source(self, location: Tensor, concentration: float | Tensor) -> None:
        """Add a source at ``location`` ``(k,)`` with ``concentration`` (an elite's objective).

        Raises:
            ArchiveError: ``location`` is no ``(k,)`` of finite real numbers with ``k`` the
                archive's descriptor count, or ``concentration`` no finite real number (either
                would make every later sample fail, or sample outside the archive's space).
        """
        location = _finite_reals(location, "location")
        if location.dim() != 1 or location.shape[0] != len(self.archive.ranges):
            raise ArchiveError(
                f"location must be (k,) with k = {len(self.archive.ranges)} (the archive's "
                f"descriptors), got shape {tuple(location.shape)}"
            )
        concentration = _finite_reals(concentration, "concentration")
        if concentration.numel() != 1:
            raise ArchiveError(
                f"concentration must be one number, got shape {tuple(concentration.shape)}"
            )
        if self._locations is None:
            self._locations, self._concentrations = location[None], concentration.reshape(1)
            return
        if location.shape != self._locations.shape[1:]:
            raise ArchiveError(
                f"location shape {tuple(location.shape)} differs from the sources' "
                f"{tuple(self._locations.shape[1:])}"
            )
        location = location.to(self._locations.device)
        concentration = concentration.to(self._concentrations.device)
        self._locations = torch.cat([self._locations, location[None]])
        self._concentrations = torch.cat([self._concentrations, concentration.reshape(1)])

    def sense(self) -> int:
        """Replace the sources with the archive's current elites (ascending cell order, so
        reproducible); returns how many there are. Reads only where the elites are and their
        objectives, never a genome."""
        self.clear()
        _, objectives, descriptors = self.archive.elite_scores()
        if objectives.shape[0]:
            self._locations, self._concentrations = descriptors.float(), objectives.float()
        return len(self)

    def sample(self, behavior: Tensor, metabolic_rate: float, hunger: float) -> Tensor | None:
        """A location ``(k,)`` to grow toward from ``behavior`` ``(k,)``; None without sources.

        Raises:
            ConfigError: ``metabolic_rate`` no number > 0 or ``hunger`` none in [0, 1].
            ArchiveError: ``behavior`` is no finite real ``(k,)`` of the sources' shape.
        """
        for name, value in (("metabolic_rate", metabolic_rate), ("hunger", hunger)):
            if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
                raise ConfigError(f"expected a number, got {shown(value)}", name)
        if not metabolic_rate > 0:
            raise ConfigError(f"must be > 0, got {metabolic_rate!r}", "metabolic_rate")
        if not 0.0 <= hunger <= 1.0:
            raise ConfigError(f"must lie in [0, 1], got {hunger!r}", "hunger")
        if self._locations is None:
            return None
        locations = self._locations
        behavior = _finite_reals(behavior, "behavior").to(locations.device)
        if behavior.shape != locations.shape[1:]:
            raise ArchiveError(
                f"behavior shape {tuple(behavior.shape)} != source shape {tuple(locations.shape[1:])}"
            )
        conc = self._concentrations.double()  # a float32 span of finite objectives can overflow
        span = conc.max() - conc.min()
        conc01 = torch.where(span > 0, (conc - conc.min()) / span.clamp_min(1e-12), 1.0)
        distance = torch.linalg.vector_norm(locations - behavior, dim=-1)
        logits = hunger * conc01.float() / CONCENTRATION_TEMPERATURE - distance / metabolic_rate
        probs = torch.softmax(logits, dim=0)
        gen = self.generator
        choice = torch.multinomial(probs.to(gen.device if gen else probs.device), 1, generator=gen)
        target = locations[choice.to(locations.device)].squeeze(0)
        step = target - behavior
        length = torch.linalg.vector_norm(step)
        reach = torch.where(length > metabolic_rate, metabolic_rate / length.clamp_min(1e-12), 1.0)
        return self._clip(behavior + step * reach)

    def _clip(self, location: Tensor) -> Tensor:
        """``location`` within the archive's descriptor ranges."""
        ranges = torch.as_tensor(self.archive.ranges, dtype=torch.float32, device=location.device)
        return torch.minimum(torch.maximum(location, ranges[:, 0]), ranges[:, 1])

    def clear(self) -> None:
        self._locations = self._concentrations = None
