"""Sessions for linting, testing and benchmarking the slime workspace.

`nox` with no arguments runs the CI set: lint, wheels, the CPU tests of every package, integration
and the cpu-small ablation suite.
Each session gets its own venv filled from uv.lock (`uv sync --locked`), so a package is tested with
exactly the dependencies it declares. `nox -s gpu` is for the GPU machine, which has torch and triton
preinstalled and no package registry: it installs nothing and imports slime from packages/*/src.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "wheels", "tests", "integration", "distributed", "ablation_tests"]

ROOT = pathlib.Path(__file__).parent
PACKAGES = ["proto", "kernels", "memory", "core", "train", "tools"]
SRC_DIRS = [str(ROOT / "packages" / f"slime-{name}" / "src") for name in PACKAGES]
# Packages whose wheels must install and import alone (with only the packages below them).
ALONE = {
    "proto": ["proto"],
    "kernels": ["proto", "kernels"],
    "memory": ["proto", "memory"],
    "core": ["proto", "kernels", "memory", "core"],
    "tools": ["proto", "kernels", "memory", "core", "tools"],
}


_ENCODER_STEP = """
import torch
from slime.core import SlimeMoldEncoder
model = torch.nn.Sequential(torch.nn.Linear(4, 16), SlimeMoldEncoder.build(16, 2, 1, 32, dropout=0.0))
opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
x = torch.randn(3, 5, 4)
before = model(x).pow(2).mean()
before.backward()
opt.step()
after = model(x).pow(2).mean()
assert after.item() != before.item(), "an optimizer step changed nothing"
print('slime-core alone: trained SlimeMoldEncoder one step', before.item(), '->', after.item())
"""


def _readme_example(package: str) -> str:
    """The ```python blocks of packages/slime-<package>/README.md, in order (its test runs them
    too)."""
    text = (ROOT / "packages" / f"slime-{package}" / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"slime-{package}'s README has no python example"
    return "\n".join(blocks)


def _sync(session: nox.Session, *args: str) -> None:
    """Fill the session's venv from the lock (exact: removes whatever the lock does not name)."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def _has_tests(path: pathlib.Path) -> bool:
    return any(path.rglob("test_*.py"))


def _pytest(
    session: nox.Session, *paths: pathlib.Path, marker: str, may_select_none: bool = False
) -> None:
    present = [p for p in paths if _has_tests(p)]
    if not present:
        session.skip(f"no tests yet under {', '.join(map(str, paths))}")
    # Exit code 5 ("no tests collected") fails the session: a folder with test files must run some.
    # Only a narrowing marker (gpu, slow) may legitimately select none in a package.
    codes = [0, 5] if may_select_none else [0]
    session.run("pytest", *map(str, present), "-m", marker, *session.posargs, success_codes=codes)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the tree, then import-linter's layering contracts."""
    _sync(session, "--all-packages")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports", "--no-cache")


@nox.session
@nox.parametrize("device", ["cpu", "gpu"])
@nox.parametrize("package", PACKAGES)
def tests(session: nox.Session, package: str, device: str) -> None:
    """One package's tests, in a venv holding only that package, its dependencies and its dev group.

    The gpu variants are for a CUDA machine with a registry; `nox -s gpu` is for the lent device.
    """
    if device == "gpu" and shutil.which("nvidia-smi") is None:
        session.skip("no CUDA device here")
    _sync(session, "--package", f"slime-{package}")
    marker = "not gpu and not slow" if device == "cpu" else "gpu"
    tests_dir = ROOT / "packages" / f"slime-{package}" / "tests"
    _pytest(session, tests_dir, marker=marker, may_select_none=device == "gpu")


@nox.session
def integration(session: nox.Session) -> None:
    """Cross-package tests: end-to-end training and the SLO machinery.

    tests/ablations runs in the `ablations` session, after the whole cpu-small suite.
    """
    _sync(session, "--all-packages")
    _pytest(
        session,
        ROOT / "tests" / "integration",
        ROOT / "tests" / "slo",
        marker="not gpu and not slow",
    )


@nox.session
def distributed(session: nox.Session) -> None:
    """Distributed training with real processes on the CPU with the gloo backend, launched by
    torchrun: data parallel on two ranks (DDP against one process, the lifecycle in lockstep,
    sharded checkpoints resharded 2 -> 1 and 1 -> 2, ``slime train`` under torchrun) and
    head-sharded (against one process, placement by the behaviour hash, a SIGKILLed rank of three
    resumed on two); ~3 min on 2 cores."""
    _sync(session, "--all-packages")
    _pytest(session, ROOT / "tests" / "distributed", marker="not gpu and not slow")


@nox.session
def ablation_tests(session: nox.Session) -> None:
    """The ablation suite's tests (part of the default run): statistics, decision rules, merging
    parts, every arm, and one whole suite end to end (every group, 3 seeds, 20 steps of the
    recall task); ~2 min on 2 cores."""
    _sync(session, "--all-packages")
    session.run("pytest", str(ROOT / "tests" / "ablations"), "-m", "not gpu and not slow")


@nox.session(default=False)
def ablations(session: nox.Session) -> None:
    """The whole ablation suite (cpu-small by default, ~2 min on 2 cores), the continual
    benchmark's cpu-small profile, then the suite's tests. Not in the default run:
    ``ablation_tests`` runs the whole ablation suite at a smaller size already, and the continual
    benchmark's tests run with slime-train's.

    SLIME_ABLATION_PROFILE picks the profile; SLIME_ABLATION_OUT the folder for REPORT.md,
    results.json and the PNGs (default: a scratch folder, so a plain `nox` run leaves the tree
    clean; `ablations/cpu-small` refreshes the committed smoke report, `ablations` the gpu-full
    one). Extra arguments after ``--`` go to the suite (``nox -s ablations -- --groups archive``).
    """
    _sync(session, "--all-packages")
    profile = os.environ.get("SLIME_ABLATION_PROFILE", "cpu-small")
    out = os.environ.get("SLIME_ABLATION_OUT") or os.path.join(session.create_tmp(), "ablations")
    suite = ["python", "-m", "slime.train.ablations", "--profile", profile, "--out", out]
    session.run(*suite, *session.posargs)
    # The continual benchmark's smoke profile (every arm, two streams; ~4 min of CPU time)
    # into a scratch folder, unless SLIME_CONTINUAL_OUT names one.
    continual = os.environ.get("SLIME_CONTINUAL_OUT") or os.path.join(
        session.create_tmp(), "continual"
    )
    session.run(
        "python", "-m", "slime.train.continual", "--profile", "cpu-small", "--out", continual
    )
    session.run("pytest", str(ROOT / "tests" / "ablations"), "-m", "not gpu and not slow")


@nox.session(python=False, default=False)
def fresh_clone(session: nox.Session) -> None:
    """Clone the committed HEAD into a scratch folder with nothing beside it (no data folder, no
    SLIME_DATA_DIR) and run the default sessions there: what a newcomer's `uv run nox` does."""
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="slime-fresh-"))
    clone = scratch / "slime"
    session.run("git", "clone", "--quiet", str(ROOT), str(clone), external=True)
    env = {k: v for k, v in os.environ.items() if k != "SLIME_DATA_DIR"}
    env.pop("VIRTUAL_ENV", None)
    with session.chdir(clone):
        done = subprocess.run(["uv", "run", "--locked", "nox", *session.posargs], env=env)
    if done.returncode != 0:
        session.error(f"`uv run nox` failed in a fresh clone at {clone} (left for inspection)")
    shutil.rmtree(scratch)
    session.log("a fresh clone with nothing beside it passed the default sessions")


@nox.session(default=False)
def package(session: nox.Session) -> None:
    """Build the standalone `slime` executable with PyInstaller and run it (slow, minutes)."""
    _sync(session, "--all-packages", "--extra", "package")
    _pytest(session, ROOT / "packages" / "slime-tools" / "tests", marker="slow")


@nox.session
def wheels(session: nox.Session) -> None:
    """Build all six wheels; install proto, kernels, memory, core and tools (each with only the
    packages below it) in fresh venvs; import them."""
    import zipfile

    dist = pathlib.Path(session.create_tmp()) / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("uv", "build", "--all-packages", "--wheel", "-o", str(dist), external=True)
    built = sorted(dist.glob("*.whl"))
    names = {w.name.split("-")[0] for w in built}
    expected = {f"slime_{name}" for name in PACKAGES}
    if names != expected:
        session.error(f"expected wheels {sorted(expected)}, built {sorted(names)}")
    for wheel in built:
        with zipfile.ZipFile(wheel) as zf:
            if "slime/__init__.py" in zf.namelist():
                session.error(f"{wheel.name} ships slime/__init__.py, breaking the namespace")

    for top, members in ALONE.items():
        venv = pathlib.Path(session.create_tmp()) / f"alone-{top}"
        shutil.rmtree(venv, ignore_errors=True)
        session.run("uv", "venv", "--quiet", "--python", sys.executable, str(venv), external=True)
        python = str(venv / "bin" / "python")
        # Third-party versions come from the lock, so this install resolves nothing new.
        constraints = venv / "constraints.txt"
        session.run(
            "uv",
            "export",
            "--quiet",
            "--locked",
            "--no-hashes",
            "--no-emit-workspace",
            "--no-dev",
            "--package",
            f"slime-{top}",
            "-o",
            str(constraints),
            external=True,
        )
        wheels_needed = [str(next(dist.glob(f"slime_{m}-*.whl"))) for m in members]
        session.run(
            "uv",
            "pip",
            "install",
            "--quiet",
            "--python",
            python,
            "-c",
            str(constraints),
            *wheels_needed,
            external=True,
        )
        modules = ", ".join(f"slime.{m}" for m in members)
        check = f"import sys, {modules}; print('imported', '{modules}', 'torch' in sys.modules)"
        if top == "proto":
            check = (
                "import sys, slime.proto;"
                "assert 'torch' not in sys.modules, 'slime.proto imported torch';"
                "print('slime.proto alone: imported without torch')"
            )
        if top == "core":  # the promise: train SlimeMoldEncoder inside your own module
            check += "\n" + _ENCODER_STEP
        if top == "kernels":  # the README's example, as a user with only these wheels runs it
            check += "\n" + _readme_example("kernels")
        if top == "memory":  # archive and emitter examples; the archive one saves to its cwd
            check += "\nimport os, tempfile; os.chdir(tempfile.mkdtemp())\n"
            check += _readme_example("memory")
        session.run(python, "-c", check, external=True)


@nox.session(python=False)
def gpu(session: nox.Session) -> None:
    """GPU-marked tests with the interpreter's own torch/triton; installs nothing (device machine).

    The kernel tests are compile-bound (dozens of Triton specialisations, fp32 ones 6-16 s each), so
    ``SLIME_GPU_SHARDS`` processes (default 4) share them, round robin over their test ids, next to
    one process for every other package's GPU tests. Each process's output is printed when all have
    finished; arguments after ``--`` go to every pytest.
    """
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*SRC_DIRS, os.environ.get("PYTHONPATH", "")]),
    }
    raw = os.environ.get("SLIME_GPU_SHARDS", "4")
    if not raw.isdigit() or int(raw) < 1:
        session.error(f"SLIME_GPU_SHARDS must be a whole number >= 1, got {raw!r}")
    shards = int(raw)
    kernels = str(ROOT / "packages" / "slime-kernels" / "tests")
    others = [p for p in sorted(glob.glob(str(ROOT / "packages" / "*" / "tests"))) if p != kernels]
    pytest = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider"]
    listed = subprocess.run(
        [*pytest, kernels, "--collect-only", "-q"], env=env, capture_output=True, text=True
    )
    if listed.returncode not in (0, 5):  # 5: nothing collected
        session.error(f"collecting the kernel GPU tests failed:\n{listed.stdout}{listed.stderr}")
    ids = [line for line in listed.stdout.splitlines() if "::" in line]
    groups = [[*others, str(ROOT / "tests")]] + [ids[i::shards] for i in range(shards)]
    with tempfile.TemporaryDirectory() as logs:
        runs = []
        for i, group in enumerate(g for g in groups if g):
            log = open(pathlib.Path(logs) / f"{i}.log", "w+")  # noqa: SIM115 (closed below)
            cmd = [*pytest, *group, *session.posargs]
            runs.append((log, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
        failed = 0
        for i, (log, proc) in enumerate(runs):
            code = proc.wait()
            log.seek(0)
            session.log(f"--- GPU test process {i} of {len(runs)}: exit {code}\n{log.read()}")
            log.close()
            failed += code not in (0, 5)
    if failed:
        session.error(f"{failed} of {len(runs)} GPU test processes failed")
