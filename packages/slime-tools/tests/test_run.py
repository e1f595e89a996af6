"""Reading run directories: metrics.jsonl as slime.train writes it, and the saved model."""

import json

import pytest
import torch
from slime.proto import CheckpointError, ConfigError
from slime.tools import load_run_model, read_metrics
from slime.tools.run import archive_history, load_archives, metric_series


def test_read_metrics_returns_every_record_in_order(slime_run):
    run_dir, _, records = slime_run
    assert read_metrics(run_dir) == records


def test_a_torn_last_line_is_dropped_like_the_trainer_does(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "kind": "train", "loss": 1.0}\n{"step": 1, "ki'
    )
    assert read_metrics(tmp_path) == [{"step": 0, "kind": "train", "loss": 1.0}]


def test_a_corrupt_line_before_the_last_names_its_line_number(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 0, "kind": "train"}\nnot json\n{"step": 1, "kind": "eval"}\n'
    )
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2 is not JSON"):
        read_metrics(tmp_path)


def test_a_line_that_is_not_utf8_names_its_line_number(tmp_path):
    # read as text, it raised UnicodeDecodeError: a traceback from slime visualize
    (tmp_path / "metrics.jsonl").write_bytes(
        b'{"step": 0, "kind": "train"}\n\xff\xfe\n{"step": 1, "kind": "eval"}\n'
    )
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2 is not JSON"):
        read_metrics(tmp_path)


def test_a_torn_last_line_cut_inside_a_character_is_dropped(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 0, "kind": "train"}\n{"kind": "\xe2\x82')
    assert read_metrics(tmp_path) == [{"step": 0, "kind": "train"}]


def test_a_record_without_step_or_kind_is_rejected_by_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"loss": 1.0}) + "\n")
    with pytest.raises(
        CheckpointError, match=r"metrics.jsonl:1 is not a record with 'step' and 'kind'"
    ):
        read_metrics(tmp_path)


def test_a_run_without_metrics_has_no_records(tmp_path):
    assert read_metrics(tmp_path) == []


def test_metric_series_keeps_numeric_values_of_the_requested_kind_only():
    records = [
        {"step": 0, "kind": "train", "loss": 2.0},
        {"step": 1, "kind": "eval", "loss": 9.0},
        {"step": 2, "kind": "train", "loss": "n/a"},
        {"step": 3, "kind": "train", "loss": True},
        {"step": 4, "kind": "train"},
        {"step": 5, "kind": "train", "loss": 1.5},
    ]
    assert metric_series(records, "loss", kind="train") == ([0.0, 5.0], [2.0, 1.5])
    assert metric_series(records, "loss") == ([0.0, 1.0, 5.0], [2.0, 9.0, 1.5])


def test_the_saved_model_loads_with_its_pool_weights_and_fitness(slime_run):
    run_dir, model, _ = slime_run
    loaded = load_run_model(run_dir)
    assert [o.live_slots() for o in loaded.organisms] == [o.live_slots() for o in model.organisms]
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)
    fitness = [o.pod(s).fitness for o in loaded.organisms for s in o.live_slots()]
    assert fitness == [o.pod(s).fitness for o in model.organisms for s in o.live_slots()]
    assert any(f != 0.0 for f in fitness)  # the fixture scored them: this is not all defaults


def test_a_v1_model_directory_loads_with_the_same_pools_logits_and_fitness(slime_run, v1_run):
    _, model, _ = slime_run
    config = json.loads((v1_run / "model" / "config.json").read_text())
    assert config["version"] == 1  # the fixture really is the old layout
    loaded = load_run_model(v1_run)
    assert [o.live_slots() for o in loaded.organisms] == [o.live_slots() for o in model.organisms]
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)
    for old, new in zip(model.organisms, loaded.organisms, strict=True):
        torch.testing.assert_close(new.fitness, old.fitness, rtol=0, atol=0)  # from config.json
        torch.testing.assert_close(new.descriptors, old.descriptors, rtol=0, atol=0)
        live = old.alive  # the fixture's plain AdamW moves dead slots; v1 kept live pods only
        torch.testing.assert_close(new.qkv_weight[:, live], old.qkv_weight[:, live], rtol=0, atol=0)
        torch.testing.assert_close(new.o_weight[:, live], old.o_weight[:, live], rtol=0, atol=0)
        assert new.archive.genome_form == "payloads" and len(new.archive) > 0


@pytest.mark.parametrize("bias", [False, True])
def test_a_v1_model_directory_with_dead_slots_loads_as_the_stacked_model(
    make_model, write_v1_model_dir, tmp_path, bias
):
    model = make_model(seed=3, bias=bias)
    with torch.no_grad():
        for organism in model.organisms:
            if organism.out_bias is not None:
                organism.out_bias.normal_()
    model.organisms[0].cull([1])
    model.organisms[1].cull([0, 2])
    model.organisms[1].pod(1).fitness = 0.75
    write_v1_model_dir(model, tmp_path / "run" / "model")
    loaded = load_run_model(tmp_path / "run")
    assert [o.live_slots() for o in loaded.organisms] == [[0, 2], [1]]
    assert loaded.organisms[1].pod(1).fitness == 0.75
    assert not loaded.organisms[1].qkv_weight[:, [0, 2, 3]].any()  # dead slots hold zeros
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)


def test_archives_load_per_layer_with_their_elites(slime_run):
    run_dir, model, _ = slime_run
    archives = load_archives(run_dir)
    assert [len(a) for a in archives] == [len(o.archive) for o in model.organisms]


def test_a_run_without_a_model_folder_explains_why(baseline_run):
    with pytest.raises(CheckpointError, match="baseline runs"):
        load_run_model(baseline_run)


def test_a_missing_run_directory_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere"):
        read_metrics(tmp_path / "nowhere")


def test_archive_history_reads_each_checkpoints_archives_in_step_order(slime_run):
    run_dir, model, _ = slime_run
    history = archive_history(run_dir)
    assert [h["step"] for h in history] == [6, 9]
    assert history[0]["archive_coverage"] == 0.0 and history[0]["archive_qd_score"] == 0.0
    stats = [o.archive.stats for o in model.organisms]
    assert history[1]["archive_coverage"] == sum(s.coverage for s in stats) / 2
    assert history[1]["archive_qd_score"] == sum(s.qd_score for s in stats)


def test_archive_history_samples_at_most_max_points_keeping_the_last(tmp_path, make_model):
    archive = make_model().organisms[0].archive
    for step in range(0, 50, 5):
        archive.save(tmp_path / "checkpoints" / f"step_{step:08d}" / "archive_0")
    steps = [h["step"] for h in archive_history(tmp_path, max_points=4)]
    assert steps == [0, 15, 30, 45]


def test_archive_history_of_a_run_without_checkpoints_is_empty(baseline_run):
    assert archive_history(baseline_run) == []


def test_archive_history_rejects_a_max_points_below_one(baseline_run):
    with pytest.raises(ConfigError, match="max_points"):
        archive_history(baseline_run, max_points=0)
