"""slime.train: Trainer with timescales and lifecycle, fitness, configs, datasets, the baseline transformer and the `slime` command."""

__all__: list[str] = []
