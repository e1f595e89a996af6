"""Damaged and forged run directories and outputs (hardening issue 14): one typed error naming
the value, no traceback at the CLI, no silent wrong answer, earlier outputs never lost."""

import shutil

import pytest
from slime.proto import CheckpointError
from slime.tools import cli, load_run_model, read_metrics
from slime.tools.query import inspect_run

GOOD = b'{"step": 0, "kind": "train", "loss": 1.0}\n'


@pytest.mark.parametrize(
    "line",
    [
        b'{"step": ' + b"9" * 5000 + b', "kind": "train"}',  # int() refuses > 4300 digits
        b'{"step": 1, "kind": "train", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["huge-integer", "deep-nesting"],
)
def test_a_line_json_cannot_decode_is_one_error_naming_the_line(tmp_path, capsys, line):
    # before: ValueError / RecursionError escaped read_metrics, a traceback from slime visualize
    (tmp_path / "metrics.jsonl").write_bytes(GOOD + line + b"\n" + GOOD)
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:2 is not JSON"):
        read_metrics(tmp_path)
    assert cli.visualize_command([str(tmp_path), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "metrics.jsonl:2 is not JSON" in err and len(err.strip().splitlines()) == 1


def test_a_torn_last_line_with_a_huge_integer_is_dropped(tmp_path):
    (tmp_path / "metrics.jsonl").write_bytes(GOOD + b'{"step": ' + b"9" * 5000)
    assert read_metrics(tmp_path) == [{"step": 0, "kind": "train", "loss": 1.0}]


def test_a_metrics_file_that_is_a_folder_is_named_not_taken_as_absent(tmp_path):
    # before: read as "absent or empty", so visualize silently plotted no curves
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(CheckpointError, match=r"metrics.jsonl is not a regular file"):
        read_metrics(tmp_path)


@pytest.fixture(scope="module")
def forged_descriptor_run(slime_run, tmp_path_factory):
    """``slime_run`` with layer 1's second live pod's activation sparsity set to 5.0 and saved
    again through save_pretrained (so every sha256 is consistent)."""
    run_dir = tmp_path_factory.mktemp("forged-descriptor")
    shutil.copy(slime_run[0] / "metrics.jsonl", run_dir / "metrics.jsonl")
    model = load_run_model(slime_run[0])
    organism = model.organisms[1]
    slot = organism.live_slots()[1]
    organism.descriptors[slot, 1] = 5.0
    model.save_pretrained(run_dir / "model")
    return run_dir, slot


def test_a_live_descriptor_outside_0_1_is_refused_naming_the_pod(forged_descriptor_run, capsys):
    # before: inspect listed the pod with activation_sparsity 5 as matching '>0.9'
    run_dir, slot = forged_descriptor_run
    message = rf"slot {slot} of layer 1 has activation_sparsity = 5.0, outside \[0, 1\]"
    with pytest.raises(CheckpointError, match=message):
        inspect_run(run_dir, "activation_sparsity>0.9")
    assert cli.inspect_command([str(run_dir)]) == 2
    assert cli.visualize_command([str(run_dir), "--out", str(run_dir / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("activation_sparsity = 5.0" in line for line in err)


def test_pods_never_measured_match_no_condition_and_show_no_descriptors(
    tmp_path, make_model, capsys
):
    # before: an unmeasured pod's placeholder zeros matched 'attention_distance<0.3' as if measured
    model = make_model()
    model.save_pretrained(tmp_path / "model")
    total = sum(len(o.live_slots()) for o in model.organisms)
    report = inspect_run(tmp_path, "attention_distance<0.3")
    assert report.pods == () and report.unmeasured == total == report.live_pods
    everything = inspect_run(tmp_path)
    assert len(everything.pods) == total and not any(p.measured for p in everything.pods)
    assert cli.inspect_command([str(tmp_path), "--where", "attention_distance<0.3"]) == 0
    out = capsys.readouterr().out
    assert f"live pods: 0 of {total} ({total} never measured" in out
    assert "match no condition" in out
    assert cli.inspect_command([str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.split()[0].isdigit()]
    assert len(rows) == total and all(row.split()[2:5] == ["-", "-", "-"] for row in rows)
