"""The masks ``nn.TransformerEncoderLayer`` accepts, read as torch reads them and handed to an
organism in its own terms: causal and bool key padding for the kernel, the rest additive."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from slime.proto import KernelError, shown
from torch import Tensor


@dataclass(frozen=True)
class OrganismMasks:
    """What :meth:`slime.core.Organism.forward` takes: ``key_padding_mask`` ``(B, T)`` True
    where visible, ``attn_mask`` additive, broadcastable to ``(B, P, T, T)``."""

    causal: bool
    key_padding_mask: Tensor | None
    attn_mask: Tensor | None


def square_subsequent_mask(seq: int, device=None, dtype=None) -> Tensor:
    """``(T, T)``, ``-inf`` above the diagonal: ``nn.Transformer.generate_square_subsequent_mask``."""
    return torch.full((seq, seq), -math.inf, dtype=dtype, device=device).triu(1)


def additive(mask: Tensor, name: str, dtype: torch.dtype) -> Tensor:
    """A bool mask (True = not allowed) as ``-inf``/0 in ``dtype``; a float mask as it is.

    Raises:
        KernelError: ``mask`` is neither bool nor floating point, or a float mask on the CPU
            holds NaN or ``+inf`` (:func:`check_mask_values`).
    """
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)
    if not mask.is_floating_point():
        raise KernelError(f"{name} must be bool or floating point, got {mask.dtype}")
    check_mask_values(mask, name)
    return mask.to(dtype)


def check_mask_values(mask: Tensor, name: str) -> None:
    """KernelError naming ``name`` (the argument the caller passed) and the first position of a
    NaN or ``+inf`` in a float ``mask`` on the CPU: added to the logits, either makes its rows'
    softmax NaN. Checked as the organism checks its ``attn_mask``: on the CPU only, where reading
    the result costs no wait, and never while compiling."""
    if not mask.is_floating_point() or mask.device.type != "cpu" or mask.numel() == 0:
        return
    if torch.compiler.is_compiling():
        return
    bad = mask.isnan() | mask.isposinf()
    if bad.any():
        where = tuple(torch.nonzero(bad)[0].tolist())
        raise KernelError(
            f"{name} holds {mask[where].item()} at {where}: a float mask is added to the "
            "logits, where NaN and +inf make the softmax NaN (-inf forbids a key)"
        )


def is_causal_mask(mask: Tensor | None, seq: int) -> bool:
    """Whether ``mask`` is the ``(T, T)`` causal mask, bool or float (torch's
    ``_detect_is_causal_mask`` without a hint). Reads the comparison on the host, as torch does."""
    if mask is None or tuple(mask.shape) != (seq, seq):
        return False
    causal = square_subsequent_mask(
        seq, mask.device, mask.dtype if mask.is_floating_point() else None
    )
    return bool((additive(mask, "mask", causal.dtype) == causal).all())


def organism_masks(
    batch: int,
    seq: int,
    dtype: torch.dtype,
    nhead: int,
    capacity: int,
    src_mask: Tensor | None,
    src_key_padding_mask: Tensor | None,
    is_causal: bool,
) -> OrganismMasks:
    """Read an encoder layer's masks for a batch-first ``(B, T, D)`` input as torch does.

    ``is_causal`` is the hint that ``src_mask`` is the causal mask: the kernel's causal masking
    then replaces it (torch requires the mask anyway). A 3-D ``src_mask`` holds one ``(T, T)`` mask
    per sample and head, ``(B * nhead, T, T)``, head ``h`` being slot ``h``; an organism with more
    slots than ``nhead`` needs one per sample and slot, ``(B * capacity, T, T)``.

    Raises:
        KernelError: a mask of the wrong dtype or shape, or ``is_causal`` without ``src_mask``.
    """
    visible = pad = None
    for name, mask in (("src_mask", src_mask), ("src_key_padding_mask", src_key_padding_mask)):
        if mask is not None and not isinstance(mask, Tensor):
            raise KernelError(f"{name} must be a tensor or None, got {shown(mask)}")
    if src_key_padding_mask is not None:
        if tuple(src_key_padding_mask.shape) != (batch, seq):
            raise KernelError(
                f"src_key_padding_mask must be ({batch}, {seq}), got "
                f"{tuple(src_key_padding_mask.shape)}"
            )
        if src_key_padding_mask.dtype == torch.bool:
            visible = ~src_key_padding_mask
        else:  # torch adds a float padding mask to the logits
            pad = additive(src_key_padding_mask, "src_key_padding_mask", dtype)[:, None, None, :]
    if is_causal:
        if src_mask is None:
            raise KernelError(
                "is_causal=True is a hint that src_mask is the causal mask, and needs the mask "
                "(nn.Transformer.generate_square_subsequent_mask(T)), as torch does"
            )
        check_shape(src_mask, batch, seq, nhead, capacity)
        return OrganismMasks(True, visible, pad)
    attn = None
    if src_mask is not None:
        check_shape(src_mask, batch, seq, nhead, capacity)
        attn = additive(src_mask, "src_mask", dtype)
        if attn.dim() == 3:  # (B * capacity, T, T), as check_shape found (B or T may be 0)
            attn = attn.view(batch, capacity, seq, seq)
    if pad is not None:
        attn = pad if attn is None else attn + pad
    return OrganismMasks(False, visible, attn)


def check_shape(mask: Tensor, batch: int, seq: int, nhead: int, capacity: int) -> None:
    """Raise KernelError unless ``mask`` is ``(T, T)``, ``(B * nhead, T, T)`` or, with more slots
    than heads, ``(B * capacity, T, T)``."""
    shape = tuple(mask.shape)
    if mask.dim() == 2 and shape == (seq, seq):
        return
    if mask.dim() == 3 and shape == (batch * capacity, seq, seq):
        return
    if mask.dim() == 3 and shape == (batch * nhead, seq, seq):
        raise KernelError(
            f"src_mask {shape} holds one mask per head (B * nhead = {batch * nhead}), but the "
            f"organism has {capacity} slots: pass one per sample and slot, "
            f"({batch * capacity}, {seq}, {seq}), slot s of sample b at row b * {capacity} + s"
        )
    wanted = f"({seq}, {seq}) or ({batch * capacity}, {seq}, {seq})"
    raise KernelError(f"src_mask must be {wanted}, got {shape}")
