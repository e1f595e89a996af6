"""The arms of the continual benchmark: one model recipe and (for the GPT arms) one reset rule each.

Every arm trains the same architecture size on the same stream with the same optimiser; the slime
arms use the lifecycle (births, fitness, archive, culls), the GPT arms the baseline transformer with
one of the interventions of :mod:`slime.train.continual.resets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slime.proto import ConfigError

__all__ = ["ARMS", "DEFAULT_ARMS", "ContinualArm", "arm"]

Hook = Literal["none", "snp", "cbp", "redo", "random"]


@dataclass(frozen=True)
class ContinualArm:
    """One arm: ``kind`` of model, its reset ``hook``, whether births may use the archive, and
    whether it takes the profile's ``static_weight_decay`` instead of its ``weight_decay``."""

    name: str
    label: str
    kind: Literal["slime", "baseline"] = "baseline"
    hook: Hook = "none"
    archive: bool = True
    static_decay: bool = False


_ARMS = (
    ContinualArm(
        "slime", "slime: lifecycle (fitness, culls, archive births by chemotaxis)", kind="slime"
    ),
    ContinualArm(
        "slime_no_archive",
        "slime without the archive: births start from a fresh random init",
        kind="slime",
        archive=False,
    ),
    ContinualArm(
        "gpt", "static GPT, LayerNorm + weight decay (the standard recipe)", static_decay=True
    ),
    ContinualArm("gpt_nowd", "static GPT without weight decay (the regime's control)"),
    ContinualArm(
        "snp", "GPT + shrink-and-perturb at every task switch (Ash & Adams 2020)", hook="snp"
    ),
    ContinualArm(
        "cbp",
        "GPT + continual backprop on heads: utility-ranked resets of mature heads (Dohare et al. 2024)",
        hook="cbp",
    ),
    ContinualArm(
        "redo", "GPT + ReDo: dormant heads re-initialised (Sokar et al. 2023)", hook="redo"
    ),
    ContinualArm(
        "random_reset",
        "GPT + random head resets replaying slime's measured deaths (no fitness, no archive)",
        hook="random",
    ),
)
ARMS: dict[str, ContinualArm] = {a.name: a for a in _ARMS}
DEFAULT_ARMS = tuple(ARMS)


def arm(name: str) -> ContinualArm:
    """The arm called ``name``. Raises ConfigError for an unknown name."""
    if name not in ARMS:
        raise ConfigError(f"unknown arm {name!r}; expected one of {sorted(ARMS)}", "arm")
    return ARMS[name]
