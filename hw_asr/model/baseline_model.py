"""A tiny conv + GRU CTC model for quick checks (not a published architecture)."""
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from hw_asr.model.base_model import CTCModel


class BaselineModel(CTCModel):
    """Conv1d (stride 2) -> one bidirectional GRU -> linear head."""

    def __init__(self, n_tokens, hidden=128, frontend=None, spec_augment=None):
        super().__init__(n_tokens, frontend, spec_augment)
        self.conv = nn.Sequential(nn.Conv1d(self.frontend.n_features, hidden, 5, stride=2, padding=2), nn.ReLU())
        self.rnn = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, n_tokens)

    def encode(self, feats, lengths):
        x = self.conv(feats).transpose(1, 2)
        lengths = (lengths - 1) // 2 + 1
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        x, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.shape[1])
        return self.head(x), lengths
