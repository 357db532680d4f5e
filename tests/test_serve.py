"""hw_asr.tools.serve: the JSON API, its refusals, a real checkpoint behind it, and the page in a real browser."""

import io
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from hw_asr.model import LogMelFrontend
from hw_asr.text_encoder import CTCCharTextEncoder
from hw_asr.tools import serve
from tests.conftest import REPO

SAMPLE = REPO / "hw_asr" / "data" / "sample" / "audio" / "sample_00.flac"
SAMPLE_TEXT = "the cat sat on a warm mat"


class Oracle(torch.nn.Module):
    """Spells ``text`` over whatever audio it gets: each token on one frame, evenly spread, blanks between."""

    def __init__(self, encoder, text):
        super().__init__()
        self.frontend = LogMelFrontend()
        self.ids, self.vocab = encoder.encode(text), len(encoder)

    def forward(self, audio, audio_length, **batch):
        frames = self.frontend.output_lengths(audio_length)
        t = int(frames.max())
        logits = torch.full((1, t, self.vocab), -10.0)
        logits[..., 0] = 10.0
        for k, tok in enumerate(self.ids):
            logits[0, (k + 1) * t // (len(self.ids) + 1), tok] = 20.0
        return {"log_probs": logits.log_softmax(-1), "log_probs_length": frames}


def oracle_transcriber(max_seconds=30.0):
    encoder = CTCCharTextEncoder()
    return serve.Transcriber(Oracle(encoder, SAMPLE_TEXT), encoder, {"argmax": None}, 16000, max_seconds, "oracle")


def wav_bytes(seconds, rate=16000, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).uniform(-0.1, 0.1, int(seconds * rate)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


@pytest.fixture
def client():
    from fastapi.testclient import TestClient

    return TestClient(serve.create_app(oracle_transcriber(max_seconds=5.0)))


def test_transcribe_returns_what_test_py_timestamps_writes_for_one_file(client):
    r = client.post("/transcribe", files={"file": ("sample_00.flac", SAMPLE.read_bytes(), "audio/flac")})
    assert r.status_code == 200
    body = r.json()
    assert body["audio_path"] == "sample_00.flac" and body["ground_truth"] is None
    assert body["pred_argmax"] == SAMPLE_TEXT
    assert [w["word"] for w in body["words"]] == SAMPLE_TEXT.split()
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts) and all(
        0 <= w["start"] < w["end"] <= body["duration"] + 0.02 for w in body["words"]
    )
    assert body["duration"] == pytest.approx(sf.info(SAMPLE).duration, abs=1e-3)
    assert client.get("/health").json()["decoders"] == ["argmax"]
    assert "<title>hw_asr: transcribe</title>" in client.get("/").text


@pytest.mark.parametrize(
    "name,data,status,message",
    [
        ("empty.wav", b"", 400, "empty.wav: the upload is empty"),
        ("notes.txt", b"this is not audio at all", 415, "notes.txt: not audio that can be decoded"),
        ("long.wav", None, 413, "long.wav: 6.0 s of audio; this server takes at most 5 s"),
        ("low.wav", wav_bytes(1.0, rate=4000), 422, "low.wav: sample rate 4000 Hz is below 8000 Hz"),
        ("silence.wav", wav_bytes(0.0), 400, "silence.wav: the audio is empty (0 samples)"),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_the_server_keeps_serving(client, name, data, status, message):
    data = wav_bytes(6.0) if data is None else data
    r = client.post("/transcribe", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == status
    assert r.json()["detail"].startswith(message)
    ok = client.post("/transcribe", files={"file": ("ok.wav", wav_bytes(1.0, rate=22050), "audio/wav")})
    assert ok.status_code == 200 and ok.json()["sample_rate"] == 22050  # resampled to the model's rate


def test_a_run_folder_serves_its_best_checkpoint_and_a_missing_onnx_source_is_named(tmp_path):
    from tests.test_training import TINY, run_train

    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1", "trainer.monitor=min val_loss")
    transcriber = serve.load_transcriber(run_dir)
    assert str(run_dir) in transcriber.name and list(transcriber.decoders) == ["argmax"]
    body = transcriber.transcribe(SAMPLE.read_bytes(), "sample_00.flac")
    assert isinstance(body["pred_argmax"], str) and isinstance(body["words"], list)
    with pytest.raises(SystemExit, match="nothing.onnx: no such ONNX file"):
        serve.main(["-r", str(tmp_path / "nothing.onnx")])

    # its ONNX export, run by onnxruntime, says the same; without the checkpoint it came from it is refused
    from hw_asr.tools import export_onnx

    onnx_path = tmp_path / "model.onnx"
    export_onnx.main(["-r", str(run_dir), "-o", str(onnx_path)])
    exported = serve.load_transcriber(onnx_path)
    assert "onnxruntime" in exported.name
    assert exported.transcribe(SAMPLE.read_bytes(), "sample_00.flac")["pred_argmax"] == body["pred_argmax"]
    (run_dir / "model_best.pth").rename(tmp_path / "moved.pth")
    with pytest.raises(serve.ConfigError, match="which is not there: name one with --checkpoint"):
        serve.load_transcriber(onnx_path)


@pytest.fixture
def server():
    from benchmarks.serve import Server

    with Server(oracle_transcriber()) as url:
        yield url


def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    return path


def test_the_page_in_a_real_browser_uploads_a_file_and_shows_the_words_with_times(server, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = chromium()
    (tmp_path / "notes.txt").write_text("not audio")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server)
            page.wait_for_function("document.getElementById('model').textContent.includes('oracle')")
            page.set_input_files("#file", str(SAMPLE))
            page.click("#send")
            page.wait_for_selector(".word", timeout=30_000)
            words = page.locator(".decoder[data-decoder=argmax] .word")
            shown = [t.split("\n")[0].strip() for t in words.all_inner_texts()]
            assert shown == SAMPLE_TEXT.split()
            assert page.locator(".transcript").first.inner_text() == SAMPLE_TEXT
            first_times = words.first.locator("small").inner_text()
            assert "–" in first_times and float(first_times.split("–")[0]) >= 0
            assert page.locator("#error").inner_text() == ""
            page.set_input_files("#file", str(tmp_path / "notes.txt"))
            page.click("#send")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=30_000)
            assert "notes.txt: not audio that can be decoded" in page.locator("#error").inner_text()
        finally:
            browser.close()


def test_serve_benchmark_measures_both_runtimes_over_loopback(tmp_path, capsys):
    from benchmarks import serve as bench
    from tests.test_training import TINY, run_train

    run_dir = run_train(tmp_path, *TINY, "trainer.epochs=1")
    rows = bench.main(["-r", str(run_dir), "--seconds", "3", "--requests", "2", "--clients", "2", "--max-wall-s", "30"])
    assert [r["runtime"] for r in rows] == ["torch", "onnx"]
    for r in rows:
        assert 0 < r["latency_median_s"] <= r["latency_p90_s"] and r["concurrent_requests"] == 4
        assert r["requests_per_s"] > 0
    assert "| torch |" in capsys.readouterr().out
