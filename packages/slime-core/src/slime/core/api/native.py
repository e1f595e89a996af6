"""SlimeModel: a causal language model whose attention layers are organisms.

Pre-norm blocks as nanoGPT (token + position embeddings, LayerNorms, GELU MLP, tied output head),
with each block's attention an :class:`~slime.core.organism.Organism`. Checkpoints are a directory
of safetensors tensors and JSON (config, pool composition, fitness, archives): no pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import stat
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from slime.core.api.config import SlimeConfig
from slime.core.api.sampling import generate_tokens
from slime.core.blocks import MLP, Block
from slime.core.observability import MetricsCollector, span
from slime.core.organism import (
    Organism,
    add_offered,
    live_slots_by_layer,
    measure_organisms,
    read_device,
    slot_gradient_stats,
    worth_offering,
)
from slime.kernels import select_kernel
from slime.memory import GridArchive
from slime.proto import (
    ArchiveError,
    CheckpointError,
    ConfigError,
    DataError,
    Kernel,
    PoolError,
    shown,
)
from torch import Tensor, nn

__all__ = ["SlimeModel"]

FORMAT = "slime-model"
FORMAT_VERSION = 2  # 2: slot-table tensors; 1 (per-pod tensors) is converted on load
READABLE_VERSIONS = (1, 2)
_TIED = "lm_head.weight"


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(compiler: Callable[[Callable], Callable]) -> Callable:
    """``compiler(SlimeModel._ablation_pass)``, made once per compiler object and called with the
    model as its first argument (kept outside the module, so copying or pickling a model never
    meets a compiled function, and the cache holds no model alive)."""
    if compiler not in _COMPILED:
        _COMPILED[compiler] = compiler(SlimeModel._ablation_pass)
    return _COMPILED[compiler]


def _check_ids(ids: Tensor, low: int, vocab: int, message: str) -> None:
    """DataError ``message.format(bad id, vocab)`` unless every id lies in ``[low, vocab)``;
    checked on the CPU only, where it costs no wait (one reduction while all ids are fine)."""
    if ids.device.type != "cpu" or torch.compiler.is_compiling():
        return
    try:
        torch._assert_async(((ids >= low) & (ids < vocab)).all(), "id out of range")
    except RuntimeError:
        bad = ids[(ids < low) | (ids >= vocab)][0]
        raise DataError(message.format(int(bad), vocab)) from None


class SlimeModel(nn.Module):
    """Causal LM of organism blocks.

    Args:
        config: the architecture.
        kernel: compute backend for every pod (default: ``select_kernel(device,
            config.kernel_backend, config.head_dim)``: Triton on CUDA where it takes the head dim).
        metrics: records each forward's latency and tokens; per-pod counters.
        tracer: OpenTelemetry tracer for spans (None: no spans).
        generator: seeds the initialisation (N(0, 0.02); residual projections scaled by
            ``1 / sqrt(2 n_layer)`` as GPT-2).
    """

    def __init__(
        self,
        config: SlimeConfig,
        *,
        kernel: Kernel | None = None,
        metrics: MetricsCollector | None = None,
        tracer: Any | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not isinstance(config, SlimeConfig):
            raise ConfigError(f"expected a SlimeConfig, got {shown(config)}", "config")
        device = read_device(device)
        if kernel is None:
            kernel = select_kernel(device, backend=config.kernel_backend, head_dim=config.head_dim)
        self.config, self.kernel, self.metrics, self.tracer = config, kernel, metrics, tracer
        c = config
        resid_std = 0.02 / math.sqrt(2 * c.n_layer)
        self.wte = nn.Embedding(c.vocab_size, c.n_embd, device=device)
        self.wpe = nn.Embedding(c.block_size, c.n_embd, device=device)
        self.drop = nn.Dropout(c.dropout)
        blocks = []
        for i in range(c.n_layer):
            organism = Organism(
                c.n_embd,
                pod_capacity=c.pod_capacity,
                n_pods=c.n_pods,
                head_dim=c.head_dim,
                kernel=kernel,
                bias=c.bias,
                dropout=c.dropout,
                out_std=resid_std,
                metrics=metrics,
                tracer=tracer,
                archive=self._new_archive(device),
                tube_capacity=c.tube_capacity,
                tube_decay=c.tube_decay,
                memory_budget_bytes=c.memory_budget_bytes,
                quiet_birth=c.quiet_birth,
                metabolic_rate=c.metabolic_rate,
                name=f"layer{i}",
                generator=generator,
                device=device,
            )
            mlp = MLP(
                c.n_embd, mlp_ratio=c.mlp_ratio, dropout=c.dropout, bias=c.bias, device=device
            )
            blocks.append(Block(organism, mlp, bias=c.bias, device=device))
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias, device=device)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False, device=device)
        self.lm_head.weight = self.wte.weight  # weight tying, as nanoGPT
        self._init_weights(generator, resid_std)

    def archive_device(self, model_device: torch.device) -> torch.device:
        """Where this model's archives live (``config.archive_device``) for a model on
        ``model_device``."""
        return model_device if self.config.archive_device == "model" else torch.device("cpu")

    def _new_archive(self, device: torch.device) -> GridArchive:
        dims = self.config.archive_dims
        return GridArchive(
            dims,
            [(0.0, 1.0)] * len(dims),
            device=self.archive_device(device),
            max_size=self.config.archive_max_size,
        )

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None, resid_std: float) -> None:
        for name, p in self.named_parameters():
            if ".attn." in name:
                continue  # the organism initialises its slots; its output bias starts at 0
            if name.endswith("bias"):
                p.zero_()
            elif ".ln_" in name or name.startswith("ln_"):
                p.fill_(1.0)
            else:
                std = resid_std if name.endswith("c_proj.weight") else 0.02
                where = generator.device if generator is not None else p.device
                p.copy_(torch.randn(p.shape, generator=generator, device=where) * std)

    # -- pools ----------------------------------------------------------------------------------

    @property
    def organisms(self) -> list[Organism]:
        """One organism per layer, bottom first."""
        return [block.attn for block in self.blocks]

    def add_slot_listener(self, fn: Callable[[Organism, list[int]], None]) -> None:
        """Call ``fn(organism, slots)`` after every birth and death, any layer."""
        for organism in self.organisms:
            organism.add_slot_listener(fn)

    def feed_tubes(self, feeding: bool) -> None:
        """Whether training forwards feed every organism's tube ring (see
        :attr:`Organism.feeding_tubes`; a compiled model keeps one graph per value)."""
        for organism in self.organisms:
            organism.feeding_tubes = bool(feeding)

    def slot_gradient_stats(self) -> tuple[Tensor, Tensor]:
        """Per layer and slot: squared gradient norms ``(L, P)`` and first-order masked-loss
        estimates ``(L, P)`` (see :meth:`Organism.slot_gradient_stats`). Device tensors."""
        return slot_gradient_stats(list(self.organisms))

    @contextlib.contextmanager
    def ablate(self, slots_by_layer: dict[int, list[int]]) -> Iterator[None]:
        """Mask ``{layer: [slot, ...]}`` out of attention inside the block."""
        if not isinstance(slots_by_layer, dict):
            raise ConfigError(
                f"expected {{layer: [slot, ...]}}, got {shown(slots_by_layer)}", "layer"
            )
        n = len(self.blocks)
        bad = [
            k
            for k in slots_by_layer
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n
        ]
        if bad:
            raise ConfigError(f"layers {shown(bad)} do not exist (n_layer={n})", "layer")
        with contextlib.ExitStack() as stack:
            for layer, slots in slots_by_layer.items():
                stack.enter_context(self.organisms[layer].ablate(slots))
            yield

    @torch.no_grad()
    def measure_behaviour(
        self,
        probe_idx: Tensor,
        *,
        latents: Tensor | None = None,
        compiler: Callable[[Callable], Callable] | None = None,
    ) -> list[Tensor]:
        """Update every pod's smoothed descriptors from a probe batch ``(B, T)`` (medium
        timescale). Returns each layer's smoothed descriptors ``(n_live, 3)``.

        ``latents`` ``(n_layer, B, T, n_embd)``: each layer's attention input on the probe when
        the caller has it already (:meth:`ablation_losses` returns it); None runs a forward.
        ``compiler`` compiles the measurement once per compiler object
        (:func:`~slime.core.organism.measure_organisms`).
        """
        if latents is None:
            latents = self._probe_latents(probe_idx)
        # Every layer at once: a few kernel calls instead of a few dozen per layer.
        measure_organisms(self.organisms, latents, causal=True, compiler=compiler)
        return [o.live_descriptors(full=True) for o in self.organisms]

    def _probe_latents(self, probe_idx: Tensor) -> Tensor:
        was_training = self.training
        self.eval()  # no dropout: a probe measures the pods, not the noise
        try:
            x = self._embed(probe_idx)
            latents = []
            for block in self.blocks:
                latents.append(block.attention_input(x))
                x = block(x)
        finally:
            self.train(was_training)
        return torch.stack(latents)

    @torch.no_grad()
    def ablation_losses(
        self,
        idx: Tensor,
        targets: Tensor,
        ablations: list[tuple[int, int]],
        *,
        max_logits: int = 2**26,
        compiler: Callable[[Callable], Callable] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The loss on ``(idx, targets)`` of the whole pool and of the pool without each of
        ``ablations`` (``(layer, slot)`` pairs, one slot masked per copy; masking an empty slot
        changes nothing), in eval mode.

        One forward runs every copy. A copy whose masked slot is in layer ``l`` is the whole
        pool's forward up to ``l``, so it joins the batch at layer ``l``, starting from the whole
        pool's residual stream there: block ``l`` runs ``1 + (copies masked in layers <= l)``
        copies of the batch, about half the work of running every copy from the embedding, with
        one call per block. Copies go in groups whose logits stay under ``max_logits`` elements
        (large vocabularies); each group runs the whole pool again as its first copy.

        ``compiler`` (for example ``functools.partial(torch.compile, dynamic=False)``) compiles
        that forward once per compiler object and reuses it: the same model, ablations and shapes
        on later calls, and births and deaths, which only write slots, do not recompile.

        Returns:
            ``losses`` ``(1 + len(ablations),)`` float32 on the model's device (mean
            cross-entropy over positions whose target is not -1; the first is the whole pool's)
            and ``latents`` ``(n_layer, B, T, n_embd)``, each layer's attention input on ``idx``
            for the whole pool (what :meth:`measure_behaviour` takes).

        Raises:
            ConfigError: an ablation names a layer or slot outside the model, ``ablations`` is no
                list of pairs, or ``max_logits`` is no int >= 1.
        """
        n_layer, capacity = len(self.blocks), self.organisms[0].pod_capacity
        if isinstance(max_logits, bool) or not isinstance(max_logits, int) or max_logits < 1:
            raise ConfigError(f"expected an int >= 1, got {shown(max_logits)}", "max_logits")
        try:
            ablations = list(ablations)
        except TypeError:
            raise ConfigError(
                f"expected a list of (layer, slot) pairs, got {shown(ablations)}", "ablations"
            ) from None
        self._check_idx(idx)
        self._check_targets(idx, targets)
        for ablation in ablations:
            layer, slot = (
                ablation if isinstance(ablation, tuple | list) and len(ablation) == 2 else (-1, -1)
            )
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (layer, slot)):
                layer = -1
            if not (0 <= layer < n_layer and 0 <= slot < capacity):
                raise ConfigError(
                    f"ablation {shown(ablation)} is outside the model ({n_layer} layers of "
                    f"{capacity} slots)",
                    "ablations",
                )
        order = sorted(range(len(ablations)), key=lambda i: ablations[i][0])
        ordered = tuple((int(ablations[i][0]), int(ablations[i][1])) for i in order)
        batch, seq = idx.shape
        group = max(1, max_logits // max(1, batch * seq * self.config.vocab_size) - 1)
        run = SlimeModel._ablation_pass if compiler is None else _compiled(compiler)
        was_training = self.training
        self.eval()
        try:
            with contextlib.ExitStack() as stack:
                # Eagerly too, every slot: the batch grows layer by layer, so attending slots
                # only would meet new attention shapes at every birth and death.
                for organism in self.organisms:
                    stack.enter_context(organism.every_slot())
                flat, latents = run(self, idx, targets, ordered, group)
        finally:
            self.train(was_training)
        result = torch.empty_like(flat)
        result[0] = flat[0]
        result[1 + torch.tensor(order, dtype=torch.long, device=flat.device)] = flat[1:]
        return result, latents

    def _ablation_pass(
        self, idx: Tensor, targets: Tensor, ordered: tuple[tuple[int, int], ...], group: int
    ) -> tuple[Tensor, Tensor]:
        """:meth:`ablation_losses`' forward, in eval mode, over ablations sorted by layer:
        ``(1 + len(ordered),)`` losses in that order and the latents."""
        batch, seq = idx.shape
        vocab, capacity = self.config.vocab_size, self.organisms[0].pod_capacity
        scored = (targets != -1).sum()
        embedded = self._embed(idx)
        latents, losses = [], []
        for start in range(0, max(1, len(ordered)), group):
            part = ordered[start : start + group]
            x = embedded
            for layer, block in enumerate(self.blocks):
                if start == 0:
                    latents.append(block.attention_input(x[:batch]))
                joining = [slot for lay, slot in part if lay == layer]
                mask = None
                if joining:
                    x = torch.cat([x, x[:batch].repeat(len(joining), 1, 1)])
                    copies = x.shape[0] // batch
                    keep = torch.ones(copies, capacity, dtype=torch.bool, device=x.device)
                    rows = torch.arange(copies - len(joining), copies, device=x.device)
                    slots = torch.tensor(joining, dtype=torch.long, device=x.device)
                    keep[rows, slots] = False
                    mask = keep.repeat_interleave(batch, 0)
                x = block(x, causal=True, head_mask=mask)
            logits = self.lm_head(self.ln_f(x))
            copies = x.shape[0] // batch
            nll = F.cross_entropy(
                logits.float().view(-1, vocab),
                targets.repeat(copies, 1).view(-1),
                ignore_index=-1,
                reduction="none",
            )
            loss = nll.view(copies, batch * seq).sum(1) / scored
            losses.append(loss if start == 0 else loss[1:])
        return torch.cat(losses), torch.stack(latents)

    @torch.no_grad()
    def archive_elites(self) -> list[Any]:
        """Offer every live pod of every layer to its layer's archive (medium timescale; see
        :meth:`Organism.archive_elites`). What the archives read is moved to their device in one
        copy per dtype for the whole model (archives in host memory would otherwise cost a
        device read per column and layer).

        An archive in host memory is offered only the pods above their cell's threshold
        (:func:`~slime.core.organism.worth_offering`); the others' results read as ``add`` gives
        them.

        Returns:
            Each layer's AddResult, None for a layer with no live pod.
        """
        organisms = list(self.organisms)
        live = live_slots_by_layer(organisms)  # one read
        scores = [o.elite_scores(slots) if slots else None for o, slots in zip(organisms, live)]
        moved = iter(
            _move_at_once(
                [(o.archive.device, t) for o, sc in zip(organisms, scores) if sc for t in sc]
            )
        )
        offers = []
        for o, slots, sc in zip(organisms, live, scores):
            if sc is None:
                offers.append(None)
                continue
            objectives, descs = next(moved), next(moved)
            keep, threshold = worth_offering(o.archive, objectives, descs)
            offered = slots if keep is None else [s for s, k in zip(slots, keep.tolist()) if k]
            genomes = o.elite_genomes(offered) if offered else None
            offers.append((objectives, descs, keep, threshold, genomes))
        # The offered pods' genome columns, in one copy per dtype; per-pod genome dicts (payload
        # archives) stay where they are.
        moved = iter(
            _move_at_once(
                [
                    (o.archive.device, t)
                    for o, offer in zip(organisms, offers)
                    if offer is not None and isinstance(offer[4], dict)
                    for t in offer[4].values()
                ]
            )
        )
        results = []
        for o, offer in zip(organisms, offers):
            if offer is None:
                results.append(None)
                continue
            objectives, descs, keep, threshold, genomes = offer
            if isinstance(genomes, dict):
                genomes = {k: next(moved) for k in genomes}
            with span(self.tracer, "organism.archive_elites", organism=o.name, n=len(objectives)):
                results.append(add_offered(o.archive, genomes, objectives, descs, keep, threshold))
        return results

    def num_params(self) -> int:
        """Parameters counted once (the tied head is the token embedding)."""
        return sum(p.numel() for p in self.parameters())

    # -- forward --------------------------------------------------------------------------------

    @staticmethod
    def _check_idx(idx: Any) -> None:
        """DataError unless ``idx`` is a ``(B, T)`` int64 tensor holding a token."""
        if not isinstance(idx, Tensor):
            raise DataError(f"idx must be a (B, T) int64 tensor, got {shown(idx)}")
        if idx.dim() != 2 or idx.dtype != torch.long:
            raise DataError(f"idx must be (B, T) int64, got {tuple(idx.shape)} {idx.dtype}")
        if idx.numel() == 0:
            raise DataError(f"idx must hold at least one token, got shape {tuple(idx.shape)}")

    def _embed(self, idx: Tensor) -> Tensor:
        self._check_idx(idx)
        if idx.shape[1] > self.config.block_size:
            raise ConfigError(
                f"sequence length {idx.shape[1]} exceeds block_size {self.config.block_size}",
                "block_size",
            )
        # On CUDA the embedding kernel asserts by itself.
        _check_ids(idx, 0, self.config.vocab_size, "token id {} is outside the vocabulary [0, {})")
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.wte(idx) + self.wpe(pos))

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, *, head_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``idx`` ``(B, T)`` -> ``logits`` ``(B, T, V)`` and mean cross-entropy over ``targets``
        ``(B, T)`` (``-1`` marks unscored positions), or None without targets.

        ``head_mask`` ``(n_layer, B, P)`` bool drops slots per sample and layer (False = dropped):
        each sample then runs through its own ablation of the pool.
        """
        self._check_idx(idx)
        batch, seq = idx.shape
        if head_mask is not None and (
            not isinstance(head_mask, Tensor)
            or head_mask.dim() != 3
            or head_mask.shape[0] != len(self.blocks)
        ):
            got = tuple(head_mask.shape) if isinstance(head_mask, Tensor) else shown(head_mask)
            raise ConfigError(
                f"head_mask must be a (n_layer={len(self.blocks)}, B, P) tensor, got {got}",
                "head_mask",
            )
        timer = self.metrics.time_forward(batch * seq) if self.metrics else contextlib.nullcontext()
        with timer, span(self.tracer, "slime.forward", batch=batch, seq=seq):
            x = self._embed(idx)
            for i, block in enumerate(self.blocks):
                x = block(x, causal=True, head_mask=None if head_mask is None else head_mask[i])
            logits = self.lm_head(self.ln_f(x))
            if targets is None:
                return logits, None
            self._check_targets(idx, targets)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-1
            )
            return logits, loss

    def _check_targets(self, idx: Tensor, targets: Tensor) -> None:
        """DataError unless ``targets`` is ``idx``'s shape, int64, each in ``[0, vocab)`` or -1
        (a transposed batch of the same size would otherwise be scored silently)."""
        if (
            not isinstance(targets, Tensor)
            or targets.shape != idx.shape
            or targets.dtype != torch.long
        ):
            got = (tuple(targets.shape), targets.dtype) if isinstance(targets, Tensor) else targets
            raise DataError(f"targets must be {tuple(idx.shape)} int64 like idx, got {shown(got)}")
        message = "target {} is outside the vocabulary [0, {}) and not -1"
        _check_ids(targets, -1, self.config.vocab_size, message)

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` ``(B, T)``; returns ``(B, T + n)``."""
        return generate_tokens(
            self,
            idx,
            max_new_tokens,
            block_size=self.config.block_size,
            temperature=temperature,
            top_k=top_k,
            generator=generator,
        )

    # -- checkpoints ----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``archive_<layer>/`` to ``directory``.

        The files are written into ``directory/.saving`` first and moved into place once all are
        complete, ``config.json`` last, so a failure midway (a full disk, a refused write) leaves
        a model already there as it was. Its files move to ``directory/.replaced`` while the new
        ones move in, and are deleted after; a crash in that moment leaves them there, and
        :meth:`from_pretrained` says so. Files of ``directory`` that a save does not write (a
        tokenizer, notes) are never moved.

        Raises:
            ConfigError: ``directory`` is no path.
            CheckpointError: ``directory`` is a file, a ``.replaced`` folder is left from a save
                that stopped midway (never deleted here: it may hold the only copy of a model),
                or the OS refused a write (the reason named; the model there is as it was).
        """
        from safetensors.torch import save

        directory = _directory(directory)
        if directory.exists() and not directory.is_dir():
            raise CheckpointError(f"cannot save a model to {directory}: it is a file, not a folder")
        staging, aside = directory / _SAVING, directory / _REPLACED
        if aside.exists():
            raise CheckpointError(
                f"{aside} is left from a save into {directory} that stopped midway and may hold "
                "its previous model; move or delete it, then save again"
            )
        created = not directory.exists()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if staging.exists():  # debris of an interrupted save: never the model itself
                shutil.rmtree(staging)
            staging.mkdir()
            tensors = {
                k: v.detach().contiguous() for k, v in self.state_dict().items() if k != _TIED
            }
            blob = save(tensors)
            (staging / "model.safetensors").write_bytes(blob)
            layers = []
            for i, organism in enumerate(self.organisms):
                organism.archive.save(staging / f"archive_{i}")
                layers.append({"live": organism.live_slots()})
            meta = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "config": self.config.to_dict(),
                "layers": layers,
                "model_sha256": hashlib.sha256(blob).hexdigest(),
            }
            (staging / "config.json").write_text(json.dumps(meta, indent=2))
            _move_in(staging, directory, aside)
        except (OSError, ArchiveError) as e:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only if empty: what this call made, nothing else
            raise CheckpointError(f"cannot save the model to {directory}: {e}") from e

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        kernel: Kernel | None = None,
        device: torch.device | str | None = None,
        metrics: MetricsCollector | None = None,
        tracer: Any | None = None,
    ) -> SlimeModel:
        """Rebuild a model written by :meth:`save_pretrained`, pools and archives included.

        Nothing is allocated for the model before the tensors' shapes are checked against the
        config's sizes, so a forged config cannot ask for more memory than the file holds; the
        files are only read.

        Raises:
            CheckpointError: a file is missing, malformed or no regular file (a folder, a
                device, a FIFO: refused before any read), or does not match the config (a
                tensor of another shape or kind of dtype, one missing or extra), or the tensors
                hold what no saved model can (NaN or Inf weights, fitness or descriptors; named
                with the tensor and slot), even under a matching sha256.
            ConfigError: ``directory`` is no path.
        """
        from safetensors.torch import load

        directory = _directory(directory)
        device = read_device(device)  # the caller's: a ConfigError below is the directory's
        meta = _read_meta(directory)
        config = SlimeConfig.from_dict(meta["config"])
        path = directory / "model.safetensors"
        blob = _read_regular(path)
        if meta["version"] >= 2 and hashlib.sha256(blob).hexdigest() != meta["model_sha256"]:
            raise CheckpointError(f"{path} does not match the sha256 in config.json: damaged")
        try:
            tensors = load(blob)  # the bytes just checked, not a second read of the file
        except Exception as e:  # safetensors raises its own and OS errors; re-typed, not hidden
            raise CheckpointError(f"cannot read {path}: {e}") from e
        if "wte.weight" not in tensors:
            raise CheckpointError(f"{path} lacks the token embedding 'wte.weight'")
        if _TIED in tensors and not torch.equal(tensors[_TIED], tensors["wte.weight"]):
            raise CheckpointError(
                f"{path} holds {_TIED!r} unlike 'wte.weight': the head is tied to the embedding"
            )
        _check_sizes(path, tensors, config, meta)
        try:
            model = cls(config, kernel=kernel, metrics=metrics, tracer=tracer, device=device)
        except ConfigError as e:  # a limit of the archives or kernels the config asks for
            raise CheckpointError(f"{directory / 'config.json'}: {e}") from e
        _check_dtypes(path, tensors, model.state_dict())
        _check_finite(path, tensors, model)
        tensors[_TIED] = tensors["wte.weight"]
        try:
            model.load_state_dict(tensors)
        except PoolError as e:  # an organism's slots hold what none can (NaN weights, ...)
            raise CheckpointError(f"{path}: {e}") from e
        except (RuntimeError, ConfigError) as e:
            raise CheckpointError(f"{directory} does not match its config: {e}") from e
        for i, (organism, layer) in enumerate(zip(model.organisms, meta["layers"], strict=True)):
            if organism.live_slots() != layer["live"]:
                raise CheckpointError(
                    f"layer {i}: tensors hold slots {organism.live_slots()}, "
                    f"config.json lists {shown(layer['live'])}"
                )
            if meta["version"] == 1:  # fitness lived in config.json before the slot table
                for slot, fitness in zip(layer["live"], layer["fitness"], strict=True):
                    organism.pod(slot).fitness = fitness
            folder = directory / f"archive_{i}"
            try:
                archive = GridArchive.load(
                    folder, device=model.archive_device(model.wte.weight.device)
                )
                organism.replace_archive(archive)
            except (ArchiveError, ConfigError) as e:
                # Name the folder once: the archive's own errors usually name it already.
                raise CheckpointError(str(e) if str(folder) in str(e) else f"{folder}: {e}") from e
        return model


def _directory(directory: Any) -> Path:
    """``directory`` as a Path, or ConfigError naming what is no path."""
    if not isinstance(directory, str | os.PathLike):
        raise ConfigError(f"expected a path, got {shown(directory)}", "directory")
    return Path(directory)


def _sized_shapes(c: SlimeConfig, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shapes of the tensors whose size is a product of config sizes (what a forged config
    could make huge), by name; a version 1 file keeps the attention per pod (each live slot of
    ``meta['layers']``), converted on load."""
    version = meta["version"]
    width, cap, d, hidden = c.n_embd, c.pod_capacity, c.head_dim, int(c.mlp_ratio * c.n_embd)
    shapes = {"wte.weight": (c.vocab_size, width), "wpe.weight": (c.block_size, width)}
    for i in range(c.n_layer):
        block = f"blocks.{i}."
        shapes[block + "mlp.c_fc.weight"] = (hidden, width)
        shapes[block + "mlp.c_proj.weight"] = (width, hidden)
        if version >= 2:
            shapes[block + "attn.qkv_weight"] = (3, cap, d, width)
            shapes[block + "attn.o_weight"] = (width, cap, d)
            shapes[block + "attn.correlation"] = (cap, d, d)
            shapes[block + "attn.tube_trace"] = (c.tube_capacity, cap)
        else:
            for slot in meta["layers"][i]["live"]:
                pod = f"{block}attn.pods.{slot}."
                for p in "qkv":
                    shapes[f"{pod}{p}_weight"] = (d, width)
                    if c.bias:
                        shapes[f"{pod}{p}_bias"] = (d,)
                shapes[pod + "o_weight"] = (width, d)
                shapes[pod + "_correlation"] = (d, d)
    return shapes


def _check_sizes(
    path: Path, tensors: dict[str, Tensor], config: SlimeConfig, meta: dict[str, Any]
) -> None:
    """CheckpointError unless ``tensors`` hold every config-sized tensor in the config's shape
    (and a version 1 file's live slots lie within ``pod_capacity``), checked before a model of
    that config is allocated."""
    if meta["version"] == 1:
        for i, layer in enumerate(meta["layers"]):
            outside = [s for s in layer["live"] if not 0 <= s < config.pod_capacity]
            if outside:
                raise CheckpointError(
                    f"{path.parent / 'config.json'}: layers[{i}].live lists slots "
                    f"{shown(outside)} outside pod_capacity {config.pod_capacity}"
                )
    for key, shape in _sized_shapes(config, meta).items():
        if key not in tensors:
            raise CheckpointError(f"{path} lacks {key!r} {shape}, which config.json describes")
        if tuple(tensors[key].shape) != shape:
            raise CheckpointError(
                f"{path}: {key!r} has shape {tuple(tensors[key].shape)}, config.json's sizes "
                f"give {shape}"
            )


def _check_dtypes(path: Path, tensors: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """CheckpointError unless each tensor the model has is of the model's kind of dtype: any
    floating dtype for a floating one (a model saved in bf16 loads into float32), exactly its
    dtype otherwise (load_state_dict would cast float slot flags or counts silently)."""
    for key, tensor in tensors.items():
        want = expected.get(key)
        if want is None:
            continue  # not the model's: load_state_dict names it
        floating = want.is_floating_point()
        if tensor.is_floating_point() != floating or (not floating and tensor.dtype != want.dtype):
            kind = "a floating dtype" if floating else str(want.dtype)
            raise CheckpointError(f"{path}: {key!r} is {tensor.dtype}, expected {kind}")


def _check_finite(path: Path, tensors: dict[str, Tensor], model: SlimeModel) -> None:
    """CheckpointError naming the first parameter outside the organisms (embeddings, norms, MLPs)
    that holds NaN or Inf: no working model holds one (its every forward would be NaN). The
    organisms check their own slots as they load (naming the slot)."""
    attention = tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, Organism))
    for key, _ in model.named_parameters():
        tensor = tensors.get(key)
        if tensor is None or key.startswith(attention) or not tensor.is_floating_point():
            continue
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            where = tuple(torch.nonzero(bad)[0].tolist())
            raise CheckpointError(f"{path}: {key!r} holds {tensor[where].item()} at {where}")


_SAVING, _REPLACED = ".saving", ".replaced"  # save_pretrained's folders inside the directory


def _written_by_save(name: str) -> bool:
    """Whether a folder entry is one :meth:`SlimeModel.save_pretrained` writes."""
    return name in ("config.json", "model.safetensors") or (
        name.startswith("archive_") and name[len("archive_") :].isdigit()
    )


def _move_in(staging: Path, directory: Path, aside: Path) -> None:
    """Move the complete save in ``staging`` into ``directory``: the model files already there
    to ``aside`` first (``config.json`` first: a folder without it reads as no model, never as a
    mixed one), then the new ones (``config.json`` last). A failed move puts everything back.

    Raises:
        OSError: a move failed; ``directory`` holds its previous files again (or, if putting
            them back failed too, ``aside`` holds them).
    """
    old = sorted(
        (e for e in directory.iterdir() if _written_by_save(e.name)),
        key=lambda e: e.name != "config.json",
    )
    new = sorted(staging.iterdir(), key=lambda e: e.name == "config.json")
    moved_aside, moved_in = [], []
    try:
        if old:
            aside.mkdir()
        for entry in old:
            os.rename(entry, aside / entry.name)
            moved_aside.append(entry.name)
        for entry in new:
            os.rename(entry, directory / entry.name)
            moved_in.append(entry.name)
    except OSError:
        for name in reversed(moved_in):
            os.rename(directory / name, staging / name)
        for name in reversed(moved_aside):
            os.rename(aside / name, directory / name)
        if old:
            aside.rmdir()
        raise
    staging.rmdir()
    if old:
        shutil.rmtree(aside)


_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path`` when it is a regular file (symlinks followed).

    Raises:
        CheckpointError: it is missing or unreadable, or no regular file (a folder, a device, a
            FIFO), refused before any read: a link to /dev/zero would fill memory and a FIFO
            block forever.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = next((what for test, what in _FILE_KINDS if test(mode)), "no regular file")
            raise CheckpointError(f"{path} is {kind}, not a regular file: not read")
        return path.read_bytes()
    except OSError as e:  # missing, no permission, a symlink loop
        raise CheckpointError(f"cannot read {path}: {e}") from None


def _read_meta(directory: Path) -> dict[str, Any]:
    """``config.json`` of a model directory, checked for the keys and shapes the loader reads.

    Raises:
        CheckpointError: unreadable, not JSON, or a key missing or of the wrong kind.
    """
    path = directory / "config.json"
    aside = directory / _REPLACED
    if not path.exists() and (aside / "config.json").exists():
        raise CheckpointError(
            f"{path} is missing: a save_pretrained into {directory} stopped while moving its "
            f"files in; the previous model is in {aside} (move its files back)"
        )
    text = _read_regular(path)
    try:
        meta = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # ValueError: not UTF-8, not JSON, an integer of
        # too many digits; RecursionError: nested too deep
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} holds {type(meta).__name__}, expected a JSON object")
    version = meta.get("version")
    if (
        meta.get("format") != FORMAT
        or isinstance(version, bool)
        or not isinstance(version, int)
        or version not in READABLE_VERSIONS
    ):
        raise CheckpointError(
            f"{directory} holds format {shown(meta.get('format'))} v{shown(meta.get('version'))}, "
            f"expected {FORMAT!r} v{' or v'.join(map(str, READABLE_VERSIONS))}"
        )
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(
            f"{path}: 'config' must be an object, got {shown(meta.get('config'))}"
        )
    try:
        n_layer = SlimeConfig.from_dict(meta["config"]).n_layer
    except ConfigError as e:
        raise CheckpointError(f"{path}: config is invalid: {e}") from e
    layers = meta.get("layers")
    if not isinstance(layers, list) or len(layers) != n_layer:
        raise CheckpointError(f"{path}: 'layers' must list {n_layer} layers, got {shown(layers)}")
    for i, layer in enumerate(layers):
        keys = ("live", "fitness") if meta["version"] == 1 else ("live",)
        for key in keys:
            value = layer.get(key) if isinstance(layer, dict) else None
            kind = int if key == "live" else int | float
            if not isinstance(value, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) for v in value
            ):
                what = "slot numbers" if key == "live" else "finite numbers"
                raise CheckpointError(
                    f"{path}: layers[{i}].{key} must be a list of {what}, got {shown(value)}"
                )
        if meta["version"] == 1 and len(layer["live"]) != len(layer["fitness"]):
            raise CheckpointError(f"{path}: layers[{i}] lists unequal 'live' and 'fitness'")
    if meta["version"] >= 2 and not isinstance(meta.get("model_sha256"), str):
        raise CheckpointError(f"{path}: 'model_sha256' is missing")
    return meta


def _move_at_once(items: list[tuple[torch.device, Tensor]]) -> list[Tensor]:
    """Each tensor on its target device, with one copy per (source, target, dtype) group: the
    group is flattened into one buffer, copied, and split back into views.

    A group leaving a CUDA device for the host lands in page-locked memory (torch caches those
    buffers), several times faster than a copy into pageable memory; the host waits once, for
    all of them, before returning.
    """
    out: list[Tensor | None] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (device, t) in enumerate(items):
        if t.device == device:
            out[i] = t
        else:
            groups.setdefault((t.device, device, t.dtype), []).append(i)
    waits: set[torch.device] = set()
    for (source, device, dtype), members in groups.items():
        flat = torch.cat([items[i][1].reshape(-1) for i in members])
        if source.type == "cuda" and device.type == "cpu":
            landed = torch.empty(flat.shape, dtype=dtype, pin_memory=True)
            landed.copy_(flat, non_blocking=True)
            waits.add(source)
        else:
            landed = flat.to(device)
        pieces = landed.split([items[i][1].numel() for i in members])
        for i, piece in zip(members, pieces):
            out[i] = piece.view(items[i][1].shape)
    for source in waits:
        torch.cuda.current_stream(source).synchronize()
    return out
