"""QuartzNet: S. Kriman et al., "QuartzNet: Deep Automatic Speech Recognition with
1D Time-Channel Separable Convolutions", ICASSP 2020 (arXiv:1910.10261).

QuartzNet BxR: a prologue C1, B blocks (five kinds, each repeated B/5 times) of R
sub-blocks, and an epilogue C2 (dilated), C3 and the 1x1 output convolution.
A sub-block is a time-channel separable convolution -- depthwise over time, then
pointwise over channels -- followed by batch norm and ReLU. Every block adds a
residual: a pointwise convolution and batch norm of its input, summed before the
last ReLU. Padded frames are zeroed before every convolution.

Widths and kernels are the paper's (Table 1); ``conv_bias`` and the C1 stride
(2, or 4 for the 40 ms variant) are the knobs the NeMo and course presets differ in.
"""

import torch
from torch import Tensor, nn

from hw_asr.model.base_model import CTCModel, lengths_to_mask

# (filters, kernel) of the five block kinds B1..B5
BLOCKS = [(256, 33), (256, 39), (512, 51), (512, 63), (512, 75)]


def conv_out_lengths(lengths: Tensor, kernel: int, stride: int, dilation: int) -> Tensor:
    padding = dilation * (kernel - 1) // 2
    return (lengths + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class MaskedConvBN(nn.Module):
    """[separable] Conv1d + BatchNorm; input frames past each length are zeroed first."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        dilation: int = 1,
        separable: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        padding = dilation * (kernel - 1) // 2
        if separable:
            self.conv = nn.Sequential(
                nn.Conv1d(in_ch, in_ch, kernel, stride, padding, dilation, groups=in_ch, bias=bias),
                nn.Conv1d(in_ch, out_ch, 1, bias=bias),
            )
        else:
            self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride, padding, dilation, bias=bias)
        self.norm = nn.BatchNorm1d(out_ch)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = x * lengths_to_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        lengths = conv_out_lengths(lengths, self.kernel, self.stride, self.dilation)
        return self.norm(self.conv(x)), lengths


class QuartzNetBlock(nn.Module):
    """R sub-blocks with ReLU (and dropout) between them; residual added before the last ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        repeat: int,
        bias: bool,
        dropout: float,
        branch_init: float = 1.0,
        identity_residual: bool = False,
    ) -> None:
        super().__init__()
        self.sub_blocks = nn.ModuleList(
            [MaskedConvBN(in_ch if r == 0 else out_ch, out_ch, kernel, bias=bias) for r in range(repeat)]
        )
        self.residual = MaskedConvBN(in_ch, out_ch, 1, separable=False, bias=bias)
        self.act = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        if branch_init != 1.0:
            with torch.no_grad():
                self.sub_blocks[-1].norm.weight.mul_(branch_init)
        if identity_residual:  # output channel j starts as a copy of input channel j mod in_ch
            with torch.no_grad():
                weight = self.residual.conv.weight  # [out_ch, in_ch, 1]
                weight.zero_()
                out_idx = torch.arange(out_ch)
                weight[out_idx, out_idx % in_ch, 0] = 1.0

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out = x
        for i, sub in enumerate(self.sub_blocks):
            out, _ = sub(out, lengths)
            if i < len(self.sub_blocks) - 1:
                out = self.act(out)
        res, _ = self.residual(x, lengths)
        return self.act(out + res), lengths


class QuartzNet(CTCModel):
    """``blocks`` (B, a multiple of 5) x ``repeat`` (R); ``c1_stride`` 2 (20 ms frames) or 4 (40 ms).

    ``branch_init``: factor on the initial scale (batch norm weight) of each block's last sub-block; 0 starts
    every block as its residual path alone (the zero-gamma initialisation of Goyal et al. 2017,
    arXiv:1706.02677). Only the initialisation changes; checkpoints load as before. 1.0 is PyTorch's default
    (batch norm weights at 1), with which QuartzNet 5x5 stayed on CTC's blank plateau (BENCHMARKS.md,
    "Leaving the blank plateau"). (Default: 0.0)

    ``identity_residual``: start each block's residual pointwise convolution as the identity (output channel
    j a copy of input channel j mod the input width) instead of at random. With the branches at 0, the
    residual path is the whole network at initialisation: random pointwise convolutions, each followed by
    batch norm and ReLU, make it a plain deep ReLU network, whose gradient grows by about 1.2x per block
    from the output back to the input (about 17x over QuartzNet 15x5's 15 blocks, 3x over 5x5's 5). The
    identity keeps channels apart and the growth near 2x. Only the initialisation changes. It did not bring
    QuartzNet 15x5 off the blank plateau sooner (BENCHMARKS.md), so the presets leave it off. (Default: False)
    """

    def __init__(
        self,
        n_tokens: int,
        blocks: int = 5,
        repeat: int = 5,
        c1_stride: int = 2,
        conv_bias: bool = False,
        dropout: float = 0.0,
        branch_init: float = 0.0,
        identity_residual: bool = False,
        frontend: nn.Module | None = None,
        spec_augment: nn.Module | None = None,
    ) -> None:
        super().__init__(n_tokens, frontend, spec_augment)
        if blocks % len(BLOCKS):
            raise ValueError(f"blocks must be a multiple of {len(BLOCKS)}, got {blocks}")
        act = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))
        self.c1 = MaskedConvBN(self.frontend.n_features, 256, 33, stride=c1_stride, bias=conv_bias)
        layers, in_ch = [], 256
        for filters, kernel in BLOCKS:
            for _ in range(blocks // len(BLOCKS)):
                layers.append(
                    QuartzNetBlock(in_ch, filters, kernel, repeat, conv_bias, dropout, branch_init, identity_residual)
                )
                in_ch = filters
        self.blocks = nn.ModuleList(layers)
        self.c2 = MaskedConvBN(512, 512, 87, dilation=2, bias=conv_bias)
        self.c3 = MaskedConvBN(512, 1024, 1, separable=False, bias=conv_bias)
        self.act = act
        self.head = nn.Conv1d(1024, n_tokens, 1)

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = self.c1(feats, lengths)
        x = self.act(x)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        for conv in (self.c2, self.c3):
            x, lengths = conv(x, lengths)
            x = self.act(x)
        x = x * lengths_to_mask(lengths, x.shape[-1]).unsqueeze(1).to(x.dtype)
        return self.head(x).transpose(1, 2), lengths
