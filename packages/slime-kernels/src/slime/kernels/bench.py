"""Benchmark: ``python -m slime.kernels.bench [--attention] [--sweep] [--host] [--json PATH]
[--markdown PATH]`` on a CUDA machine.

Prints markdown tables: pool attention forward and forward+backward TF/s (``backend="auto"``,
with and without an alive mask, and the Triton kernel) next to torch SDPA's flash, cuDNN and
memory-efficient backends (pinned with ``sdpa_kernel``) and torch's unpinned pick at the issue's
shapes, bf16 causal; then the Triton effective rank against ``torch.linalg.eigvalsh``; last, the
attention replayed from CUDA graphs and a summary of forward+backward "vs best SDPA" (the
fastest SDPA row's time over ours: above 1 is faster), eager and replayed. ``--attention``
prints the attention tables only; ``--device cpu --shape 1,2,16,16`` is a smoke run of them on
the CPU in fp32 (CPU timings, no graphs; the Triton row needs ``TRITON_INTERPRET=1``).
``--sweep`` first times every candidate launch config of the attention kernels and of the
effective rank (``--sweep-erank``: the latter only; ``--sweep-fwd``: forward configs from CUDA
graphs). ``--host`` first prints the host time of each layer of an eager call; ``--only`` stops
after the options' tables. Times are medians of ``triton.testing.do_bench``, eager (host launch
cost included), then replayed from a CUDA graph; FLOPs count causal attention as half the dense
work and the backward as 2.5x the forward (the FlashAttention convention).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time

import torch
import triton
from slime.kernels import _triton_attention, _triton_erank, pool_attention, torch_fallback, utils
from slime.proto import KernelError
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

SHAPES = [(16, 12, 1024, 64), (64, 6, 256, 64)]
# The SDPA rows and the candidates for "best SDPA": each backend pinned with ``sdpa_kernel``, and
# torch's own pick without the context manager's host cost (None).
SDPA = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-default": None,
}
FWD_CONFIGS = [
    (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3),
    (128, 32, 4, 4), (64, 32, 4, 4), (128, 64, 4, 4), (64, 128, 4, 3),
]  # fmt: skip
DKDV_CONFIGS = [
    (32, 128, 8, 2), (64, 64, 4, 2), (64, 128, 8, 2), (32, 64, 4, 2), (64, 64, 4, 3),
    (32, 128, 4, 3), (64, 128, 8, 3), (32, 128, 4, 4), (32, 128, 4, 5), (64, 128, 4, 3),
    (16, 128, 4, 3), (32, 64, 4, 4),
]  # fmt: skip
DQ_CONFIGS = [
    (128, 32, 8, 2), (64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3), (128, 32, 4, 3),
    (64, 64, 4, 3), (128, 64, 8, 3), (128, 32, 4, 4), (128, 32, 4, 5), (128, 64, 4, 3),
    (64, 32, 4, 4), (128, 16, 4, 3),
]  # fmt: skip
ERANK_VARIANTS = [
    {"chunks": 4},
    {"chunks": 8},
    {"chunks": 16},
    {"chunks": 8, "num_warps": 8},
    {"chunks": 4, "num_warps": 2},
    {"chunks": 8, "shifts": 32, "iters": 5},
    {"chunks": 8, "shifts": 64, "iters": 4},
    {"chunks": 16, "shifts": 64, "iters": 4},
]


def _cfg(t: tuple[int, int, int, int]) -> dict[str, int]:
    return {"BLOCK_M": t[0], "BLOCK_N": t[1], "num_warps": t[2], "num_stages": t[3]}


def _ms(fn, grad_to_none=None) -> float:
    return triton.testing.do_bench(
        fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median"
    )


def _cpu_ms(fn, grad_to_none=None, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` on the CPU, in ms (the smoke run's timer)."""
    times = []
    for _ in range(repeats + 1):
        for x in grad_to_none or ():
            x.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[1:])  # the first call warms up


def _time_ms(fn, device: torch.device, grad_to_none=None) -> float:
    return _ms(fn, grad_to_none) if device.type == "cuda" else _cpu_ms(fn, grad_to_none)


def _graph_ms(fn) -> float:
    """Median time of ``fn`` replayed from a CUDA graph: device time without host launch cost."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return _ms(graph.replay)


def _attention_flops(batch, pool, seq, d) -> float:
    return 4 * batch * pool * seq * seq * d * 0.5  # causal


def _inputs(shape, dtype=torch.bfloat16, device="cuda"):
    return [torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]


def _dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32  # the interpreter has no bf16


def _attention_impls(pool: int, device: torch.device) -> dict:
    """Name -> ``fn(q, k, v)``, causal, for every implementation the attention tables time."""
    alive = torch.ones(pool, dtype=torch.bool, device=device)  # the mask's cost, not its values
    impls = {
        "slime-auto": lambda q, k, v: pool_attention(q, k, v, causal=True),
        "slime-auto, alive mask": lambda q, k, v: pool_attention(q, k, v, causal=True, alive=alive),
        "slime-triton": lambda q, k, v: pool_attention(q, k, v, causal=True, backend="triton"),
    }
    for name, backend in SDPA.items():

        def sdpa(q, k, v, backend=backend):
            if backend is None:
                return scaled_dot_product_attention(q, k, v, is_causal=True)
            with sdpa_kernel(backend):
                return scaled_dot_product_attention(q, k, v, is_causal=True)

        impls[name] = sdpa
    return impls


def _error_row(name, shape, exc: Exception) -> dict:
    """A backend that does not support this shape, card or device: the row says why."""
    message = str(exc).splitlines()[0][:80].replace("|", "/")  # a cell of a markdown table
    return {"impl": name, "shape": shape, "error": message}


def vs_best_sdpa(rows: list[dict], key: str, out: str) -> None:
    """Set ``row[out]`` = the fastest SDPA row's ``key`` at the row's shape / the row's."""
    for row in rows:
        sdpa = [
            r[key] for r in rows if r["impl"] in SDPA and r["shape"] == row["shape"] and key in r
        ]
        if sdpa and key in row:
            row[out] = min(sdpa) / row[key]


def _fwd_bwd(fn, q, k, v, grad):
    def run():
        fn(q, k, v).backward(grad)

    return run


def attention_rows(shape, device: torch.device | None = None) -> list[dict]:
    """One row per implementation: forward and forward+backward ms and TF/s, error vs float32,
    and forward+backward "vs best SDPA". ``device``: CUDA unless given."""
    device = torch.device("cuda") if device is None else device
    q, k, v = _inputs(shape, _dtype(device), device)
    grad = torch.randn_like(q)
    ref = scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    flops = _attention_flops(*shape)
    rows = []
    for name, fn in _attention_impls(shape[1], device).items():
        try:
            with torch.no_grad():
                out = fn(q, k, v)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            fwd = _time_ms(lambda fn=fn: fn(q, k, v), device)
            both = _time_ms(_fwd_bwd(fn, q, k, v, grad), device, grad_to_none=[q, k, v])
        except (RuntimeError, KernelError) as exc:
            rows.append(_error_row(name, shape, exc))
            continue
        rows.append({
            "impl": name, "shape": shape, "rel_err": err,
            "fwd_ms": fwd, "fwd_tflops": flops / fwd * 1e-9,
            "fwd_bwd_ms": both, "fwd_bwd_tflops": 3.5 * flops / both * 1e-9,
        })  # fmt: skip
    vs_best_sdpa(rows, "fwd_bwd_ms", "vs_best_sdpa")
    return rows


def graph_rows(shape) -> list[dict]:
    """Forward and forward+backward replayed from a CUDA graph: device time, no host launch cost."""
    q, k, v = _inputs(shape)
    grad = torch.randn_like(q)
    flops = _attention_flops(*shape)
    rows = []
    for name, fn in _attention_impls(shape[1], q.device).items():

        def both(fn=fn):
            return torch.autograd.grad(fn(q, k, v), (q, k, v), grad)

        try:
            with torch.no_grad():
                ms = _graph_ms(lambda fn=fn: fn(q, k, v))
            both_ms = _graph_ms(both)
        except (RuntimeError, KernelError) as exc:
            rows.append(_error_row(name, shape, exc))
            continue
        rows.append({"impl": name, "shape": shape, "graph_fwd_ms": ms,
                     "graph_fwd_tflops": flops / ms * 1e-9, "graph_fwd_bwd_ms": both_ms,
                     "graph_fwd_bwd_tflops": 3.5 * flops / both_ms * 1e-9})  # fmt: skip
    vs_best_sdpa(rows, "graph_fwd_bwd_ms", "graph_vs_best_sdpa")
    return rows


def summary_rows(eager: list[dict], graph: list[dict]) -> list[dict]:
    """Forward+backward of each implementation, eager and replayed, each against the best SDPA."""
    keys = ("graph_fwd_bwd_ms", "graph_vs_best_sdpa")
    replayed = {(r["impl"], r["shape"]): r for r in graph}
    rows = []
    for row in eager:
        if "fwd_bwd_ms" not in row:
            continue
        other = replayed.get((row["impl"], row["shape"]), {})
        rows.append({
            "impl": row["impl"], "shape": row["shape"], "fwd_bwd_ms": row["fwd_bwd_ms"],
            "vs_best_sdpa": row.get("vs_best_sdpa", ""), **{k: other[k] for k in keys if k in other},
        })  # fmt: skip
    return rows


def sweep_attention(shape) -> list[dict]:
    """Time each candidate config of the three attention kernels at ``shape`` (bf16 causal)."""
    q, k, v = (x.detach() for x in _inputs(shape))
    scale = shape[-1] ** -0.5
    args = (True, scale, None, None)
    rows = []
    for t in FWD_CONFIGS:
        ms = _ms(lambda t=t: _triton_attention.forward(q, k, v, *args, config=_cfg(t)))
        rows.append({"kernel": "fwd", "shape": shape, "config": t, "ms": ms})
    out, lse = _triton_attention.forward(q, k, v, *args)
    grad = torch.randn_like(out)
    default_dq = _triton_attention.default_config("dq", shape[-1], q.device)
    default_dkdv = _triton_attention.default_config("dkdv", shape[-1], q.device)
    for t in DKDV_CONFIGS:
        cfgs = (_cfg(t), default_dq)
        ms = _ms(
            lambda c=cfgs: _triton_attention.backward(
                grad, q, k, v, out, lse, None, *args, configs=c
            )
        )
        rows.append({"kernel": "dkdv+default dq", "shape": shape, "config": t, "ms": ms})
    for t in DQ_CONFIGS:
        cfgs = (default_dkdv, _cfg(t))
        ms = _ms(
            lambda c=cfgs: _triton_attention.backward(
                grad, q, k, v, out, lse, None, *args, configs=c
            )
        )
        rows.append({"kernel": "default dkdv+dq", "shape": shape, "config": t, "ms": ms})
    return rows


def sweep_forward_graph(shape) -> list[dict]:
    """Each forward config at ``shape`` (bf16 causal), timed from a CUDA graph: device time only."""
    q, k, v = (x.detach() for x in _inputs(shape))
    args = (True, shape[-1] ** -0.5, None, None)
    rows = []
    for t in FWD_CONFIGS:
        ms = _graph_ms(lambda t=t: _triton_attention.forward(q, k, v, *args, config=_cfg(t)))
        rows.append({"kernel": "fwd (graph)", "shape": shape, "config": t, "ms": ms})
    return rows


def _host_us(fn, calls: int = 200, repeats: int = 7) -> float:
    """Median host time of one ``fn()`` call in microseconds, while the GPU keeps up (tiny shapes).

    Only the host's side is timed: the loop is not synchronised, so the GPU work it queues runs
    behind it; the queue is drained between repeats.
    """
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(times)


class _Identity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def host_rows(shape=(1, 1, 16, 64)) -> list[dict]:
    """Host microseconds per call of each layer of an eager pool-attention call, at a shape whose
    GPU work is negligible, next to SDPA's: where the eager overhead comes from."""
    q, k, v = _inputs(shape)
    grad = torch.randn_like(q)
    scale = shape[-1] ** -0.5
    plain = [x.detach() for x in (q, k, v)]
    out, lse = _triton_attention.forward(*plain, True, scale, None, None)

    def fwd_bwd(fn, inputs=(q, k, v)):
        return lambda: torch.autograd.grad(fn(q, k, v), inputs, grad)

    def sdpa(backend):
        def fn(q, k, v):
            with sdpa_kernel(backend):
                return scaled_dot_product_attention(q, k, v, is_causal=True)

        return fn

    def attention(q, k, v):
        return pool_attention(q, k, v, causal=True, backend="triton")

    def auto(q, k, v):
        return pool_attention(q, k, v, causal=True)

    items = {
        "check_attention_inputs": lambda: utils.check_attention_inputs(
            q, k, v, None, None, head_dims=utils.TRITON_HEAD_DIMS
        ),
        "check_free_memory (driver query)": lambda: utils.check_free_memory(
            1 << 20, q.device, "bench"
        ),
        "torch.empty_like": lambda: torch.empty_like(q),
        "triton _fwd_kernel launch alone": _fwd_launch(*plain, torch.empty_like(out), scale),
        "triton _fwd_kernel launch, cached handle": _fwd_launch(
            *plain, torch.empty_like(out), scale, cached=True
        ),
        "triton forward (check + alloc + 1 launch)": lambda: _triton_attention.forward(
            *plain, True, scale, None, None
        ),
        "triton backward (alloc + 3 launches)": lambda: _triton_attention.backward(
            grad, *plain, out, lse, None, True, scale, None, None
        ),
        "pool_attention(triton) forward, no_grad": lambda: _no_grad(attention, q, k, v),
        "pool_attention(triton) forward, grad": lambda: attention(q, k, v),
        "pool_attention(triton) fwd+bwd": fwd_bwd(attention),
        "pool_attention(auto) fwd+bwd": fwd_bwd(auto),
        "identity autograd.Function fwd+bwd": fwd_bwd(lambda q, k, v: _Identity.apply(q), (q,)),
        "sdpa-cudnn fwd+bwd": fwd_bwd(sdpa(SDPBackend.CUDNN_ATTENTION)),
        "sdpa-flash fwd+bwd": fwd_bwd(sdpa(SDPBackend.FLASH_ATTENTION)),
    }
    rows = []
    for name, fn in items.items():
        try:
            rows.append({"what": name, "shape": shape, "host_us": _host_us(fn)})
        except RuntimeError as exc:
            rows.append({"what": name, "shape": shape, "error": str(exc).splitlines()[0][:80]})
    return rows


def _fwd_launch(q, k, v, out, scale, cached: bool = False):
    """The forward kernel's bare launch (outputs preallocated) through Triton's dispatcher, or
    through the cached handle the attention code launches with (``cached``)."""
    batch, pool, seq, d = q.shape
    cfg = _triton_attention.default_config("fwd", d, q.device)
    lse = torch.empty((batch, pool, seq), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(seq, cfg["BLOCK_M"]), batch * pool)

    def launch():
        (_triton_attention._FWD if cached else _triton_attention._fwd_kernel[grid])(
            *((grid,) if cached else ()), q, k, v, out, lse, q, q,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            pool, seq, scale * _triton_attention._LOG2E,
            CAUSAL=True, HAS_KPM=False, HAS_ALIVE=False, D=d, PRECISION="tf32", **cfg,
        )  # fmt: skip

    return launch


def backward_attribution(shape=(1, 1, 16, 64), calls: int = 200) -> list[dict]:
    """Where an eager forward+backward's host time goes once autograd takes over: host µs per call
    spent inside the Function's backward and inside the Triton backward when autograd calls them
    (from its device thread), against the whole call and the Triton backward called directly."""
    from slime.kernels import functional

    q, k, v = _inputs(shape)
    grad = torch.randn_like(q)
    spent: dict[str, float] = {"Function.backward": 0.0, "triton backward": 0.0}
    timed = {
        "Function.backward": (functional._EagerAttention, "backward", True),
        "triton backward": (_triton_attention, "backward", False),
    }
    originals = {name: getattr(owner, attr) for name, (owner, attr, _) in timed.items()}

    def wrap(name, fn):
        def timed_fn(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return timed_fn

    def step():
        torch.autograd.grad(pool_attention(q, k, v, causal=True, backend="triton"), (q, k, v), grad)

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    for name, (owner, attr, static) in timed.items():
        fn = wrap(name, originals[name])
        setattr(owner, attr, staticmethod(fn) if static else fn)
    try:
        start = time.perf_counter()
        for _ in range(calls):
            step()
        total = time.perf_counter() - start
        torch.cuda.synchronize()
    finally:
        for name, (owner, attr, static) in timed.items():
            setattr(owner, attr, staticmethod(originals[name]) if static else originals[name])
    rows = [{"what": "fwd+bwd, whole call", "host_us": total / calls * 1e6}]
    rows += [{"what": f"inside {n} (autograd thread)", "host_us": t / calls * 1e6}
             for n, t in spent.items()]  # fmt: skip
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(50):
            step()
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=60)
    )
    return rows


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _correlations(pool: int, d: int) -> torch.Tensor:
    x = torch.randn(pool, 4 * d, d, device="cuda")
    x[:, :, d // 2 :] += x[:, :, : d - d // 2] * 2  # correlated halves: a spread spectrum
    return torch_fallback.correlation(x)


def erank_rows(variants: list[dict]) -> list[dict]:
    """Triton effective rank vs eigvalsh: ms, speed-up, max relative error vs float64 eigvalsh."""
    rows = []
    for pool in (8, 64):
        for d in (32, 64, 128):
            m = _correlations(pool, d)
            exact = torch_fallback.entropy_rank(torch.linalg.eigvalsh(m.double()))
            eig_ms = _ms(lambda m=m: torch.linalg.eigvalsh(m))
            for kw in variants:
                got = _triton_erank.effective_rank(m, **kw)
                err = ((got.double() - exact).abs() / exact).max().item()
                ms = _ms(lambda m=m, kw=kw: _triton_erank.effective_rank(m, **kw))
                rows.append({
                    "P": pool, "d": d, "variant": kw, "ms": ms, "eigvalsh_ms": eig_ms,
                    "speedup": eig_ms / ms, "max_rel_err": err,
                })  # fmt: skip
    return rows


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """``rows`` as a markdown table of ``columns`` (floats to 4 significant digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _shape(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(x) for x in text.split(","))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"a shape is B,P,T,d (four positive ints), got {text!r}")
    return parts


class _Report:
    """Prints each table and keeps the text for ``--markdown``."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def line(self, text: str) -> None:
        print(text)
        self.parts.append(text + "\n")

    def table(self, title: str, rows: list[dict], columns: list[str]) -> None:
        self.line(title)
        self.line("")
        self.line(markdown_table(rows, columns))

    def write(self, path: str | None) -> None:
        if path:
            with open(path, "w") as fh:
                fh.write("".join(self.parts))


ATTENTION_COLUMNS = ["impl", "shape", "fwd_ms", "fwd_tflops", "fwd_bwd_ms", "fwd_bwd_tflops",
                     "vs_best_sdpa", "rel_err", "error"]  # fmt: skip
GRAPH_COLUMNS = ["impl", "shape", "graph_fwd_ms", "graph_fwd_tflops", "graph_fwd_bwd_ms",
                 "graph_fwd_bwd_tflops", "graph_vs_best_sdpa", "error"]  # fmt: skip
SUMMARY_COLUMNS = ["impl", "shape", "fwd_bwd_ms", "vs_best_sdpa", "graph_fwd_bwd_ms",
                   "graph_vs_best_sdpa"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time every candidate config first")
    parser.add_argument("--sweep-erank", action="store_true", help="sweep effective rank only")
    parser.add_argument("--sweep-fwd", action="store_true", help="forward configs, graph-timed")
    parser.add_argument("--host", action="store_true", help="host cost per eager call, by layer")
    parser.add_argument("--only", action="store_true", help="skip the main tables")
    parser.add_argument("--attention", action="store_true", help="the attention tables only")
    parser.add_argument("--device", default="cuda", help="cuda; cpu is a smoke run (attention)")
    parser.add_argument("--shape", type=_shape, action="append", help="B,P,T,d (repeatable)")
    parser.add_argument("--json", help="also write all rows to this JSON file")
    parser.add_argument("--markdown", help="also write the printed tables to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("slime.kernels.bench needs a CUDA device (or --device cpu)", file=sys.stderr)
        return 2
    shapes = args.shape or SHAPES
    torch.manual_seed(0)
    env = {
        "card": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    report = _Report()
    report.line(" | ".join(f"{k}: {v}" for k, v in env.items()) + "\n")
    results: dict = {"env": env}
    if device.type != "cuda":  # the smoke run: eager attention rows, CPU timings
        attention = [row for shape in shapes for row in attention_rows(shape, device)]
        results["attention"] = attention
        report.table(f"Pool attention, {_dtype(device)}, causal, {device} (no graphs):",
                     attention, ATTENTION_COLUMNS)  # fmt: skip
        _dump(results, args.json)
        report.write(args.markdown)
        return 0
    if args.sweep:
        sweep = [row for shape in shapes for row in sweep_attention(shape)]
        results["sweep"] = sweep
        report.table("Attention launch configs:", sweep, ["kernel", "shape", "config", "ms"])
    if args.sweep or args.sweep_erank:
        variants = erank_rows(ERANK_VARIANTS)
        results["erank_sweep"] = variants
        columns = ["P", "d", "variant", "ms", "speedup", "max_rel_err"]
        report.table("Effective rank variants:", variants, columns)
    if args.host:
        host = host_rows()
        results["host"] = host
        report.table("Host time per eager call (GPU work negligible at this shape):", host,
                     ["what", "shape", "host_us", "error"])  # fmt: skip
        inside = backward_attribution()
        results["host_backward"] = inside
        report.table("Host time of an eager forward+backward (triton), attributed:", inside,
                     ["what", "host_us"])  # fmt: skip
    if args.sweep_fwd:
        fwd = [row for shape in shapes for row in sweep_forward_graph(shape)]
        results["sweep_fwd"] = fwd
        report.table("Forward configs (graph):", fwd, ["kernel", "shape", "config", "ms"])
    if args.only:
        _dump(results, args.json)
        report.write(args.markdown)
        return 0
    attention = [row for shape in shapes for row in attention_rows(shape)]
    results["attention"] = attention
    report.table("Pool attention, bf16, causal (B, P, T, d), eager:", attention, ATTENTION_COLUMNS)
    if not args.attention:
        erank = erank_rows([{}])
        results["erank"] = erank
        report.table("Effective rank of P correlation matrices (d x d), fp32 in:", erank,
                     ["P", "d", "ms", "eigvalsh_ms", "speedup", "max_rel_err"])  # fmt: skip
    _dump(results, args.json)
    # Graph captures last: a backend that cannot be captured must not cost the tables above.
    if not args.attention:
        erank_graph = erank_graph_rows()
        results["erank_graph"] = erank_graph
        report.table("Effective rank replayed from a CUDA graph (device time):", erank_graph,
                     ["P", "d", "graph_ms", "error"])  # fmt: skip
    graphs = [row for shape in shapes for row in graph_rows(shape)]
    results["attention_graph"] = graphs
    report.table("Attention replayed from a CUDA graph (device time):", graphs, GRAPH_COLUMNS)
    summary = summary_rows(attention, graphs)
    results["summary"] = summary
    report.table("Forward+backward vs the best SDPA backend (> 1: faster), eager and graph:",
                 summary, SUMMARY_COLUMNS)  # fmt: skip
    _dump(results, args.json)
    report.write(args.markdown)
    return 0


def erank_graph_rows() -> list[dict]:
    """The Triton effective rank replayed from a CUDA graph (device time)."""
    rows = []
    for pool in (8, 64):
        for d in (32, 64, 128):
            m = _correlations(pool, d)
            try:
                ms = _graph_ms(lambda m=m: _triton_erank.effective_rank(m))
            except RuntimeError as exc:
                rows.append({"P": pool, "d": d, "error": str(exc).splitlines()[0][:80]})
                continue
            rows.append({"P": pool, "d": d, "graph_ms": ms})
    return rows


def _dump(results: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
