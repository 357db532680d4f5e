"""N-best rescoring of a beam decoder's hypotheses with a neural causal LM."""

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hw_asr.config import resolve
from hw_asr.text_encoder.base import BaseTextEncoder
from hw_asr.text_encoder.decoders.common import NBestDecoder


class CausalLMRescorer:
    """Scores texts with a neural causal LM (a Hugging Face model in a local folder,
    loaded without network): ``ln P(text)`` summed over its tokens after a start token."""

    def __init__(self, model_path: str | os.PathLike, device: str = "cpu", batch_size: int = 16) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True).to(device).eval()
        self.device, self.batch_size = device, batch_size
        start = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        if start is None:
            raise ValueError(f"{model_path}: the tokenizer has neither a bos nor an eos token to start from")
        self.start = start

    def log_probs(self, texts: Sequence[str]) -> list[float]:
        import torch

        out = []
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            ids = [[self.start] + self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in chunk]
            width = max(len(x) for x in ids)
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.start
            batch = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=self.device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=self.device)
            with torch.no_grad():
                logits = self.model(input_ids=batch, attention_mask=mask).logits.float()
            lp = logits[:, :-1].log_softmax(-1).gather(-1, batch[:, 1:, None])[..., 0] * mask[:, 1:]
            out += lp.sum(-1).tolist()
        return out


class NBestRescoringDecoder(NBestDecoder):
    """Any decoder's n-best list re-ranked by ``score + weight * ln P_nn(text) + length_bonus * words``.

    ``decoder``: a decoder block (e.g. ``{"type": "FlashlightDecoder", "args": {...}}``);
    ``lm_path``: a local Hugging Face causal LM folder (needs ``transformers``).
    """

    def __init__(
        self,
        text_encoder: BaseTextEncoder,
        decoder: Mapping[str, Any],
        lm_path: str | CausalLMRescorer,
        weight: float = 0.5,
        length_bonus: float = 0.0,
        n_best: int = 10,
        device: str = "cpu",
    ) -> None:
        args = dict(decoder.get("args") or {})
        if decoder.get("type") == "PrefixBeamSearchDecoder":
            args.setdefault("n_best", n_best)
        self.base = resolve(
            {"type": decoder["type"], "args": args},
            sys.modules[__package__],
            "decoders.<rescoring>.decoder",
            text_encoder,
        )
        self.rescorer = CausalLMRescorer(lm_path, device) if isinstance(lm_path, str) else lm_path
        self.weight, self.length_bonus, self.n_best = weight, length_bonus, n_best

    def rescore(self, nbest: list[tuple[str, float]]) -> list[tuple[str, float]]:
        nbest = nbest[: self.n_best]
        lm = self.rescorer.log_probs([text for text, _ in nbest])
        rescored = [
            (text, score + self.weight * lm_score + self.length_bonus * len(text.split()))
            for (text, score), lm_score in zip(nbest, lm)
        ]
        return sorted(rescored, key=lambda r: r[1], reverse=True)

    def __call__(self, log_probs: np.ndarray, length: int | None = None) -> list[tuple[str, float]]:
        return self.rescore(self.base(log_probs, length))
