"""slime.train.continual: continual language modelling (issue 17), does head turnover keep a
transformer plastic?

``python -m slime.train.continual --profile cpu-small|gpu-full --out DIR [--streams ...] [--arms ...]
[--seeds ...]`` trains one model per arm through task streams with abrupt switches (permuted
vocabulary, circuit switching, corpus cycling), measures plasticity against fresh models, forgetting
on revisits and head health, and writes REPORT.md (decision rules, verdicts), results.json and PNG
plots. Parts run apart merge with ``--merge A/results.json B/results.json --out DIR``.
"""

from slime.train.continual.analysis import analyse as analyse
from slime.train.continual.analysis import paired as paired
from slime.train.continual.analysis import regime_check as regime_check
from slime.train.continual.arms import ARMS as ARMS
from slime.train.continual.arms import ContinualArm as ContinualArm
from slime.train.continual.merge import merge_results as merge_results
from slime.train.continual.profiles import PROFILES as PROFILES
from slime.train.continual.profiles import ContinualProfile as ContinualProfile
from slime.train.continual.runner import run_arm as run_arm
from slime.train.continual.runner import run_continual as run_continual
from slime.train.continual.streams import build_stream as build_stream
from slime.train.continual.suite import main as main

__all__ = [
    "ARMS",
    "PROFILES",
    "ContinualArm",
    "ContinualProfile",
    "analyse",
    "build_stream",
    "main",
    "merge_results",
    "paired",
    "regime_check",
    "run_arm",
    "run_continual",
]
