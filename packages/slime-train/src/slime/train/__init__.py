"""slime.train: Trainer with timescales and lifecycle, fitness, configs, datasets, the baseline transformer and the `slime` command.

Importing ``slime.train`` imports none of its modules (so neither torch): each public name
loads its module on first use (PEP 562). The ``slime`` console script relies on this: its entry
point, :mod:`slime.train.console`, starts without torch and so can turn a Ctrl-C during the
imports into exit status 130 and one line.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:  # the names for type checkers and IDEs; at run time __getattr__ loads them
    from typing import Any

    from slime.train.baseline import GPT as GPT
    from slime.train.build import build_dataset as build_dataset
    from slime.train.build import build_model as build_model
    from slime.train.build import resolve_device as resolve_device
    from slime.train.build import to_slime_config as to_slime_config
    from slime.train.checkpoint import capture_rng as capture_rng
    from slime.train.checkpoint import latest_checkpoint as latest_checkpoint
    from slime.train.checkpoint import load_checkpoint as load_checkpoint
    from slime.train.checkpoint import restore_rng as restore_rng
    from slime.train.checkpoint import save_checkpoint as save_checkpoint
    from slime.train.config import DataConfig as DataConfig
    from slime.train.config import FitnessConfig as FitnessConfig
    from slime.train.config import LifecycleConfig as LifecycleConfig
    from slime.train.config import ModelConfig as ModelConfig
    from slime.train.config import RunConfig as RunConfig
    from slime.train.config import SLOConfig as SLOConfig
    from slime.train.config import TrainConfig as TrainConfig
    from slime.train.datasets import CharCorpus as CharCorpus
    from slime.train.datasets import Dataset as Dataset
    from slime.train.datasets import download_corpus as download_corpus
    from slime.train.datasets import load_corpus as load_corpus
    from slime.train.datasets import resolve_data_dir as resolve_data_dir
    from slime.train.fitness import FitnessTracker as FitnessTracker
    from slime.train.fitness import PodScore as PodScore
    from slime.train.fitness import masked_loss_contributions as masked_loss_contributions
    from slime.train.lifecycle import Lifecycle as Lifecycle
    from slime.train.lifecycle import LossGate as LossGate
    from slime.train.lifecycle import lifecycle_phase as lifecycle_phase
    from slime.train.loader import apply_overrides as apply_overrides
    from slime.train.loader import config_from_dict as config_from_dict
    from slime.train.loader import load_config as load_config
    from slime.train.loader import parse_overrides as parse_overrides
    from slime.train.loader import preset_names as preset_names
    from slime.train.loader import save_config as save_config
    from slime.train.optim import PoolOptimizer as PoolOptimizer
    from slime.train.optim import learning_rate as learning_rate
    from slime.train.profile import StepProfile as StepProfile
    from slime.train.profile import flops_per_token as flops_per_token
    from slime.train.profile import profile_steps as profile_steps
    from slime.train.rundir import ProgressBar as ProgressBar
    from slime.train.rundir import RunDir as RunDir
    from slime.train.slo import slo_reports as slo_reports
    from slime.train.stability import GradientMonitor as GradientMonitor
    from slime.train.tasks import CopyTask as CopyTask
    from slime.train.tasks import RecallTask as RecallTask
    from slime.train.tasks import parity_classification as parity_classification
    from slime.train.tasks import sine_regression as sine_regression
    from slime.train.tasks import xor_classification as xor_classification
    from slime.train.text import TextCorpus as TextCorpus
    from slime.train.text import load_text as load_text
    from slime.train.tokenizer import CharTokenizer as CharTokenizer
    from slime.train.tokenizer import HFTokenizer as HFTokenizer
    from slime.train.tokenizer import Tokenizer as Tokenizer
    from slime.train.tokenizer import load_tokenizer as load_tokenizer
    from slime.train.trainer import Trainer as Trainer

# Public name -> the module defining it.
_WHERE: dict[str, str] = {
    "GPT": "slime.train.baseline",
    "build_dataset": "slime.train.build",
    "build_model": "slime.train.build",
    "resolve_device": "slime.train.build",
    "to_slime_config": "slime.train.build",
    "capture_rng": "slime.train.checkpoint",
    "latest_checkpoint": "slime.train.checkpoint",
    "load_checkpoint": "slime.train.checkpoint",
    "restore_rng": "slime.train.checkpoint",
    "save_checkpoint": "slime.train.checkpoint",
    "DataConfig": "slime.train.config",
    "FitnessConfig": "slime.train.config",
    "LifecycleConfig": "slime.train.config",
    "ModelConfig": "slime.train.config",
    "RunConfig": "slime.train.config",
    "SLOConfig": "slime.train.config",
    "TrainConfig": "slime.train.config",
    "CharCorpus": "slime.train.datasets",
    "Dataset": "slime.train.datasets",
    "download_corpus": "slime.train.datasets",
    "load_corpus": "slime.train.datasets",
    "resolve_data_dir": "slime.train.datasets",
    "FitnessTracker": "slime.train.fitness",
    "PodScore": "slime.train.fitness",
    "masked_loss_contributions": "slime.train.fitness",
    "Lifecycle": "slime.train.lifecycle",
    "LossGate": "slime.train.lifecycle",
    "lifecycle_phase": "slime.train.lifecycle",
    "apply_overrides": "slime.train.loader",
    "config_from_dict": "slime.train.loader",
    "load_config": "slime.train.loader",
    "parse_overrides": "slime.train.loader",
    "preset_names": "slime.train.loader",
    "save_config": "slime.train.loader",
    "PoolOptimizer": "slime.train.optim",
    "learning_rate": "slime.train.optim",
    "StepProfile": "slime.train.profile",
    "flops_per_token": "slime.train.profile",
    "profile_steps": "slime.train.profile",
    "ProgressBar": "slime.train.rundir",
    "RunDir": "slime.train.rundir",
    "slo_reports": "slime.train.slo",
    "GradientMonitor": "slime.train.stability",
    "CopyTask": "slime.train.tasks",
    "RecallTask": "slime.train.tasks",
    "parity_classification": "slime.train.tasks",
    "sine_regression": "slime.train.tasks",
    "xor_classification": "slime.train.tasks",
    "TextCorpus": "slime.train.text",
    "load_text": "slime.train.text",
    "CharTokenizer": "slime.train.tokenizer",
    "HFTokenizer": "slime.train.tokenizer",
    "Tokenizer": "slime.train.tokenizer",
    "load_tokenizer": "slime.train.tokenizer",
    "Trainer": "slime.train.trainer",
}

__all__ = [
    "GPT",
    "CharCorpus",
    "CharTokenizer",
    "CopyTask",
    "DataConfig",
    "Dataset",
    "FitnessConfig",
    "FitnessTracker",
    "GradientMonitor",
    "HFTokenizer",
    "Lifecycle",
    "LifecycleConfig",
    "LossGate",
    "ModelConfig",
    "PodScore",
    "PoolOptimizer",
    "ProgressBar",
    "RecallTask",
    "RunConfig",
    "RunDir",
    "SLOConfig",
    "StepProfile",
    "TextCorpus",
    "Tokenizer",
    "TrainConfig",
    "Trainer",
    "apply_overrides",
    "build_dataset",
    "build_model",
    "capture_rng",
    "config_from_dict",
    "download_corpus",
    "flops_per_token",
    "latest_checkpoint",
    "learning_rate",
    "lifecycle_phase",
    "load_checkpoint",
    "load_config",
    "load_corpus",
    "load_text",
    "load_tokenizer",
    "masked_loss_contributions",
    "parity_classification",
    "parse_overrides",
    "preset_names",
    "profile_steps",
    "resolve_data_dir",
    "resolve_device",
    "restore_rng",
    "save_checkpoint",
    "save_config",
    "sine_regression",
    "slo_reports",
    "to_slime_config",
    "xor_classification",
]


def __getattr__(name: str) -> Any:
    """``slime.train.NAME``: import NAME's module on first use and keep the value here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
