"""The continual benchmark end to end: runs, references, parts, merge and REPORT.md."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from slime.train.continual import suite
from slime.train.continual.profiles import profile
from slime.train.continual.runner import run_continual

ARMS = ("slime", "gpt_nowd", "random_reset", "cbp")


def _tiny():
    return dataclasses.replace(
        profile("cpu-small"), n_tasks=3, steps_per_task=20, event_interval=10, last_k=2,
        maturity_steps=10, cbp_maturity=10, eval_batches=1,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_results():
    torch.set_num_threads(1)
    return run_continual(_tiny(), streams=("circuit",), arms=ARMS, seeds=(0, 1), log=lambda _: None)


def test_runs_references_and_replayed_deaths(tiny_results) -> None:
    runs = {(r["arm"], r["seed"]): r for r in tiny_results["runs"]}
    assert len(runs) == 8
    refs = {(r["seed"], r["key"]): r["loss"] for r in tiny_results["references"]}
    for seed in (1337, 1338):
        nowd = runs[("gpt_nowd", seed)]
        # a fresh GPT trained N steps on task 0 is exactly the no-intervention arm after task 0
        assert nowd["end_loss"][0] == refs[(seed, nowd["keys"][0])]
        slime, rnd = runs[("slime", seed)], runs[("random_reset", seed)]
        assert slime["deaths"] > 0 and slime["deaths_schedule"]
        assert rnd["schedule_source"].startswith("slime run")
        assert rnd["resets"] == sum(n for _, _, n in slime["deaths_schedule"])
        assert runs[("cbp", seed)]["resets"] > 0
        for r in (nowd, slime, rnd):
            assert len(r["end_loss"]) == len(r["start_loss"]) == 3
            assert r["params_init"] == runs[("gpt_nowd", seed)]["params_init"]


def test_report_and_merge_of_parts(tiny_results, tmp_path) -> None:
    suite.write_outputs(tiny_results, tmp_path / "whole")
    report = (tmp_path / "whole" / "REPORT.md").read_text()
    assert "## Verdicts" in report and "circuit" in report and "Decision rules" in report
    assert (tmp_path / "whole" / "tasks_circuit.png").is_file()
    # the same runs as two parts (one seed each), merged by the CLI
    for seed, name in ((1337, "a"), (1338, "b")):
        part = {**tiny_results, "seeds": [seed]}
        part["runs"] = [r for r in tiny_results["runs"] if r["seed"] == seed]
        part["references"] = [r for r in tiny_results["references"] if r["seed"] == seed]
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(part))
    out = tmp_path / "merged"
    code = suite.main(["--merge", str(tmp_path / "a/results.json"), str(tmp_path / "b/results.json"), "--out", str(out)])  # fmt: skip
    assert code == 0
    merged = json.loads((out / "results.json").read_text())
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    assert merged["analysis"]["circuit"]["table"] == whole["analysis"]["circuit"]["table"]
    assert "## Parts" in (out / "REPORT.md").read_text()


def test_missing_corpus_stream_is_skipped_with_its_reason(tmp_path) -> None:
    prof = dataclasses.replace(_tiny(), n_tasks=2)
    res = run_continual(prof, streams=("corpus",), arms=("gpt_nowd",), seeds=(0, 1), data_dir=str(tmp_path), log=lambda _: None)  # fmt: skip
    assert res["streams"] == [] and "corpus" in res["skipped_streams"]
    suite.write_outputs(res, tmp_path / "out")
    assert "skipped" in (tmp_path / "out" / "REPORT.md").read_text()


@pytest.mark.slow
def test_cpu_small_profile_end_to_end(tmp_path) -> None:
    code = suite.main(
        ["--profile", "cpu-small", "--out", str(tmp_path), "--data-dir", str(tmp_path / "none")]
    )
    assert code == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "smoke run" in report and "Stream `permuted`" in report and "Stream `circuit`" in report
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["arm"] for r in results["runs"]} >= {
        "slime",
        "gpt",
        "snp",
        "cbp",
        "redo",
        "random_reset",
    }
