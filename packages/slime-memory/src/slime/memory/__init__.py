"""slime.memory: MAP-Elites archives (grid, CVT), ask/tell emitters and a scheduler to search with
them, TubeNetwork temporal memory and behavioural-space analysis. Usable on its own: it depends
only on slime.proto."""

from slime.memory.analysis import KernelPCAResult as KernelPCAResult
from slime.memory.analysis import KMOResult as KMOResult
from slime.memory.analysis import StabilityResult as StabilityResult
from slime.memory.analysis import bartlett_sphericity as bartlett_sphericity
from slime.memory.analysis import descriptor_stability as descriptor_stability
from slime.memory.analysis import descriptor_variance as descriptor_variance
from slime.memory.analysis import kernel_pca as kernel_pca
from slime.memory.analysis import kmo as kmo
from slime.memory.archive import MAX_ARCHIVE_SIZE as MAX_ARCHIVE_SIZE
from slime.memory.archive import AddResult as AddResult
from slime.memory.archive import Archive as Archive
from slime.memory.archive import ArchiveStats as ArchiveStats
from slime.memory.archive import Elite as Elite
from slime.memory.cvt import CVTArchive as CVTArchive
from slime.memory.emitters import Emitter as Emitter
from slime.memory.emitters import EvolutionStrategyEmitter as EvolutionStrategyEmitter
from slime.memory.emitters import GaussianEmitter as GaussianEmitter
from slime.memory.emitters import IsoLineEmitter as IsoLineEmitter
from slime.memory.graphed import GraphedAdd as GraphedAdd
from slime.memory.grid import GridArchive as GridArchive
from slime.memory.limits import MAX_POOL_SIZE as MAX_POOL_SIZE
from slime.memory.schedulers import Scheduler as Scheduler
from slime.memory.tubes import TubeNetwork as TubeNetwork

__all__ = [
    "MAX_ARCHIVE_SIZE",
    "MAX_POOL_SIZE",
    "AddResult",
    "Archive",
    "ArchiveStats",
    "CVTArchive",
    "Elite",
    "Emitter",
    "EvolutionStrategyEmitter",
    "GaussianEmitter",
    "GraphedAdd",
    "GridArchive",
    "IsoLineEmitter",
    "KMOResult",
    "KernelPCAResult",
    "Scheduler",
    "StabilityResult",
    "TubeNetwork",
    "bartlett_sphericity",
    "descriptor_stability",
    "descriptor_variance",
    "kernel_pca",
    "kmo",
]
