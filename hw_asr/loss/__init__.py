"""Loss registry: ``{"type": "CTCLoss", "args": {}}``."""

from typing import Any

import torch
from torch import nn

from hw_asr.text_encoder.base import BLANK_INDEX

__all__ = ["CTCLoss"]  # loss types; ctc_infeasible is a helper


class CTCLoss(nn.Module):
    """CTC with the project's blank; each utterance's loss is divided by its target
    length, then averaged over the batch. ``zero_infinity`` drops impossible
    alignments (targets longer than the output) instead of producing inf.

    Intermediate CTC (J. Lee, S. Watanabe, "Intermediate Loss Regularization for CTC-based Speech
    Recognition", ICASSP 2021, arXiv:2102.03216): when the model also returns ``inter_log_probs`` (its
    ``inter_ctc_layers`` through the same head), the loss is ``(1 - inter_weight)`` x the final CTC plus
    ``inter_weight`` x the mean of the intermediate ones (0.3 in the paper)."""

    def __init__(self, zero_infinity: bool = True, inter_weight: float = 0.3) -> None:
        super().__init__()
        if not 0 <= inter_weight < 1:
            raise ValueError(f"inter_weight must be in [0, 1), got {inter_weight!r}")
        self.ctc = nn.CTCLoss(blank=BLANK_INDEX, reduction="mean", zero_infinity=zero_infinity)
        self.inter_weight = inter_weight

    def _ctc(
        self,
        log_probs: torch.Tensor,
        log_probs_length: torch.Tensor,
        text_encoded: torch.Tensor,
        text_encoded_length: torch.Tensor,
    ) -> torch.Tensor:
        return self.ctc(log_probs.float().transpose(0, 1), text_encoded, log_probs_length, text_encoded_length)

    def forward(
        self,
        log_probs: torch.Tensor,
        log_probs_length: torch.Tensor,
        text_encoded: torch.Tensor,
        text_encoded_length: torch.Tensor,
        inter_log_probs: list[torch.Tensor] | None = None,
        **batch: Any,
    ) -> dict[str, torch.Tensor]:
        loss = self._ctc(log_probs, log_probs_length, text_encoded, text_encoded_length)
        if inter_log_probs and self.inter_weight:
            inter = [self._ctc(lp, log_probs_length, text_encoded, text_encoded_length) for lp in inter_log_probs]
            loss = (1 - self.inter_weight) * loss + self.inter_weight * sum(inter) / len(inter)
        return {"loss": loss}


def ctc_infeasible(
    text_encoded: torch.Tensor, text_encoded_length: torch.Tensor, log_probs_length: torch.Tensor
) -> torch.Tensor:
    """``[B]`` bool: utterances CTC cannot align, whose output frames are fewer than their tokens plus
    one blank between each pair of equal neighbours (``zero_infinity`` then drops their loss). Device
    tensors in, a device tensor out: nothing waits for the device."""
    positions = torch.arange(1, text_encoded.shape[1], device=text_encoded.device)
    same = (text_encoded[:, 1:] == text_encoded[:, :-1]) & (positions[None] < text_encoded_length[:, None])
    return log_probs_length.to(text_encoded_length.device) < text_encoded_length + same.sum(1)
