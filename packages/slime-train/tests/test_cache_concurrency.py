"""Two processes encoding the same text into the same token cache folder at the same time."""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import random
from pathlib import Path

from slime.train.text import load_text

_CHARS = 6_000_000  # ~0.5 s of encoding each: the two runs overlap


# The child's code runs through the builtin exec (spawn pickles a target by its module's name,
# and this test module is not importable by name in a fresh interpreter).
_CHILD = """
import hashlib
import io
import time
from slime.train.text import load_text

try:
    barrier.wait(timeout=120)
    began = time.time()
    stream = io.StringIO()
    corpus = load_text(path, 8, cache_dir=cache, progress=stream)
    span = (began, time.time(), "encoding train split" in stream.getvalue())
    digests = {s: hashlib.sha256(a.tobytes()).hexdigest() for s, a in corpus.splits.items()}
    results.put(("ok", str(corpus.cache_entry), digests, span))
except BaseException as exc:  # reported to the parent, which fails the test naming it
    results.put(("error", f"{type(exc).__name__}: {exc}", None, None))
"""


def test_two_processes_encoding_the_same_text_both_end_with_one_valid_entry(tmp_path: Path):
    rng = random.Random(0)
    words = ["slime", "mould", "pod", "tube", "archive", "spore", "nutrient", "path"]
    text = " ".join(rng.choice(words) for _ in range(_CHARS // 6))
    source = tmp_path / "corpus.txt"
    source.write_text(text, encoding="utf-8")
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    names = {"path": str(source), "cache": str(cache), "barrier": barrier, "results": results}
    workers = [ctx.Process(target=exec, args=(_CHILD, dict(names))) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0]
    outcomes = [results.get(timeout=10) for _ in workers]
    assert [o[0] for o in outcomes] == ["ok", "ok"], outcomes
    (_, entry_a, digests_a, span_a), (_, entry_b, digests_b, span_b) = outcomes
    assert entry_a == entry_b and digests_a == digests_b
    # Both encoded (neither found the other's entry) and at the same time: the race happened.
    assert span_a[2] and span_b[2], "a load found the cache entry: no concurrent write to test"
    assert max(span_a[0], span_b[0]) < min(span_a[1], span_b[1]), "the two loads did not overlap"
    print(f"loads: {span_a[1] - span_a[0]:.2f} s and {span_b[1] - span_b[0]:.2f} s, overlapping")

    # One entry (manifest + two arrays), no temporary file left, and it is valid: a third load
    # finds it, encodes nothing (no progress written) and reads the same tokens.
    manifest = Path(entry_a)
    key = manifest.stem
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [manifest.name, f"{key}.train.bin", f"{key}.val.bin"]
    )
    meta = json.loads(manifest.read_text("utf-8"))
    for split in ("train", "val"):
        data = (cache / f"{key}.{split}.bin").read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta[f"{split}_sha256"]
        assert len(data) == meta[split] * 2  # uint16 tokens
    stream = io.StringIO()
    corpus = load_text(source, 8, cache_dir=cache, progress=stream)
    assert stream.getvalue() == ""
    assert {s: hashlib.sha256(a.tobytes()).hexdigest() for s, a in corpus.splits.items()} == (
        digests_a
    )
    assert corpus.tokenizer.decode(corpus.splits["train"][:50].tolist()) == text[:50]
