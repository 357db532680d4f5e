"""Running a model over a loader and decoding: shared by validation and ``test.py``."""

import contextlib

import torch
from tqdm import tqdm


def move_batch(batch, device):
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


def batch_samples(batch):
    """Audio samples in a batch, from the host's numbers (``num_samples`` from collate_fn, else the
    lengths while they are still on the host): reading it never waits for a GPU."""
    return batch["num_samples"] if "num_samples" in batch else int(batch["audio_length"].sum())


def autocast_context(device, amp):
    """bf16/fp16 autocast on CUDA; a no-op elsewhere (CPU trains in fp32)."""
    if device.type != "cuda" or amp in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def allow_tf32(enabled):
    """fp32 matrix products and convolutions on TF32 tensor cores (CUDA, Ampere and newer), or not:
    ``trainer.tf32`` and the ``tf32`` mode of ``benchmarks/precision.py``."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled


def decode_batch(log_probs, lengths, encoder, decoders):
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
def predict(model, loader, encoder, decoders, device, amp=None, criterion=None, desc="inference", beam_subset=None):
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
