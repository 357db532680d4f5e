"""Bidirectional RNN over padded batches without packed sequences.

Packed sequences make the backward pass several times slower on CPU. Instead the
forward direction runs over the padded batch as is (padding comes after the real
frames, so it cannot reach them) and the backward direction runs over each
utterance reversed within its own length. Outputs on real frames are therefore
exactly those of the utterance alone; padded frames are set to zero.
"""

from typing import Any

import torch
from torch import Tensor, nn


def _reversal_index(x: Tensor, lengths: Tensor) -> Tensor:
    """``[B, T, C]`` gather index that reverses each row's first ``lengths[b]`` frames (padding stays)."""
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    n = lengths.to(x.device).unsqueeze(1)
    return torch.where(t < n, n - 1 - t, t).unsqueeze(-1).expand_as(x)


class _ReverseWithinLength(torch.autograd.Function):
    """The reversal is a permutation that is its own inverse, so its gradient is the same gather.
    Autograd's generic gather backward would scatter-add into zeros instead: an atomic (non-
    deterministic) kernel on CUDA and an autocast "promote" op, where a gather is neither."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lengths: Tensor) -> Tensor:
        index = _reversal_index(x, lengths)
        ctx.save_for_backward(index)
        return x.gather(1, index)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.gather(1, index), None


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse ``x [B, T, C]`` along time inside each row's first ``lengths[b]`` frames."""
    return _ReverseWithinLength.apply(x, lengths)


class MaskedBiRNN(nn.Module):
    """GRU or LSTM, one or two directions; directions concatenated or summed."""

    def __init__(
        self,
        input_size: int,
        hidden: int,
        rnn_type: str = "gru",
        bidirectional: bool = True,
        sum_directions: bool = False,
    ) -> None:
        super().__init__()
        if rnn_type not in ("gru", "lstm"):
            raise ValueError(f"rnn_type must be 'gru' or 'lstm', got {rnn_type!r}")
        rnn_cls = nn.GRU if rnn_type == "gru" else nn.LSTM
        self.forward_rnn = rnn_cls(input_size, hidden, batch_first=True)
        self.backward_rnn = rnn_cls(input_size, hidden, batch_first=True) if bidirectional else None
        self.sum_directions = sum_directions
        self.output_size = hidden * (2 if bidirectional and not sum_directions else 1)

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        out, _ = self.forward_rnn(x)
        if self.backward_rnn is not None:
            back, _ = self.backward_rnn(reverse_within_length(x, lengths))
            back = reverse_within_length(back, lengths)
            out = out + back if self.sum_directions else torch.cat([out, back], dim=-1)
        return out * mask.unsqueeze(-1).to(out.dtype)
