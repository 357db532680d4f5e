import numpy as np
import pytest
import soundfile as sf

from hw_asr.audio import AudioError, audio_duration, load_audio
from tests.conftest import tone, write_audio


@pytest.mark.parametrize(
    "fmt,subtype",
    [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")],
)
def test_formats_load_as_float32_mono(tmp_path, fmt, subtype):
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, tone(0.5), 16000, format=fmt, subtype=subtype)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 8000) <= 1000  # vorbis may pad a little
    assert np.abs(audio).max() > 0.1


def test_mp3_loads(tmp_path):
    path = tmp_path / "x.mp3"
    try:
        sf.write(path, tone(0.5), 16000, format="MP3")
    except Exception:
        pytest.skip("this libsndfile cannot write mp3")
    assert load_audio(path, 16000).ndim == 1


def test_stereo_is_downmixed(tmp_path):
    path = tmp_path / "st.wav"
    left, right = tone(0.2, freq=300), tone(0.2, freq=500)
    sf.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, 16000), (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr", [8000, 22050, 44100])
def test_resampled_to_target_rate(tmp_path, sr):
    path = write_audio(tmp_path / "r.wav", seconds=1.0, sr=sr)
    audio = load_audio(path, 16000)
    assert abs(len(audio) - 16000) <= 2
    assert audio_duration(path) == pytest.approx(1.0, abs=1e-3)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "broken.flac"
    path.write_bytes(b"fLaC" + b"\x00" * 50)
    with pytest.raises(AudioError, match="broken.flac"):
        load_audio(path)


def test_nan_samples_are_refused(tmp_path):
    path = tmp_path / "nan.wav"
    x = tone(0.1)
    x[10] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)
