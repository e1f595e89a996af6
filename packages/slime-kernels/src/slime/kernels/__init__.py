"""slime.kernels: Triton kernels with a torch fallback computing the same functions.

Pool attention, correlation, effective rank and coherence, behind the ``slime.proto.Kernel``
protocol (:class:`TorchKernel`, :class:`TritonKernel`, :class:`SDPAKernel`, :func:`select_kernel`) and as functions
(:func:`pool_attention` is the ``slime::pool_attention`` custom op), and the tube-ring write
(:func:`feed_tubes`). Validation helpers live in
:mod:`slime.kernels.utils`.
"""

from slime.kernels import utils as utils
from slime.kernels._select import select_kernel as select_kernel
from slime.kernels.functional import coherence as coherence
from slime.kernels.functional import correlation as correlation
from slime.kernels.functional import effective_rank as effective_rank
from slime.kernels.functional import feed_tubes as feed_tubes
from slime.kernels.functional import pool_attention as pool_attention
from slime.kernels.functional import tube_workspace as tube_workspace
from slime.kernels.sdpa_impl import SDPAKernel as SDPAKernel
from slime.kernels.torch_fallback import TorchKernel as TorchKernel
from slime.kernels.triton_impl import TritonKernel as TritonKernel

__all__ = [
    "SDPAKernel",
    "TorchKernel",
    "TritonKernel",
    "coherence",
    "correlation",
    "effective_rank",
    "feed_tubes",
    "pool_attention",
    "select_kernel",
    "tube_workspace",
    "utils",
]
