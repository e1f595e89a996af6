"""A program written for nn.TransformerEncoder, PyTorch's word-language-model example, runs with
SlimeMoldEncoder by changing the class names: it trains along torch's loss curve, saves whole
with torch.save and deep-copies."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from slime.core import SlimeMoldEncoder, SlimeMoldEncoderLayer
from torch import nn

# torch's own encoder warns that sequence-first layers skip its nested-tensor fast path.
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")

NTOKEN, NINP, NHEAD, NHID, NLAYERS, BPTT, BATCH = 20, 16, 2, 32, 2, 8, 4


class PositionalEncoding(nn.Module):
    """Sinusoidal positions added to ``(T, B, D)`` embeddings, as the example writes them."""

    def __init__(self, d_model, dropout=0.1, max_len=5000):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0).transpose(0, 1)
        self.register_buffer("pe", pe)

    def forward(self, x):
        x = x + self.pe[: x.size(0), :]
        return self.dropout(x)


class TransformerModel(nn.Module):
    """Container module with an encoder, a transformer encoder and a decoder (the example's)."""

    TransformerEncoder = nn.TransformerEncoder
    TransformerEncoderLayer = nn.TransformerEncoderLayer

    def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
        super().__init__()
        self.model_type = "Transformer"
        self.src_mask = None
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        encoder_layers = self.TransformerEncoderLayer(ninp, nhead, nhid, dropout)
        self.transformer_encoder = self.TransformerEncoder(encoder_layers, nlayers)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.ninp = ninp
        self.decoder = nn.Linear(ninp, ntoken)
        self.init_weights()

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, src, has_mask=True):
        if has_mask:
            if self.src_mask is None or self.src_mask.size(0) != len(src):
                mask = nn.Transformer.generate_square_subsequent_mask(len(src)).to(src.device)
                self.src_mask = mask
        else:
            self.src_mask = None
        src = self.encoder(src) * math.sqrt(self.ninp)
        src = self.pos_encoder(src)
        output = self.transformer_encoder(src, self.src_mask)
        output = self.decoder(output)
        return F.log_softmax(output, dim=-1)


class SlimeTransformerModel(TransformerModel):
    """The same program with the two class names changed."""

    TransformerEncoder = SlimeMoldEncoder
    TransformerEncoderLayer = SlimeMoldEncoderLayer


def batches(n, seed=0):
    """``n`` (data, targets) pairs of ``(BPTT, BATCH)`` token ids, the example's layout: counting
    sequences from random starts, so a model can learn them."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, NTOKEN, (n, 1, BATCH), generator=g)
    stream = (starts + torch.arange(BPTT + 1)[None, :, None]) % NTOKEN
    return [(s[:-1], s[1:].reshape(-1)) for s in stream]


def train(model_cls, *, dropout, steps=30, seed=0, lr=0.5):
    """The example's loop (SGD, gradient clipping at 0.25); returns the model and its losses."""
    torch.manual_seed(seed)
    model = model_cls(NTOKEN, NINP, NHEAD, NHID, NLAYERS, dropout)
    model.train()
    losses = []
    for data, targets in batches(steps):
        model.zero_grad()
        output = model(data)
        loss = F.nll_loss(output.view(-1, NTOKEN), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        losses.append(loss.item())
    return model, losses


def test_a_seeded_model_trains_along_torchs_loss_curve_without_dropout():
    _, theirs = train(TransformerModel, dropout=0.0)
    _, ours = train(SlimeTransformerModel, dropout=0.0)
    assert theirs[-1] < theirs[0] - 0.1  # the run learns something
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), atol=1e-4, rtol=1e-4)


def test_with_dropout_a_seeded_model_trains_along_torchs_loss_curve():
    # Every dropout mask is drawn in the memory order of torch's tensor at that site, so one
    # seed drops the same elements (the positional encoding's dropout included).
    _, theirs = train(TransformerModel, dropout=0.2, steps=20)
    _, ours = train(SlimeTransformerModel, dropout=0.2, steps=20)
    torch.testing.assert_close(torch.tensor(ours), torch.tensor(theirs), atol=1e-4, rtol=1e-4)


def test_the_model_saves_whole_with_torch_save_and_keeps_training(tmp_path):
    model, _ = train(SlimeTransformerModel, dropout=0.0, steps=3)
    model.eval()
    data, targets = batches(1, seed=9)[0]
    expected = model(data)
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    torch.testing.assert_close(loaded(data), expected, atol=0, rtol=0)
    loaded.train()
    F.nll_loss(loaded(data).view(-1, NTOKEN), targets).backward()
    assert all(p.grad is not None for p in loaded.transformer_encoder.parameters())


def test_a_deep_copy_computes_the_same_and_trains_apart():
    model, _ = train(SlimeTransformerModel, dropout=0.0, steps=3)
    twin = copy.deepcopy(model)
    data, _ = batches(1, seed=9)[0]
    torch.testing.assert_close(twin(data), model(data), atol=0, rtol=0)
    with torch.no_grad():
        for p in twin.transformer_encoder.parameters():
            p.add_(1.0)
    assert not torch.allclose(twin(data), model(data))
    twin.transformer_encoder.organisms[0].cull([0])
    assert model.transformer_encoder.organisms[0].live_slots() == [0, 1]
