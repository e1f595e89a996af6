"""From a RunConfig to the objects a run needs: device, dataset, model."""

from __future__ import annotations

import dataclasses
import os

import torch
from slime.core import MetricsCollector, SlimeConfig, SlimeModel
from slime.proto import ConfigError
from slime.train.baseline import GPT
from slime.train.config import DataConfig, ModelConfig
from slime.train.datasets import CORPORA, Dataset, load_corpus
from slime.train.tasks import CopyTask, RecallTask
from torch import nn

__all__ = ["build_dataset", "build_model", "resolve_device", "to_slime_config"]


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when available, else the CPU.

    Raises:
        ConfigError: a CUDA device was asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"expected an available device, got {name!r} (no CUDA)", "train.device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"expected one of the {torch.cuda.device_count()} CUDA devices, got {name!r}",
            "train.device",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"expected an available device, got {name!r} (no MPS)", "train.device")
    return device


def build_dataset(
    cfg: DataConfig, block_size: int, data_dir: str | os.PathLike[str] | None = None
) -> Dataset:
    """The corpus or task named by ``cfg.name``, with windows of at most ``block_size`` tokens.

    ``data_dir`` overrides ``cfg.dir`` (which overrides ``$SLIME_DATA_DIR``).
    """
    if cfg.name in CORPORA:
        return load_corpus(cfg.name, block_size, data_dir if data_dir is not None else cfg.dir)
    if cfg.name == "copy":
        return CopyTask(cfg.task_vocab, block_size)
    return RecallTask(cfg.task_vocab, block_size)


def to_slime_config(
    cfg: ModelConfig, vocab_size: int, *, archive_max_size: int | None = None
) -> SlimeConfig:
    """The core architecture config for ``cfg`` (``vocab_size`` from the dataset when unset;
    ``archive_max_size`` from ``lifecycle.max_archive_size``, else SlimeConfig's default)."""
    core = cfg.slime_config(vocab_size)
    if archive_max_size is not None:
        core = dataclasses.replace(core, archive_max_size=archive_max_size)
    return core


def build_model(
    cfg: ModelConfig,
    vocab_size: int,
    *,
    device: torch.device,
    generator: torch.Generator,
    metrics: MetricsCollector | None = None,
    max_archive_size: int | None = None,
) -> nn.Module:
    """A SlimeModel or the baseline GPT, initialised from ``generator``, on ``device``.

    ``max_archive_size`` is each layer's archive limit (slime only; part of its SlimeConfig).
    """
    if cfg.kind == "baseline":
        vocab = cfg.vocab_size if cfg.vocab_size is not None else vocab_size
        resolved = ModelConfig(**{**cfg.to_dict(), "vocab_size": vocab})
        return GPT(resolved, generator=generator).to(device)
    core = to_slime_config(cfg, vocab_size, archive_max_size=max_archive_size)
    return SlimeModel(core, metrics=metrics, device=device, generator=generator)
