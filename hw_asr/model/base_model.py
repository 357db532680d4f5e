"""What every CTC model shares: frontend -> SpecAugment -> encoder -> head -> log-probs."""

from typing import Any

import torch
from torch import nn

from hw_asr.model.frontend import LogMelFrontend, lengths_to_mask


class CTCModel(nn.Module):
    """Subclasses build ``self.head`` (the output layer) and implement ``encode``.

    Args:
        n_tokens (int): CTC outputs, blank (index 0) included.
        frontend (nn.Module or None): waves -> features, e.g. :class:`LogMelFrontend` (the default, with
            its default arguments) or :class:`SpectrogramFrontend`; it has ``n_features``.
        spec_augment (nn.Module or None): applied to the features in training (:class:`SpecAugment`).

    ``forward(audio, audio_length, **batch)`` returns
    ``{"log_probs": [B, T', V] float32, "log_probs_length": [B]}``.
    """

    def __init__(self, n_tokens: int, frontend: nn.Module | None = None, spec_augment: nn.Module | None = None) -> None:
        super().__init__()
        for name, part in (("frontend", frontend), ("spec_augment", spec_augment)):
            if part is not None and not isinstance(part, nn.Module):
                raise TypeError(
                    f"{name} must be a module (e.g. LogMelFrontend(n_mels=80), SpecAugment(freq_masks=2)) or None, "
                    f"got {type(part).__name__}; in a config it is a block the builder builds"
                )
        self.n_tokens = n_tokens
        self.frontend = frontend if frontend is not None else LogMelFrontend()
        self.spec_augment = spec_augment

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple:
        """``feats [B, n_features, F]`` -> ``(logits [B, T', V], lengths [B])``, or with a third item, the
        logits of intermediate layers (intermediate CTC; a list of ``[B, T', V]``)."""
        raise NotImplementedError

    def features(self, audio: torch.Tensor, audio_length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio [B, T]``, ``audio_length [B]`` -> the frontend's ``(features [B, n_features, F], frames [B])``,
        before SpecAugment."""
        return self.frontend(audio, audio_length)

    def forward(self, audio: torch.Tensor, audio_length: torch.Tensor, **batch: Any) -> dict[str, Any]:
        feats, lengths = self.features(audio, audio_length)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats, lengths)
        logits, out_lengths, *inter = self.encode(feats, lengths)
        out = {"log_probs": logits.float().log_softmax(-1), "log_probs_length": out_lengths}
        if inter and inter[0] and self.training:  # only the loss reads them
            out["inter_log_probs"] = [x.float().log_softmax(-1) for x in inter[0]]
        return out

    def compile_blocks(self, **options: Any) -> list[nn.Module]:
        """``torch.compile`` every block after the frontend, in place; returns the blocks.

        The blocks are the model's children other than the frontend and SpecAugment, with
        a ``ModuleList`` (encoder layers) split into its items. Compiling block by block,
        as torchtitan does, rather than the whole model: identical layers share one
        compiled graph (Conformer-M compiles one layer, not 18), a new utterance length
        recompiles nothing beyond what dynamic shapes need, and the frontend's STFT
        (complex numbers, which Inductor does not generate code for) stays eager. It also
        avoids an Inductor failure on whole-model graphs with dynamic shapes, where the
        frame count after the STFT and subsampling is a nested floor-division of the
        sample count (``ValueRangeError`` in torch 2.13). Parameter names, and so
        checkpoints, are unchanged.
        """
        allow_rnn_capture(self)
        blocks = []
        for name, child in self.named_children():
            if name in ("frontend", "spec_augment"):
                continue
            blocks.extend(child if isinstance(child, nn.ModuleList) else [child])
        for block in blocks:
            block.compile(**options)
        return blocks

    def __str__(self) -> str:
        n_all = sum(p.numel() for p in self.parameters())
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return super().__str__() + f"\nAll parameters: {n_all:,}\nTrainable parameters: {n_train:,}"


def allow_rnn_capture(model: nn.Module) -> None:
    """If ``model`` has a GRU or LSTM, let torch.compile trace it into its graph (dynamo's ``allow_rnn``,
    off by default: every RNN would otherwise break the graph in two). A process-wide switch."""
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        import torch._dynamo

        torch._dynamo.config.allow_rnn = True


def masked_apply(module: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply a per-frame module to the real frames of ``x [B, T, C]`` (``mask [B, T]``, True on real
    frames), zeros on padding. Batch norm in training takes its statistics over the real frames alone.

    Without a data-dependent shape (no ``x[mask]``, whose size the host must read from the device),
    so a training step does not wait for the GPU here and compiles into one graph. SyncBatchNorm
    (statistics over the ranks) keeps torch's own kernel on the selected frames."""
    keep = mask.unsqueeze(-1).to(x.dtype)
    if isinstance(module, nn.SyncBatchNorm) and module.training:
        out = torch.zeros_like(x)
        out[mask] = module(x[mask]).to(x.dtype)
        return out
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training or module.running_mean is None:
            return masked_batch_norm(module, x, keep)
        return module(x.reshape(-1, x.shape[-1])).reshape(x.shape).to(x.dtype) * keep
    return module(x).to(x.dtype) * keep


def masked_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``bn`` (a BatchNorm1d over the last dimension) in training mode with statistics over the frames
    where ``keep [..., 1]`` is 1: the same result and running statistics as ``bn(x[mask])``
    (unbiased variance in the running estimate, as torch keeps it), computed with sums over the whole
    tensor instead of a selection."""
    dims = tuple(range(x.dim() - 1))
    xf, keep = x.float(), keep.float()
    n = keep.sum()
    mean = (xf * keep).sum(dims) / n
    var = ((xf - mean).square() * keep).sum(dims) / n
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            momentum = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), momentum)
            unbiased = var * n / (n - 1).clamp(min=1)
            bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), momentum)
    out = (xf - mean) * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = out * bn.weight + bn.bias
    return (out * keep).to(x.dtype)


__all__ = ["CTCModel", "lengths_to_mask", "masked_apply", "masked_batch_norm"]
