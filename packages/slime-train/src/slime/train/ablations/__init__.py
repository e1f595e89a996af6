"""slime.train.ablations: the ablation suite of blueprint §12 (issue 7).

``python -m slime.train.ablations --profile cpu-small|gpu-full --out DIR`` runs each comparison
over seeds and writes REPORT.md (tables, decision rules, verdicts), results.json (raw per-seed
numbers) and PNG plots into DIR.
"""

from slime.train.ablations.analysis import analyse as analyse
from slime.train.ablations.diagnostics import BirthLedger as BirthLedger
from slime.train.ablations.diagnostics import RecordingFitness as RecordingFitness
from slime.train.ablations.diagnostics import RecordingLifecycle as RecordingLifecycle
from slime.train.ablations.groups import GROUPS as GROUPS
from slime.train.ablations.groups import METRICS as METRICS
from slime.train.ablations.groups import Check as Check
from slime.train.ablations.groups import Group as Group
from slime.train.ablations.plots import write_plots as write_plots
from slime.train.ablations.probes import head_similarity as head_similarity
from slime.train.ablations.probes import heldout_eval as heldout_eval
from slime.train.ablations.profiles import PROFILES as PROFILES
from slime.train.ablations.profiles import Profile as Profile
from slime.train.ablations.report import render_report as render_report
from slime.train.ablations.runner import AblationTrainer as AblationTrainer
from slime.train.ablations.runner import run_suite as run_suite
from slime.train.ablations.stats import Comparison as Comparison
from slime.train.ablations.stats import Interval as Interval
from slime.train.ablations.stats import compare as compare
from slime.train.ablations.stats import mean_ci as mean_ci
from slime.train.ablations.stats import spearman as spearman
from slime.train.ablations.stats import welch_p as welch_p
from slime.train.ablations.suite import main as main
from slime.train.ablations.suite import write_outputs as write_outputs
from slime.train.ablations.variants import ARMS as ARMS
from slime.train.ablations.variants import Arm as Arm
from slime.train.ablations.variants import Starved as Starved
from slime.train.ablations.variants import UniformElites as UniformElites

__all__ = [
    "ARMS",
    "GROUPS",
    "METRICS",
    "PROFILES",
    "AblationTrainer",
    "Arm",
    "BirthLedger",
    "Check",
    "Comparison",
    "Group",
    "Interval",
    "Profile",
    "RecordingFitness",
    "RecordingLifecycle",
    "Starved",
    "UniformElites",
    "analyse",
    "compare",
    "head_similarity",
    "heldout_eval",
    "main",
    "mean_ci",
    "render_report",
    "run_suite",
    "spearman",
    "welch_p",
    "write_outputs",
    "write_plots",
]
