"""Exports of the frozen pool: ONNX in onnxruntime, torch.export round trip, TorchScript trace."""

import importlib.util

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from slime.kernels import torch_fallback
from slime.proto import CheckpointError, ConfigError
from slime.tools import (
    ExportMismatchError,
    MissingExtraError,
    export_onnx,
    export_run,
    export_torch,
    export_torchscript,
    freeze,
    verify_onnx,
    verify_torch,
    verify_torchscript,
)
from slime.tools._onnx_attention import translation_table
from slime.tools.export import ONNX_ATOL, ONNX_RTOL

VOCAB, BLOCK = 11, 8


def tokens(batch, seq, seed=0):
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def onnx_export(slime_run, tmp_path_factory):
    """The run's model frozen and exported to ONNX once (the exporter takes seconds)."""
    _, model, _ = slime_run
    frozen = freeze(model)
    return frozen, export_onnx(frozen, tmp_path_factory.mktemp("onnx") / "model.onnx")


def run_onnx(path, idx):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"idx": idx.numpy()})[0])


def test_onnx_logits_match_pytorch_within_tolerance_at_two_batch_and_sequence_sizes(onnx_export):
    frozen, path = onnx_export
    check = verify_onnx(frozen, path)
    assert len({b for b, _ in check.shapes}) == 2 and len({t for _, t in check.shapes}) == 2
    assert check.max_abs_diff <= ONNX_ATOL


@pytest.mark.parametrize(("batch", "seq"), [(5, 3), (2, BLOCK), (1, 1)])
def test_onnx_model_runs_at_shapes_other_than_the_example(onnx_export, slime_run, batch, seq):
    _, path = onnx_export
    _, model, _ = slime_run
    idx = tokens(batch, seq, seed=batch * 10 + seq)
    with torch.no_grad():
        expected = model.eval()(idx)[0]
    torch.testing.assert_close(run_onnx(path, idx), expected, rtol=ONNX_RTOL, atol=ONNX_ATOL)


def test_onnx_graph_uses_only_standard_operators_with_dynamic_batch_and_sequence(onnx_export):
    _, path = onnx_export
    graph = onnx.load(str(path)).graph
    domains = {node.domain for node in graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # no custom-op domain left for the runtime
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True]
    assert not any("attention" in node.op_type.lower() for node in graph.node)


class _PoolAttention(torch.nn.Module):
    """The raw op with every mask in use, to check the translation's masking rules."""

    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v, key_padding_mask, alive):
        out, lse = torch.ops.slime.pool_attention(
            q, k, v, key_padding_mask, alive, self.causal, 0.5, "torch"
        )
        return out, lse


@pytest.mark.parametrize("causal", [False, True])
def test_onnx_translation_of_pool_attention_matches_the_torch_fallback(tmp_path, causal):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    kpm = torch.tensor([[True, True, False, True, False], [False] * 5])  # row 2: nothing visible
    alive = torch.tensor([True, False, True])
    program = torch.onnx.export(
        _PoolAttention(causal).eval(),
        (q, k, v, kpm, alive),
        dynamo=True,
        custom_translation_table=translation_table(),
        verbose=False,
    )
    program.save(str(tmp_path / "attention.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "attention.onnx"))
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), (q, k, v, kpm, alive))}
    out, lse = session.run(None, feeds)
    ref_out, ref_lse = torch_fallback.attention_forward(q, k, v, causal, 0.5, kpm, alive)
    np.testing.assert_allclose(out, ref_out.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lse, ref_lse.numpy(), rtol=1e-5, atol=1e-6)
    assert (out[1] == 0).all() and (out[:, 1] == 0).all()  # no visible key / dead pod: exactly 0


def test_torch_export_round_trip_equals_the_frozen_model(slime_run, tmp_path):
    _, model, _ = slime_run
    frozen = freeze(model)
    path = export_torch(frozen, tmp_path / "model.pt2")
    check = verify_torch(frozen, path)
    assert check.max_abs_diff == 0.0
    loaded = torch.export.load(str(path)).module()
    idx = tokens(4, 6, seed=3)
    torch.testing.assert_close(loaded(idx), frozen(idx), rtol=0, atol=0)


def test_torch_export_keeps_the_custom_attention_op_whole(slime_run, tmp_path):
    frozen = freeze(slime_run[1])
    program = torch.export.load(str(export_torch(frozen, tmp_path / "model.pt2")))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "slime.pool_attention.default" in targets


def test_torchscript_trace_round_trip_runs_at_other_shapes(slime_run, tmp_path):
    frozen = freeze(slime_run[1])
    path = export_torchscript(frozen, tmp_path / "model.ts")
    assert verify_torchscript(frozen, path).max_abs_diff == 0.0


def test_torchscript_of_a_living_pool_is_refused_with_a_clear_error(slime_run, tmp_path):
    with pytest.raises(ConfigError, match="cannot capture a living pool"):
        export_torchscript(slime_run[1], tmp_path / "model.ts")


def test_verification_fails_when_the_export_computes_something_else(make_model, tmp_path):
    path = export_torch(freeze(make_model(seed=1)), tmp_path / "other.pt2")
    with pytest.raises(ExportMismatchError, match="differ from the frozen model"):
        verify_torch(freeze(make_model(seed=2)), path)


def test_export_run_writes_into_the_run_directory_by_default(slime_run):
    run_dir, _, _ = slime_run
    check = export_run(run_dir, "torch-export")
    assert check.path == run_dir / "export" / "model.pt2" and check.path.is_file()


def test_a_v1_model_directory_exports_to_onnx_computing_the_saved_models_logits(
    v1_run, slime_run, tmp_path
):
    _, model, _ = slime_run
    check = export_run(v1_run, "onnx", tmp_path / "v1.onnx")
    assert check.path == tmp_path / "v1.onnx" and check.max_abs_diff <= ONNX_ATOL
    idx = tokens(2, BLOCK, seed=5)
    with torch.no_grad():
        expected = model.eval()(idx)[0]
    torch.testing.assert_close(run_onnx(check.path, idx), expected, rtol=ONNX_RTOL, atol=ONNX_ATOL)


def test_export_of_a_baseline_run_says_there_is_no_model(baseline_run):
    with pytest.raises(CheckpointError, match="baseline runs"):
        export_run(baseline_run, "onnx")


def test_unknown_export_format_raises_config_error(slime_run):
    with pytest.raises(ConfigError, match="'tflite'"):
        export_run(slime_run[0], "tflite")


def test_onnx_check_without_onnxruntime_names_the_extra(slime_run, tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def without_ort(name, *args):
        return None if name == "onnxruntime" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_ort)
    with pytest.raises(MissingExtraError, match=r"slime-tools\[onnx\]"):
        verify_onnx(freeze(slime_run[1]), tmp_path / "never-written.onnx")


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
def test_torchscript_trace_has_no_sequence_length_check(slime_run, tmp_path):
    """What the README says the trace does not cover: it fails in the position embedding."""
    frozen = freeze(slime_run[1])
    traced = torch.jit.load(str(export_torchscript(frozen, tmp_path / "model.ts")))
    with pytest.raises(Exception, match="index out of range"):
        traced(tokens(1, BLOCK + 1))


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
def test_scripting_the_frozen_model_is_not_supported(slime_run):
    """What the README says TorchScript does not cover: torch.jit.script fails to compile it."""
    with pytest.raises(RuntimeError):
        torch.jit.script(freeze(slime_run[1]))


@pytest.mark.parametrize("bad", [-1, -VOCAB, VOCAB, 10 * VOCAB])
def test_ids_outside_the_vocabulary_give_nan_logits_in_pytorch_and_onnx(onnx_export, bad):
    frozen, path = onnx_export
    idx = tokens(2, 5, seed=3)
    idx[1, 2] = bad
    for logits in (frozen(idx).detach(), run_onnx(path, idx)):
        assert torch.isnan(logits[1, 2]).all()
        mask = torch.ones(2, 5, dtype=torch.bool)
        mask[1, 2] = False
        assert torch.isfinite(logits[mask]).all()


def test_an_export_on_a_full_disk_keeps_the_earlier_export_and_is_one_error(
    slime_run, tmp_path, monkeypatch
):
    # torch.export.save wrote straight to RUN_DIR/export/model.pt2: a full disk midway left a
    # truncated file where the earlier export was, and the OSError escaped raw.
    import errno
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(slime_run[0], run_dir)
    first = export_run(run_dir, "torch-export").path
    before = first.read_bytes()

    def full_disk(program, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.export, "save", full_disk)
    with pytest.raises(CheckpointError, match="model.pt2': No space left on device.*unchanged"):
        export_run(run_dir, "torch-export")
    assert first.read_bytes() == before
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.pt2"]
