import torch

from hw_asr.collate_fn import collate_fn


def item(n_samples, ids, text="x"):
    return {
        "audio": torch.ones(n_samples),
        "text": text,
        "text_encoded": torch.tensor(ids, dtype=torch.long),
        "duration": n_samples / 16000,
        "audio_path": f"/a/{n_samples}.wav",
    }


def test_shapes_lengths_and_zero_padding():
    batch = collate_fn([item(5, [1, 2]), item(9, [3]), item(3, [4, 5, 6])])
    assert batch["audio"].shape == (3, 9) and batch["audio"].dtype == torch.float32
    assert batch["audio_length"].tolist() == [5, 9, 3]
    assert batch["audio"][0, 5:].abs().sum() == 0 and batch["audio"][0, :5].sum() == 5
    assert batch["text_encoded"].shape == (3, 3)
    assert batch["text_encoded_length"].tolist() == [2, 1, 3]
    assert batch["text_encoded"][1].tolist() == [3, 0, 0]
    assert batch["audio_path"] == ["/a/5.wav", "/a/9.wav", "/a/3.wav"]
    assert batch["text"] == ["x", "x", "x"]


def test_empty_transcripts_still_collate():
    batch = collate_fn([item(4, []), item(2, [])])
    assert batch["text_encoded"].shape == (2, 1) and batch["text_encoded_length"].tolist() == [0, 0]
