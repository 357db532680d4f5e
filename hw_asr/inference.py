"""Running a model over a loader and decoding: shared by validation and ``test.py``."""

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_samples(batch: Mapping[str, Any]) -> int:
    """Audio samples in a batch, from the host's numbers (``num_samples`` from collate_fn, else the
    lengths while they are still on the host): reading it never waits for a GPU."""
    return batch["num_samples"] if "num_samples" in batch else int(batch["audio_length"].sum())


def autocast_context(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; a no-op elsewhere (CPU trains in fp32)."""
    if device.type != "cuda" or amp in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def allow_tf32(enabled: bool) -> None:
    """fp32 matrix products and convolutions on TF32 tensor cores (CUDA, Ampere and newer), or not:
    ``trainer.tf32`` and the ``tf32`` mode of ``benchmarks/precision.py``."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def decode_batch(
    log_probs: torch.Tensor, lengths: torch.Tensor, encoder: Any, decoders: Mapping[str, Any]
) -> dict[str, list[str]]:
    """``{decoder_name: [hypothesis, ...]}``; ``decoders`` maps names to decoder objects,
    ``"argmax"`` (greedy) needs none."""
    out = {}
    for name, decoder in decoders.items():
        if name == "argmax":
            out[name] = encoder.ctc_greedy(log_probs, lengths)
        else:
            out[name] = decoder.decode_batch(log_probs, lengths)
    return out


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: Iterable[dict],
    encoder: Any,
    decoders: Mapping[str, Any],
    device: torch.device,
    amp: str | None = None,
    criterion: Callable[..., dict] | None = None,
    desc: str = "inference",
    beam_subset: int | None = None,
) -> Iterator[tuple[dict, dict | None, dict[str, list], float | None]]:
    """Yield per-batch ``(batch, outputs, hyps, loss)`` in eval mode. A batch whose files all failed to
    load gives ``outputs`` and ``loss`` None and empty hypotheses.

    With ``beam_subset``, decoders other than argmax only run on the first that many
    utterances (their hypotheses are None for the rest).
    """
    model.eval()
    seen = 0
    for batch in tqdm(loader, desc=desc, leave=False):
        if not batch["text"]:  # every file of the batch failed to load (listed in batch["skipped"])
            yield batch, None, {k: [] for k in decoders}, None
            continue
        batch = move_batch(batch, device)
        with autocast_context(device, amp):
            outputs = model(**batch)
        loss = None
        if criterion is not None and "text_encoded" in batch:
            loss = criterion(**batch, **outputs)["loss"].item()
        n = len(batch["text"])
        active = {k: v for k, v in decoders.items() if k == "argmax" or beam_subset is None or seen < beam_subset}
        hyps = decode_batch(outputs["log_probs"], outputs["log_probs_length"], encoder, active)
        if beam_subset is not None:
            keep = max(0, min(n, beam_subset - seen))
            for k in hyps:
                if k != "argmax":
                    hyps[k] = hyps[k][:keep] + [None] * (n - keep)
        for k in decoders:
            hyps.setdefault(k, [None] * n)
        seen += n
        yield batch, outputs, hyps, loss


@dataclass
class SplitTally:
    """What one pass over a split adds up beside its metrics: the finite batch losses and the files that
    could not be read (``(path, reason)`` pairs, as the collate function lists them)."""

    loss_sum: float = 0.0
    loss_batches: int = 0
    skipped: list = field(default_factory=list)


def score_split(
    model: torch.nn.Module,
    loader: Iterable[dict],
    encoder: Any,
    decoders: Mapping[str, Any],
    device: torch.device,
    metrics: Iterable[Any] = (),
    *,
    amp: str | None = None,
    criterion: Callable[..., dict] | None = None,
    desc: str = "evaluate",
    beam_subset: int | None = None,
    on_batch: Callable[[dict, dict | None, dict], None] | None = None,
) -> SplitTally:
    """The evaluation loop of validation and of ``test.py``: :func:`predict` over ``loader``, each metric
    updated with its decoder's hypotheses (``metric.decoder``), the finite losses and the unreadable files
    added up; ``on_batch(batch, outputs, hyps)`` sees every batch (per-utterance rows, pictures). The
    metrics are not reset: a caller that adds several splits into one total passes the same metric twice."""
    tally = SplitTally()
    metrics = list(metrics)
    for batch, outputs, hyps, loss in predict(
        model, loader, encoder, decoders, device, amp, criterion, desc=desc, beam_subset=beam_subset
    ):
        tally.skipped += batch.get("skipped", ())
        for m in metrics:
            m.update(batch["text"], hyps[m.decoder])
        if loss is not None and math.isfinite(loss):
            tally.loss_sum += loss
            tally.loss_batches += 1
        if on_batch is not None:
            on_batch(batch, outputs, hyps)
    return tally
