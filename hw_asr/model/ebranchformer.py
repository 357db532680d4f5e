"""E-Branchformer: K. Kim et al., "E-Branchformer: Branchformer with Enhanced Merging
for Speech Recognition", IEEE SLT 2022 (arXiv:2210.00077).

Each layer: a half-step macaron feed-forward; then two branches in parallel on the
same input -- global (multi-head self-attention) and local (cgMLP: a gated MLP whose
gate is a depthwise convolution over time); the branches are concatenated, a
depthwise convolution over the concatenation is added to it, and a linear layer
projects it back and adds it to the input; a second half-step feed-forward; a final
LayerNorm.

The ``ebranchformer_golos`` preset (configs/arch) is the speech course's Golos model:
64 mels stacked by 4 (256 -> Linear 256), d 256, 8 layers, 4 heads, cgMLP 768 units
with kernel 7 and no linear after the convolution, FFN 512, merge kernel 31, 34
outputs: 9,986,850 trainable parameters. Positions are sinusoids in a buffer, added
per frame (not per batch index).
"""

import torch
from torch import Tensor, nn

from hw_asr.model.base_model import CTCModel
from hw_asr.model.transformer_parts import FeedForward, SinusoidalPositions, run_encoder, zero_padding


class StackingSubsampling(nn.Module):
    """Concatenate ``factor`` consecutive frames and project: ``[B, F, T] -> [B, ceil(T/f), dim]``."""

    def __init__(self, in_features: int, dim: int, factor: int = 4) -> None:
        super().__init__()
        self.factor = factor
        self.proj = nn.Linear(in_features * factor, dim)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = feats.transpose(1, 2)  # [B, T, F]
        steps = (x.shape[1] + self.factor - 1) // self.factor  # no negative modulo: exporters trace it
        x = nn.functional.pad(x, (0, 0, 0, steps * self.factor - x.shape[1]))
        x = x.reshape(x.shape[0], steps, -1)  # [B, T/f, F*f]
        return self.proj(x), (lengths + self.factor - 1) // self.factor


class ConvolutionalSpatialGatingUnit(nn.Module):
    """Split channels in two halves: one passes, the other (normalised, depthwise-convolved) gates it."""

    def __init__(self, channels: int, kernel: int, linear_after_conv: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        half = channels // 2
        self.norm = nn.LayerNorm(half)
        self.conv = nn.Conv1d(half, half, kernel, padding=(kernel - 1) // 2, groups=half)
        self.linear = nn.Linear(half, half) if linear_after_conv else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x_r, x_g = x.chunk(2, dim=-1)
        x_g = zero_padding(self.norm(x_g), mask)
        x_g = self.conv(x_g.transpose(1, 2)).transpose(1, 2)
        if self.linear is not None:
            x_g = self.linear(x_g)
        return self.dropout(x_r * x_g)


class ConvolutionalGatingMLP(nn.Module):
    """cgMLP (Sakuma et al.): Linear up + GELU -> spatial gating unit -> Linear down."""

    def __init__(
        self, dim: int, units: int, kernel: int, linear_after_conv: bool = False, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Sequential(nn.Linear(dim, units), nn.GELU())
        self.gate = ConvolutionalSpatialGatingUnit(units, kernel, linear_after_conv, dropout)
        self.down = nn.Linear(units // 2, dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.down(self.gate(self.up(self.norm(x)), mask))


class EBranchformerLayer(nn.Module):
    """x + FFN/2 -> x + merge(MHSA branch, cgMLP branch) -> x + FFN/2 -> LayerNorm; arguments as
    :class:`EBranchformer`. ``forward(x [B, T, dim], mask [B, T])`` -> ``[B, T, dim]``, padded frames 0."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_units: int,
        cgmlp_units: int,
        cgmlp_kernel: int,
        merge_kernel: int,
        linear_after_conv: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(dim, ffn_units, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cgmlp = ConvolutionalGatingMLP(dim, cgmlp_units, cgmlp_kernel, linear_after_conv, dropout)
        self.merge_conv = nn.Conv1d(2 * dim, 2 * dim, merge_kernel, padding=(merge_kernel - 1) // 2, groups=2 * dim)
        self.merge_proj = nn.Linear(2 * dim, dim)
        self.ff2 = FeedForward(dim, ffn_units, dropout)
        self.final_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        global_branch = self.attn(h, h, h, key_padding_mask=~mask, need_weights=False)[0]
        local_branch = self.cgmlp(x, mask)
        merged = zero_padding(torch.cat([self.dropout(global_branch), self.dropout(local_branch)], dim=-1), mask)
        merged = merged + self.merge_conv(merged.transpose(1, 2)).transpose(1, 2)
        x = x + self.dropout(self.merge_proj(merged))
        x = x + 0.5 * self.ff2(x)
        return zero_padding(self.final_norm(x), mask)


class EBranchformer(CTCModel):
    """E-Branchformer-CTC encoder (see the module docstring).

    Args:
        n_tokens (int): CTC outputs (blank included).
        dim (int, optional): model width. (Default: 256)
        layers (int, optional): E-Branchformer layers. (Default: 8)
        heads (int, optional): attention heads. (Default: 4)
        ffn_units (int, optional): hidden width of the macaron feed-forwards. (Default: 512)
        cgmlp_units (int, optional): hidden width of the cgMLP branch (halved by its gate). (Default: 768)
        cgmlp_kernel (int, optional): depthwise kernel of the cgMLP's gate. (Default: 7)
        merge_kernel (int, optional): depthwise kernel over the concatenated branches. (Default: 31)
        linear_after_conv (bool, optional): a linear layer after the gate's convolution. (Default: False)
        subsampling_factor (int, optional): frames stacked into one (time reduction). (Default: 4)
        dropout (float, optional): dropout in every sub-module and on the positions. (Default: 0.1)
        frontend, spec_augment: see :class:`~hw_asr.model.base_model.CTCModel`.

    ``forward(audio [B, S], audio_length [B])`` -> ``{"log_probs": [B, T', n_tokens], "log_probs_length": [B]}``
    with ``T' = ceil(frames / subsampling_factor)``.
    """

    def __init__(
        self,
        n_tokens: int,
        dim: int = 256,
        layers: int = 8,
        heads: int = 4,
        ffn_units: int = 512,
        cgmlp_units: int = 768,
        cgmlp_kernel: int = 7,
        merge_kernel: int = 31,
        linear_after_conv: bool = False,
        subsampling_factor: int = 4,
        dropout: float = 0.1,
        frontend: nn.Module | None = None,
        spec_augment: nn.Module | None = None,
    ) -> None:
        super().__init__(n_tokens, frontend, spec_augment)
        self.subsampling = StackingSubsampling(self.frontend.n_features, dim, subsampling_factor)
        self.positions = SinusoidalPositions(dim, dropout)
        self.layers = nn.ModuleList(
            [
                EBranchformerLayer(
                    dim, heads, ffn_units, cgmlp_units, cgmlp_kernel, merge_kernel, linear_after_conv, dropout
                )
                for _ in range(layers)
            ]
        )
        self.head = nn.Conv1d(dim, n_tokens, 1)

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths, _ = run_encoder(self.subsampling, self.positions, self.layers, feats, lengths)
        return self.head(x.transpose(1, 2)).transpose(1, 2), lengths
