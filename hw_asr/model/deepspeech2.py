"""DeepSpeech2: D. Amodei et al., "Deep Speech 2: End-to-End Speech Recognition in
English and Mandarin", ICML 2016 (arXiv:1512.02595).

Two 2-D convolutions over (frequency, time) -- 32 channels, kernels (41, 11) and
(21, 11), strides (2, 2) and (2, 1), clipped ReLU -- then a stack of bidirectional
GRU or LSTM layers with batch (sequence-wise) or layer normalisation, and a
normalised linear CTC head. Padded frames are zeroed after every convolution and
left out of every normalisation, so an utterance's output does not depend on its
batch neighbours in eval mode.
"""

from torch import Tensor, nn

from hw_asr.model.base_model import CTCModel, lengths_to_mask, masked_apply
from hw_asr.model.rnn import MaskedBiRNN


def _conv_out(size: int | Tensor, kernel: int, stride: int, padding: int) -> int | Tensor:
    return (size + 2 * padding - kernel) // stride + 1


class RecurrentLayer(nn.Module):
    """[norm] -> bidirectional RNN (directions summed or concatenated) -> [residual]."""

    def __init__(
        self,
        input_size: int,
        hidden: int,
        rnn_type: str,
        bidirectional: bool,
        sum_directions: bool,
        norm: str | None,
        residual: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm, None: None}[norm]
        self.norm = self.norm(input_size) if self.norm else None
        self.rnn = MaskedBiRNN(input_size, hidden, rnn_type, bidirectional, sum_directions)
        self.output_size = self.rnn.output_size
        self.residual = residual and self.output_size == input_size
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor, mask: Tensor) -> Tensor:
        inp = x
        if self.norm is not None:
            x = masked_apply(self.norm, x, mask)
        x = self.dropout(self.rnn(x, lengths, mask))
        return x + inp if self.residual else x


class DeepSpeech2(CTCModel):
    """Sizes come from the config: ``rnn_layers`` x ``rnn_hidden`` GRU/LSTM cells.

    ``deepspeech2_large`` (configs/arch) is deepspeech.pytorch's shape: 161-bin
    spectrogram, convs with bias, 5 bidirectional LSTM layers of 1024 with summed
    directions: 86,618,400 parameters with a 29-symbol vocabulary.
    """

    def __init__(
        self,
        n_tokens: int,
        frontend: nn.Module | None = None,
        spec_augment: nn.Module | None = None,
        conv_channels: int = 32,
        rnn_type: str = "gru",
        rnn_hidden: int = 512,
        rnn_layers: int = 5,
        bidirectional: bool = True,
        sum_directions: bool = False,
        rnn_norm: str | None = "batch",
        residual: bool = False,
        dropout: float = 0.0,
        conv_bias: bool = False,
    ) -> None:
        super().__init__(n_tokens, frontend, spec_augment)
        c = conv_channels
        self.convs = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(1, c, (41, 11), stride=(2, 2), padding=(20, 5), bias=conv_bias),
                    nn.BatchNorm2d(c),
                    nn.Hardtanh(0, 20, inplace=True),
                ),
                nn.Sequential(
                    nn.Conv2d(c, c, (21, 11), stride=(2, 1), padding=(10, 5), bias=conv_bias),
                    nn.BatchNorm2d(c),
                    nn.Hardtanh(0, 20, inplace=True),
                ),
            ]
        )
        freq = _conv_out(_conv_out(self.frontend.n_features, 41, 2, 20), 21, 2, 10)
        size = c * freq
        layers = []
        for i in range(rnn_layers):
            layer = RecurrentLayer(
                size,
                rnn_hidden,
                rnn_type,
                bidirectional,
                sum_directions,
                norm=None if i == 0 else rnn_norm,
                residual=residual,
                dropout=dropout,
            )
            layers.append(layer)
            size = layer.output_size
        self.rnns = nn.ModuleList(layers)
        self.head_norm = nn.LayerNorm(size) if rnn_norm == "layer" else nn.BatchNorm1d(size)
        self.head = nn.Linear(size, n_tokens, bias=False)

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = feats.unsqueeze(1)  # [B, 1, F, T]
        lengths = _conv_out(lengths, 11, 2, 5)  # time stride 2, then 1
        for conv in self.convs:
            x = conv(x)
            x = x * lengths_to_mask(lengths, x.shape[-1])[:, None, None, :].to(x.dtype)
        x = x.flatten(1, 2).transpose(1, 2)  # [B, T', C * F']
        mask = lengths_to_mask(lengths, x.shape[1])
        for rnn in self.rnns:
            x = rnn(x, lengths, mask)
        return self.head(masked_apply(self.head_norm, x, mask)), lengths
