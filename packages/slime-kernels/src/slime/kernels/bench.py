"""Benchmark: ``python -m slime.kernels.bench [--sweep] [--host] [--json PATH]`` on a CUDA machine.

Prints markdown tables: pool attention forward and forward+backward TF/s next to torch SDPA's
flash, cuDNN and memory-efficient backends (pinned with ``sdpa_kernel``) at the issue's shapes,
bf16 causal; then the Triton effective rank against ``torch.linalg.eigvalsh``. ``--sweep`` first
times every candidate launch config of the attention kernels and of the effective rank
(``--sweep-erank``: the latter only; ``--sweep-fwd``: forward configs from CUDA graphs).
``--host`` first prints the host time of each layer of an eager call; ``--only`` stops after the
options' tables. Times are medians of ``triton.testing.do_bench``, eager (host launch cost
included), then forward and effective rank replayed from a CUDA graph; FLOPs count causal
attention as half the dense work and the backward as 2.5x the forward (the FlashAttention
convention).
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
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

SHAPES = [(16, 12, 1024, 64), (64, 6, 256, 64)]
SDPA = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
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


def _inputs(shape, dtype=torch.bfloat16):
    return [torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3)]


def _fwd_bwd(fn, q, k, v, grad):
    def run():
        fn(q, k, v).backward(grad)

    return run


def attention_rows(shape) -> list[dict]:
    """One row per implementation: forward and forward+backward ms and TF/s, error vs float32."""
    q, k, v = _inputs(shape)
    grad = torch.randn_like(q)
    ref = scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    impls = {"slime-triton": lambda q, k, v: pool_attention(q, k, v, causal=True)}
    for name, backend in SDPA.items():

        def sdpa(q, k, v, backend=backend):
            with sdpa_kernel(backend):
                return scaled_dot_product_attention(q, k, v, is_causal=True)

        impls[name] = sdpa
    flops = _attention_flops(*shape)
    rows = []
    for name, fn in impls.items():
        try:
            with torch.no_grad():
                out = fn(q, k, v)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            fwd = _ms(lambda fn=fn: fn(q, k, v))
            both = _ms(_fwd_bwd(fn, q, k, v, grad), grad_to_none=[q, k, v])
        except RuntimeError as exc:  # a backend that does not support this shape or card
            rows.append({"impl": name, "shape": shape, "error": str(exc).splitlines()[0][:80]})
            continue
        rows.append({
            "impl": name, "shape": shape, "rel_err": err,
            "fwd_ms": fwd, "fwd_tflops": flops / fwd * 1e-9,
            "fwd_bwd_ms": both, "fwd_bwd_tflops": 3.5 * flops / both * 1e-9,
        })  # fmt: skip
    return rows


def graph_rows(shape) -> list[dict]:
    """Forward and forward+backward replayed from a CUDA graph: device time, no host launch cost."""
    q, k, v = _inputs(shape)
    grad = torch.randn_like(q)
    impls = {"slime-triton": lambda: pool_attention(q, k, v, causal=True)}
    for name, backend in SDPA.items():

        def sdpa(backend=backend):
            with sdpa_kernel(backend):
                return scaled_dot_product_attention(q, k, v, is_causal=True)

        impls[name] = sdpa
    flops = _attention_flops(*shape)
    rows = []
    for name, fn in impls.items():

        def both(fn=fn):
            return torch.autograd.grad(fn(), (q, k, v), grad)

        try:
            with torch.no_grad():
                ms = _graph_ms(fn)
            both_ms = _graph_ms(both)
        except RuntimeError as exc:
            rows.append({"impl": name, "shape": shape, "error": str(exc).splitlines()[0][:80]})
            continue
        rows.append({"impl": name, "shape": shape, "graph_fwd_ms": ms,
                     "graph_fwd_tflops": flops / ms * 1e-9, "graph_fwd_bwd_ms": both_ms,
                     "graph_fwd_bwd_tflops": 3.5 * flops / both_ms * 1e-9})  # fmt: skip
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
        "triton forward (check + alloc + 1 launch)": lambda: _triton_attention.forward(
            *plain, True, scale, None, None
        ),
        "triton backward (alloc + 3 launches)": lambda: _triton_attention.backward(
            grad, *plain, out, lse, None, True, scale, None, None
        ),
        "pool_attention forward, no_grad": lambda: _no_grad(attention, q, k, v),
        "pool_attention forward, grad": lambda: attention(q, k, v),
        "pool_attention fwd+bwd": fwd_bwd(attention),
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


def _fwd_launch(q, k, v, out, scale):
    """The forward kernel's bare launch through Triton's dispatcher (outputs preallocated)."""
    batch, pool, seq, d = q.shape
    cfg = _triton_attention.default_config("fwd", d, q.device)
    lse = torch.empty((batch, pool, seq), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(seq, cfg["BLOCK_M"]), batch * pool)

    def launch():
        _triton_attention._fwd_kernel[grid](
            q, k, v, out, lse, q, q,
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
        torch.autograd.grad(pool_attention(q, k, v, causal=True), (q, k, v), grad)

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


def _print_table(rows: list[dict], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            cells.append(f"{value:.4g}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time every candidate config first")
    parser.add_argument("--sweep-erank", action="store_true", help="sweep effective rank only")
    parser.add_argument("--sweep-fwd", action="store_true", help="forward configs, graph-timed")
    parser.add_argument("--host", action="store_true", help="host cost per eager call, by layer")
    parser.add_argument("--only", action="store_true", help="skip the main tables")
    parser.add_argument("--json", help="also write all rows to this JSON file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("slime.kernels.bench needs a CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    env = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(" | ".join(f"{k}: {v}" for k, v in env.items()), "\n")
    results: dict = {"env": env}
    if args.sweep:
        sweep = [row for shape in SHAPES for row in sweep_attention(shape)]
        results["sweep"] = sweep
        _print_table(sweep, ["kernel", "shape", "config", "ms"])
    if args.sweep or args.sweep_erank:
        variants = erank_rows(ERANK_VARIANTS)
        results["erank_sweep"] = variants
        _print_table(variants, ["P", "d", "variant", "ms", "speedup", "max_rel_err"])
    if args.host:
        host = host_rows()
        results["host"] = host
        print("Host time per eager call (GPU work negligible at this shape):")
        _print_table(host, ["what", "shape", "host_us", "error"])
        inside = backward_attribution()
        results["host_backward"] = inside
        print("Host time of an eager forward+backward, attributed:")
        _print_table(inside, ["what", "host_us"])
    if args.sweep_fwd:
        fwd = [row for shape in SHAPES for row in sweep_forward_graph(shape)]
        results["sweep_fwd"] = fwd
        _print_table(fwd, ["kernel", "shape", "config", "ms"])
    if args.only:
        _dump(results, args.json)
        return 0
    attention = [row for shape in SHAPES for row in attention_rows(shape)]
    results["attention"] = attention
    print("Pool attention, bf16, causal (B, P, T, d):")
    _print_table(
        attention,
        [
            "impl",
            "shape",
            "fwd_ms",
            "fwd_tflops",
            "fwd_bwd_ms",
            "fwd_bwd_tflops",
            "rel_err",
            "error",
        ],
    )
    erank = erank_rows([{}])
    results["erank"] = erank
    print("Effective rank of P correlation matrices (d x d), fp32 in:")
    _print_table(erank, ["P", "d", "ms", "eigvalsh_ms", "speedup", "max_rel_err"])
    _dump(results, args.json)
    # Graph captures last: a backend that cannot be captured must not cost the tables above.
    mats = {(pool, d): _correlations(pool, d) for pool in (8, 64) for d in (32, 64, 128)}
    erank_graph = []
    for (pool, d), m in mats.items():
        try:
            ms = _graph_ms(lambda m=m: _triton_erank.effective_rank(m))
        except RuntimeError as exc:
            erank_graph.append({"P": pool, "d": d, "error": str(exc).splitlines()[0][:80]})
            continue
        erank_graph.append({"P": pool, "d": d, "graph_ms": ms})
    results["erank_graph"] = erank_graph
    print("Effective rank replayed from a CUDA graph (device time):")
    _print_table(erank_graph, ["P", "d", "graph_ms", "error"])
    graphs = [row for shape in SHAPES for row in graph_rows(shape)]
    results["attention_graph"] = graphs
    print("Attention replayed from a CUDA graph (device time):")
    columns = ["impl", "shape", "graph_fwd_ms", "graph_fwd_tflops", "graph_fwd_bwd_ms"]
    _print_table(graphs, [*columns, "graph_fwd_bwd_tflops", "error"])
    _dump(results, args.json)
    return 0


def _dump(results: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(results, fh, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
