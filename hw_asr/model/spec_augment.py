"""SpecAugment (Park et al., 2019): time warp, frequency and time masks, per utterance, on the device."""

import torch
from torch import Tensor, nn


def time_warp(feats: Tensor, lengths: Tensor, centre: Tensor, shift: Tensor) -> Tensor:
    """Warp each utterance's time axis piecewise linearly so that frame ``centre`` moves to
    ``centre + shift``, the first and last real frames stay where they are, and padding
    (frames at or after ``lengths``) is untouched. Values between frames are interpolated
    linearly. ``feats`` [B, F, T]; ``lengths``, ``centre``, ``shift`` [B]."""
    batch, n_feats, n_frames = feats.shape
    t = torch.arange(n_frames, device=feats.device, dtype=torch.float32).expand(batch, n_frames)
    last = (lengths - 1).clamp(min=0).float().view(-1, 1)
    c, new_c = centre.float().view(-1, 1), (centre + shift).float().view(-1, 1)
    left = t * c / new_c.clamp(min=1e-6)
    right = c + (t - new_c) * (last - c) / (last - new_c).clamp(min=1e-6)
    src = torch.where(t <= new_c, left, right)
    src = torch.where(t <= last, src.clamp(min=0).minimum(last), t)  # padding maps to itself
    lo = src.floor().long()
    hi = (lo + 1).minimum(last.long()).maximum(lo)
    frac = (src - lo.float()).unsqueeze(1).to(feats.dtype)
    gather = lambda idx: feats.gather(2, idx.unsqueeze(1).expand(batch, n_feats, n_frames))  # noqa: E731
    return gather(lo) * (1 - frac) + gather(hi) * frac


class SpecAugment(nn.Module):
    """Time warp by up to ``time_warp`` frames (0 = off; the paper's W, 80 for LibriSpeech,
    limited per utterance to a quarter of its length), then ``freq_masks`` bands of up to
    ``freq_width`` mel bins and ``time_masks`` spans of up to ``time_width`` frames (an int)
    or that share of the utterance's real length (a float < 1). Masked values are set to
    ``fill`` (0 = the mean after per-utterance normalisation). Active only in training mode.

    ``start_step`` and ``ramp_steps`` schedule it by the optimiser step, which the trainer hands over
    through :meth:`set_train_step`: off before ``start_step``, then the widths of the masks and of the warp
    grow linearly to their full values over ``ramp_steps`` steps (0: full at once). Masking from step 0
    holds a model on CTC's blank plateau for longer: a FastConformer-M left it at step 250 without
    SpecAugment and had not by step 300 with it (BENCHMARKS.md, "Leaving the blank plateau"). Inference
    and models built outside a trainer (step unknown) are unaffected: the schedule only ever lowers the
    strength while training. (Defaults: 0 and 0, SpecAugment at full strength from the first step.)"""

    def __init__(
        self,
        freq_masks: int = 2,
        freq_width: int = 27,
        time_masks: int = 2,
        time_width: float = 0.05,
        fill: float = 0.0,
        time_warp: int = 0,
        start_step: int = 0,
        ramp_steps: int = 0,
    ) -> None:
        super().__init__()
        if time_warp < 0:
            raise ValueError(f"spec_augment.time_warp must be >= 0 frames, got {time_warp}")
        for name, value in (("start_step", start_step), ("ramp_steps", ramp_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"spec_augment.{name} must be a whole number of optimiser steps >= 0, got {value!r}")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.fill = time_masks, time_width, fill
        self.time_warp = int(time_warp)
        self.start_step, self.ramp_steps = start_step, ramp_steps
        self.train_step: int | None = None  # set by the trainer; None: no schedule (full strength)

    def set_train_step(self, step: int) -> None:
        """The optimiser steps done so far, which the schedule (``start_step``, ``ramp_steps``) reads."""
        self.train_step = step

    def strength(self) -> float:
        """Share of the full mask and warp widths at the current step: 0 before ``start_step``, then a
        linear ramp over ``ramp_steps`` steps to 1; 1 when no step has been handed over."""
        if self.train_step is None or self.train_step >= self.start_step + self.ramp_steps:
            return 1.0
        if self.train_step < self.start_step:
            return 0.0
        return (self.train_step - self.start_step + 1) / (self.ramp_steps + 1)

    @staticmethod
    def _band_mask(
        n_masks: int, max_width: float | Tensor, limit: Tensor, size: int, batch: int, device: torch.device
    ) -> Tensor:
        """``[B, size]`` bool: union of ``n_masks`` random bands inside ``[0, limit)``."""
        positions = torch.arange(size, device=device).view(1, 1, size)
        width = (torch.rand(batch, n_masks, 1, device=device) * (max_width + 1)).floor()
        width = torch.minimum(width, limit.view(-1, 1, 1).float())
        start = (torch.rand(batch, n_masks, 1, device=device) * (limit.view(-1, 1, 1) - width + 1)).floor()
        return ((positions >= start) & (positions < start + width)).any(1)

    def _warp(self, feats: Tensor, lengths: Tensor, warp: int) -> Tensor:
        """Centre uniform in [W, L-1-W], shift uniform in [-W, W] (integers), W = min(time_warp, L // 4)."""
        batch = feats.shape[0]
        w = torch.minimum(torch.full_like(lengths, warp), lengths // 4)
        span = (lengths - 1 - 2 * w).clamp(min=0)
        centre = w + (torch.rand(batch, device=feats.device) * (span + 1)).floor().long()
        shift = (torch.rand(batch, device=feats.device) * (2 * w + 1)).floor().long() - w
        return time_warp(feats, lengths, centre, shift)

    def forward(self, feats: Tensor, lengths: Tensor) -> Tensor:
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0 and self.time_warp == 0):
            return feats
        strength = self.strength()
        if strength == 0.0:
            return feats
        warp = int(self.time_warp * strength)
        if warp:
            feats = self._warp(feats, lengths, warp)
        batch, n_feats, n_frames = feats.shape
        mask = torch.zeros(batch, n_feats, n_frames, dtype=torch.bool, device=feats.device)
        if self.freq_masks:
            limit = torch.full((batch,), n_feats, device=feats.device)
            freq_width = self.freq_width * strength
            mask |= self._band_mask(self.freq_masks, freq_width, limit, n_feats, batch, feats.device)[:, :, None]
        if self.time_masks:
            if isinstance(self.time_width, float) and self.time_width < 1:
                max_width = (lengths.float() * self.time_width * strength).floor().view(-1, 1, 1)
            else:
                max_width = self.time_width * strength
            mask |= self._band_mask(self.time_masks, max_width, lengths, n_frames, batch, feats.device)[:, None, :]
        return feats.masked_fill(mask, self.fill)
