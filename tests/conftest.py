import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MANIFEST = REPO / "hw_asr" / "data" / "sample" / "manifest.jsonl"
SHARED_DATA = REPO.parent / "shared" / "data"


def tone(seconds=0.5, sr=16000, freq=440.0, channels=1, seed=0):
    """A short tone with a little noise, float32 [T] or [T, C]."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_audio(path, seconds=0.5, sr=16000, **kw):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, **kw), sr)
    return path


@pytest.fixture
def manifest_dir(tmp_path):
    """A manifest with three good rows."""
    rows = []
    for i, text in enumerate(["hello world", "Good MORNING!", "it's fine"]):
        write_audio(tmp_path / "wavs" / f"u{i}.wav", seconds=0.3 + 0.1 * i, freq=300 + 100 * i)
        rows.append({"audio_filepath": f"wavs/u{i}.wav", "text": text, "duration": 0.3 + 0.1 * i})
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Index caches of tests go to a temporary folder."""
    monkeypatch.setenv("HW_ASR_CACHE", str(tmp_path / "cache"))
