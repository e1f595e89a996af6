"""SlimeMoldEncoder and SlimeMoldEncoderLayer: ``nn.TransformerEncoder`` and its layer, with the
attention of every layer an organism of ``nhead`` pods."""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from slime.core.api._torch_masks import check_mask_values, is_causal_mask, organism_masks
from slime.core.blocks import MLP, Block
from slime.core.organism import Organism, read_device
from slime.kernels import select_kernel
from slime.proto import ConfigError, Kernel, KernelError, shown
from torch import Tensor, nn

__all__ = ["SlimeMoldEncoder", "SlimeMoldEncoderLayer"]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


class SlimeMoldEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer`` whose self-attention is an organism of ``nhead`` pods.

    The signature, defaults and forward are torch's; so are the initialisation (q/k/v as
    ``nn.MultiheadAttention``'s xavier-uniform ``in_proj``, the output projection and both
    feed-forward linears as ``nn.Linear``'s default, zero attention biases, drawn in torch's order,
    so a seeded program gets torch's numbers) and the four dropout sites (attention
    probabilities, after the attention, inside the feed-forward, after it; each mask drawn in the
    memory order of torch's tensor at that site, so one seed drops the same elements). A seeded
    program computes and trains as with torch, to float noise, with or without dropout. Head
    ``h`` is slot ``h`` of the organism; births and deaths happen only when a caller asks for
    them.

    Args:
        activation: ``"relu"``, ``"gelu"`` or any unary callable (a module or a function).
        device, dtype: where and in what dtype the parameters live.
        pod_capacity: slots of the organism (default ``nhead``); pods can be spawned up to it.
        kernel: attention backend (default: chosen for ``device``).
        generator: seeds the pods and the feed-forward (default: torch's global RNG, as torch).
        init: the organism's initialisation, ``"torch"`` (default) or ``"normal"`` (see
            :class:`~slime.core.Organism`).
        organism_options: any further :class:`~slime.core.Organism` keyword (``tube_capacity``,
            ``metrics``, ``archive``, ``name``...).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str | Callable[[Tensor], Tensor] = F.relu,
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        pod_capacity: int | None = None,
        kernel: Kernel | None = None,
        generator: torch.Generator | None = None,
        init: str = "torch",
        **organism_options: Any,
    ):
        super().__init__()
        _check_layer_options(
            d_model, nhead, dim_feedforward, dropout, layer_norm_eps, dtype, organism_options
        )
        if d_model % nhead:
            raise ConfigError(f"d_model {d_model} is not divisible by nhead {nhead}", "nhead")
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ConfigError(
                    f"expected one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}",
                    "activation",
                )
            activation = _ACTIVATIONS[activation]
        elif not callable(activation):
            raise ConfigError(
                f"expected one of {sorted(_ACTIVATIONS)} or a callable, got {shown(activation)}",
                "activation",
            )
        device = read_device(device)
        head_dim = d_model // nhead
        organism_options.setdefault("name", "encoder")
        organism = Organism(
            d_model,
            pod_capacity=pod_capacity if pod_capacity is not None else nhead,
            n_pods=nhead,
            head_dim=head_dim,
            kernel=kernel if kernel is not None else select_kernel(device, head_dim=head_dim),
            bias=bias,
            dropout=dropout,
            attn_dropout=dropout,
            init=init,
            generator=generator,
            device=device,
            **organism_options,
        )
        mlp = MLP(
            d_model,
            hidden=dim_feedforward,
            dropout=dropout,
            hidden_dropout=dropout,
            bias=bias,
            activation=activation,
            device=device,
        )
        if generator is not None:
            for linear in (mlp.c_fc, mlp.c_proj):
                _reset_linear(linear, generator)
        # torch draws each dropout mask in its tensor's memory order: the attention output is
        # sequence-major in either layout, the feed-forward's tensors are when batch_first is
        # False. The same orders here make one seed drop the same elements as torch.
        organism.dropout = _SequenceMajorDropout(dropout)
        if not batch_first:
            mlp.hidden_dropout = _SequenceMajorDropout(dropout)
            mlp.dropout = _SequenceMajorDropout(dropout)
        self.block = Block(
            organism, mlp, bias=bias, norm_first=norm_first, eps=layer_norm_eps, device=device
        )
        self.nhead = nhead
        self.batch_first = batch_first
        if dtype is not None:
            self.to(dtype)

    @property
    def organism(self) -> Organism:
        return self.block.attn

    @property
    def norm_first(self) -> bool:
        return self.block.norm_first

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """``src`` ``(T, B, D)`` (``(B, T, D)`` when batch_first, ``(T, D)`` unbatched) -> same.

        Masks as torch takes them: ``src_mask`` bool (True = not allowed) or float (added to the
        logits), ``(T, T)`` or ``(B * nhead, T, T)`` (one per sample and slot,
        ``(B * pod_capacity, T, T)``, when the organism has spare slots); ``src_key_padding_mask``
        ``(B, T)`` bool (True = padding) or float (added). ``is_causal`` is the hint that
        ``src_mask`` is the causal mask. Causal masking and bool padding run in the organism's
        kernel; any other mask takes its masked path (torch's scaled dot-product attention over
        the pool). An empty batch or sequence gives an empty output with any mask, where torch
        fails to reshape its masks ("cannot reshape tensor of 0 elements").

        Raises:
            KernelError: a mask that is no tensor or of the wrong dtype or shape, ``is_causal``
                that is no bool or without ``src_mask``, or ``src`` that is no 2-D or 3-D tensor
                of the layer's width, dtype (see :meth:`Organism.forward` for autocast) and
                device.
        """
        if not isinstance(src, Tensor) or src.dim() not in (2, 3):
            got = tuple(src.shape) if isinstance(src, Tensor) else shown(src)
            raise KernelError(f"src must be a 2-D (unbatched) or 3-D tensor, got {got}")
        if not isinstance(is_causal, bool):
            raise KernelError(f"is_causal must be True or False, got {shown(is_causal)}")
        for name, mask in (("src_mask", src_mask), ("src_key_padding_mask", src_key_padding_mask)):
            if mask is not None and not isinstance(mask, Tensor):
                raise KernelError(f"{name} must be a tensor or None, got {shown(mask)}")
        unbatched = src.dim() == 2
        if unbatched:
            x = src.unsqueeze(0)
            if src_key_padding_mask is not None:
                if src_key_padding_mask.shape != src.shape[:1]:  # named before it is (1, T)
                    raise KernelError(
                        f"src_key_padding_mask must be ({src.shape[0]},) beside an unbatched "
                        f"(T, D) src, got {tuple(src_key_padding_mask.shape)}"
                    )
                src_key_padding_mask = src_key_padding_mask.unsqueeze(0)
        else:
            x = src if self.batch_first else src.transpose(0, 1)
        self.organism._check_stimulus(x)  # before a first LayerNorm fails on it
        batch, seq, _ = x.shape
        masks = organism_masks(
            batch,
            seq,
            x.dtype,
            self.nhead,
            self.organism.pod_capacity,
            src_mask,
            src_key_padding_mask,
            is_causal,
        )
        out = self.block(
            x,
            causal=masks.causal,
            key_padding_mask=masks.key_padding_mask,
            attn_mask=masks.attn_mask,
        )
        if unbatched:
            return out.squeeze(0)
        return out if self.batch_first else out.transpose(0, 1)

    @classmethod
    def from_torch(
        cls, layer: nn.TransformerEncoderLayer, **slime_options: Any
    ) -> SlimeMoldEncoderLayer:
        """A layer computing what ``layer`` computes: same options, weights and dropouts; head
        ``h`` becomes slot ``h``. ``slime_options`` are this class's own keywords.

        Raises:
            ConfigError: ``layer``'s attention has separate q/k/v widths, ``bias_k``/``bias_v`` or
                ``add_zero_attn``, which the organism does not have.
        """
        _check_torch(layer, nn.TransformerEncoderLayer, "layer")
        attn = layer.self_attn
        weight = attn.in_proj_weight
        if weight is None:
            raise ConfigError("separate q/k/v projections (kdim/vdim) have no pod layout", "layer")
        ours = cls(
            attn.embed_dim,
            attn.num_heads,
            layer.linear1.out_features,
            layer.dropout.p,
            copy.deepcopy(layer.activation),
            layer.norm1.eps,
            attn.batch_first,
            layer.norm_first,
            attn.in_proj_bias is not None,
            weight.device,
            weight.dtype,
            **slime_options,
        )
        ours.copy_torch_weights(layer)
        return ours

    @torch.no_grad()
    def copy_torch_weights(self, layer: nn.TransformerEncoderLayer) -> None:
        """Take ``layer``'s weights and dropout rates: ``in_proj``/``out_proj`` head ``h`` into
        slot ``h``, ``linear1``/``linear2`` into the feed-forward, ``norm1``/``norm2``.

        Raises:
            ConfigError: ``layer`` has another width, head count or bias setting, or attention
                features the organism does not have.
        """
        _check_torch(layer, nn.TransformerEncoderLayer, "layer")
        attn, org = layer.self_attn, self.organism
        if attn.bias_k is not None or attn.add_zero_attn or not attn._qkv_same_embed_dim:
            raise ConfigError(
                "bias_k/bias_v, add_zero_attn and separate q/k/v widths have no pod layout",
                "layer",
            )
        heads, width = attn.num_heads, attn.embed_dim
        if (width, heads, attn.in_proj_bias is not None) != (org.n_embd, self.nhead, org.bias):
            raise ConfigError(
                f"layer has d_model={width}, nhead={heads}, bias={attn.in_proj_bias is not None}; "
                f"this one d_model={org.n_embd}, nhead={self.nhead}, bias={org.bias}",
                "layer",
            )
        d = org.head_dim
        org.qkv_weight[:, :heads].copy_(attn.in_proj_weight.view(3, heads, d, width))
        org.o_weight[:, :heads].copy_(attn.out_proj.weight.view(width, heads, d))
        if org.qkv_bias is not None:
            org.qkv_bias[:, :heads].copy_(attn.in_proj_bias.view(3, heads, d))
            org.out_bias.copy_(attn.out_proj.bias)
        mlp = self.block.mlp
        mlp.c_fc.load_state_dict(layer.linear1.state_dict())
        mlp.c_proj.load_state_dict(layer.linear2.state_dict())
        self.block.ln_1.load_state_dict(layer.norm1.state_dict())
        self.block.ln_2.load_state_dict(layer.norm2.state_dict())
        org.attn_dropout = attn.dropout
        org.dropout.p = layer.dropout1.p
        mlp.hidden_dropout.p = layer.dropout.p
        mlp.dropout.p = layer.dropout2.p


class SlimeMoldEncoder(nn.Module):
    """``nn.TransformerEncoder``: ``num_layers`` copies of ``encoder_layer``, then ``norm``.

    Signature, defaults and forward are torch's. As torch does, the layers are deep copies of
    ``encoder_layer``, so they start with the same weights; each copy is an organism of its own
    (its own slot table, tubes and archive, named ``<name><i>``), sharing only the injected
    kernel, generator, metrics and tracer. ``mask`` and ``src_key_padding_mask`` are read as
    :meth:`SlimeMoldEncoderLayer.forward` reads them; ``is_causal=None`` asks whether ``mask`` is
    the causal mask (one host read, as torch).

    ``enable_nested_tensor`` and ``mask_check`` are kept for torch's signature and change nothing:
    padding always reaches the kernel as a mask, so padded positions hold computed values, where
    torch's inference fast path converts to nested tensors and writes zeros there.

    Where torch's encoder differs by the path it takes, this one reads inputs one way:

    * a float mask (``mask``/``src_mask``, ``src_key_padding_mask``) of any floating dtype is
      cast to the input's dtype and added; torch's attention refuses one that is neither
      float32 nor the dtype it computes in (a float16 mask beside float32 inputs), or takes it,
      depending on which masks come with it;
    * ``is_causal=True`` still needs a mask of a mask's shape (``(T, T)`` or per head); torch
      drops the hinted mask unread where no padding mask comes with it, and checks it where one
      does;
    * an empty batch or sequence gives an empty output with any mask, where torch fails to
      reshape its masks.

    Raises:
        ConfigError: ``encoder_layer`` is not a SlimeMoldEncoderLayer (convert a torch encoder
            with :meth:`from_torch`), or ``num_layers < 1``.
    """

    def __init__(
        self,
        encoder_layer: SlimeMoldEncoderLayer,
        num_layers: int,
        norm: nn.Module | None = None,
        enable_nested_tensor: bool = True,
        mask_check: bool = True,
    ):
        super().__init__()
        if not isinstance(encoder_layer, SlimeMoldEncoderLayer):
            raise ConfigError(
                f"expected a SlimeMoldEncoderLayer, got {type(encoder_layer).__name__} "
                "(SlimeMoldEncoder.from_torch converts an nn.TransformerEncoder)",
                "encoder_layer",
            )
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(f"expected an int >= 1, got {shown(num_layers)}", "num_layers")
        if norm is not None and not callable(norm):
            raise ConfigError(f"expected a module or None, got {shown(norm)}", "norm")
        self.layers = nn.ModuleList(_clone(encoder_layer, i) for i in range(num_layers))
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check

    @classmethod
    def build(
        cls,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        *,
        batch_first: bool = True,
        norm: nn.Module | None = None,
        **layer_options: Any,
    ) -> SlimeMoldEncoder:
        """An encoder in one call: ``num_layers`` layers of ``SlimeMoldEncoderLayer(d_model,
        nhead, dim_feedforward, dropout, batch_first=batch_first, **layer_options)``. Unlike
        torch's default, batch-first unless told otherwise."""
        layer = SlimeMoldEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, batch_first=batch_first, **layer_options
        )
        return cls(layer, num_layers, norm=norm)

    @classmethod
    def from_torch(cls, encoder: nn.TransformerEncoder, **slime_options: Any) -> SlimeMoldEncoder:
        """An encoder computing what ``encoder`` computes: each layer converted by
        :meth:`SlimeMoldEncoderLayer.from_torch` with its own weights, ``norm`` copied.

        Raises:
            ConfigError: ``encoder`` is no ``nn.TransformerEncoder``, or as
                :meth:`SlimeMoldEncoderLayer.from_torch`.
        """
        _check_torch(encoder, nn.TransformerEncoder, "encoder")
        layers = encoder.layers
        first = SlimeMoldEncoderLayer.from_torch(layers[0], **slime_options)
        ours = cls(
            first,
            len(layers),
            norm=copy.deepcopy(encoder.norm),
            enable_nested_tensor=encoder.enable_nested_tensor,
            mask_check=encoder.mask_check,
        )
        for mine, theirs in zip(ours.layers, layers):
            mine.copy_torch_weights(theirs)
        return ours

    @property
    def organisms(self) -> list[Organism]:
        return [layer.organism for layer in self.layers]

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        """``src`` ``(T, B, D)`` (``(B, T, D)`` when batch_first, ``(T, D)`` unbatched) -> same.

        Raises:
            KernelError: as :meth:`SlimeMoldEncoderLayer.forward`.
        """
        first = self.layers[0]
        if not isinstance(src, Tensor) or src.dim() not in (2, 3):
            got = tuple(src.shape) if isinstance(src, Tensor) else shown(src)
            raise KernelError(f"src must be a 2-D (unbatched) or 3-D tensor, got {got}")
        if is_causal is not None and not isinstance(is_causal, bool):
            raise KernelError(f"is_causal must be True, False or None, got {shown(is_causal)}")
        if mask is not None and not isinstance(mask, Tensor):
            raise KernelError(f"mask must be a tensor or None, got {shown(mask)}")
        seq = src.shape[1 if first.batch_first and src.dim() == 3 else 0]
        if is_causal is None:
            is_causal = is_causal_mask(mask, seq)
        if mask is not None and not is_causal:  # the layers would name it their src_mask
            check_mask_values(mask, "mask")
        out = src
        for layer in self.layers:
            out = layer(
                out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal
            )
        return out if self.norm is None else self.norm(out)


def _check_torch(module: Any, kind: type, name: str) -> None:
    if not isinstance(module, kind):
        raise ConfigError(f"expected an nn.{kind.__name__}, got {shown(module)}", name)


# The Organism keywords a layer sets itself; the rest may come through organism_options.
_LAYER_SET = {"n_embd", "n_pods", "head_dim", "kernel", "bias", "dropout", "attn_dropout", "init"}
_LAYER_SET |= {"generator", "device", "pod_capacity"}


def _check_layer_options(
    d_model: Any,
    nhead: Any,
    dim_feedforward: Any,
    dropout: Any,
    eps: Any,
    dtype: Any,
    organism_options: dict[str, Any],
) -> None:
    """ConfigError naming the first of a layer's arguments torch would fail on (or compute NaN
    with) far from here."""
    for name, value, low in (
        ("d_model", d_model, 1),
        ("nhead", nhead, 1),
        ("dim_feedforward", dim_feedforward, 0),  # 0 builds, as torch's layer does
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"expected an int >= {low}, got {shown(value)}", name)
    for name, value, ok in (
        ("dropout", dropout, lambda v: 0 <= v < 1),
        ("layer_norm_eps", eps, lambda v: 0 <= v < math.inf),  # eps < 0 gives NaN
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            bounds = "[0, 1)" if name == "dropout" else "[0, inf)"
            raise ConfigError(f"expected a number in {bounds}, got {shown(value)}", name)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ConfigError(f"expected a floating torch.dtype or None, got {shown(dtype)}", "dtype")
    known = set(inspect.signature(Organism).parameters) - _LAYER_SET
    unknown = sorted(set(organism_options) - known)
    if unknown:
        raise ConfigError(
            f"unknown options {unknown}; an organism takes {sorted(known)} besides the layer's",
            "organism_options",
        )


class _SequenceMajorDropout(nn.Dropout):
    """Dropout of a batch-first ``(B, T, ...)`` tensor whose mask is drawn in ``(T, B, ...)``
    order, as torch draws it over its sequence-first tensors; the same rate and scaling."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0 or x.dim() < 2:
            return super().forward(x)
        return super().forward(x.transpose(0, 1).contiguous()).transpose(0, 1)


def _clone(layer: SlimeMoldEncoderLayer, index: int) -> SlimeMoldEncoderLayer:
    """A deep copy of ``layer`` that shares its organism's injected dependencies."""
    organism = layer.organism
    shared = (organism.kernel, organism.generator, organism.metrics, organism.tracer)
    memo = {id(obj): obj for obj in shared if obj is not None}
    clone = copy.deepcopy(layer, memo)
    clone.organism.name = f"{organism.name}{index}"
    return clone


@torch.no_grad()
def _reset_linear(linear: nn.Linear, generator: torch.Generator) -> None:
    """``nn.Linear.reset_parameters``, drawn from ``generator`` (on its device)."""
    weight = torch.empty(linear.weight.shape, device=generator.device)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    linear.weight.copy_(weight)
    if linear.bias is not None:
        bound = linear.in_features**-0.5
        bias = torch.empty(linear.bias.shape, device=generator.device)
        linear.bias.copy_(bias.uniform_(-bound, bound, generator=generator))
