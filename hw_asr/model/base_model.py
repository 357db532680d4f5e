"""What every CTC model shares: frontend -> SpecAugment -> encoder -> head -> log-probs."""
import torch
from torch import nn

from hw_asr.model.frontend import LogMelFrontend, SpectrogramFrontend, lengths_to_mask
from hw_asr.model.spec_augment import SpecAugment

FRONTENDS = {"LogMelFrontend": LogMelFrontend, "SpectrogramFrontend": SpectrogramFrontend}


def build_frontend(spec):
    """``{"type": "LogMelFrontend", "args": {...}}`` or the args of a LogMelFrontend alone."""
    spec = dict(spec or {})
    if "type" in spec:
        if spec["type"] not in FRONTENDS:
            raise ValueError(f"unknown frontend {spec['type']!r}; known: {', '.join(FRONTENDS)}")
        return FRONTENDS[spec["type"]](**spec.get("args", {}))
    return LogMelFrontend(**spec)


class CTCModel(nn.Module):
    """Subclasses build ``self.head`` (the output layer) and implement ``encode``.

    ``forward(audio, audio_length, **batch)`` returns
    ``{"log_probs": [B, T', V] float32, "log_probs_length": [B]}``.
    """

    def __init__(self, n_tokens, frontend=None, spec_augment=None):
        super().__init__()
        self.n_tokens = n_tokens
        self.frontend = build_frontend(frontend)
        self.spec_augment = SpecAugment(**spec_augment) if spec_augment else None

    def encode(self, feats, lengths):
        """``feats [B, n_features, F]`` -> ``(logits [B, T', V], lengths [B])``."""
        raise NotImplementedError

    def forward(self, audio, audio_length, **batch):
        feats, lengths = self.frontend(audio, audio_length)
        if self.spec_augment is not None:
            feats = self.spec_augment(feats, lengths)
        logits, out_lengths = self.encode(feats, lengths)
        return {"log_probs": logits.float().log_softmax(-1), "log_probs_length": out_lengths}

    def __str__(self):
        n_all = sum(p.numel() for p in self.parameters())
        n_train = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return super().__str__() + f"\nAll parameters: {n_all:,}\nTrainable parameters: {n_train:,}"


def masked_apply(module, x, mask):
    """Apply a per-frame module (e.g. BatchNorm1d on ``[N, C]``) to real frames only."""
    out = torch.zeros_like(x)
    out[mask] = module(x[mask]).to(x.dtype)
    return out


__all__ = ["CTCModel", "build_frontend", "lengths_to_mask", "masked_apply"]
