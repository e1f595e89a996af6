"""A run directory written by slime.train is what slime.tools visualizes and exports."""

from __future__ import annotations

from pathlib import Path

import pytest
from slime.tools import export_run, visualize_run
from slime.train.build import build_dataset
from slime.train.loader import load_config
from slime.train.rundir import RunDir
from slime.train.trainer import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny").replace(lifecycle={"cull_fraction": 0.5})
    Trainer(cfg, build_dataset(cfg.data, cfg.model.block_size), run_dir=RunDir(path)).fit()
    return path


def test_visualize_draws_the_archive_heatmaps_of_a_trained_run(run_dir: Path) -> None:
    report = visualize_run(run_dir, run_dir / "plots")
    names = {p.name for p in report.written}
    assert {"archive_layer0.png", "behaviour_space.png"} <= names, (names, report.skipped)
    assert report.skipped == [], report.skipped


def test_export_of_a_trained_run_matches_pytorch(run_dir: Path) -> None:
    check = export_run(run_dir, "torch-export", run_dir / "model.pt2")
    assert check.path.exists()
    assert check.max_abs_diff == 0.0
