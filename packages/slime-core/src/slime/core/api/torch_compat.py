"""SlimeMoldEncoder: a drop-in replacement for ``nn.TransformerEncoder`` built from organisms."""

from __future__ import annotations

import torch
from slime.core.blocks import MLP, Block
from slime.core.organism import Organism
from slime.kernels import select_kernel
from slime.proto import ConfigError, Kernel, KernelError
from torch import Tensor, nn

__all__ = ["SlimeMoldEncoder"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class SlimeMoldEncoder(nn.Module):
    """``num_layers`` encoder layers whose attention is an organism of ``nhead`` pods.

    Mirrors ``nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, nhead,
    dim_feedforward, dropout, activation, batch_first=batch_first, norm_first=norm_first),
    num_layers)``: the same forward signature and defaults (post-norm, ReLU, biases).

    Attention masks: the fused kernel supports causal masking and key padding only. ``mask`` must
    therefore be None or the causal mask (checked against one, a host sync; pass
    ``is_causal=True`` to skip the check, as torch's hint). Masks must be bool.

    Args:
        pod_capacity: slots per layer (default ``nhead``); pods can be spawned up to it.
        kernel: compute backend (default: chosen for ``device``).
        generator: seeds the pods and the MLPs (without one, the MLPs use torch's global RNG, as
            ``nn.TransformerEncoderLayer`` does).
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        num_layers: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        *,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        pod_capacity: int | None = None,
        kernel: Kernel | None = None,
        batch_first: bool = True,
        tube_capacity: int = 16,
        tube_decay: float = 0.95,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        if nhead < 1 or d_model % nhead:
            raise ConfigError(f"d_model {d_model} is not divisible by nhead {nhead}", "nhead")
        if num_layers < 1:
            raise ConfigError(f"expected >= 1, got {num_layers}", "num_layers")
        if activation not in _ACTIVATIONS:
            raise ConfigError(
                f"expected one of {sorted(_ACTIVATIONS)}, got {activation!r}", "activation"
            )
        device = torch.device(device) if device is not None else torch.device("cpu")
        kernel = kernel if kernel is not None else select_kernel(device, head_dim=d_model // nhead)
        self.batch_first = batch_first
        layers = []
        for i in range(num_layers):
            organism = Organism(
                d_model,
                pod_capacity=pod_capacity if pod_capacity is not None else nhead,
                n_pods=nhead,
                head_dim=d_model // nhead,
                kernel=kernel,
                bias=bias,
                dropout=dropout,
                tube_capacity=tube_capacity,
                tube_decay=tube_decay,
                name=f"encoder{i}",
                generator=generator,
                device=device,
            )
            mlp = MLP(
                d_model,
                mlp_ratio=dim_feedforward / d_model,
                dropout=dropout,
                bias=bias,
                activation=_ACTIVATIONS[activation](),
                device=device,
            )
            layers.append(
                Block(
                    organism,
                    mlp,
                    bias=bias,
                    norm_first=norm_first,
                    eps=layer_norm_eps,
                    device=device,
                )
            )
        self.layers = nn.ModuleList(layers)
        if generator is not None:
            self._init_mlps(generator)

    @torch.no_grad()
    def _init_mlps(self, generator: torch.Generator) -> None:
        """nn.Linear's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
        for layer in self.layers:
            for linear in (layer.mlp.c_fc, layer.mlp.c_proj):
                for p in linear.parameters():
                    bound = linear.in_features**-0.5
                    draw = torch.rand(p.shape, generator=generator, device=generator.device)
                    p.copy_((draw * 2 - 1) * bound)

    @property
    def organisms(self) -> list[Organism]:
        return [layer.attn for layer in self.layers]

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        """``src`` ``(B, T, D)`` (``(T, B, D)`` unless batch_first) -> same shape.

        Args:
            mask: None or the ``(T, T)`` bool causal mask (True = not allowed, torch's convention).
            src_key_padding_mask: ``(B, T)`` bool, True for padding positions (torch's convention).
            is_causal: apply causal masking (``mask`` is then taken as its hint, unchecked).

        Raises:
            KernelError: a non-bool mask, or a ``mask`` that is not the causal mask.
        """
        x = src if self.batch_first else src.transpose(0, 1)
        seq = x.shape[1]
        causal = bool(is_causal)
        if mask is not None and not causal:
            if mask.dtype != torch.bool:
                raise KernelError(f"mask must be bool (True = masked), got {mask.dtype}")
            expected = torch.ones(seq, seq, dtype=torch.bool, device=mask.device).triu(1)
            if mask.shape != (seq, seq) or not torch.equal(mask, expected):
                raise KernelError(
                    f"mask of shape {tuple(mask.shape)} is not the causal mask; the organism's "
                    "kernel supports causal masking and key padding only"
                )
            causal = True
        visible = None
        if src_key_padding_mask is not None:
            if src_key_padding_mask.dtype != torch.bool:
                raise KernelError(
                    f"src_key_padding_mask must be bool (True = pad), got {src_key_padding_mask.dtype}"
                )
            visible = ~src_key_padding_mask
        for layer in self.layers:
            x = layer(x, causal=causal, key_padding_mask=visible)
        return x if self.batch_first else x.transpose(0, 1)
