"""Plots render headless and show the run's data: checked in the files and in the figures."""

import math

import numpy as np
import pytest
import torch
from slime.core import DESCRIPTOR_NAMES
from slime.memory import CVTArchive, GridArchive
from slime.proto import CheckpointError, ConfigError, DataError
from slime.tools import (
    archive_heatmap,
    archive_progress,
    behaviour_space,
    pool_over_time,
    save_figure,
    training_curves,
    visualize_run,
)

# Saturated pixels a plot must show at least (a blank figure with labelled axes shows none).
DRAWN = 200


def genomes(n):
    return [{"id": torch.tensor([float(i)])} for i in range(n)]


def filled_grid(dims, cells_and_objectives):
    """A GridArchive with one elite at the centre of each given cell (row-major index)."""
    archive = GridArchive(dims, [(0.0, 1.0)] * len(dims))
    cells = [c for c, _ in cells_and_objectives]
    centres = [[(i + 0.5) / d for i, d in zip(np.unravel_index(c, dims), dims)] for c in cells]
    objectives = torch.tensor([o for _, o in cells_and_objectives], dtype=torch.float64)
    archive.add(genomes(len(cells)), objectives, torch.tensor(centres, dtype=torch.float64))
    return archive


def test_grid_heatmap_colours_each_elites_cell_by_its_objective(tmp_path, colour_pixels, png_size):
    archive = filled_grid((4, 3), [(0, 1.0), (5, 2.0), (11, 3.0)])
    fig = archive_heatmap(archive, DESCRIPTOR_NAMES, title="layer 0 archive")
    image = fig.axes[0].images[0].get_array()  # (y cells, x cells)
    assert image.shape == (3, 4)
    assert image[0, 0] == 1.0 and image[2, 1] == 2.0 and image[2, 3] == 3.0
    assert int(np.isnan(np.ma.filled(image, np.nan)).sum()) == 12 - 3
    path = save_figure(fig, tmp_path / "grid.png")
    assert png_size(path) == (640, 480)
    assert colour_pixels(path) > DRAWN


def test_grid_heatmap_labels_descriptors_with_their_units_and_reports_coverage():
    fig = archive_heatmap(filled_grid((2, 2), [(0, 1.0)]), DESCRIPTOR_NAMES, title="layer 1")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("attention distance (fraction of context")
    assert ax.get_ylabel().startswith("activation sparsity (Hoyer")
    assert "1 elites, coverage 25%" in ax.get_title()
    assert fig.axes[1].get_ylabel() == "fitness of the elite (higher is better)"  # colour bar


def test_three_descriptor_grid_shows_the_best_elite_over_the_third(tmp_path):
    archive = GridArchive((2, 2, 3), [(0.0, 1.0)] * 3)
    descs = torch.tensor([[0.1, 0.1, 0.1], [0.1, 0.1, 0.9], [0.9, 0.1, 0.5]], dtype=torch.float64)
    archive.add(genomes(3), torch.tensor([1.0, 5.0, 2.0], dtype=torch.float64), descs)
    fig = archive_heatmap(archive, DESCRIPTOR_NAMES)
    image = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    assert image[0, 0] == 5.0 and image[0, 1] == 2.0 and np.isnan(image[1]).all()
    assert "best over weight spread" in fig.axes[0].get_title()


def test_one_descriptor_grid_is_drawn_as_a_single_row():
    image = archive_heatmap(filled_grid((5,), [(2, 4.0)])).axes[0].images[0].get_array()
    assert image.shape == (1, 5) and image[0, 2] == 4.0


def test_cvt_heatmap_colours_occupied_centroids_and_draws_voronoi_edges(tmp_path, colour_pixels):
    archive = CVTArchive(12, [(0.0, 1.0), (0.0, 1.0)], samples=500, seed=0)
    centroids = archive.centroids[:3]
    archive.add(genomes(3), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), centroids)
    fig = archive_heatmap(archive, DESCRIPTOR_NAMES)
    ax = fig.axes[0]
    empty, occupied = ax.collections[-2], ax.collections[-1]
    assert len(occupied.get_offsets()) == 3 and len(empty.get_offsets()) == 9
    assert sorted(occupied.get_array().tolist()) == [1.0, 2.0, 3.0]
    assert len(ax.collections) == 3  # Voronoi edges, empty cells, elites
    assert colour_pixels(save_figure(fig, tmp_path / "cvt.png")) > DRAWN


def test_empty_archive_has_nothing_to_draw():
    with pytest.raises(DataError, match="no elite"):
        archive_heatmap(GridArchive((2, 2), [(0.0, 1.0)] * 2))


def test_behaviour_space_places_every_live_pod_and_colours_by_fitness(tmp_path, colour_pixels):
    g = torch.Generator().manual_seed(0)
    descriptors = [torch.rand(3, 3, generator=g), torch.rand(4, 3, generator=g)]
    fitness = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0, 4.0]]
    fig = behaviour_space(descriptors, fitness)
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [3, 4]
    assert ax.get_xlabel().startswith("kernel PC 1 (RBF;") and "7 pods" in ax.get_title()
    assert colour_pixels(save_figure(fig, tmp_path / "behaviour.png")) > DRAWN


def test_behaviour_space_of_unmeasured_pods_says_why_it_is_empty():
    with pytest.raises(DataError, match="identical"):
        behaviour_space([torch.zeros(3, 3), torch.zeros(2, 3)])


def test_behaviour_space_needs_two_pods():
    with pytest.raises(DataError, match="at least 2 live pods"):
        behaviour_space([torch.rand(1, 3), torch.zeros(0, 3)])


def test_training_curves_plot_train_and_validation_loss_against_step(slime_run):
    _, _, records = slime_run
    ax = training_curves(records).axes[0]
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    assert ax.lines[0].get_xydata().tolist() == [list(map(float, p)) for p in train]
    assert (
        ax.lines[0].get_label() == "slime train" and ax.lines[1].get_label() == "slime validation"
    )
    assert ax.get_ylabel() == "cross-entropy loss (nats per token)"


def test_training_curves_add_the_baseline_run_dashed(slime_run, baseline_run):
    from slime.tools import read_metrics

    ax = training_curves(slime_run[2], read_metrics(baseline_run)).axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["slime train", "slime validation", "baseline train", "baseline validation"]
    assert ax.lines[2].get_linestyle() == "--" and "vs baseline" in ax.get_title()


def test_training_curves_without_any_loss_name_the_fields_looked_for():
    with pytest.raises(DataError, match="'val_loss'"):
        training_curves([{"step": 0, "kind": "medium", "pool_size": 3}])


def test_pool_plot_shows_pool_size_and_cumulative_births_and_deaths():
    records = [
        {"step": 0, "kind": "medium", "pool_size": 4, "births": 0},
        {"step": 10, "kind": "medium", "pool_size": 6, "births": 2},
        {"step": 20, "kind": "slow", "pool_size": 5, "deaths": 1},
        {"step": 30, "kind": "medium", "pool_size": 6, "births": 1},
    ]
    top, bottom = pool_over_time(records).axes
    assert top.lines[0].get_ydata().tolist() == [4, 6, 5, 6]
    births, deaths = bottom.lines
    assert births.get_ydata().tolist() == [0, 2, 3] and deaths.get_ydata().tolist() == [1]


def test_pool_plot_leaves_out_the_summary_records_run_totals():
    records = [
        {"step": 10, "kind": "medium", "pool_size": 5, "births": 2},
        {"step": 20, "kind": "summary", "pool_size": 5, "births": 2, "deaths": 0},
    ]
    top, bottom = pool_over_time(records).axes
    assert top.lines[0].get_xdata().tolist() == [10]
    assert [line.get_ydata().tolist() for line in bottom.lines] == [[2]]


def test_pool_plot_without_births_or_deaths_says_so_in_the_panel():
    fig = pool_over_time([{"step": 0, "kind": "medium", "pool_size": 4}])
    assert [t.get_text() for t in fig.axes[1].texts] == ["births / deaths were not logged"]


def test_archive_progress_plots_coverage_in_percent_and_qd_score():
    records = [
        {"step": 100, "kind": "medium", "archive_coverage": 0.25, "archive_qd_score": 1.5},
        {"step": 200, "kind": "medium", "archive_coverage": 0.5, "archive_qd_score": 4.0},
    ]
    top, bottom = archive_progress(records).axes
    assert top.lines[0].get_ydata().tolist() == [25.0, 50.0]
    assert bottom.lines[0].get_ydata().tolist() == [1.5, 4.0]
    assert top.get_ylabel() == "coverage (% of cells, mean of layers)"


def test_archive_progress_without_statistics_names_the_keys_looked_for():
    with pytest.raises(DataError, match="archive_coverage"):
        archive_progress([{"step": 0, "kind": "train", "loss": 1.0}])


def test_svg_output_keeps_the_title_as_text(tmp_path):
    fig = archive_heatmap(filled_grid((2, 2), [(3, 1.0)]), title="layer 7 archive")
    text = save_figure(fig, tmp_path / "grid.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "layer 7 archive: 1 elites" in text


def test_saving_to_an_unknown_format_raises_config_error(tmp_path):
    fig = archive_heatmap(filled_grid((2, 2), [(3, 1.0)]))
    with pytest.raises(ConfigError, match="grid.jpg"):
        save_figure(fig, tmp_path / "grid.jpg")


def test_visualize_run_writes_every_plot_of_a_slime_run(slime_run, tmp_path, colour_pixels):
    run_dir, _, _ = slime_run
    report = visualize_run(run_dir, tmp_path)
    names = sorted(p.name for p in report.written)
    assert names == [
        "archive_layer0.png",
        "archive_layer1.png",
        "archive_progress.png",
        "behaviour_space.png",
        "pool.png",
        "training_curves.png",
    ]
    assert report.skipped == []
    assert all(colour_pixels(p) > DRAWN for p in report.written)


def test_visualize_run_of_a_v1_model_directory_draws_the_same_plots(v1_run, tmp_path):
    report = visualize_run(v1_run, tmp_path)
    assert report.skipped == []
    assert {"archive_layer0.png", "archive_layer1.png", "behaviour_space.png"} <= {
        p.name for p in report.written
    }


def test_visualize_run_reads_archive_progress_from_the_checkpoints(slime_run, tmp_path):
    report = visualize_run(slime_run[0], tmp_path)
    assert tmp_path / "archive_progress.png" in report.written  # metrics.jsonl has no coverage


def test_visualize_run_of_a_baseline_plots_curves_and_notes_what_it_skipped(baseline_run, tmp_path):
    report = visualize_run(baseline_run, tmp_path, fmt="svg")
    assert [p.name for p in report.written] == ["training_curves.svg"]
    skipped = "\n".join(report.skipped)
    assert "pool: no pool events logged" in skipped
    assert "archive progress: metrics.jsonl logs none of" in skipped
    assert "archive heatmaps and behaviour space" in skipped and "baseline runs" in skipped


def test_visualize_run_defaults_to_a_plots_folder_in_the_run(slime_run):
    run_dir, _, _ = slime_run
    report = visualize_run(run_dir, fmt="svg")
    assert all(p.parent == run_dir / "plots" and p.suffix == ".svg" for p in report.written)


def test_visualize_run_of_a_missing_directory_raises(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        visualize_run(tmp_path / "nope")


def test_visualize_run_rejects_an_unknown_format(slime_run):
    with pytest.raises(ConfigError, match="'gif'"):
        visualize_run(slime_run[0], fmt="gif")


def test_losses_that_went_non_finite_stay_in_the_curve_as_gaps():
    records = [{"step": s, "kind": "train", "loss": v} for s, v in enumerate([2.0, math.nan, 1.0])]
    ydata = training_curves(records).axes[0].lines[0].get_ydata()
    assert ydata[0] == 2.0 and math.isnan(ydata[1]) and ydata[2] == 1.0
