"""The synthetic corpus generator: voices, split by voice and sentence, FLAC 16 kHz, resume."""

import json

import pytest
import soundfile as sf

from hw_asr.datasets import ManifestDataset
from hw_asr.text_encoder import CTCCharTextEncoder
from hw_asr.tools import make_synthetic_corpus as msc

SENTENCES = [
    f"the {w} walked over the old bridge at night"
    for w in ("dog", "cat", "man", "girl", "horse", "king", "boy", "fox", "bear", "wolf", "duck", "goat")
]


def engines_or_skip(*voices):
    """Installs the engines with apt-get when run as root (as CI is); skips where it cannot."""
    try:
        msc.check_engines(voices, install=True)
    except SystemExit as e:
        pytest.skip(str(e))


def test_builds_a_split_by_voice_corpus_and_resumes(tmp_path):
    engines_or_skip("espeak:en-us", "flite:slt")
    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES) + "\nnumbers like 42 are dropped. So is a\n", encoding="utf-8")
    out = tmp_path / "corpus"
    args = [
        "--out",
        str(out),
        "--text",
        str(text),
        "--voices",
        "espeak:en-us",
        "espeak:en-gb+f3",
        "flite:slt",
        "espeak:en-us+m3",
        "--test-voices",
        "flite:slt",
        "--dev-voices",
        "espeak:en-us+m3",
        "--utterances-per-voice",
        "3",
        "--workers",
        "1",
        "--no-install",
    ]
    summary = msc.main(args)
    assert summary["sentences_available"] == len(SENTENCES)
    assert (summary["train"], summary["dev"], summary["test"], summary["failures"]) == (6, 3, 3, 0)
    rows = {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "dev", "test")
    }
    assert {r["voice"] for r in rows["dev"]} == {"espeak:en-us+m3"}
    texts = {s: {r["text"] for r in r_} for s, r_ in rows.items()}
    assert not (texts["train"] & texts["dev"] or texts["dev"] & texts["test"])
    assert {r["voice"] for r in rows["test"]} == {"flite:slt"}
    assert {r["voice"] for r in rows["train"]} == {"espeak:en-us", "espeak:en-gb+f3"}
    assert not {r["text"] for r in rows["train"]} & {r["text"] for r in rows["test"]}
    for r in rows["train"] + rows["dev"] + rows["test"]:
        info = sf.info(str(out / r["audio_filepath"]))
        assert info.samplerate == 16000 and info.format == "FLAC" and info.frames > 8000
        assert 0.85 <= r["speed"] <= 1.15 and -3 <= r["pitch"] <= 3
    # the manifests load as a dataset
    ds = ManifestDataset(str(out / "train.jsonl"), text_encoder=CTCCharTextEncoder("en"))
    assert len(ds) == 6
    # a rerun keeps what was written (nothing is synthesised again)
    before = {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.flac")}
    msc.main(args)
    assert {p: p.stat().st_mtime_ns for p in (out / "audio").rglob("*.flac")} == before


def test_russian_voices_and_sentence_filter():
    encoder = CTCCharTextEncoder("ru")
    lines = ["Ёлка стоит в лесу у дороги. Hello world here we go.", "Коротко.", "Ёлка стоит в лесу у дороги!"]
    assert msc.select_sentences(lines, encoder, 3, 10) == ["елка стоит в лесу у дороги"]
    assert all(v.startswith("espeak:ru") for v in msc.DEFAULT_VOICES["ru"])


def test_missing_engine_and_bad_voice_are_named(monkeypatch):
    monkeypatch.setattr(msc.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match=r"flite \(executable 'flite', apt-get install flite\)"):
        msc.check_engines(["flite:slt"], install=False)
    with pytest.raises(ValueError, match="engine:voice"):
        msc.parse_voice("slt")
    with pytest.raises(ValueError, match="too few"):
        msc.plan(["a b c d"], ["espeak:en-us", "flite:slt"], {"flite:slt": "test"}, 3, (1, 1), (0, 0), 0, "/tmp")
