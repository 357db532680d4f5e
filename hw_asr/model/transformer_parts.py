"""Pieces shared by the attention encoders (Conformer, E-Branchformer)."""

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from hw_asr.model.frontend import lengths_to_mask


def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """``[len(positions), dim]`` sinusoids of Vaswani et al. (2017) for (possibly negative) positions."""
    positions = positions.float().unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions.shape[0], dim, device=positions.device)
    table[:, 0::2] = torch.sin(positions * div)
    table[:, 1::2] = torch.cos(positions * div)
    return table


def sinusoid_table(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoids for positions 0 .. length-1."""
    return sinusoids(torch.arange(length, device=device), dim)


class SinusoidalPositions(nn.Module):
    """Adds ``pe[t]`` to frame ``t`` (the same for every utterance of a batch).

    The table is a non-persistent buffer (no parameters, nothing in checkpoints)
    and grows when a longer input arrives.
    """

    def __init__(self, dim: int, dropout: float = 0.0, max_len: int = 5000) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("table", sinusoid_table(max_len, dim), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] > self.table.shape[0]:
            self.table = sinusoid_table(x.shape[1], self.dim, x.device)
        return self.dropout(x + self.table[: x.shape[1]].to(x.dtype))


class FeedForward(nn.Module):
    """LayerNorm -> Linear -> Swish -> Dropout -> Linear -> Dropout (the macaron halves)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def zero_padding(x: Tensor, mask: Tensor) -> Tensor:
    """``x [B, T, C]`` with frames where ``mask [B, T]`` is False set to 0."""
    return x * mask.unsqueeze(-1).to(x.dtype)


def run_encoder(
    subsampling: nn.Module,
    positions: nn.Module,
    layers: Iterable[nn.Module],
    feats: Tensor,
    lengths: Tensor,
    shared: Callable[[Tensor], dict] | None = None,
    taps: Sequence[int] = (),
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Subsample, add positions, run the layers with the padding mask: ``(x [B, T', D], lengths, tapped)``.

    ``shared(x)``, if given, returns keyword arguments for every layer that depend on the batch alone
    (the relative-position sinusoids): computed once per batch instead of once per layer. ``taps``:
    1-based layer numbers whose outputs are returned in ``tapped`` (intermediate CTC), in that order."""
    x, lengths = subsampling(feats, lengths)
    mask = lengths_to_mask(lengths, x.shape[1])
    x = zero_padding(positions(x), mask)
    extra = shared(x) if shared is not None else {}
    tapped = {}
    for i, layer in enumerate(layers, start=1):
        x = layer(x, mask, **extra)
        if i in taps:
            tapped[i] = x
    return x, lengths, [tapped[i] for i in taps]


def check_taps(taps: Iterable[int] | None, layers: int) -> tuple[int, ...]:
    """``inter_ctc_layers``: distinct layer numbers 1 .. layers - 1."""
    taps = tuple(taps or ())
    if any(not isinstance(i, int) or not 1 <= i < layers for i in taps) or len(set(taps)) != len(taps):
        raise ValueError(f"inter_ctc_layers must be distinct layer numbers from 1 to {layers - 1}, got {list(taps)}")
    return taps
