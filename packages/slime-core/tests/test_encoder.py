"""SlimeMoldEncoder and SlimeMoldEncoderLayer: nn.TransformerEncoder's signature, defaults, masks,
initialisation and weights, with organisms for attention."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from slime.core import SlimeMoldEncoder, SlimeMoldEncoderLayer
from slime.proto import ConfigError, KernelError
from torch import nn

# torch's own encoder warns when a layer skips its nested-tensor fast path.
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")

D, H, T, B = 16, 4, 6, 3


def torch_and_slime(seed=0, num_layers=2, norm=False, **layer_options):
    """nn.TransformerEncoder and SlimeMoldEncoder built from the same seed (so equal weights)."""
    layer_options = {"dim_feedforward": 32, "dropout": 0.0, **layer_options}
    norms = [nn.LayerNorm(D) if norm else None for _ in range(2)]
    torch.manual_seed(seed)
    theirs = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(D, H, **layer_options), num_layers, norm=norms[0]
    )
    torch.manual_seed(seed)
    ours = SlimeMoldEncoder(SlimeMoldEncoderLayer(D, H, **layer_options), num_layers, norm=norms[1])
    return theirs, ours


def source(batch_first=False, seed=1):
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(seed))
    return x if batch_first else x.transpose(0, 1).contiguous()


# -- signature and defaults -----------------------------------------------------------------------


def torch_parameters(ours, theirs):
    """``ours``' parameters up to where ``theirs`` ends, beside ``theirs``."""
    mine = [(p.name, p.default) for p in inspect.signature(ours).parameters.values()]
    torch_ones = [(p.name, p.default) for p in inspect.signature(theirs).parameters.values()]
    return mine[: len(torch_ones)], torch_ones


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (SlimeMoldEncoderLayer.__init__, nn.TransformerEncoderLayer.__init__),
        (SlimeMoldEncoderLayer.forward, nn.TransformerEncoderLayer.forward),
        (SlimeMoldEncoder.__init__, nn.TransformerEncoder.__init__),
        (SlimeMoldEncoder.forward, nn.TransformerEncoder.forward),
    ],
    ids=["layer", "layer.forward", "encoder", "encoder.forward"],
)
def test_signatures_and_defaults_are_torchs(ours, theirs):
    mine, torch_ones = torch_parameters(ours, theirs)
    assert mine == torch_ones


def test_the_encoder_takes_a_layer_positionally_with_norm_and_torchs_flags():
    layer = SlimeMoldEncoderLayer(D, H, 32, 0.0, F.relu)
    enc = SlimeMoldEncoder(layer, 2, nn.LayerNorm(D), enable_nested_tensor=False, mask_check=False)
    assert len(enc.layers) == 2 and isinstance(enc.norm, nn.LayerNorm)
    assert enc(source()).shape == (T, B, D)


def test_layers_are_independent_organisms_sharing_only_injected_dependencies():
    gen = torch.Generator().manual_seed(0)
    enc = SlimeMoldEncoder(SlimeMoldEncoderLayer(D, H, 32, pod_capacity=H + 1, generator=gen), 3)
    first, second = enc.organisms[0], enc.organisms[1]
    assert [o.name for o in enc.organisms] == ["encoder0", "encoder1", "encoder2"]
    assert first.qkv_weight.data_ptr() != second.qkv_weight.data_ptr()
    assert first.tube_trace.data_ptr() != second.tube_trace.data_ptr()
    assert first.archive is not second.archive and first.chemotaxis.archive is first.archive
    assert first.kernel is second.kernel and first.generator is gen is second.generator
    torch.testing.assert_close(first.qkv_weight, second.qkv_weight)  # deep copies, as torch
    first.spawn()
    assert first.live_slots() == [0, 1, 2, 3, 4] and second.live_slots() == [0, 1, 2, 3]


def test_string_and_callable_activations_are_taken_as_torch_takes_them():
    for activation in ("relu", "gelu", F.silu, nn.Tanh()):
        layer = SlimeMoldEncoderLayer(D, H, 32, 0.0, activation)
        assert layer(source()).shape == (T, B, D)
    with pytest.raises(ConfigError, match="activation"):
        SlimeMoldEncoderLayer(D, H, activation="swish")


def test_a_torch_layer_is_refused_with_the_way_to_convert_it():
    with pytest.raises(ConfigError, match="from_torch"):
        SlimeMoldEncoder(nn.TransformerEncoderLayer(D, H), 2, enable_nested_tensor=False)


def test_heads_must_divide_the_width_and_layers_be_at_least_one():
    with pytest.raises(ConfigError, match="nhead"):
        SlimeMoldEncoderLayer(10, 4)
    with pytest.raises(ConfigError, match="num_layers"):
        SlimeMoldEncoder(SlimeMoldEncoderLayer(D, H), 0)


def test_parameters_and_dropout_sites_are_torchs():
    theirs, ours = torch_and_slime(dropout=0.3, dim_feedforward=37)
    assert ours.layers[0].block.mlp.c_fc.out_features == 37
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    layer = ours.layers[0]
    org, mlp = layer.organism, layer.block.mlp
    assert (org.attn_dropout, org.dropout.p, mlp.hidden_dropout.p, mlp.dropout.p) == (0.3,) * 4


def test_dtype_and_device_place_the_parameters():
    layer = SlimeMoldEncoderLayer(D, H, 32, device="cpu", dtype=torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert layer(source().double()).dtype == torch.float64


def test_build_keeps_the_one_call_constructor_batch_first():
    enc = SlimeMoldEncoder.build(D, H, 2, 32, dropout=0.0, generator=torch.Generator())
    assert enc.layers[0].batch_first and len(enc.layers) == 2
    assert enc(torch.randn(B, T, D)).shape == (B, T, D)


# -- initialisation -------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
def test_a_seeded_construction_draws_torchs_weights(bias):
    theirs, ours = torch_and_slime(bias=bias)
    x = source()
    assert torch.equal(ours(x), theirs(x))
    after = torch.randn(3)
    torch_and_slime(bias=bias)  # both constructions leave the global stream at the same place
    assert torch.equal(torch.randn(3), after)


def test_a_generator_seeds_the_whole_layer_without_the_global_stream():
    def build():
        return SlimeMoldEncoderLayer(D, H, 32, generator=torch.Generator().manual_seed(4))

    a, b = build(), build()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


# -- masks ----------------------------------------------------------------------------------------


def sliding_window(width=2):
    pos = torch.arange(T)
    return (pos[None, :] - pos[:, None]).abs() > width  # True = not allowed


def per_head(dtype):
    g = torch.Generator().manual_seed(2)
    if dtype == torch.bool:
        mask = torch.rand(B * H, T, T, generator=g) < 0.4
        return mask & ~torch.eye(T, dtype=torch.bool)  # every query sees itself
    return torch.randn(B * H, T, T, generator=g)


def padding(dtype):
    pad = torch.zeros(B, T, dtype=torch.bool)
    pad[1, 4:] = True
    pad[2, 5:] = True
    if dtype == torch.bool:
        return pad
    return torch.zeros(B, T).masked_fill(pad, -math.inf)


MASKS = {
    "none": lambda: {},
    "bool causal": lambda: {"mask": sliding_window(T).logical_not().triu(1)},
    "float causal": lambda: {"mask": nn.Transformer.generate_square_subsequent_mask(T)},
    "float causal, is_causal": lambda: {
        "mask": nn.Transformer.generate_square_subsequent_mask(T),
        "is_causal": True,
    },
    "bool padding": lambda: {"src_key_padding_mask": padding(torch.bool)},
    "float padding": lambda: {"src_key_padding_mask": padding(torch.float)},
    "float padding biases": lambda: {"src_key_padding_mask": torch.randn(B, T)},
    "float causal and float padding": lambda: {
        "mask": nn.Transformer.generate_square_subsequent_mask(T),
        "src_key_padding_mask": padding(torch.float),
    },
    "bool causal and padding": lambda: {
        "mask": sliding_window(T).logical_not().triu(1),
        "src_key_padding_mask": padding(torch.bool),
    },
    "sliding window": lambda: {"mask": sliding_window()},
    "sliding window and padding": lambda: {
        "mask": sliding_window(),
        "src_key_padding_mask": padding(torch.bool),
    },
    "float additive": lambda: {"mask": torch.randn(T, T)},
    "float additive and float padding": lambda: {
        "mask": torch.randn(T, T),
        "src_key_padding_mask": padding(torch.float),
    },
    "per-head bool": lambda: {"mask": per_head(torch.bool)},
    "per-head float": lambda: {"mask": per_head(torch.float)},
}


def assert_same_where_not_padded(got, expected, masks, batch_first):
    """Padded positions are left out: torch's inference fast path writes zeros there."""
    pad = masks.get("src_key_padding_mask")
    if pad is None:
        keep = torch.ones(B, T, dtype=torch.bool)
    else:
        keep = ~pad if pad.dtype == torch.bool else pad.isfinite()
    if not batch_first:
        got, expected = got.transpose(0, 1), expected.transpose(0, 1)
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", list(MASKS))
def test_every_mask_torch_takes_gives_torchs_output(kind, training):
    theirs, ours = torch_and_slime()
    theirs.train(training)
    ours.train(training)
    masks = MASKS[kind]()
    x = source()
    with torch.set_grad_enabled(training):
        expected = theirs(x, **masks)
        got = ours(x, **masks)
    assert_same_where_not_padded(got, expected, masks, batch_first=False)


def test_the_causal_hint_without_a_mask_is_refused_as_torch_refuses_it():
    _, ours = torch_and_slime()
    with pytest.raises(KernelError, match="is_causal"):
        ours(source(), is_causal=True)
    with pytest.raises(KernelError, match="is_causal"):
        ours.layers[0](source(), is_causal=True)


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ({"mask": torch.zeros(T, T, dtype=torch.long)}, "bool or floating"),
        ({"mask": torch.zeros(T + 1, T)}, r"src_mask must be \(6, 6\)"),
        ({"mask": torch.zeros(B * H + 1, T, T)}, "src_mask must be"),
        ({"mask": torch.zeros(1, 1, T, T)}, "src_mask must be"),
        ({"src_key_padding_mask": torch.zeros(B, T + 1, dtype=torch.bool)}, "padding_mask"),
        ({"src_key_padding_mask": torch.zeros(B, T, dtype=torch.long)}, "bool or floating"),
    ],
)
def test_masks_of_the_wrong_dtype_or_shape_are_refused(masks, match):
    _, ours = torch_and_slime()
    with pytest.raises(KernelError, match=match):
        ours(source(), **masks)


def test_per_head_masks_with_spare_slots_need_one_mask_per_slot():
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(D, H, 32, 0.0)
    ours = SlimeMoldEncoderLayer.from_torch(theirs, pod_capacity=H + 2)
    heads = per_head(torch.float)
    with pytest.raises(KernelError, match="per sample and slot"):
        ours(source(), src_mask=heads)
    slots = torch.zeros(B, H + 2, T, T)
    slots[:, :H] = heads.view(B, H, T, T)
    got = ours(source(), src_mask=slots.view(B * (H + 2), T, T))
    torch.testing.assert_close(got, theirs(source(), src_mask=heads), atol=1e-5, rtol=1e-4)


def test_unbatched_input_is_taken_as_torch_takes_it():
    theirs, ours = torch_and_slime()
    x = torch.randn(T, D)
    pad = torch.zeros(T)
    pad[4:] = -math.inf
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    expected = theirs(x, mask=mask, src_key_padding_mask=pad)
    got = ours(x, mask=mask, src_key_padding_mask=pad)
    torch.testing.assert_close(got[:4], expected[:4], atol=1e-5, rtol=1e-4)


def test_seq_first_and_batch_first_layouts_agree():
    _, seq_first = torch_and_slime()
    _, batch_first = torch_and_slime(batch_first=True)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    x = source(batch_first=True)
    torch.testing.assert_close(
        batch_first(x, mask=mask),
        seq_first(x.transpose(0, 1), mask=mask).transpose(0, 1),
    )


# -- from_torch -----------------------------------------------------------------------------------


OPTIONS = [
    dict(batch_first=bf, norm_first=nf, norm=norm, activation=act, bias=bias)
    for bf in (False, True)
    for nf in (False, True)
    for norm in (False, True)
    for act in ("relu", "gelu", F.silu)
    for bias in (False, True)
]


def option_id(o):
    act = o["activation"] if isinstance(o["activation"], str) else o["activation"].__name__
    flags = [k for k in ("batch_first", "norm_first", "norm", "bias") if o[k]]
    return "-".join([act, *flags])


@pytest.mark.parametrize("options", OPTIONS, ids=[option_id(o) for o in OPTIONS])
def test_from_torch_computes_what_the_torch_encoder_computes(options):
    options = dict(options)
    norm = options.pop("norm")
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(D, H, 32, 0.0, **options)
    theirs = nn.TransformerEncoder(
        layer, 2, norm=nn.LayerNorm(D, bias=options["bias"]) if norm else None
    )
    with torch.no_grad():  # make the layers differ, as after training
        for p in theirs.layers[1].parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = SlimeMoldEncoder.from_torch(theirs)
    x = source(options["batch_first"]).requires_grad_()
    masks = {"mask": sliding_window(), "src_key_padding_mask": padding(torch.bool)}
    for training in (True, False):
        theirs.train(training)
        ours.train(training)
        with torch.set_grad_enabled(training):
            expected, got = theirs(x, **masks), ours(x, **masks)
        assert_same_where_not_padded(got, expected, masks, options["batch_first"])
    (grad_theirs,) = torch.autograd.grad(theirs.train()(x, **masks).square().sum(), x)
    (grad_ours,) = torch.autograd.grad(ours.train()(x, **masks).square().sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_one_seed_drops_what_torch_drops_at_every_dropout_site(batch_first, norm_first):
    theirs, ours = torch_and_slime(dropout=0.2, batch_first=batch_first, norm_first=norm_first)
    x = source(batch_first).requires_grad_()
    mask = nn.Transformer.generate_square_subsequent_mask(T)  # a float mask: the masked path
    for kwargs in ({}, {"mask": mask}):
        torch.manual_seed(5)
        expected = theirs(x, **kwargs)
        torch.manual_seed(5)
        got = ours(x, **kwargs)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.equal(ours.eval()(x), got)  # dropout was on


def test_from_torch_takes_each_dropout_rate():
    layer = nn.TransformerEncoderLayer(D, H, 32, 0.1)
    layer.self_attn.dropout, layer.dropout1.p, layer.dropout.p, layer.dropout2.p = (
        0.1,
        0.2,
        0.3,
        0.4,
    )
    ours = SlimeMoldEncoderLayer.from_torch(layer)
    org, mlp = ours.organism, ours.block.mlp
    assert (org.attn_dropout, org.dropout.p, mlp.hidden_dropout.p, mlp.dropout.p) == (
        0.1,
        0.2,
        0.3,
        0.4,
    )


def test_from_torch_refuses_attention_without_a_pod_layout():
    layer = nn.TransformerEncoderLayer(D, H)
    layer.self_attn = nn.MultiheadAttention(D, H, add_bias_kv=True)
    with pytest.raises(ConfigError, match="bias_k"):
        SlimeMoldEncoderLayer.from_torch(layer)


# -- inside a user's module -----------------------------------------------------------------------


class Classifier(nn.Module):
    """A user's module with the encoder inside: classify whether token 0 equals the last token."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(4, D)
        self.pos = nn.Parameter(torch.randn(T, D) * 0.1)
        layer = SlimeMoldEncoderLayer(D, H, 32, 0.0, batch_first=True)
        self.encoder = SlimeMoldEncoder(layer, 2)
        self.head = nn.Linear(D, 2)

    def forward(self, idx):
        return self.head(self.encoder(self.embed(idx) + self.pos)[:, -1])


def test_encoder_trains_inside_a_users_module():
    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(250):
        idx = torch.randint(0, 4, (32, T), generator=g)
        y = (idx[:, 0] == idx[:, -1]).long()
        loss = nn.functional.cross_entropy(model(idx), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.1  # chance level is ln 2 = 0.69


# -- careless and hostile arguments ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((D, "2"), {}, "nhead"),  # TypeError
        ((D, 2.0), {}, "nhead"),  # named pod_capacity
        ((D, H, -1), {}, "dim_feedforward"),  # RuntimeError: negative dimension
        ((D, H, 32.5), {}, "dim_feedforward"),  # TypeError
        ((D, H, 32, 1.5), {}, "dropout"),  # named attn_dropout
        ((D, H, 32, 0.1, 5), {}, "activation"),  # taken; TypeError in forward
        ((D, H), {"layer_norm_eps": -1.0}, "layer_norm_eps"),  # NaN outputs
        ((D, H), {"layer_norm_eps": "a"}, "layer_norm_eps"),  # taken; TypeError in forward
        ((D, H), {"dtype": "float64"}, "dtype"),  # RuntimeError: invalid device string
        ((D, H), {"dtype": torch.int64}, "dtype"),  # TypeError from nn.Module.to
        ((D, H), {"foo": 1}, "organism_options"),  # TypeError naming Organism.__init__
        ((D, H), {"device": "meta"}, "device"),  # Tensor.item() on meta tensors
    ],
)
def test_layer_arguments_torch_would_fail_on_later_are_named(args, kwargs, field):
    with pytest.raises(ConfigError, match=f"^{field}: "):
        SlimeMoldEncoderLayer(*args, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_layers": 2.0}, "num_layers"), ({"num_layers": True}, "num_layers"),
     ({"num_layers": "2"}, "num_layers"), ({"num_layers": 1, "norm": 5}, "norm")],
)  # fmt: skip
def test_encoder_arguments_of_the_wrong_type_are_named(kwargs, field):
    # a float and a string raised TypeError, True built one layer, norm=5 failed in forward
    with pytest.raises(ConfigError, match=f"^{field}: "):
        SlimeMoldEncoder(SlimeMoldEncoderLayer(D, H, 32), **kwargs)


@pytest.mark.parametrize(
    "convert",
    [
        lambda: SlimeMoldEncoder.from_torch(nn.TransformerEncoderLayer(D, H)),
        lambda: SlimeMoldEncoderLayer.from_torch(nn.Linear(D, D)),
        lambda: SlimeMoldEncoderLayer(D, H, 32).copy_torch_weights(nn.Linear(D, D)),
    ],
    ids=["encoder from a layer", "layer from a linear", "weights from a linear"],
)
def test_converting_what_is_no_torch_encoder_is_named(convert):
    with pytest.raises(ConfigError, match="expected an nn.TransformerEncoder"):  # AttributeError
        convert()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda enc, x: enc(x.tolist()), "src must be a 2-D .* tensor"),  # AttributeError
        (lambda enc, x: enc(x.double()), "stimulus has dtype torch.float64"),  # RuntimeError
        (lambda enc, x: enc(x, mask=[[0.0] * T] * T), "mask must be a tensor"),
        (lambda enc, x: enc(x, src_key_padding_mask=[[False] * T] * B), "padding_mask must be a"),
        (lambda enc, x: enc(x[0], src_key_padding_mask=[False] * T), "padding_mask must be a"),
        (lambda enc, x: enc(x, mask=torch.full((T, T), math.nan)), r"^mask holds nan at \(0, 0\)"),
        (lambda enc, x: enc(x, mask=torch.zeros(T, T), is_causal="False"), "is_causal must be"),
        (lambda enc, x: enc.layers[0](x, torch.zeros(T, T), None, "False"), "is_causal must be"),
    ],
    ids=["src list", "src float64", "mask list", "padding list", "unbatched padding list",
         "nan mask", "is_causal string", "layer is_causal string"],
)  # fmt: skip
def test_forward_inputs_of_the_wrong_type_are_a_kernel_error_naming_them(call, match):
    # the layer read "False" as a causal hint (torch reads it as no hint)
    enc = SlimeMoldEncoder(SlimeMoldEncoderLayer(D, H, 32, 0.0, norm_first=True), 2)
    with pytest.raises(KernelError, match=match):
        call(enc, source())


def _nan_at(row, col):
    mask = torch.zeros(T, T)
    mask[row, col] = math.nan
    return mask


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda enc, x: enc(x, mask=_nan_at(2, 1)), r"^mask holds nan at \(2, 1\)"),
        (lambda enc, x: enc(x, mask=_nan_at(2, 1), is_causal=False), r"^mask holds nan at \(2, 1\)"),
        (lambda enc, x: enc(x, src_key_padding_mask=torch.full((B, T), math.inf)),
         r"^src_key_padding_mask holds inf at \(0, 0\)"),
        (lambda enc, x: enc.layers[0](x, _nan_at(2, 1)), r"^src_mask holds nan at \(2, 1\)"),
    ],
    ids=["encoder mask", "encoder mask not causal", "encoder float padding", "layer src_mask"],
)  # fmt: skip
def test_a_nan_or_inf_mask_is_named_as_the_caller_passed_it(call, match):
    # each was named attn_mask, at a (B, P, T, T) position the caller never wrote
    enc = SlimeMoldEncoder(SlimeMoldEncoderLayer(D, H, 32, 0.0, norm_first=True), 2)
    with pytest.raises(KernelError, match=match):
        call(enc, source())


@pytest.mark.parametrize("batch_first", [False, True])
def test_an_empty_batch_or_sequence_gives_an_empty_output_as_torch(batch_first):
    theirs, ours = torch_and_slime(batch_first=batch_first)
    theirs.eval()  # torch's training path; the nested-tensor fast path refuses empty batches
    for shape in [(0, T, D), (B, 0, D)]:
        x = torch.randn(shape if batch_first else (shape[1], shape[0], D))
        assert ours(x).shape == theirs(x).shape == x.shape  # KernelError about q before
