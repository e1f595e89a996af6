"""Learning: a copy task that needs attention is learned on CPU, by slime and by a plain baseline.

The second half of each sequence repeats the first: predicting it needs each position to attend
``N`` tokens back, which no position-wise model can do.
"""

import torch
from slime.core import SlimeConfig, SlimeModel
from torch import nn

N, VOCAB = 8, 10
SEP = VOCAB


def copy_batch(g, b=32):
    """idx ``(b, 2N)``: x, SEP, x[:-1]; targets: -1 on the first half, x on the second."""
    x = torch.randint(0, VOCAB, (b, N), generator=g)
    idx = torch.cat([x, torch.full((b, 1), SEP), x[:, :-1]], 1)
    targets = torch.cat([torch.full((b, N), -1), x], 1)
    return idx, targets


def copy_accuracy(logits_of, g):
    idx, targets = copy_batch(g, 256)
    with torch.no_grad():
        pred = logits_of(idx).argmax(-1)
    return (pred[:, N:] == targets[:, N:]).float().mean().item()


def train_until(model, logits_of, *, steps=400, target=0.98):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        idx, targets = copy_batch(g)
        logits = logits_of(idx)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            accuracy = copy_accuracy(logits_of, torch.Generator().manual_seed(99))
            if accuracy >= target:
                return accuracy
    return accuracy


def test_slime_learns_the_copy_task(kernel):
    cfg = SlimeConfig(vocab_size=VOCAB + 1, block_size=2 * N, n_layer=2, n_embd=32, n_pods=4)
    model = SlimeModel(cfg, kernel=kernel, generator=torch.Generator().manual_seed(0))
    assert train_until(model, lambda idx: model(idx)[0]) >= 0.98


class PlainLM(nn.Module):
    """The baseline: a causal LM from torch's own encoder layers (pre-norm, same sizes)."""

    def __init__(self, width=32, heads=4, layers=2):
        super().__init__()
        self.tok = nn.Embedding(VOCAB + 1, width)
        self.pos = nn.Embedding(2 * N, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, 0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, VOCAB + 1)

    def forward(self, idx):
        seq = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(seq))
        mask = nn.Transformer.generate_square_subsequent_mask(seq)
        return self.head(self.blocks(x, mask=mask, is_causal=True))


def test_plain_baseline_learns_the_same_task():
    torch.manual_seed(0)
    model = PlainLM()
    assert train_until(model, model) >= 0.98
