"""Loss registry: ``{"type": "CTCLoss", "args": {}}``."""

from torch import nn

from hw_asr.text_encoder.base import BLANK_INDEX

__all__ = ["CTCLoss"]


class CTCLoss(nn.Module):
    """CTC with the project's blank; each utterance's loss is divided by its target
    length, then averaged over the batch. ``zero_infinity`` drops impossible
    alignments (targets longer than the output) instead of producing inf."""

    def __init__(self, zero_infinity=True):
        super().__init__()
        self.ctc = nn.CTCLoss(blank=BLANK_INDEX, reduction="mean", zero_infinity=zero_infinity)

    def forward(self, log_probs, log_probs_length, text_encoded, text_encoded_length, **batch):
        loss = self.ctc(log_probs.float().transpose(0, 1), text_encoded, log_probs_length, text_encoded_length)
        return {"loss": loss}
