"""A differential fuzzer: nn.TransformerEncoder and SlimeMoldEncoder.from_torch of it (equal
weights) fed the same random inputs and masks of every kind torch takes, in float32, float64 and
under CPU bf16 autocast, with empty, one-token, fully padded and fully masked cases. Where torch
computes, slime computes the same (values, shape, dtype, NaN-freeness, input gradients); where
torch raises, slime raises a SlimeError."""

from __future__ import annotations

import math
import os
import re

import pytest

pytest.importorskip("hypothesis")  # CPU-only property tests; the GPU machine may lack it
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from slime.core import SlimeMoldEncoder  # noqa: E402
from slime.proto import KernelError, SlimeError  # noqa: E402
from torch import nn  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
    pytest.mark.filterwarnings("ignore:Support for mismatched"),
    pytest.mark.filterwarnings("ignore:Converting mask without torch.bool dtype"),
]

D, H = 8, 2
EXAMPLES = int(os.environ.get("SLIME_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases every run: a failure here is one a rerun reproduces
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The dtypes a case computes in: the parameters' dtype and an autocast dtype (None: no autocast).
PRECISIONS = {
    "float32": (torch.float32, None),
    "float64": (torch.float64, None),
    "bf16 autocast": (torch.float32, torch.bfloat16),
}
# float64: torch adds a float mask and a float padding mask in their float32 before the logits.
TOLERANCE = {"float32": 1e-4, "float64": 1e-6, "bf16 autocast": 6e-2}


OTHER_MASK_DTYPES = (torch.float16, torch.bfloat16, torch.float64)


@st.composite
def float_mask(draw, shape, rows_of):
    """Random logit biases with some ``-inf`` entries and, sometimes, whole ``-inf`` rows."""
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    mask = torch.randn(shape, generator=g)
    mask = mask.masked_fill(
        torch.rand(shape, generator=g) < draw(st.sampled_from([0, 0.3])), -math.inf
    )
    if draw(st.booleans()) and mask.numel():
        mask[rows_of(mask)] = -math.inf
    return mask


@st.composite
def cases(draw):
    """One configuration, input and set of masks."""
    options = {
        "batch_first": draw(st.booleans()),
        "norm_first": draw(st.booleans()),
        "activation": draw(st.sampled_from(["relu", "gelu", F.silu])),
        "bias": draw(st.booleans()),
    }
    seq = draw(st.sampled_from([0, 1, 2, 5]))
    batch = draw(st.sampled_from([0, 1, 3]))
    unbatched = draw(st.booleans())
    precision = draw(st.sampled_from(list(PRECISIONS)))
    masks = {}
    kind = draw(st.sampled_from(["none", "bool", "float", "per-head bool", "per-head float",
                                 "causal float", "causal bool"]))  # fmt: skip
    heads = H if unbatched else batch * H
    if kind == "bool":
        masks["mask"] = draw(float_mask((seq, seq), lambda m: 0)).isinf()
    elif kind == "float":
        masks["mask"] = draw(float_mask((seq, seq), lambda m: 0))
    elif kind == "per-head bool":
        masks["mask"] = draw(float_mask((heads, seq, seq), lambda m: (0, 0))).isinf()
    elif kind == "per-head float":
        masks["mask"] = draw(float_mask((heads, seq, seq), lambda m: (0, 0)))
    elif kind.startswith("causal"):
        causal = nn.Transformer.generate_square_subsequent_mask(seq)
        masks["mask"] = causal.isinf() if kind == "causal bool" else causal
    if "mask" in masks:
        masks["is_causal"] = draw(st.sampled_from([None, False] + [True] * kind.startswith("c")))
    if "mask" in masks and draw(st.integers(0, 4)) == 0:  # a wrong shape, one dim longer
        grown = list(masks["mask"].shape)
        grown[draw(st.integers(0, len(grown) - 1))] += 1
        masks["mask"] = torch.zeros(grown, dtype=masks["mask"].dtype)
    pad_kind = draw(st.sampled_from(["none", "bool", "float"]))
    if pad_kind != "none":
        shape = (seq,) if unbatched else (batch, seq)
        pad = draw(float_mask(shape, lambda m: 0)).isinf()  # a fully padded sample sometimes
        if pad_kind == "bool":
            masks["src_key_padding_mask"] = pad
        else:
            masks["src_key_padding_mask"] = draw(float_mask(shape, lambda m: 0))
    for name, mask in masks.items():  # now and then another dtype than float32 or bool
        if isinstance(mask, torch.Tensor) and mask.is_floating_point():
            other = draw(st.sampled_from([torch.float32] * 4 + [*OTHER_MASK_DTYPES, torch.int64]))
            masks[name] = (
                mask.nan_to_num(neginf=-1e4).to(torch.int64)
                if other == torch.int64
                else mask.to(other)
            )
    return options, seq, batch, unbatched, precision, masks


def build(options, num_layers=2, norm=False):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D, H, 16, 0.0, **options)
    theirs = nn.TransformerEncoder(
        layer, num_layers, norm=nn.LayerNorm(D) if norm else None, enable_nested_tensor=False
    )
    with torch.no_grad():  # layers that differ, as after training
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return theirs, SlimeMoldEncoder.from_torch(theirs)


def source(seq, batch, unbatched, batch_first, dtype):
    shape = (seq, D) if unbatched else (batch, seq, D) if batch_first else (seq, batch, D)
    return torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)


def outcome(module, x, masks, autocast):
    """``(output, input gradient)``, or the exception the call raised."""
    x = x.detach().requires_grad_()
    try:
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            out = module(x, **masks)
        (grad,) = torch.autograd.grad(out.float().square().sum(), x, allow_unused=True)
    except Exception as err:  # noqa: BLE001 - the exception is the outcome compared
        return err
    return out.detach(), grad


@FUZZ
@given(case=cases(), training=st.booleans())
def test_slime_computes_what_torch_computes_or_raises_where_it_raises(case, training):
    options, seq, batch, unbatched, precision, masks = case
    dtype, autocast = PRECISIONS[precision]
    theirs, ours = build(options)
    theirs.to(dtype).eval()  # with gradients on, torch takes its reference path (no fast path)
    ours.to(dtype).train(training)  # dropout 0: the same numbers either way
    x = source(seq, batch, unbatched, options["batch_first"], dtype)
    expected = outcome(theirs, x, masks, autocast)
    got = outcome(ours, x, masks, autocast)
    if isinstance(expected, Exception) and "Expected attn_mask dtype" in str(expected):
        # deliberate: slime casts a float mask of any dtype to the input's, as torch computes
        # with the mask so cast (torch refuses one neither float32 nor attention's dtype)
        floats = {
            k: v.to(x.dtype) for k, v in masks.items() if k != "is_causal" and v.is_floating_point()
        }
        masks = masks | floats
        expected = outcome(theirs, x, masks, autocast)
    if masks.get("is_causal") is True and isinstance(got, KernelError):
        # deliberate: the causal hint's mask must still have a mask's shape (torch drops the
        # mask unchecked where no padding mask comes with it)
        assert str(got).startswith("src_mask must be")
        return
    if isinstance(expected, Exception) and x.numel() == 0 and "reshape" in str(expected):
        # torch fails to reshape empty masks; slime gives the empty output, as without masks
        assert not isinstance(got, Exception), f"slime raised {got!r} on an empty input"
        assert got[0].shape == x.shape and got[0].dtype == x.dtype
        return
    if isinstance(expected, Exception):
        assert isinstance(got, SlimeError), f"torch raised {expected!r}; slime gave {got!r}"
        return
    assert not isinstance(got, Exception), f"torch computed; slime raised {got!r}"
    (out, grad), (want, want_grad) = got, expected
    assert (out.shape, out.dtype) == (want.shape, want.dtype)
    assert out.isnan().any() <= want.isnan().any()  # no NaN where torch has none
    tol = TOLERANCE[precision]
    torch.testing.assert_close(out, want, atol=tol, rtol=tol, equal_nan=True)
    if want_grad is None:
        assert grad is None or not grad.any()
    else:
        torch.testing.assert_close(grad, want_grad, atol=10 * tol, rtol=10 * tol, equal_nan=True)


# -- cases the fuzzer found -----------------------------------------------------------------------


def causal_masks(seq):
    causal = nn.Transformer.generate_square_subsequent_mask(seq)
    return {
        "no mask": {},
        "causal hint": {"mask": causal, "is_causal": True},
        "causal detected": {"mask": causal},
        "bool padding": {"src_key_padding_mask": torch.tensor([[False] * seq, [False, True] * 2])},
    }


@pytest.mark.parametrize("masks", list(causal_masks(4)))
@pytest.mark.parametrize("spare_slots", [0, 1], ids=["full", "spare slot"])
def test_a_float64_encoder_computes_as_torchs_does_without_dropout(masks, spare_slots):
    # slime's fused attention takes float32/16/bf16 only: eval, or dropout 0, raised KernelError
    # "q has dtype torch.float64" where torch's encoder computes in float64
    theirs, _ = build({"batch_first": True})
    ours = SlimeMoldEncoder.from_torch(theirs, pod_capacity=H + spare_slots)
    theirs.double().eval()
    ours.double()
    masks = causal_masks(4)[masks]
    x = source(4, 2, False, True, torch.float64)
    for training in (True, False):
        want = theirs(x, **masks)
        got = ours.train(training)(x, **masks)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    ("seq", "batch", "masks"),
    [
        (4, 0, lambda s, b: {"mask": torch.zeros(b * H, s, s)}),
        (4, 0, lambda s, b: {"mask": torch.zeros(b * H, s, s, dtype=torch.bool)}),
        (4, 0, lambda s, b: {"src_key_padding_mask": torch.zeros(b, s, dtype=torch.bool)}),
        (0, 3, lambda s, b: {"src_key_padding_mask": torch.zeros(b, s)}),
        (0, 3, lambda s, b: {"mask": torch.zeros(b * H, s, s), "src_key_padding_mask": torch.zeros(b, s)}),
    ],
    ids=["B=0 per-head float", "B=0 per-head bool", "B=0 padding", "T=0 padding", "T=0 both"],
)  # fmt: skip
def test_an_empty_batch_or_sequence_with_masks_gives_an_empty_output(seq, batch, masks):
    # B=0 with a per-head mask raised RuntimeError "cannot reshape tensor of 0 elements"; torch's
    # encoder raises that with any mask here, slime gives the empty output it gives without masks
    _, ours = build({"batch_first": True})
    x = source(seq, batch, False, True, torch.float32).requires_grad_()
    for module in (ours, ours.layers[0]):
        kwargs = masks(seq, batch)
        if module is not ours and "mask" in kwargs:
            kwargs["src_mask"] = kwargs.pop("mask")
        out = module(x, **kwargs)
        assert out.shape == x.shape
        out.sum().backward()


@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (5,), ()])
def test_an_unbatched_padding_mask_of_another_shape_is_named_with_the_shape_passed(shape):
    # (1, T) beside a (T, D) input was refused as "must be (1, 4), got (1, 1, 4)": the shape
    # asked for was the one passed, the shape named one slime made (torch: "expected 1-D")
    _, ours = build({})
    x = source(4, 1, True, False, torch.float32)
    for module in (ours, ours.layers[0]):
        with pytest.raises(
            KernelError,
            match=rf"^src_key_padding_mask must be \(4,\) .*got {re.escape(str(shape))}$",
        ):
            module(x, src_key_padding_mask=torch.zeros(shape, dtype=torch.bool))


# -- deliberate differences from torch (documented in SlimeMoldEncoder's docstring) ---------------


@pytest.mark.parametrize("other", OTHER_MASK_DTYPES, ids=str)
@pytest.mark.parametrize("name", ["mask", "src_key_padding_mask"])
def test_a_float_mask_of_any_dtype_is_cast_to_the_inputs(name, other):
    theirs, ours = build({})
    theirs.eval()
    x = source(4, 3, False, False, torch.float32)
    shape = (4, 4) if name == "mask" else (3, 4)
    mask = torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(other)
    with pytest.raises(RuntimeError, match="attn_mask dtype"):  # torch refuses it alone
        theirs(x, **{name: mask})
    want = theirs(x, **{name: mask.float()})
    torch.testing.assert_close(ours(x, **{name: mask}), want, atol=1e-5, rtol=1e-4)


def test_the_causal_hint_still_needs_a_mask_of_a_masks_shape():
    theirs, ours = build({})
    theirs.eval()
    x = source(4, 3, False, False, torch.float32)
    longer = nn.Transformer.generate_square_subsequent_mask(6)  # made for a longer sequence
    assert theirs(x, mask=longer, is_causal=True).shape == x.shape  # torch drops it unread
    with pytest.raises(RuntimeError):  # and reads it beside a padding mask
        theirs(x, mask=longer, is_causal=True, src_key_padding_mask=torch.zeros(3, 4))
    for padding in (None, torch.zeros(3, 4)):
        with pytest.raises(KernelError, match=r"^src_mask must be \(4, 4\)"):
            ours(x, mask=longer, is_causal=True, src_key_padding_mask=padding)
