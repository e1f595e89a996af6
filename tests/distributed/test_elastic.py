"""A lost node under torchrun's elastic agent: the job restarts on the processes left and carries
its run on from the latest checkpoint (CPU, gloo, two agents of one process each).

Two torchrun agents join one c10d rendezvous (``--nnodes 1:2``) and train the tiny preset as one
data-parallel job. Once a checkpoint exists, the second agent is killed with its worker (a lost
machine). The first agent's worker fails on its next collective; the agent restarts it
(``--max-restarts``), the rendezvous closes with the one node left, and ``slime train`` (the same
command line, started again) finds the run directory its job made and resumes it on one process.
~60 s on two cores: two starts, the rendezvous windows, ~160 tiny steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slime.train import RunDir

STEPS, EVERY, KILL_AFTER = 160, 20, 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _agent(port: int, out: Path, log: Path) -> subprocess.Popen:
    slime = shutil.which("slime", path=str(Path(sys.executable).parent)) or "slime"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1:2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "elastic-test",
        "--rdzv-conf",
        "join_timeout=120,last_call_timeout=20,close_timeout=10",
        "--max-restarts",
        "2",
        "--monitor-interval",
        "0.5",
        "--no-python",
        slime,
        "train",
        "--config",
        "tiny",
        "--out",
        str(out),
        "--steps",
        str(STEPS),
        "--quiet",
        f"train.checkpoint_interval={EVERY}",
        "train.eval_interval=80",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (torchrun starts its workers in sessions of their own)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _lose(agent: subprocess.Popen) -> None:
    """SIGKILL ``agent`` and its workers at once: a machine gone."""
    for pid in [agent.pid, *_descendants(agent.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    agent.wait()


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def test_a_lost_node_leaves_the_job_running_on_the_rest_from_its_checkpoint(tmp_path) -> None:
    port, out = _free_port(), tmp_path / "runs"
    first = _agent(port, out, tmp_path / "first.log")
    second = None
    try:
        # The first agent hosts the rendezvous store (it binds the endpoint), so it outlives the
        # second one, as a rendezvous server must.
        _wait(lambda: _listening(port) or first.poll() is not None, 120, "the rendezvous store")
        second = _agent(port, out, tmp_path / "second.log")
        checkpoint = f"step_{KILL_AFTER:08d}"
        _wait(lambda: any(out.glob(f"*/checkpoints/{checkpoint}")), 240, f"{checkpoint}")
        (written,) = out.glob(f"*/checkpoints/{checkpoint}/state.json")
        before = json.loads(written.read_text())["world_size"]
        _lose(second)
        status = first.wait(timeout=300)
    finally:
        for agent in (first, second):
            if agent is not None and agent.poll() is None:
                _lose(agent)
    log = (tmp_path / "first.log").read_text()
    assert status == 0, log[-4000:]
    (run,) = out.iterdir()  # the restarted job carried on its own run, made no other
    assert json.loads((run / "elastic.json").read_text())["run_id"] == "elastic-test"
    assert "restart 1 of the job (torchrun): 1 process(es) carry" in log
    assert f"completed: slime on recall, {STEPS} steps" in log
    assert before == 2  # both ranks wrote the checkpoints before the loss
    final = json.loads((run / f"checkpoints/step_{STEPS:08d}/state.json").read_text())
    assert final.get("world_size", 1) == 1  # and the one left wrote the end (one-process form)
    records = RunDir(run).read_metrics()
    summaries = [r for r in records if r["kind"] == "summary"]
    assert len(summaries) == 1 and summaries[0]["step"] == STEPS


pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and c10d on Linux")
