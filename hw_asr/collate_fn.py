"""Batching items into the batch contract of DESIGN.md."""
import torch


def collate_fn(items):
    """``audio [B, T_max]``, ``audio_length [B]``, ``text_encoded [B, L_max]``,
    ``text_encoded_length [B]``, ``text``, ``audio_path`` (and ``duration``).
    Padding is zeros; lengths say what is real."""
    if not items:
        raise ValueError("collate_fn got an empty batch")
    audio_length = torch.tensor([it["audio"].shape[-1] for it in items], dtype=torch.long)
    audio = torch.zeros(len(items), int(audio_length.max()), dtype=torch.float32)
    for i, it in enumerate(items):
        audio[i, : audio_length[i]] = it["audio"]
    batch = {
        "audio": audio,
        "audio_length": audio_length,
        "text": [it["text"] for it in items],
        "audio_path": [it["audio_path"] for it in items],
        "duration": [it["duration"] for it in items],
        "load_failures": [path for it in items for path in it.get("load_failures", ())],
    }
    if all("text_encoded" in it for it in items):
        text_length = torch.tensor([len(it["text_encoded"]) for it in items], dtype=torch.long)
        text = torch.zeros(len(items), max(int(text_length.max()), 1), dtype=torch.long)
        for i, it in enumerate(items):
            text[i, : text_length[i]] = it["text_encoded"]
        batch["text_encoded"] = text
        batch["text_encoded_length"] = text_length
    return batch
