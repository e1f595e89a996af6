"""slime.proto: the protocols and typed errors every slime layer is built on.

This package imports nothing at run time beyond the standard library (torch appears in type hints
only); ``tests/test_no_runtime_torch.py`` and the ``wheels`` nox session check that.
"""

from slime.proto.component import Component as Component
from slime.proto.errors import ArchiveError as ArchiveError
from slime.proto.errors import CheckpointError as CheckpointError
from slime.proto.errors import ConfigError as ConfigError
from slime.proto.errors import DataError as DataError
from slime.proto.errors import KernelError as KernelError
from slime.proto.errors import MemoryBudgetError as MemoryBudgetError
from slime.proto.errors import PoolError as PoolError
from slime.proto.errors import SlimeError as SlimeError
from slime.proto.errors import shown as shown
from slime.proto.kernel import Kernel as Kernel
from slime.proto.memory import Memory as Memory
from slime.proto.model import Chemotaxis as Chemotaxis
from slime.proto.model import Organism as Organism
from slime.proto.model import Pseudopod as Pseudopod

__all__ = [
    "ArchiveError",
    "CheckpointError",
    "Chemotaxis",
    "Component",
    "ConfigError",
    "DataError",
    "Kernel",
    "KernelError",
    "Memory",
    "MemoryBudgetError",
    "Organism",
    "PoolError",
    "Pseudopod",
    "SlimeError",
    "shown",
]
