"""A tiny conv + GRU CTC model for quick checks (not a published architecture)."""

import torch
from torch import nn

from hw_asr.model.base_model import CTCModel, lengths_to_mask
from hw_asr.model.rnn import MaskedBiRNN


class BaselineModel(CTCModel):
    """Conv1d (stride 2) -> one bidirectional GRU -> linear head."""

    def __init__(
        self, n_tokens: int, hidden: int = 128, frontend: nn.Module | None = None, spec_augment: nn.Module | None = None
    ) -> None:
        super().__init__(n_tokens, frontend, spec_augment)
        self.conv = nn.Sequential(nn.Conv1d(self.frontend.n_features, hidden, 5, stride=2, padding=2), nn.ReLU())
        self.rnn = MaskedBiRNN(hidden, hidden, "gru")
        self.head = nn.Linear(self.rnn.output_size, n_tokens)

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(feats).transpose(1, 2)
        lengths = (lengths - 1) // 2 + 1
        return self.head(self.rnn(x, lengths, lengths_to_mask(lengths, x.shape[1]))), lengths
