"""A run directory: resolved config, metrics.jsonl, checkpoints/ and PNG plots; plus the progress bar.

Layout::

    run_dir/
      config.yaml        the resolved RunConfig
      metrics.jsonl      one JSON object per line: {"step": ..., "kind": "train" | "eval" | ...}
      checkpoints/       see slime.train.checkpoint
      loss.png           train and val loss against step
      pool.png           live pseudopods against step (slime runs)
      summary.json       final numbers of the run
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from slime.proto import CheckpointError, ConfigError

__all__ = ["ProgressBar", "RunDir", "read_metrics"]


class RunDir:
    """Files of one run. ``RunDir.create`` makes a fresh folder; ``RunDir(path)`` opens one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cannot create the run directory {str(self.path)!r}: {e.strerror or e}", "--out"
            ) from None

    @classmethod
    def create(cls, out: str | os.PathLike[str], name: str) -> RunDir:
        """A new folder ``out/<UTC time>-<name>`` (suffixed ``-2``, ``-3`` if it exists)."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        base = Path(out) / f"{stamp}-{name}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (must hold ``step`` and ``kind``) to metrics.jsonl."""
        line = json.dumps(record, allow_nan=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every record, in order (see :func:`read_metrics`)."""
        return read_metrics(self.metrics_path)

    def truncate_metrics(self, step: int) -> None:
        """Keep only records with ``step <= step`` (on resume, later ones will be re-run)."""
        kept = [r for r in self.read_metrics() if r["step"] <= step]
        tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write the run's summary as indented JSON (atomically)."""
        tmp = self.path / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.summary_path)

    def plot(self) -> list[Path]:
        """Write loss.png (and pool.png when pool sizes were logged); returns the files written."""
        records = self.read_metrics()
        written = []
        train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
        val = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "eval"]
        if train or val:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot()
            for series, label in ((train, "train"), (val, "val")):
                if series:
                    ax.plot(*zip(*series), label=label, marker="o" if label == "val" else None)
            ax.set(xlabel="step", ylabel="loss", title="loss")
            ax.legend()
            written.append(self._save(fig, "loss.png"))
        pool = [(r["step"], r["pool_size"]) for r in records if "pool_size" in r]
        if pool:
            fig = Figure(figsize=(6, 4))
            ax = fig.add_subplot()
            ax.step(*zip(*pool), where="post")
            ax.set(xlabel="step", ylabel="live pseudopods", title="pool size")
            written.append(self._save(fig, "pool.png"))
        return written

    def _save(self, fig: Figure, name: str) -> Path:
        FigureCanvasAgg(fig)
        fig.tight_layout()
        path = self.path / name
        fig.savefig(path, dpi=100)
        return path


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record of the metrics file ``path`` (a run's ``metrics.jsonl``), in order; ``[]``
    when it is absent. A torn last line (crash mid-append) is dropped.

    Raises:
        CheckpointError: a line before the last is not UTF-8 JSON, or a record is not an object
            with an integer ``step`` and a string ``kind`` (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().splitlines()
    records = []
    for i, line in enumerate(lines):
        where = f"{path}:{i + 1}"
        try:
            record = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON, an
            # integer of more than 4300 digits; RecursionError: nested too deep
            if i == len(lines) - 1:
                break  # the process died mid-write; that line never completed
            reason = " ".join(str(exc).split())[:120]
            raise CheckpointError(f"{where} is not JSON: {reason}") from None
        step = record.get("step") if isinstance(record, dict) else None
        if (
            not isinstance(step, int)
            or isinstance(step, bool)
            or not isinstance(record.get("kind"), str)
        ):
            raise CheckpointError(
                f"{where} is not a record with an integer 'step' and a 'kind': "
                f"{line[:80].decode('utf-8', 'replace')!r}"
            )
        records.append(record)
    return records


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Plain-text progress to stderr: bar, step, loss, tokens/s and ETA.

    On a terminal the line redraws in place; elsewhere (logs, CI) each update is its own line.
    """

    def __init__(
        self, total: int, *, start: int = 0, stream: TextIO | None = None, width: int = 24
    ):
        self.total, self.start, self.width = total, start, width
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.perf_counter()
        self.inline = bool(getattr(self.stream, "isatty", lambda: False)())

    def render(self, step: int, loss: float, tokens_per_s: float, elapsed: float) -> str:
        """The text of one update (pure: exposed for tests)."""
        done = step / self.total if self.total else 1.0
        filled = int(round(self.width * done))
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else math.inf
        return (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{self.total} "
            f"loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | ETA {_clock(eta)}"
        )

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        text = self.render(step, loss, tokens_per_s, time.perf_counter() - self.t0)
        self.stream.write(f"\r{text}" if self.inline else f"{text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.inline:
            self.stream.write("\n")
            self.stream.flush()
