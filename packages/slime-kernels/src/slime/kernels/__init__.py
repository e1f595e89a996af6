"""slime.kernels: Triton kernels with a torch fallback computing the same functions: pool attention, correlation, effective rank, coherence."""

__all__: list[str] = []
