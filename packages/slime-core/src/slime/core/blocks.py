"""The language-model blocks around an organism: a pre-norm residual block as in nanoGPT."""

from __future__ import annotations

from collections.abc import Callable

from slime.core.organism import Organism
from torch import Tensor, nn

__all__ = ["MLP", "Block"]


class MLP(nn.Module):
    """Position-wise feed-forward ``D -> int(mlp_ratio * D) -> D`` with GELU (or ``activation``).

    Args:
        activation: a module or any unary callable (``F.relu``), as ``nn.TransformerEncoderLayer``
            takes.
        dropout: dropout on the output.
        hidden_dropout: dropout on the activations, before the second linear (the site
            ``nn.TransformerEncoderLayer`` calls ``dropout``).
        hidden: the hidden width, when given (else ``int(mlp_ratio * D)``).
    """

    def __init__(
        self,
        n_embd: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        bias: bool = False,
        activation: Callable[[Tensor], Tensor] | None = None,
        hidden: int | None = None,
        device=None,
    ):
        super().__init__()
        hidden = hidden if hidden is not None else int(mlp_ratio * n_embd)
        self.c_fc = nn.Linear(n_embd, hidden, bias=bias, device=device)
        self.act = activation if activation is not None else nn.GELU()
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.c_proj = nn.Linear(hidden, n_embd, bias=bias, device=device)
        self.dropout = nn.Dropout(dropout)

    def __setstate__(self, state: dict) -> None:
        # MLPs pickled whole before the hidden dropout existed had none.
        super().__setstate__(state)
        if "hidden_dropout" not in self._modules:
            self.hidden_dropout = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.hidden_dropout(self.act(self.c_fc(x)))))


class Block(nn.Module):
    """``x + organism(ln_1(x))``, then ``x + mlp(ln_2(x))``; ``norm_first=False`` gives the
    post-norm order of ``nn.TransformerEncoderLayer``'s default instead."""

    def __init__(
        self,
        organism: Organism,
        mlp: MLP,
        *,
        bias: bool = False,
        norm_first: bool = True,
        eps: float = 1e-5,
        device=None,
    ):
        super().__init__()
        width = organism.n_embd
        self.ln_1 = nn.LayerNorm(width, eps=eps, bias=bias, device=device)
        self.attn = organism
        self.ln_2 = nn.LayerNorm(width, eps=eps, bias=bias, device=device)
        self.mlp = mlp
        self.norm_first = norm_first

    def attention_input(self, x: Tensor) -> Tensor:
        """What the organism sees of the residual stream ``x``."""
        return self.ln_1(x) if self.norm_first else x

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = True,
        key_padding_mask: Tensor | None = None,
        head_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """``(B, T, D) -> (B, T, D)``; ``key_padding_mask`` ``(B, T)`` True where visible;
        ``head_mask`` ``(B, P)`` and ``attn_mask`` (additive) as in :meth:`Organism.forward`."""
        masks = {"key_padding_mask": key_padding_mask, "head_mask": head_mask}
        if attn_mask is not None:  # head sharding's forward (slime.train.heads) takes none
            masks["attn_mask"] = attn_mask
        if self.norm_first:
            x = x + self.attn(self.attention_input(x), causal=causal, **masks)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, causal=causal, **masks))
        return self.ln_2(x + self.mlp(x))
