"""slime.tools: visualize the behavioural space, export trained slime models (ONNX, torch.export,
TorchScript) as a frozen pool, and package a standalone executable of the ``slime`` command.

The subcommands plug into ``slime`` through the ``slime.commands`` entry points (see
:mod:`slime.tools.cli`); everything they do is also a function here.
"""

from slime.tools._errors import MissingExtraError as MissingExtraError
from slime.tools.export import FORMATS as EXPORT_FORMATS
from slime.tools.export import ExportCheck as ExportCheck
from slime.tools.export import ExportMismatchError as ExportMismatchError
from slime.tools.export import export_onnx as export_onnx
from slime.tools.export import export_run as export_run
from slime.tools.export import export_torch as export_torch
from slime.tools.export import export_torchscript as export_torchscript
from slime.tools.export import verify_onnx as verify_onnx
from slime.tools.export import verify_torch as verify_torch
from slime.tools.export import verify_torchscript as verify_torchscript
from slime.tools.frozen import FrozenBlock as FrozenBlock
from slime.tools.frozen import FrozenSlimeLM as FrozenSlimeLM
from slime.tools.frozen import freeze as freeze
from slime.tools.package import PackageBuildError as PackageBuildError
from slime.tools.package import build_executable as build_executable
from slime.tools.package import render_spec as render_spec
from slime.tools.package import write_build_files as write_build_files
from slime.tools.run import load_run_model as load_run_model
from slime.tools.run import read_metrics as read_metrics
from slime.tools.visualize import VisualizeReport as VisualizeReport
from slime.tools.visualize import archive_heatmap as archive_heatmap
from slime.tools.visualize import archive_progress as archive_progress
from slime.tools.visualize import behaviour_space as behaviour_space
from slime.tools.visualize import pool_over_time as pool_over_time
from slime.tools.visualize import save_figure as save_figure
from slime.tools.visualize import training_curves as training_curves
from slime.tools.visualize import visualize_run as visualize_run

__all__ = [
    "EXPORT_FORMATS",
    "ExportCheck",
    "ExportMismatchError",
    "FrozenBlock",
    "FrozenSlimeLM",
    "MissingExtraError",
    "PackageBuildError",
    "VisualizeReport",
    "archive_heatmap",
    "archive_progress",
    "behaviour_space",
    "build_executable",
    "export_onnx",
    "export_run",
    "export_torch",
    "export_torchscript",
    "freeze",
    "load_run_model",
    "pool_over_time",
    "read_metrics",
    "render_spec",
    "save_figure",
    "training_curves",
    "verify_onnx",
    "verify_torch",
    "verify_torchscript",
    "visualize_run",
    "write_build_files",
]
