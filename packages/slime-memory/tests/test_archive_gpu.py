"""On a CUDA device the archives give exactly what they give on the CPU (run with -m gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from slime.memory import Archive, CVTArchive, GridArchive

pytestmark = pytest.mark.gpu

RANGES = [(-1.0, 1.0), (0.0, 2.0)]


def stream(batches: int = 5, batch: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        solutions = torch.randn(batch, 8, generator=g, dtype=torch.float64)
        objectives = torch.randint(-4, 5, (batch,), generator=g).double() / 2  # ties
        descriptors = torch.rand(batch, 2, generator=g, dtype=torch.float64) * 2.6
        yield solutions, objectives, descriptors - torch.tensor([1.3, 0.3])


def assert_same(cpu: Archive, gpu: Archive, form: str) -> None:
    for solutions, objectives, descriptors in stream():
        results = []
        for archive in (cpu, gpu):
            device = archive.device
            s, o, d = solutions.to(device), objectives.to(device), descriptors.to(device)
            genomes = {"x": s} if form == "columns" else [{"x": row} for row in s]
            results.append(archive.add(genomes, o, d))
        assert torch.equal(results[0].status, results[1].status.cpu())
        assert torch.equal(results[0].value, results[1].value.cpu())
    left, right = list(cpu), list(gpu)
    assert [(e.cell, e.objective) for e in left] == [(e.cell, e.objective) for e in right]
    for a, b in zip(left, right):
        assert torch.equal(a.genome["x"], b.genome["x"].cpu())


@pytest.mark.parametrize("form", ["columns", "payloads"])
@pytest.mark.parametrize("dims", [[6, 5], [40, 30]])
def test_grid_on_cuda_matches_cpu(form: str, dims: list[int]) -> None:
    cells = dims[0] * dims[1]
    cpu = GridArchive(dims, RANGES, max_size=cells)
    gpu = GridArchive(dims, RANGES, max_size=cells, device="cuda")
    assert_same(cpu, gpu, form)


def test_grid_with_eviction_and_cma_mae_on_cuda_matches_cpu() -> None:
    kwargs = {"max_size": 50, "learning_rate": 0.4, "threshold_min": -1.0}
    cpu = GridArchive([20, 20], RANGES, **kwargs)
    gpu = GridArchive([20, 20], RANGES, device="cuda", **kwargs)
    assert_same(cpu, gpu, "columns")


def test_cvt_on_cuda_matches_cpu_k_d_tree() -> None:
    cpu = CVTArchive(64, RANGES, samples=2000, seed=0, max_size=64)
    gpu = CVTArchive(64, RANGES, centroids=cpu.centroids, device="cuda", max_size=64)
    assert_same(cpu, gpu, "columns")


def test_cuda_archive_saves_and_loads_on_cpu(tmp_path: Path) -> None:
    gpu = GridArchive([6, 5], RANGES, device="cuda")
    for solutions, objectives, descriptors in stream(batches=2):
        gpu.add({"x": solutions.cuda()}, objectives.cuda(), descriptors.cuda())
    gpu.save(tmp_path / "a")
    cpu = GridArchive.load(tmp_path / "a")
    assert [(e.cell, e.objective) for e in cpu] == [(e.cell, e.objective) for e in gpu]
    again = GridArchive.load(tmp_path / "a", device="cuda")
    assert again.device.type == "cuda" and len(again) == len(gpu)


def test_bootstrap_and_interpolate_on_cuda() -> None:
    gpu = GridArchive([6, 5], RANGES, device="cuda")
    points = torch.tensor([[-0.9, 0.1], [0.9, 1.9]], device="cuda")
    gpu.add({"x": torch.tensor([[0.0, 0.0], [2.0, 4.0]], device="cuda")}, torch.ones(2), points)
    assert gpu.bootstrap(torch.tensor([0.8, 1.8]))["x"].tolist() == [2.0, 4.0]
    blended = gpu.interpolate(torch.tensor([0.0, 1.0]))["x"]
    assert blended.device.type == "cuda"
    torch.testing.assert_close(blended.cpu(), torch.tensor([1.0, 2.0]))


def test_cvt_nearest_centroid_is_exact_far_from_the_origin_on_cuda() -> None:
    centroids = torch.tensor([[1e6, 1e6], [1e6 + 0.1, 1e6]], dtype=torch.float64)
    archive = CVTArchive(2, [(1e6 - 1, 1e6 + 1)] * 2, centroids=centroids, device="cuda")
    points = torch.tensor([[1e6 + 0.0504, 1e6 + 0.3]] * 26, dtype=torch.float64, device="cuda")
    assert archive.cell_index(points).tolist() == [1] * 26
    gen = torch.Generator().manual_seed(0)
    box = 1e6 - 1 + 2 * torch.rand(20_000, 2, generator=gen, dtype=torch.float64)
    exact = torch.linalg.vector_norm(box[:, None] - centroids[None], dim=-1).argmin(dim=1)
    assert torch.equal(archive.cell_index(box.cuda()).cpu(), exact)


def sync_free_inputs(batch: int, batches: int = 3):
    """Device batches with a NaN objective and an Inf descriptor in each."""
    inputs = []
    for solutions, objectives, descriptors in stream(batches=batches, batch=batch, seed=batch):
        objectives[0] = float("nan")
        descriptors[-1, 1] = float("inf")
        inputs.append((solutions.cuda(), objectives.cuda(), descriptors.cuda()))
    return inputs


SYNC_FREE_CONFIGS = {
    "no eviction": {},
    "evicting": {"max_size": 7},
    "cma-mae evicting": {"max_size": 7, "learning_rate": 0.5, "threshold_min": -1.0},
}


def sync_free_archive(kind: str, config: dict, device: str | None) -> Archive:
    if kind == "grid":
        return GridArchive([20, 15], RANGES, **{"max_size": 300, **config}, device=device)
    centroids = torch.rand(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    centroids = centroids * torch.tensor([2.0, 2.0]) - torch.tensor([1.0, 0.0])
    return CVTArchive(64, RANGES, centroids=centroids, **{"max_size": 64, **config}, device=device)


@pytest.mark.parametrize("batch", [5, 3000])  # far fewer items than cells, and far more
@pytest.mark.parametrize("config", sorted(SYNC_FREE_CONFIGS))
@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_add_with_check_false_never_synchronises(kind: str, config: str, batch: int) -> None:
    gpu = sync_free_archive(kind, SYNC_FREE_CONFIGS[config], "cuda")
    cpu = sync_free_archive(kind, SYNC_FREE_CONFIGS[config], None)
    inputs = sync_free_inputs(batch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        results = [gpu.add({"x": s}, o, d, check=False) for s, o, d in inputs]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for (s, o, d), result in zip(inputs, results):
        expected = cpu.add({"x": s.cpu()}, o.cpu(), d.cpu(), check=False)
        assert result.status.device.type == "cuda"
        assert torch.equal(result.status.cpu(), expected.status)
        torch.testing.assert_close(result.value.cpu(), expected.value, equal_nan=True)
    assert int((results[0].status == -1).sum()) == 2
    assert torch.equal(gpu._state.cpu(), cpu._state)
    occupied = cpu._occupied
    assert torch.equal(gpu._store.columns["x"].cpu()[occupied], cpu._store.columns["x"][occupied])


@pytest.mark.parametrize("kind", ["grid", "cvt"])
def test_add_captured_in_a_cuda_graph_replays_like_eager_adds(kind: str) -> None:
    config = SYNC_FREE_CONFIGS["cma-mae evicting"]
    eager = sync_free_archive(kind, config, "cuda")
    graphed = sync_free_archive(kind, config, "cuda")
    inputs = sync_free_inputs(400, batches=6)
    static = [t.clone() for t in inputs[0]]
    # The first batch allocates the genome buffers: run it eagerly, on a side stream as
    # torch.cuda.graph asks of warm-up work, then capture the next add.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        graphed.add({"x": static[0]}, static[1], static[2], check=False)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = graphed.add({"x": static[0]}, static[1], static[2], check=False)
    eager.add({"x": inputs[0][0]}, inputs[0][1], inputs[0][2], check=False)
    for s, o, d in inputs[1:]:
        expected = eager.add({"x": s}, o, d, check=False)
        for buffer, value in zip(static, (s, o, d)):
            buffer.copy_(value)
        graph.replay()
        assert torch.equal(captured.status, expected.status)
        torch.testing.assert_close(captured.value, expected.value, equal_nan=True)
    torch.cuda.synchronize()
    assert torch.equal(graphed._state, eager._state)
    assert torch.equal(graphed._store.columns["x"], eager._store.columns["x"])
    assert [(e.cell, e.objective) for e in graphed] == [(e.cell, e.objective) for e in eager]
