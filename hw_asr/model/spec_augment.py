"""SpecAugment (Park et al., 2019): frequency and time masks, per utterance, on the device."""
import torch
from torch import nn


class SpecAugment(nn.Module):
    """Masks ``freq_masks`` bands of up to ``freq_width`` mel bins and ``time_masks``
    spans of up to ``time_width`` frames (an int) or that share of the utterance's
    real length (a float < 1). Masked values are set to ``fill`` (0 = the mean
    after per-utterance normalisation). Active only in training mode."""

    def __init__(self, freq_masks=2, freq_width=27, time_masks=2, time_width=0.05, fill=0.0):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width, self.fill = time_masks, time_width, fill

    @staticmethod
    def _band_mask(n_masks, max_width, limit, size, batch, device):
        """``[B, size]`` bool: union of ``n_masks`` random bands inside ``[0, limit)``."""
        positions = torch.arange(size, device=device).view(1, 1, size)
        width = (torch.rand(batch, n_masks, 1, device=device) * (max_width + 1)).floor()
        width = torch.minimum(width, limit.view(-1, 1, 1).float())
        start = (torch.rand(batch, n_masks, 1, device=device) * (limit.view(-1, 1, 1) - width + 1)).floor()
        return ((positions >= start) & (positions < start + width)).any(1)

    def forward(self, feats, lengths):
        if not self.training or (self.freq_masks == 0 and self.time_masks == 0):
            return feats
        batch, n_feats, n_frames = feats.shape
        mask = torch.zeros(batch, n_feats, n_frames, dtype=torch.bool, device=feats.device)
        if self.freq_masks:
            limit = torch.full((batch,), n_feats, device=feats.device)
            mask |= self._band_mask(self.freq_masks, self.freq_width, limit, n_feats, batch, feats.device)[:, :, None]
        if self.time_masks:
            if isinstance(self.time_width, float) and self.time_width < 1:
                max_width = (lengths.float() * self.time_width).floor().view(-1, 1, 1)
            else:
                max_width = self.time_width
            mask |= self._band_mask(self.time_masks, max_width, lengths, n_frames, batch, feats.device)[:, None, :]
        return feats.masked_fill(mask, self.fill)
