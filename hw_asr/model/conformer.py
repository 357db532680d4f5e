"""Conformer: A. Gulati et al., "Conformer: Convolution-augmented Transformer for Speech
Recognition", Interspeech 2020 (arXiv:2005.08100), with a CTC head as NeMo's Conformer-CTC.

Convolutional subsampling by 4 (two 3x3 convolutions of stride 2), then layers of
    half-step feed-forward -> multi-head self-attention -> convolution module
    -> half-step feed-forward -> LayerNorm,
each sub-module pre-normed and residual. The attention uses relative positions
(Transformer-XL, Dai et al. 2019: content and position terms with the learnt biases
u and v), or absolute sinusoids added after subsampling with ``pos_encoding="abs"``.
The convolution module is pointwise (2x, GLU) -> depthwise -> batch/layer norm ->
Swish -> pointwise. Presets S/M/L (configs/arch) follow NeMo's Conformer-CTC sizes.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hw_asr.model.base_model import CTCModel, lengths_to_mask
from hw_asr.model.transformer_parts import (
    FeedForward,
    SinusoidalPositions,
    check_taps,
    run_encoder,
    sinusoids,
    zero_padding,
)


class ConvSubsampling(nn.Module):
    """Convolutional subsampling by ``factor`` (4 or 8) over (time, frequency), then Linear to ``dim``.

    ``depthwise=False`` (Conformer): log2(factor) Conv2d(3x3, stride 2) + ReLU.
    ``depthwise=True`` (FastConformer): one Conv2d(3x3, stride 2) + ReLU, then depthwise-separable
    stages (depthwise Conv2d(3x3, stride 2) -> pointwise Conv2d(1x1) -> ReLU) for the rest of the factor.

    Args:
        in_features (int): feature bins per frame (the frontend's ``n_features``).
        dim (int): output width.
        channels (int): convolution channels.
        factor (int, optional): time reduction, 4 or 8. (Default: 4)
        depthwise (bool, optional): depthwise-separable stages after the first. (Default: False)
        scale (float, optional): factor on the output (the encoder's ``xscaling``). (Default: 1.0)

    ``forward(feats [B, F, T], lengths [B])`` -> ``([B, T', dim], lengths')``, ``T' = ceil(T / factor)``.
    """

    def __init__(
        self, in_features: int, dim: int, channels: int, factor: int = 4, depthwise: bool = False, scale: float = 1.0
    ) -> None:
        super().__init__()
        self.scale = scale
        if factor not in (4, 8):
            raise ValueError(f"subsampling_factor must be 4 or 8, got {factor!r}")
        stages = [nn.Conv2d(1, channels, 3, stride=2, padding=1)]
        for _ in range(int(math.log2(factor)) - 1):
            if depthwise:
                stages.append(
                    nn.Sequential(
                        nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels),
                        nn.Conv2d(channels, channels, 1),
                    )
                )
            else:
                stages.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        self.stages = nn.ModuleList(stages)
        freq = in_features
        for _ in stages:
            freq = (freq + 1) // 2
        self.proj = nn.Linear(channels * freq, dim)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints written before the stages were a list name them conv1, conv2
        for i, old in enumerate(("conv1", "conv2")):
            for name in ("weight", "bias"):
                if f"{prefix}{old}.{name}" in state_dict:
                    state_dict[f"{prefix}stages.{i}.{name}"] = state_dict.pop(f"{prefix}{old}.{name}")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = feats.transpose(1, 2).unsqueeze(1).contiguous()  # [B, 1, T, F]
        for stage in self.stages:
            lengths = (lengths - 1) // 2 + 1
            x = torch.relu(stage(x))
            x = x * lengths_to_mask(lengths, x.shape[2])[:, None, :, None].to(x.dtype)
        b, c, t, f = x.shape
        out = self.proj(x.transpose(1, 2).reshape(b, t, c * f))
        return (out * self.scale if self.scale != 1.0 else out), lengths


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention whose scores are content (q + u) . k plus position (q + v) . W p(i - j)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.d_k = heads, dim // heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.d_k))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout_p = dropout

    def forward(self, x: Tensor, mask: Tensor, rel: Tensor | None = None) -> Tensor:
        """``x [B, T, D]``, ``mask [B, T]`` (True on real frames) -> ``[B, T, D]``. ``rel``: the
        :func:`relative_sinusoids` of ``T`` (the same for every layer; computed here when not given)."""
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.d_k).transpose(1, 2)  # noqa: E731  [B, H, T, d_k]
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if rel is None:
            rel = relative_sinusoids(t, self.heads * self.d_k, x.device).to(x.dtype)
        p = self.pos(rel).view(2 * t - 1, self.heads, self.d_k).transpose(0, 1)  # [H, 2t-1, d_k]
        position = torch.matmul(q + self.pos_bias_v[:, None], p.transpose(-2, -1))  # [B, H, T, 2T-1]
        bias = relative_shift(position) / math.sqrt(self.d_k)
        bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
        # the content term (q + u) . k, the softmax and the weighted sum run fused in SDPA, the position
        # term enters as an additive mask, so no [B, H, T, T] softmax or score copies are kept for backward
        # under autocast q, k, v are half precision but q + u (an fp32 parameter) is promoted: cast it back
        out = nn.functional.scaled_dot_product_attention(
            (q + self.pos_bias_u[:, None]).to(v.dtype),
            k,
            v,
            attn_mask=bias.to(v.dtype),
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        out = out.transpose(1, 2)
        # torch.export takes SDPA's output strides from its fused kernels, but the ONNX exporter decomposes
        # it into plain matmuls with other strides, and a later view of the heads fails: copy when exporting
        if torch.compiler.is_exporting():
            out = out.clone(memory_format=torch.contiguous_format)
        return self.out(out.reshape(b, t, -1))


def relative_sinusoids(t: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Sinusoids ``[2t-1, dim]`` of the relative distances t-1, ..., -(t-1): column c of the position
    scores is distance t-1-c."""
    return sinusoids(torch.arange(t - 1, -t, -1, device=device), dim)


def relative_shift(position: Tensor) -> Tensor:
    """[..., T, 2T-1] scores by distance (column c: distance T-1-c) -> [..., T, T] with entry (i, j) at distance i-j.

    Row i needs columns T-1-i ... 2T-2-i; in the flattened rows that run starts at i * (2T-2) + T-1, so
    a view with row stride 2T-2 offset by T-1 reads every row's run without copying or gathering.
    """
    t = position.shape[-2]
    if t == 1:
        return position
    flat = position.reshape(*position.shape[:-2], t * (2 * t - 1))
    return flat[..., t - 1 : t - 1 + t * (2 * t - 2)].unflatten(-1, (t, 2 * t - 2))[..., :t]


class AbsPositionMultiHeadAttention(nn.Module):
    """Plain multi-head self-attention (positions were added to the input)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor, rel: Tensor | None = None) -> Tensor:
        return self.attn(x, x, x, key_padding_mask=~mask, need_weights=False)[0]


class ConvolutionModule(nn.Module):
    """The Conformer's convolution module: LayerNorm -> pointwise conv (2 x ``dim``) + GLU -> depthwise conv
    over time -> batch or layer norm -> Swish -> pointwise conv -> dropout (its residual is the caller's).

    Args:
        dim (int): channels.
        kernel (int): depthwise kernel (odd; padding keeps the length).
        norm (str, optional): ``"batch"`` or ``"layer"``. (Default: ``"batch"``)
        dropout (float, optional): on the output. (Default: 0.0)

    ``forward(x [B, T, dim], mask [B, T])`` -> ``[B, T, dim]``; padded frames are zeroed before the depthwise
    convolution, so they do not leak into real ones.
    """

    def __init__(self, dim: int, kernel: int, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        if norm not in ("batch", "layer"):
            raise ValueError(f"conv_norm must be 'batch' or 'layer', got {norm!r}")
        self.pre_norm = nn.LayerNorm(dim)
        self.pointwise1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=(kernel - 1) // 2, groups=dim)
        self.norm = nn.BatchNorm1d(dim) if norm == "batch" else nn.LayerNorm(dim)
        self.pointwise2 = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        y = nn.functional.glu(self.pointwise1(self.pre_norm(x).transpose(1, 2)), dim=1)
        y = self.depthwise(y * mask[:, None, :].to(y.dtype))
        y = self.norm(y) if isinstance(self.norm, nn.BatchNorm1d) else self.norm(y.transpose(1, 2)).transpose(1, 2)
        y = self.pointwise2(nn.functional.silu(y))
        return self.dropout(y.transpose(1, 2))


class ConformerLayer(nn.Module):
    """One Conformer block: x + FFN/2 -> x + MHSA -> x + conv module -> x + FFN/2 -> LayerNorm.

    Args:
        dim (int): width. heads (int): attention heads. ffn_units (int): feed-forward hidden width.
        conv_kernel (int): depthwise kernel of the convolution module.
        pos_encoding (str): ``"rel"`` (relative-position attention) or ``"abs"`` (plain attention).
        conv_norm (str): ``"batch"`` or ``"layer"``. dropout (float): in every sub-module.

    ``forward(x [B, T, dim], mask [B, T] (True on real frames), rel=None)`` -> ``[B, T, dim]``, padded frames 0;
    ``rel``: the batch's relative-position sinusoids (:meth:`Conformer.shared_inputs`).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_units: int,
        conv_kernel: int,
        pos_encoding: str,
        conv_norm: str,
        dropout: float,
        branch_init: float = 1.0,
    ) -> None:
        super().__init__()
        self.ff1 = FeedForward(dim, ffn_units, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        attn_cls = RelPositionMultiHeadAttention if pos_encoding == "rel" else AbsPositionMultiHeadAttention
        self.attn = attn_cls(dim, heads, dropout)
        self.conv = ConvolutionModule(dim, conv_kernel, conv_norm, dropout)
        self.ff2 = FeedForward(dim, ffn_units, dropout)
        self.final_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        if branch_init != 1.0:
            for out in self.branch_outputs():
                scale_init_(out, branch_init)

    def branch_outputs(self) -> list[nn.Module]:
        """The last layer of each residual branch (feed-forward, attention, convolution, feed-forward)."""
        attn_out = self.attn.out if isinstance(self.attn, RelPositionMultiHeadAttention) else self.attn.attn.out_proj
        return [self.ff1.net[4], attn_out, self.conv.pointwise2, self.ff2.net[4]]

    def forward(self, x: Tensor, mask: Tensor, rel: Tensor | None = None) -> Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.dropout(self.attn(self.attn_norm(x), mask, rel))
        x = x + self.conv(x, mask)
        x = x + 0.5 * self.ff2(x)
        return zero_padding(self.final_norm(x), mask)


def scale_init_(layer: nn.Module, factor: float) -> None:
    """Scale a freshly initialised layer's weight by ``factor`` and zero its bias."""
    with torch.no_grad():
        layer.weight.mul_(factor)
        if layer.bias is not None:
            layer.bias.zero_()


class Conformer(CTCModel):
    """Conformer-CTC encoder (see the module docstring).

    Args:
        n_tokens (int): CTC outputs (blank included).
        dim (int, optional): model width. (Default: 176)
        layers (int, optional): Conformer layers. (Default: 16)
        heads (int, optional): attention heads; ``dim`` must be divisible by it. (Default: 4)
        ffn_units (int or None, optional): feed-forward hidden width; None: 4 x ``dim``. (Default: None)
        conv_kernel (int, optional): depthwise kernel of the convolution module. (Default: 31)
        subsampling_channels (int or None, optional): subsampling channels; None: ``dim``. (Default: None)
        subsampling_factor (int, optional): time reduction, 4 or 8. (Default: 4)
        subsampling (str, optional): ``"striding"`` (plain stride-2 convolutions) or ``"dw_striding"``
            (depthwise-separable, as FastConformer). (Default: ``"striding"``)
        pos_encoding (str, optional): ``"rel"`` (relative, Transformer-XL) or ``"abs"``. (Default: ``"rel"``)
        conv_norm (str, optional): ``"batch"`` or ``"layer"`` norm in the convolution module. (Default: ``"batch"``)
        inter_ctc_layers (list of int, optional): layers whose outputs also go through the CTC head in
            training, for intermediate CTC (Lee & Watanabe 2021, arXiv:2102.03216; weight:
            ``CTCLoss(inter_weight)``). (Default: none)
        xscaling (bool, optional): multiply the subsampled input by sqrt(``dim``), as the Transformer scales
            its embeddings (NeMo's ``xscaling``, ESPnet's positional encoding). Without it the input (frame
            norm about 1) is small against what every layer's final LayerNorm gives (about sqrt(``dim``)),
            the first layers' nearly uniform attention adds the same vector to every frame, and training
            stays on CTC's blank plateau (README, "Conformer-family recipes"). (Default: True)
        dropout (float, optional): dropout in every sub-module and after subsampling. (Default: 0.1)
        branch_init (float, optional): factor on the initial weights of the last layer of every residual
            branch (the feed-forwards' second linear, the attention's output projection, the convolution
            module's last pointwise convolution), whose biases start at 0: below 1 each layer starts near
            the identity (its final LayerNorm of the input), so that a deep stack begins as a shallow one.
            Only the initialisation changes; checkpoints load as before. 1.0 is PyTorch's default
            initialisation, with which the 16-layer presets stayed on CTC's blank plateau (BENCHMARKS.md,
            "Leaving the blank plateau"). (Default: 0.1)
        frontend, spec_augment: see :class:`~hw_asr.model.base_model.CTCModel`.
        ff_mult, kernel: the former names of ``ffn_units`` (as a multiple of ``dim``) and ``conv_kernel``,
            still read so that older configs and checkpoints build the same model.

    ``forward(audio [B, S], audio_length [B])`` -> ``{"log_probs": [B, T', n_tokens], "log_probs_length": [B]}``
    with ``T' = ceil(frames / subsampling_factor)``.
    """

    default_conv_kernel = 31

    def __init__(
        self,
        n_tokens: int,
        dim: int = 176,
        layers: int = 16,
        heads: int = 4,
        ffn_units: int | None = None,
        conv_kernel: int = 31,
        subsampling_channels: int | None = None,
        subsampling_factor: int = 4,
        subsampling: str = "striding",
        pos_encoding: str = "rel",
        conv_norm: str = "batch",
        xscaling: bool = True,
        inter_ctc_layers: Sequence[int] = (),
        dropout: float = 0.1,
        branch_init: float = 0.1,
        frontend: nn.Module | None = None,
        spec_augment: nn.Module | None = None,
        ff_mult: int | None = None,
        kernel: int | None = None,
    ) -> None:
        super().__init__(n_tokens, frontend, spec_augment)
        if ff_mult is not None:
            if ffn_units is not None:
                raise ValueError("give ffn_units or its former name ff_mult (a multiple of dim), not both")
            ffn_units = ff_mult * dim
        ffn_units = 4 * dim if ffn_units is None else ffn_units
        if kernel is not None:
            if conv_kernel not in (kernel, type(self).default_conv_kernel):
                raise ValueError("give conv_kernel or its former name kernel, not both")
            conv_kernel = kernel
        if pos_encoding not in ("rel", "abs"):
            raise ValueError(f"pos_encoding must be 'rel' or 'abs', got {pos_encoding!r}")
        if subsampling not in ("striding", "dw_striding"):
            raise ValueError(f"subsampling must be 'striding' or 'dw_striding', got {subsampling!r}")
        self.subsampling = ConvSubsampling(
            self.frontend.n_features,
            dim,
            subsampling_channels or dim,
            subsampling_factor,
            depthwise=subsampling == "dw_striding",
            scale=math.sqrt(dim) if xscaling else 1.0,
        )
        self.positions = SinusoidalPositions(dim, dropout) if pos_encoding == "abs" else nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            [
                ConformerLayer(dim, heads, ffn_units, conv_kernel, pos_encoding, conv_norm, dropout, branch_init)
                for _ in range(layers)
            ]
        )
        self.head = nn.Linear(dim, n_tokens)
        self.pos_encoding, self.dim = pos_encoding, dim
        self.inter_ctc_layers = check_taps(inter_ctc_layers, layers)

    def shared_inputs(self, x: Tensor) -> dict[str, Tensor]:
        """What every layer needs that depends on the batch's length alone: the relative-position
        sinusoids, computed and cast once per batch rather than in each of the layers."""
        if self.pos_encoding != "rel":
            return {}
        return {"rel": relative_sinusoids(x.shape[1], self.dim, x.device).to(x.dtype)}

    def encode(self, feats: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        taps = self.inter_ctc_layers if self.training else ()
        x, lengths, inter = run_encoder(
            self.subsampling, self.positions, self.layers, feats, lengths, self.shared_inputs, taps
        )
        return self.head(x), lengths, [self.head(y) for y in inter]


class FastConformer(Conformer):
    """FastConformer-CTC: D. Rekesh et al., "Fast Conformer with Linearly Scalable Attention for
    Efficient Speech Recognition", ASRU 2023 (arXiv:2305.05084).

    A :class:`Conformer` with 8x depthwise-separable convolutional subsampling (256 channels) and
    depthwise kernel 9: a third of the Conformer's frames reach the layers (80 ms each instead of 40),
    which makes it about 2.8x faster at the same depth in the paper. Presets S/M/L (configs/arch) follow
    NeMo's FastConformer-CTC table (d 176/256/512, 4/4/8 heads, 16/16/17 layers).

    Args: as :class:`Conformer`, with the defaults ``conv_kernel=9``, ``subsampling_factor=8``,
    ``subsampling="dw_striding"``, ``subsampling_channels=256``.
    """

    default_conv_kernel = 9

    def __init__(
        self,
        n_tokens: int,
        conv_kernel: int = 9,
        subsampling_factor: int = 8,
        subsampling: str = "dw_striding",
        subsampling_channels: int | None = 256,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            n_tokens,
            conv_kernel=conv_kernel,
            subsampling_factor=subsampling_factor,
            subsampling=subsampling,
            subsampling_channels=subsampling_channels,
            **kwargs,
        )
