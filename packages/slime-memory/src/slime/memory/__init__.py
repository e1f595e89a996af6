"""slime.memory: GPU-native MAP-Elites archives (grid, CVT), a dynamic component pool, TubeNetwork temporal memory and behavioural-space analysis."""

__all__: list[str] = []
