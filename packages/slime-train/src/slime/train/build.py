"""From a RunConfig to the objects a run needs: device, dataset, model."""

from __future__ import annotations

import dataclasses
import os
from typing import TextIO

import torch
from slime.core import MetricsCollector, SlimeConfig, SlimeModel
from slime.proto import ConfigError, shown
from slime.train.baseline import GPT
from slime.train.config import DataConfig, ModelConfig
from slime.train.datasets import CORPORA, Dataset, load_corpus
from slime.train.tasks import CopyTask, RecallTask
from slime.train.text import load_text
from torch import nn

__all__ = [
    "build_dataset",
    "build_model",
    "check_fits",
    "resolve_device",
    "to_slime_config",
    "training_bytes",
]


def resolve_device(name: str) -> torch.device:
    """``auto`` means CUDA when available, else the CPU.

    Raises:
        ConfigError: ``name`` is no device torch knows, or names one this machine lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"expected auto, cpu, cuda, cuda:N or mps, got {shown(name)}", "train.device"
        ) from None
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
    cfg: DataConfig,
    block_size: int,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    tokenizer: str | os.PathLike[str] | None = None,
    progress: TextIO | None = None,
) -> Dataset:
    """The corpus or task named by ``cfg.name``, with windows of at most ``block_size`` tokens.

    ``data_dir`` overrides ``cfg.dir`` (which overrides ``$SLIME_DATA_DIR``). For ``name: text``,
    ``tokenizer`` (a tokenizer file, e.g. a run's ``tokenizer.json``) overrides ``cfg.tokenizer``,
    and ``progress`` receives the encoding's progress (see :func:`slime.train.text.load_text`).
    """
    if cfg.name == "text":
        return load_text(
            cfg.path,
            block_size,
            tokenizer=str(tokenizer) if tokenizer is not None else cfg.tokenizer,
            val_fraction=cfg.val_fraction,
            cache_dir=cfg.cache_dir,
            progress=progress,
        )
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


def training_bytes(cfg: ModelConfig, vocab_size: int, batch_size: int) -> int:
    """A rough lower estimate of the memory one training step needs, in bytes: fp32 weights,
    gradients and two AdamW moments, plus bf16 activations (~34 bytes per token and width per
    layer, as Korthikanti et al. 2022 count for a transformer block) and fp32 logits with their
    gradient. Computed from the config alone, before anything is allocated."""
    vocab = cfg.vocab_size if cfg.vocab_size is not None else vocab_size
    width, bias = cfg.n_embd, int(cfg.bias)
    heads = cfg.pod_capacity if cfg.kind == "slime" else cfg.n_pods
    inner = heads * cfg.head_dim
    hidden = int(cfg.mlp_ratio * width)
    per_layer = (
        4 * inner * width
        + bias * (3 * inner + width)  # q/k/v and output projections
        + 2 * width * hidden
        + bias * (hidden + width)  # MLP
        + 2 * width * (1 + bias)  # two LayerNorms
    )
    params = (vocab + cfg.block_size) * width + cfg.n_layer * per_layer + width * (1 + bias)
    tokens = batch_size * cfg.block_size
    activations = 34 * tokens * width * cfg.n_layer + 2 * 4 * tokens * vocab
    return 16 * params + activations


def check_fits(cfg: ModelConfig, vocab_size: int, batch_size: int, device: torch.device) -> None:
    """Refuse a config whose estimated training memory exceeds all of ``device``'s memory.

    Raises:
        ConfigError: naming the estimate and the device's total memory.
    """
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    elif device.type == "cpu" and hasattr(os, "sysconf"):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        return
    need = training_bytes(cfg, vocab_size, batch_size)
    if need > total:
        raise ConfigError(
            f"a training step needs at least ~{need / 2**30:.1f} GiB (weights, gradients, AdamW "
            f"moments and activations at batch {batch_size}); {device} has "
            f"{total / 2**30:.1f} GiB in all",
            "model",
        )


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
